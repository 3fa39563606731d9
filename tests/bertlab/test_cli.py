"""The CLI end to end, as a subprocess: fit → validate → test → predict, export round trip, cache, DDP."""

import glob
import json
import os

import pandas as pd
import pytest

from bertlab.core.provenance import code_hash
from tests.bertlab.cli_helpers import run_cli, tiny_args


@pytest.fixture(scope="module")
def fitted(tiny_bert_dir, tiny_csvs, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("run"))
    cache = os.path.join(root, "cache")
    args = tiny_args(tiny_bert_dir, tiny_csvs, root, cache)
    proc = run_cli("fit", *args, "--trainer.max_epochs", "5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"root": root, "cache": cache, "args": args, "proc": proc}


def test_fit_writes_resolved_config_checkpoint_export_and_metrics(fitted):
    root = fitted["root"]
    assert os.path.isfile(os.path.join(root, "config.yaml"))  # LightningCLI's SaveConfigCallback
    info = json.load(open(os.path.join(root, "export", "bertlab_export.json")))
    assert info["hf_native"] is True and info["monitor"] == "val/acc" and os.path.isfile(info["checkpoint"])
    config = json.load(open(os.path.join(root, "export", "config.json")))
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["architectures"] == [
        "BertForSequenceClassification"
    ]
    metrics = json.load(open(os.path.join(root, "fit_metrics.json")))
    assert metrics["val/acc"] > 0.8, metrics  # the tiny data has one decisive word per text
    prov = metrics["provenance"]
    assert len(prov["commit"]) == 40 and isinstance(prov["dirty"], bool) and len(prov["code"]) == 16
    assert prov["code"] == code_hash() and prov["precision"] in ("32-true", "bf16-mixed")
    assert set(prov["versions"]) == {"bertlab", "torch", "transformers", "pytorch-lightning"}
    assert prov["threads"] >= 1 and prov["hardware"] and prov["command"][1:3] == ["fit", "--config"]


def test_validate_and_test_report_the_best_checkpoint(fitted):
    ckpt = json.load(open(os.path.join(fitted["root"], "export", "bertlab_export.json")))["checkpoint"]
    for cmd in ("validate", "test"):
        proc = run_cli(cmd, *fitted["args"], "--ckpt_path", ckpt)
        assert proc.returncode == 0, proc.stderr[-2000:]
    val = json.load(open(os.path.join(fitted["root"], "validate_metrics.json")))
    test = json.load(open(os.path.join(fitted["root"], "test_metrics.json")))
    assert val["val/acc"] == pytest.approx(
        json.load(open(os.path.join(fitted["root"], "export", "bertlab_export.json")))["best_score"]
    )
    assert test["test/acc"] > 0.8 and 0.0 < test["test/f1"] <= 1.0


def test_predict_csv_matches_transformers_pipeline(fitted, tiny_csvs):
    out = os.path.join(fitted["root"], "pred.csv")
    ckpt = json.load(open(os.path.join(fitted["root"], "export", "bertlab_export.json")))["checkpoint"]
    proc = run_cli(
        "predict",
        *fitted["args"],
        "--ckpt_path",
        ckpt,
        "--data.splits.predict_file",
        tiny_csvs["test"],
        "--predictions.output_path",
        out,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    pred = pd.read_csv(out)
    source = pd.read_csv(tiny_csvs["test"])
    assert pred["text"].tolist() == source["text"].tolist()
    assert list(pred.columns) == ["text", "predicted_label", "prob_neg", "prob_pos"]
    assert (pred[["prob_neg", "prob_pos"]].sum(axis=1) - 1).abs().max() < 1e-5

    from transformers import pipeline

    clf = pipeline("text-classification", model=os.path.join(fitted["root"], "export"))
    hf = clf(pred["text"].tolist())
    assert [h["label"] for h in hf] == pred["predicted_label"].tolist()
    assert [h["score"] for h in hf] == pytest.approx(pred[["prob_neg", "prob_pos"]].max(axis=1).tolist(), abs=1e-4)


def test_second_run_reuses_the_token_cache(fitted):
    tokens = os.path.join(fitted["cache"], "tokens")
    before = {d: os.path.getmtime(os.path.join(tokens, d, "input_ids.npy")) for d in os.listdir(tokens)}
    assert len(before) == 3  # train, val, test
    proc = run_cli("validate", *fitted["args"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = {d: os.path.getmtime(os.path.join(tokens, d, "input_ids.npy")) for d in os.listdir(tokens)}
    assert after == before


def test_print_config_resolves_the_layered_config(tiny_bert_dir, tiny_csvs, tmp_path):
    proc = run_cli("fit", *tiny_args(tiny_bert_dir, tiny_csvs, str(tmp_path), str(tmp_path / "c")), "--print_config")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "class_path: lightning_modules.classifier.TextClassifier" in proc.stdout
    assert f"model_name_or_path: {tiny_bert_dir}" in proc.stdout
    assert "tokenizer:" not in proc.stdout  # a link target: set from the model path, never by hand


def _assert_workers_left_the_process_group(directory, stage: str) -> None:
    # a worker that exited with gloo's threads alive aborted now and then (SIGABRT), failing a finished run
    for rank in (0, 1):
        state = json.load(open(os.path.join(directory, f"exit_{stage}_rank{rank}.json")))
        assert state["initialized"] is False, state
        assert not [t for t in state["threads"] if "gloo" in t or "tcpstore" in t], state


def test_ddp_spawn_two_cpu_ranks_fit_and_predict_each_example_once(tiny_bert_dir, tiny_csvs, tmp_path):
    args = tiny_args(tiny_bert_dir, tiny_csvs, str(tmp_path), str(tmp_path / "cache"))
    ddp = ["--trainer.strategy", "ddp_spawn", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    probe = ["--trainer.callbacks+=grad_sync_probe.ExitProbe", "--trainer.callbacks.output_dir", str(tmp_path)]
    env_path = os.path.dirname(os.path.abspath(__file__))
    proc = run_cli("fit", *args, *ddp, *probe, extra_pythonpath=env_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_workers_left_the_process_group(tmp_path, "fit")
    assert os.path.isfile(os.path.join(str(tmp_path), "export", "model.safetensors"))
    # 39 rows: not divisible by 2 ranks, so the DistributedSampler pads with a repeat
    odd = tmp_path / "odd.csv"
    pd.read_csv(tiny_csvs["test"]).iloc[:39].to_csv(odd, index=False)
    ckpt = glob.glob(os.path.join(str(tmp_path), "checkpoints", "*.ckpt"))[0]
    out = str(tmp_path / "pred.csv")
    proc = run_cli(
        "predict",
        *args,
        *ddp,
        "--ckpt_path",
        ckpt,
        "--data.splits.predict_file",
        str(odd),
        "--predictions.output_path",
        out,
        *probe,
        extra_pythonpath=env_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_workers_left_the_process_group(tmp_path, "predict")
    pred = pd.read_csv(out)
    assert len(pred) == 39 and pred["text"].tolist() == pd.read_csv(odd)["text"].tolist()


def test_knowledge_dim_is_linked_from_the_data(tiny_bert_dir, tiny_csvs, tmp_path):
    """The model's knowledge_dim is the width of the data's vectors: never typed by hand."""
    csvs = {}
    for split in ("train", "val", "test"):
        df = pd.read_csv(tiny_csvs[split])
        df["vec"] = [json.dumps([i % 3, 1.0, -1.0]) for i in range(len(df))]
        csvs[split] = str(tmp_path / f"{split}.csv")
        df.to_csv(csvs[split], index=False)
    args = tiny_args(tiny_bert_dir, csvs, str(tmp_path / "run"), str(tmp_path / "cache"))
    knowledge = ["--data.knowledge", '{"column": "vec"}', "--model.knowledge_fusion", "after_encoder"]
    proc = run_cli("fit", *args, *knowledge, "--trainer.fast_dev_run", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli("fit", *args, *knowledge, "--print_config")
    assert "knowledge_dim:" not in proc.stdout  # a link target


def test_augmenters_are_given_by_class_path(tiny_bert_dir, tiny_csvs, tmp_path):
    synonyms = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "augment", "synonyms_en.tsv")
    eda = {"class_path": "datamodules.augment.EDA", "init_args": {"n_aug": 1, "synonyms": synonyms}}
    args = tiny_args(tiny_bert_dir, tiny_csvs, str(tmp_path / "run"), str(tmp_path / "cache"))
    proc = run_cli("fit", *args, "--data.augment", json.dumps([eda]), "--trainer.fast_dev_run", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    typo = {"class_path": "datamodules.augment.EDA", "init_args": {"n_augs": 1}}
    proc = run_cli("fit", *args, "--data.augment", json.dumps([typo]), "--print_config")
    assert proc.returncode == 2 and "n_augs" in proc.stderr


def test_ddp_gradient_accumulation_all_reduces_only_on_the_optimizer_step(tiny_bert_dir, tiny_csvs, tmp_path):
    """2 CPU ranks, accumulate 2 batches: the first backward of each pair runs under ``no_sync``."""
    args = tiny_args(tiny_bert_dir, tiny_csvs, str(tmp_path), str(tmp_path / "cache"))
    ddp = ["--trainer.strategy", "ddp_spawn", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    probe = ["--trainer.callbacks+=grad_sync_probe.GradSyncProbe", "--trainer.callbacks.output_dir", str(tmp_path)]
    env_path = os.path.dirname(os.path.abspath(__file__))
    proc = run_cli(
        "fit", *args, *ddp, *probe, "--trainer.accumulate_grad_batches", "2", "--trainer.limit_train_batches", "5",
        "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0", extra_pythonpath=env_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        syncs = json.load(open(tmp_path / f"rank{rank}.json"))
        assert syncs == [False, True, False, True, True], syncs  # an epoch's last batch steps (and syncs) early
