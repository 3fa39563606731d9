"""Shipping a model: every head's and every fusion's export loads in transformers (``trust_remote_code``) and
gives ``bertlab predict``'s probabilities to 1e-5; ``bertlab predict --model EXPORT --input FILE`` needs no
checkpoint, config or run directory; its bad input is one line, exit 2, and no output file."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from bertlab import cli
from bertlab.core.models import load_tokenizer
from bertlab.predict_export import predict
from callbacks.hf_export import HFExport
from datamodules.classification import ClassificationDataModule
from datamodules.knowledge_vectors import Knowledge
from lightning_modules.classifier import TextClassifier
from tests.bertlab.cli_helpers import run_cli
from tests.conftest import quiet_trainer
from tests.dm_args import grouped

TOL = 1e-5
LR, STEPS = 3e-3, 100  # learns on every arm in every process (1e-2 sometimes collapsed to uniform)
MAX_LENGTH = 12  # shorter than many of the texts: the export must cut them as training did
# name -> (head, head options, knowledge fusion, knowledge source, truncation)
ARMS = {
    "cls": ("ClsHead", {}, None, None, "head"),
    "mean": ("MeanHead", {}, None, None, "tail"),
    "concat_last_k": ("LastKHead", {"k": 2}, None, None, "head_tail"),
    "mean_last_k": ("LastKHead", {"k": 2, "reduce": "mean"}, None, None, "head"),
    "max_last_k": ("LastKHead", {"k": 2, "reduce": "max"}, None, None, "tail"),
    "concat_all": ("ConcatAllHead", {}, None, None, "head_tail"),
    "layer_cnn": ("LayerCnnHead", {"kernel_sizes": [1, 2], "num_filters": 8}, None, None, "tail"),
    "vader_after_encoder": ("MeanHead", {}, "after_encoder", "vader", "head_tail"),
    "encoder_embedding": ("ClsHead", {}, "embedding", "encoder", "tail"),
}


def fit_and_export(name, tiny_bert_dir, tiny_csvs, root) -> dict:
    """A few training steps in-process, the export HFExport writes, and ``bertlab predict``'s probabilities."""
    head, options, fusion, source, truncation = ARMS[name]
    knowledge = None
    if source == "vader":
        knowledge = Knowledge(provider="vader")
    elif source == "encoder":
        knowledge = Knowledge(provider="encoder", model_dir=tiny_bert_dir, max_length=16)
    dm = ClassificationDataModule(
        **grouped(
            tokenizer=tiny_bert_dir,
            train_file=tiny_csvs["train"],
            val_file=tiny_csvs["val"],
            predict_file=tiny_csvs["test"],
            batch_size=16,
            max_length=MAX_LENGTH,
            truncation=truncation,
            cache_dir=os.path.join(root, "cache"),
            knowledge=knowledge,
        )
    )
    pl.seed_everything(0)
    model = TextClassifier(
        tiny_bert_dir,
        num_labels=dm.num_labels,
        id2label=dm.id2label,
        head={"class_path": f"lightning_modules.heads.{head}", "init_args": options},
        lr=LR,
        knowledge_dim=dm.knowledge_dim,
        knowledge_fusion=fusion,
    )
    export = os.path.join(root, "export")
    trainer = quiet_trainer(
        max_steps=STEPS, precision="32-true", callbacks=[HFExport(dirpath=export)], default_root_dir=root
    )
    trainer.fit(model, datamodule=dm)
    out = trainer.predict(model, datamodule=dm)
    idx = torch.cat([o["idx"] for o in out]).numpy()
    probs = torch.cat([o["probs"] for o in out]).numpy()[np.argsort(idx)]
    return {"export": export, "probs": probs, "texts": dm.texts("predict")["text"].tolist(), "labels": dm.label_names}


@pytest.fixture(scope="module")
def ship(tiny_bert_dir, tiny_csvs, tmp_path_factory):
    """``ship(name)``: the arm's fitted export and reference probabilities, built once per module."""
    built = {}

    def get(name: str) -> dict:
        if name not in built:
            root = str(tmp_path_factory.mktemp(f"ship_{name}"))
            built[name] = {"name": name, **fit_and_export(name, tiny_bert_dir, tiny_csvs, root)}
        return built[name]

    return get


