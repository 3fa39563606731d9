"""Every script in ``benchmarks/`` runs in a tiny, seconds-long form and writes its JSON, so that no benchmark
rots unseen (``gpu_mfu.sh`` had kept a renamed flag). Timings are never asserted: only that each runs."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "benchmarks")
SMOKED = {
    "corpus_scale.py",
    "gpu_mfu.sh",
    "hf_trainer_anchor.py",
    "bench.py",  # with hf_anchors.py, which it runs for its HF arms
    "hf_anchors.py",
    "data_memory.py",
    "selective_scoring.py",
}


def _run(cmd: list[str], tmp_path, **env) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=ROOT, WANDB_MODE="disabled", OMP_NUM_THREADS="1", **env)
    full_env["BERTLAB_CACHE"] = str(tmp_path / "cache")
    proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_every_benchmark_script_is_smoke_tested_or_listed():
    scripts = {f for f in os.listdir(BENCH) if f.endswith((".py", ".sh"))}
    assert scripts == SMOKED, "a new benchmark script needs its smoke form in this file"


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


def test_bench_smoke(tiny_bert_dir, tmp_path):
    """``make bench``'s four kinds of arm (HF run_mlm and Trainer through hf_anchors.py, bertlab's MLM and
    classifier through the CLI), one repeat of 2 timed steps each on the tiny model."""
    out = tmp_path / "bench"
    arms = "hf_run_mlm,bertlab_mlm,hf_trainer_classify,bertlab_classify"
    args = ["--arms", arms, "--precisions", "fp32", "--repeats", "1", "--steps", "2", "--warmup", "1"]
    _run([sys.executable, os.path.join(BENCH, "bench.py"), *args, "--model", tiny_bert_dir, "--max-length", "32",
          "--threads", "1", "--out", str(out)], tmp_path)  # fmt: skip
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert set(rows) == {f"{arm}/fp32" for arm in arms.split(",")}
    assert all(r["timed_steps"] == 2 and r["best"] > 0 and r["peak_rss_mb"] > 0 for r in rows.values())
    assert rows["bertlab_mlm/fp32"]["vs_hf"] > 0 and rows["bertlab_classify/fp32"]["vs_hf"] > 0
    assert "| bertlab_mlm | fp32 |" in (out / "bench.md").read_text()


def test_data_memory_smoke(tiny_bert_dir, tmp_path):
    out = tmp_path / "data_memory.json"
    args = ["--lines", "300", "--baseline-lines", "60", "--steps", "3", "--model", tiny_bert_dir, "--max-length", "32"]
    _run([sys.executable, os.path.join(BENCH, "data_memory.py"), *args, "--out", str(out)], tmp_path)
    result = json.loads(out.read_text())
    assert result["lines"] == 300 and 0 < result["tokenise"]["documents"] <= 300
    for run in ("train", "train_glibc", "train_baseline"):
        assert result[run]["peak_rss_mb"] > 0 and result[run]["tokens_per_s"] > 0, run
    assert result["met"] is True


def test_selective_scoring_smoke(tiny_bert_dir, tmp_path):
    """The buffer-rule scorer against the authors' loop on 6 validation reviews, a second each, with a quick
    Model_0 on the tiny encoder: fp32 batching must give the loop's labels exactly."""
    out = tmp_path / "selective_scoring.json"
    args = ["--base", tiny_bert_dir, "--n", "6", "--fit-reviews", "16", "--max-length", "32", "--batch-size", "8"]
    args += ["--group", "8", "--anchor-seconds", "1", "--scorer-seconds", "1", "--precision", "fp32"]
    _run([sys.executable, os.path.join(BENCH, "selective_scoring.py"), *args, "--out", str(out)], tmp_path)
    result = json.loads(out.read_text())
    assert result["fp32_batched_identical_to_anchor"] is True and result["reviews"] == 6
    assert result["speedup"] > 0 and result["sentences"] >= 6 and result["tokens_timed"] > 0
    assert result["scorer_vs_anchor"]["identical_sentences"] == 1.0  # fp32 scorer: the anchor's labels
