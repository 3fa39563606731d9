"""Bad input through the real CLI: exit code 2, one ``bertlab: error:`` line that names the problem,
no traceback, and nothing written (no export, no predictions)."""

import json
import os
import shutil

import pandas as pd
import pytest
import yaml

from tests.bertlab.cli_helpers import ROOT, mlm_args, run_cli, tiny_args
from tests.conftest import make_texts

TINY_CONFIG = os.path.join(ROOT, "tests/configs/tiny_test.yaml")


def assert_error(proc, root, *needles) -> str:
    """The one-line error of ours, containing every needle; returns it."""
    stderr = proc.stderr
    assert proc.returncode == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("bertlab: error: "), stderr[-3000:]
    assert sum(line.startswith("bertlab: error:") for line in lines) == 1
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])
    if root is not None:
        assert_nothing_written(root)
    return lines[-1]


def assert_nothing_written(root) -> None:
    root = str(root)
    left = [os.path.join(d, f) for d, _, files in os.walk(root) for f in files] + [
        os.path.join(d, x) for d, dirs, _ in os.walk(root) for x in dirs
    ]
    assert not left, f"a run that failed its checks left {left}"  # no config.yaml, no empty log folder
    assert not os.path.exists(os.path.join(root, "export"))
    assert not os.path.exists(os.path.join(root, "predictions.csv"))
    if os.path.isdir(root):
        assert not [n for n in os.listdir(root) if n.startswith((".export-", ".predictions-"))]


@pytest.fixture
def fit(tiny_bert_dir, tiny_csvs, tmp_path):
    """Run ``bertlab fit`` on the tiny config with some arguments changed; later arguments win."""
    root = tmp_path / "run"

    def run(*extra):
        return run_cli(
            "fit",
            *tiny_args(tiny_bert_dir, tiny_csvs, str(root), str(tmp_path / "cache")),
            "--trainer.max_epochs",
            "1",
            *extra,
        )

    run.root = root
    return run


def _write_bytes(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


# ------------------------------------------------------------ labelled data


def test_missing_train_file(fit, tmp_path):
    missing = str(tmp_path / "nope" / "train.csv")
    assert_error(fit("--data.splits.train_file", missing), fit.root, f"data file {missing!r} does not exist")


@pytest.mark.parametrize("option", ["--data.splits.text_column", "--data.splits.label_column"])
def test_missing_column_lists_the_columns(fit, tiny_csvs, option):
    assert_error(
        fit(option, "body"), fit.root, f"{tiny_csvs['train']}: no column 'body'; the columns are 'text', 'label'"
    )


def test_empty_and_whitespace_texts_are_rejected_with_rows(fit, tmp_path):
    path = _write_bytes(
        tmp_path / "empty.csv", b"text,label\nthe tea was great,pos\n   ,neg\nbland coffee,neg\n,pos\nlovely box,pos\n"
    )
    # rows are the file's line numbers (line 1 is the header)
    assert_error(
        fit("--data.splits.train_file", path),
        fit.root,
        f"{path}: 2 empty or whitespace-only text(s) in column 'text'",
        "row(s) [3, 5]",
    )


def test_nan_labels_are_rejected(fit, tmp_path):
    path = _write_bytes(
        tmp_path / "nan.csv",
        b"text,label\nthe tea was great,pos\nbland coffee,\nlovely box,pos\nawful tea,NaN\nstale,neg\n",
    )
    assert_error(
        fit("--data.splits.train_file", path), fit.root, f"{path}: 2 missing (NaN/empty) label(s) in column 'label'"
    )


def test_val_label_missing_from_train(fit, tmp_path):
    path = _write_bytes(tmp_path / "val.csv", b"text,label\nthe tea was great,pos\nbland coffee,meh\nlovely box,neg\n")
    assert_error(
        fit("--data.splits.val_file", path),
        fit.root,
        f"{path}: label(s) ['meh'] do not occur in the training data (labels: ['neg', 'pos'])",
    )


def test_non_utf8_file_names_the_byte_offset(fit, tmp_path):
    data = "text,label\nthe tea was great,pos\nbland café,neg\nlovely box,pos\n".encode("latin-1")
    path = _write_bytes(tmp_path / "latin1.csv", data)
    offset = data.index(b"\xe9")
    assert offset == 42
    assert_error(
        fit("--data.splits.train_file", path), fit.root, f"{path}: not valid UTF-8 at byte offset 42 (byte 0xe9)"
    )


# ------------------------------------------------------------ models and config


def test_model_directory_that_does_not_exist(fit, tmp_path):
    missing = str(tmp_path / "no_model")
    assert_error(
        fit("--model.model_name_or_path", missing),
        fit.root,
        f"model {missing!r} is not a model directory (it does not exist)",
    )


def test_model_directory_without_tokenizer(fit, tiny_bert_dir, tmp_path):
    bare = tmp_path / "weights_only"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(tiny_bert_dir, name), bare / name)
    assert_error(fit("--model.model_name_or_path", str(bare)), fit.root, f"model directory {str(bare)!r}", "tokenizer")


@pytest.mark.parametrize(
    "option,value,section",
    [
        ("--model.init_args.no_such_key", "1", "model"),
        ("--data.init_args.txt_column", "text", "data"),
    ],
)
def test_unknown_config_key_is_jsonargparse_error(fit, option, value, section):
    proc = fit(option, value)
    key = option.rsplit(".", 1)[1]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert f'error: Parser key "{section}":' in proc.stderr
    assert f"Option '{key}' is not accepted" in proc.stderr
    assert_nothing_written(fit.root)