@pytest.fixture(params=list(ARMS))
def shipped(request, ship):
    return ship(request.param)


def pipeline_probs(export: str, texts: list[str], labels: list[str]) -> np.ndarray:
    from transformers import pipeline

    clf = pipeline("text-classification", model=export, trust_remote_code=True)
    rows = clf(texts, top_k=None, truncation=True, max_length=MAX_LENGTH)  # HF's own cut, for the native export
    return np.asarray([[{r["label"]: r["score"] for r in row}[name] for name in labels] for row in rows])


def test_the_export_loads_in_transformers_with_bertlab_predicts_probabilities(shipped):
    config = json.load(open(os.path.join(shipped["export"], "config.json")))
    if shipped["name"] == "cls":  # HF-native: no custom code
        assert "auto_map" not in config and not os.path.exists(os.path.join(shipped["export"], "modeling_bertlab.py"))
    else:
        assert config["auto_map"]["AutoModelForSequenceClassification"].startswith("modeling_bertlab.")
    reference = shipped["probs"]
    assert reference.shape == (40, 2) and np.abs(reference - 0.5).max() > 0.2  # trained away from uniform
    tok = load_tokenizer(shipped["export"])
    assert sum(len(tok(t)["input_ids"]) > MAX_LENGTH for t in shipped["texts"]) > 10
    got = pipeline_probs(shipped["export"], shipped["texts"], shipped["labels"])
    delta = float(np.abs(got - reference).max())
    print(f"\n{shipped['name']}: max |dprob| pipeline vs bertlab predict = {delta:.2e}")
    assert delta < TOL


def test_predict_from_the_export_alone_equals_bertlab_predict(shipped, tiny_csvs, tmp_path):
    out = predict(shipped["export"], tiny_csvs["test"], str(tmp_path / "p.csv"), progress=False)
    pred = pd.read_csv(out)
    assert list(pred.columns) == ["text", "predicted_label", *(f"prob_{n}" for n in shipped["labels"])]
    assert pred["text"].tolist() == pd.read_csv(tiny_csvs["test"])["text"].tolist()
    probs = pred[[f"prob_{n}" for n in shipped["labels"]]].to_numpy()
    delta = float(np.abs(probs - shipped["probs"]).max())
    print(f"\n{shipped['name']}: max |dprob| predict --model vs bertlab predict = {delta:.2e}")
    assert delta < TOL
    names = np.asarray(shipped["labels"])[shipped["probs"].argmax(1)]
    assert pred["predicted_label"].tolist() == names.tolist()


def test_the_encoder_of_a_custom_export_still_starts_the_next_stage(ship, tiny_bert_dir):
    from safetensors.torch import load_file
    from transformers import AutoModel

    export = ship("layer_cnn")["export"]
    encoder = AutoModel.from_pretrained(export).eval()
    saved = load_file(os.path.join(export, "model.safetensors"))
    assert type(encoder).__name__ == "BertModel"
    for name, value in encoder.state_dict().items():
        if not name.startswith("pooler."):
            assert torch.equal(value, saved[f"bert.{name}"]), name


