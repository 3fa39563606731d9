"""``bertlab/save_config.py``: a run whose data, masker or checkpoint is refused writes nothing, neither its
``config.yaml`` nor its loggers' folders, and leaves an earlier run's files in the same root as they were; a run
that passes its checks writes its config."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from tests.bertlab.cli_helpers import mlm_args, tiny_args
from tests.bertlab.test_bad_input import assert_error
from tests.bertlab.test_preflight import run_main
from tests.conftest import make_texts


def tree(root) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a folder)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        out.update({os.path.relpath(os.path.join(folder, d), root): None for d in dirs})
        for f in files:
            with open(os.path.join(folder, f), "rb") as fh:
                out[os.path.relpath(os.path.join(folder, f), root)] = fh.read()
    return out


@pytest.fixture(scope="module")
def two_label_run(tiny_bert_dir, tiny_csvs, tmp_path_factory):
    root = tmp_path_factory.mktemp("two_labels")
    args = tiny_args(tiny_bert_dir, tiny_csvs, str(root), str(root / "cache"))
    proc = run_main("fit", *args, "--trainer.max_epochs", "1", "--trainer.logger", "true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((root / "export" / "bertlab_export.json").read_text())
    return root, info["checkpoint"]


def test_a_run_that_passes_its_checks_writes_its_config(two_label_run):
    root, _ = two_label_run
    saved = [p for p in tree(root) if p.endswith("config.yaml")]
    assert saved == [os.path.join("csv", "version_0", "config.yaml")]
    assert b"max_epochs: 1" in (root / saved[0]).read_bytes()


def _mlm(tiny_bert_dir, tmp_path, root, *extra) -> list[str]:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(make_texts(100, seed=9)[0]) + "\n")
    corpus_arg = ["--data.init_args.corpus", f"[{corpus}]"]
    return ["fit", *mlm_args(tiny_bert_dir, str(tmp_path / "cache"), str(root), *corpus_arg, *extra)]


def _three_labels(tiny_bert_dir, tiny_csvs, tmp_path, root, ckpt, *extra) -> list[str]:
    texts, labels = make_texts(60, seed=8)
    three = tmp_path / "three.csv"
    pd.DataFrame({"text": texts, "label": [lab if i % 3 else "meh" for i, lab in enumerate(labels)]}).to_csv(
        three, index=False
    )
    return [
        "predict",
        *tiny_args(tiny_bert_dir, tiny_csvs, str(root), str(tmp_path / "cache")),
        "--data.splits.train_file",
        str(three),
        "--data.splits.predict_file",
        tiny_csvs["test"],
        "--ckpt_path",
        ckpt,
        *extra,
    ]


CASES = {
    "masking rate 1.5": (
        lambda t, c, tmp, root, ckpt, *e: _mlm(
            t, tmp, root, "--data.init_args.masker.init_args.mlm_probability", "1.5", *e
        ),
        "mlm_probability must be strictly between 0 and 1, got 1.5",
    ),
    "80/10/10 that sums to 0.7": (
        lambda t, c, tmp, root, ckpt, *e: _mlm(
            t, tmp, root, "--data.init_args.masker.init_args.replace_prob", "0.5", *e
        ),
        "replace_prob + random_prob + keep_prob must sum to 1, got 0.7",
    ),
    "checkpoint with another label count": (
        _three_labels,
        "the checkpoint was trained with 2 labels but the data has 3",
    ),
}


@pytest.mark.parametrize("logger", ["false", "true"], ids=["no logger", "csv logger"])
@pytest.mark.parametrize("earlier_run", [False, True], ids=["new root", "root of an earlier run"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_run_refused_by_its_checks_writes_nothing(
    case, earlier_run, logger, tiny_bert_dir, tiny_csvs, two_label_run, tmp_path
):
    build, message = CASES[case]
    root = tmp_path / "run"
    if earlier_run:  # what a good run left there stays, byte for byte
        (root / "csv" / "version_0").mkdir(parents=True)
        (root / "csv" / "version_0" / "config.yaml").write_text("trainer: {max_epochs: 3}\n")
        (root / "config.yaml").write_text("trainer: {max_epochs: 3}\n")
        (root / "checkpoints").mkdir()
        (root / "checkpoints" / "epoch=2.ckpt").write_bytes(b"weights")
    before = tree(root)
    argv = build(tiny_bert_dir, tiny_csvs, tmp_path, root, two_label_run[1], "--trainer.logger", logger)
    assert_error(run_main(*argv), None, message)
    assert tree(root) == before and root.exists() == earlier_run
    assert os.listdir(tmp_path / "cache")  # the data cache is kept: it is good for the next run
