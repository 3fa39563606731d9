"""Every script in ``benchmarks/`` runs in a tiny, seconds-long form and writes its JSON, so that no benchmark
rots unseen (``gpu_mfu.sh`` had kept a renamed flag). Timings are never asserted: only that each runs."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "benchmarks")
SMOKED = {"corpus_scale.py", "gpu_mfu.sh", "hf_trainer_anchor.py"}
# the selective-masking helper owns selective_scoring.py and gives it its smoke form; bench.py, data_memory.py
# and hf_anchors.py train MiniLM on the fine-food reviews in several processes (minutes, not seconds)
NOT_YET = {"selective_scoring.py", "bench.py", "data_memory.py", "hf_anchors.py"}


def _run(cmd: list[str], tmp_path, **env) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=ROOT, WANDB_MODE="disabled", OMP_NUM_THREADS="1", **env)
    full_env["BERTLAB_CACHE"] = str(tmp_path / "cache")
    proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_every_benchmark_script_is_smoke_tested_or_listed():
    scripts = {f for f in os.listdir(BENCH) if f.endswith((".py", ".sh"))}
    assert scripts == SMOKED | NOT_YET, "a new benchmark script needs its smoke form in this file"


def test_corpus_scale_smoke(tiny_bert_dir, tmp_path):
    out = tmp_path / "corpus_scale.json"
    cmd = [sys.executable, os.path.join(BENCH, "corpus_scale.py"), "--lines", "150", "--steps", "1", "--ddp-lines", "0"]
    _run([*cmd, "--model", tiny_bert_dir, "--max-length", "32", "--cores", "2", "--out", str(out)], tmp_path)
    result = json.loads(out.read_text())
    assert [s["lines"] for s in result["sizes"]] == [150]
    for size in result["sizes"]:
        assert size["tokens"] > size["lines"] and size["cold"]["tokenizing_runs"] == 1
        assert size["warm"]["tokenizing_runs"] == 0  # the warm run opens the cache
    assert set(result["summary"]["met"]) == {"rss_growth", "rss_mb", "tokenize_vs_hf", "warm_first_step_s"}
    _run([*cmd, "--model", "no-such-model", "--cores", "2", "--out", str(out), "--resume"], tmp_path)
    again = json.loads(out.read_text())  # nothing measured again (a fit of no-such-model would fail)
    assert again["sizes"] == [{**result["sizes"][0], "commit": result["commit"]}]


def test_hf_trainer_anchor_smoke(tmp_path):
    out = tmp_path / "hf_anchor.json"
    args = ["--seeds", "0", "--epochs", "1", "--max-length", "16", "--limit", "16", "--out", str(out)]
    _run([sys.executable, os.path.join(BENCH, "hf_trainer_anchor.py"), *args], tmp_path)
    result = json.loads(out.read_text())
    assert 0.0 <= result["test/acc"]["mean"] <= 1.0 and result["test_reviews"] == 16
    assert len(result["provenance"]["code"]) == 16 and result["settings"]["max_length"] == 16


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="bash script")
def test_gpu_mfu_cpu_smoke(tmp_path):
    out = tmp_path / "gpu_mfu.json"
    smoke = {"ACCELERATOR": "cpu", "PRECISION": "32-true", "STEPS": "3", "BATCH": "2", "COMPILE": "false"}
    smoke |= {"WARMUP": "1", "HIDDEN": "32", "LAYERS": "1", "HEADS": "2", "FFN": "64"}
    bin_dir = os.path.dirname(sys.executable)
    proc = _run(
        ["bash", os.path.join(BENCH, "gpu_mfu.sh"), "--data.init_args.max_documents", "64"],
        tmp_path,
        BIN=bin_dir,
        OUT=str(out),
        **smoke,
    )
    result = json.loads(out.read_text())
    assert result["timed_steps"] == 2 and result["tokens"] > 0 and "MFU" in proc.stdout