def test_column_knowledge_cannot_travel_the_pipeline_says_so_and_predict_reads_the_column(
    tiny_bert_dir, tiny_csvs, tmp_path
):
    from transformers import pipeline

    torch.manual_seed(0)
    model = TextClassifier(
        tiny_bert_dir, num_labels=2, id2label={0: "neg", 1: "pos"}, knowledge_dim=3, knowledge_fusion="after_encoder"
    ).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(100)  # logits far from zero, so 1e-5 means something
    export = str(tmp_path / "export")
    from bertlab.core.models import load_tokenizer
    from callbacks.hf_export import atomic_export

    atomic_export(model, load_tokenizer(tiny_bert_dir), export, {}, Knowledge(column="vec"))
    with pytest.raises(ValueError, match="knowledge from column, which the text alone does not give"):
        pipeline("text-classification", model=export, trust_remote_code=True)
    frame = pd.read_csv(tiny_csvs["test"]).head(12)
    vectors = np.random.default_rng(0).normal(size=(len(frame), 3)).astype(np.float32)
    frame["vec"] = [json.dumps(v.tolist()) for v in vectors]
    frame.to_csv(tmp_path / "in.csv", index=False)
    pred = pd.read_csv(predict(export, str(tmp_path / "in.csv"), progress=False))
    tok = load_tokenizer(tiny_bert_dir)
    enc = tok(frame["text"].tolist(), padding=True, return_tensors="pt")
    with torch.no_grad():
        reference = torch.softmax(model({**enc, "knowledge": torch.from_numpy(vectors)}), -1).numpy()
    assert np.abs(reference - 0.5).max() > 0.2
    assert np.abs(pred[["prob_neg", "prob_pos"]].to_numpy() - reference).max() < TOL


def test_the_cli_predicts_from_an_export_in_a_fresh_process_with_no_run_directory(ship, tiny_csvs, tmp_path):
    shipped = ship("mean")
    work = tmp_path / "elsewhere"
    work.mkdir()
    data = work / "reviews.jsonl"
    pd.read_csv(tiny_csvs["test"]).rename(columns={"text": "review"}).to_json(data, orient="records", lines=True)
    proc = run_cli(
        "predict", "--model", shipped["export"], "--input", str(data), "--text_column", "review", cwd=str(work)
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "100%" in proc.stderr and "40/40" in proc.stderr  # the progress bar, on stderr
    assert sorted(os.listdir(work)) == ["reviews.jsonl", "reviews.predictions.csv"]  # no logs, no run directory
    pred = pd.read_csv(work / "reviews.predictions.csv")
    assert list(pred.columns) == ["text", "predicted_label", "prob_neg", "prob_pos"]
    assert np.abs(pred[["prob_neg", "prob_pos"]].to_numpy() - shipped["probs"]).max() < TOL


def bad_inputs(tmp_path, tiny_bert_dir, tiny_csvs) -> dict:
    not_utf8 = tmp_path / "latin1.csv"
    not_utf8.write_bytes("text\ncaf\xe9 au lait\n".encode("latin-1"))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    no_rows = tmp_path / "no_rows.csv"
    no_rows.write_text("text\n")
    return {
        "missing model dir": (str(tmp_path / "nope"), tiny_csvs["test"], "does not exist"),
        "not an export": (str(empty_dir), tiny_csvs["test"], "is not an export"),
        "not a classifier": (tiny_bert_dir, tiny_csvs["test"], "is not a classifier export"),
        "missing input": (None, str(tmp_path / "absent.csv"), "does not exist"),
        "unreadable input": (None, str(not_utf8), "not valid UTF-8"),
        "missing text column": (None, tiny_csvs["train"], "no column 'review'"),
        "no rows": (None, str(no_rows), "no rows (a header only, or nothing at all)"),
        "unwritable output": (None, tiny_csvs["test"], "is a file, not a directory"),
        "no --input": (None, None, "the following arguments are required: --input"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing model dir",
        "not an export",
        "not a classifier",
        "missing input",
        "unreadable input",
        "missing text column",
        "no rows",
        "unwritable output",
        "no --input",
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_output(case, ship, tiny_bert_dir, tiny_csvs, tmp_path, capsys):
    model, data, message = bad_inputs(tmp_path, tiny_bert_dir, tiny_csvs)[case]
    out = str(tmp_path / "a_file" / "p.csv") if case == "unwritable output" else str(tmp_path / "p.csv")
    args = ["predict", "--model", model or ship("mean")["export"], "--output", out]
    args += ["--input", data] if data else []
    if case == "missing text column":
        args += ["--text_column", "review"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bertlab: error: ") and message in err[0], err
    assert not os.path.exists(out) and not [f for f in os.listdir(tmp_path) if f.startswith(".p.csv")]