def test_conflicting_trainer_settings_are_one_error_line(fit):
    """Lightning's MisconfigurationException is the user's to fix: one line, not a traceback."""
    assert_error(
        fit("--trainer.enable_checkpointing", "false"),
        fit.root,
        "the trainer configuration: Trainer was configured with `enable_checkpointing=False` but found "
        "`ModelCheckpoint`",
    )


# ------------------------------------------------------------ predict with another label set


@pytest.fixture(scope="module")
def two_label_checkpoint(tiny_bert_dir, tiny_csvs, tmp_path_factory):
    root = tmp_path_factory.mktemp("two_labels")
    proc = run_cli(
        "fit", *tiny_args(tiny_bert_dir, tiny_csvs, str(root), str(root / "cache")), "--trainer.max_epochs", "1"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((root / "export" / "bertlab_export.json").read_text())
    assert os.path.isfile(info["checkpoint"])
    return info["checkpoint"]


def test_predict_with_a_checkpoint_of_another_label_count(two_label_checkpoint, tiny_bert_dir, tiny_csvs, tmp_path):
    texts, labels = make_texts(60, seed=8)
    labels = [lab if i % 3 else "meh" for i, lab in enumerate(labels)]
    three = tmp_path / "three.csv"
    pd.DataFrame({"text": texts, "label": labels}).to_csv(three, index=False)
    root, out = tmp_path / "predict", tmp_path / "predict" / "pred.csv"
    args = tiny_args(tiny_bert_dir, tiny_csvs, str(root), str(tmp_path / "cache"))
    proc = run_cli(
        "predict",
        *args,
        "--data.splits.train_file",
        str(three),
        "--data.splits.predict_file",
        tiny_csvs["test"],
        "--ckpt_path",
        two_label_checkpoint,
        "--predictions.output_path",
        str(out),
    )
    assert_error(proc, root, "the checkpoint was trained with 2 labels but the data has 3 (['meh', 'neg', 'pos'])")
    assert not out.exists()


# ------------------------------------------------------------ MLM stage


@pytest.fixture
def mlm_fit(tiny_bert_dir, tmp_path):
    root = tmp_path / "mlm"

    def run(*extra):
        return run_cli("fit", *mlm_args(tiny_bert_dir, str(tmp_path / "cache"), str(root), *extra))

    run.root = root
    return run


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(make_texts(100, seed=9)[0]) + "\n")
    return f"[{path}]"


def test_mlm_empty_corpus(mlm_fit, tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n   \n\t\n")
    assert_error(
        mlm_fit("--data.init_args.corpus", f"[{blank}]"),
        mlm_fit.root,
        f"the MLM corpus is empty after reading {blank}",
    )


def test_mlm_probability_out_of_range(mlm_fit, corpus):
    proc = mlm_fit("--data.init_args.corpus", corpus, "--data.init_args.masker.init_args.mlm_probability", "1.5")
    assert_error(proc, mlm_fit.root, "mlm_probability must be strictly between 0 and 1, got 1.5")


def test_mlm_replacement_split_must_sum_to_one(mlm_fit, corpus):
    proc = mlm_fit(
        "--data.init_args.corpus",
        corpus,
        "--data.init_args.masker.init_args.replace_prob",
        "0.5",
    )
    assert_error(proc, mlm_fit.root, "replace_prob + random_prob + keep_prob must sum to 1, got 0.7")


def test_a_misspelt_masker_setting_is_refused(mlm_fit, corpus):
    proc = mlm_fit("--data.init_args.corpus", corpus, "--data.init_args.masker.init_args.mlm_probabilty", "0.2")
    assert proc.returncode == 2 and "mlm_probabilty" in proc.stderr


# ------------------------------------------------------------ pipelines


def test_pipeline_stage_with_a_missing_config(tmp_path):
    path = tmp_path / "p.yaml"
    missing = str(tmp_path / "no_such.yaml")
    path.write_text(
        yaml.safe_dump(
            {"stages": [{"name": "first", "config": [TINY_CONFIG]}, {"name": "second", "config": [missing]}]}
        )
    )
    root = tmp_path / "root"
    assert_error(
        run_cli("pipeline", str(path), "--root", str(root)),
        None,
        f"{path}: stage 2 (second): config file {missing!r} does not exist",
    )
    assert not root.exists()


def test_pipeline_stage_whose_previous_export_is_missing(tiny_bert_dir, tiny_csvs, tmp_path):
    path = tmp_path / "p.yaml"
    # a validate stage exports nothing, so the fit after it (init_from: previous, the default) has nothing to start from
    first = {
        "name": "check",
        "subcommand": "validate",
        "config": [TINY_CONFIG],
        "init_from": "none",
        "args": {
            "model.init_args.model_name_or_path": tiny_bert_dir,
            "data.init_args.splits.train_file": tiny_csvs["train"],
            "data.init_args.splits.val_file": tiny_csvs["val"],
            "data.init_args.cache_dir": str(tmp_path / "cache"),
        },
    }
    path.write_text(yaml.safe_dump({"stages": [first, {"name": "tune", "config": [TINY_CONFIG]}]}))
    root = tmp_path / "root"
    assert_error(
        run_cli("pipeline", str(path), "--root", str(root)),
        None,
        "stage tune starts from 'check', a `validate` stage that exports nothing; set `init_from: none` or name a "
        "fit stage",
    )
    assert not root.exists()  # found before any stage ran
