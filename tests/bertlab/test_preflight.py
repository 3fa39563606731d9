"""Bad input, table-driven, through ``bertlab.cli.main`` in this process (``bertlab/preflight.py`` and the data's
own checks): exit code 2, one ``bertlab: error:`` line naming the problem, no traceback, nothing written.

Every case fails before a model loads, so the table runs in seconds; ``test_bad_input.py`` runs the CLI as a
subprocess for the cases that need one."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import shutil
import stat
import subprocess
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import yaml

from bertlab.cli import main
from bertlab.core.files import _owner
from tests.bertlab.cli_helpers import tiny_args
from tests.bertlab.test_bad_input import TINY_CONFIG, assert_error
from tests.conftest import make_texts


def run_main(*argv: str) -> SimpleNamespace:
    """``bertlab ARGV`` in this process: its exit code and what it wrote to stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:  # jsonargparse's own errors
            code = e.code
    return SimpleNamespace(returncode=code, stderr=err.getvalue())


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


class Evil:
    """Pickled into a checkpoint: ``weights_only=True`` refuses to build it."""

    def __reduce__(self):
        return (print, ("this should never run",))


def _model_copy(src: str, dst, drop=(), write: dict | None = None) -> str:
    shutil.copytree(src, dst)
    for name in drop:
        os.remove(os.path.join(dst, name))
    for name, data in (write or {}).items():
        with open(os.path.join(dst, name), "wb") as f:
            f.write(data)
    return str(dst)


@pytest.fixture(scope="module")
def p(tmp_path_factory, tiny_bert_dir, tiny_csvs):
    """Every bad file and directory the table refers to, by name."""
    d = tmp_path_factory.mktemp("preflight")
    out = {"d": str(d), "model": tiny_bert_dir, **tiny_csvs}

    def put(name: str, data) -> str:
        path = d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        out[name.replace(".", "_").replace("/", "_")] = str(path)
        return str(path)

    texts, _ = make_texts(40, seed=5)
    put("header_only.csv", "text,label\n")
    put("empty.csv", "")
    put("one_class.csv", "text,label\n" + "".join(f"{t},pos\n" for t in texts))
    put("test_meh.csv", "text,label\nthe tea was great,pos\nbland coffee,meh\n")
    put("csv_as.parquet", "text,label\nthe tea was great,pos\n")
    put("broken.parquet", b"PAR1" + os.urandom(64) + b"PAR1")
    put("broken.jsonl", '{"text": "the tea", "label": "pos"}\n{"text": "bland\n')
    put("data.xlsx", "text,label\n")
    put("latin1_val.csv", "text,label\nbland café,neg\n".encode("latin-1"))
    put("no_label.tsv", "text\tstars\nthe tea was great\t5\n")
    put("not_a_dataset/readme.txt", "hello")
    put("file", "a file where a directory should be")
    zh = ["这个茶叶非常好喝", "咖啡很难喝", "盒子坏了", "味道不错"] * 10
    pd.DataFrame({"text": zh, "label": ["pos", "neg"] * 20}).to_csv(d / "chinese.csv", index=False)
    out["chinese_csv"] = str(d / "chinese.csv")
    put("bad.yaml", "trainer:\n  max_epochs: 1\n   devices: 1\n")
    put("tab.yaml", "model:\n\tinit_args: {}\n")
    put("ckpt/garbage.ckpt", os.urandom(256))
    put("ckpt/text.ckpt", "not a checkpoint\n")
    put("ckpt/empty.ckpt", b"")
    os.makedirs(d / "ckpt" / "dir.ckpt")
    out["ckpt_dir"] = str(d / "ckpt" / "dir.ckpt")
    evil = d / "ckpt" / "evil.ckpt"
    torch.save({"state_dict": {}, "hook": Evil()}, evil)
    out["ckpt_evil"] = str(evil)
    torch.save({"state_dict": {"w": torch.ones(4000)}, "epoch": 1}, d / "ckpt" / "truncated.ckpt")
    put("ckpt/truncated.ckpt", (d / "ckpt" / "truncated.ckpt").read_bytes()[:3000])
    with open(d / "ckpt" / "pickle.ckpt", "wb") as f:
        pickle.dump({"state_dict": {}}, f)
    out["ckpt_pickle"] = str(d / "ckpt" / "pickle.ckpt")

    weights = open(os.path.join(tiny_bert_dir, "model.safetensors"), "rb").read()
    out["m_garbage"] = _model_copy(tiny_bert_dir, d / "m_garbage", write={"model.safetensors": os.urandom(2048)})
    out["m_truncated"] = _model_copy(
        tiny_bert_dir, d / "m_truncated", write={"model.safetensors": weights[: len(weights) // 2]}
    )
    out["m_empty_weights"] = _model_copy(tiny_bert_dir, d / "m_empty_weights", write={"model.safetensors": b""})
    out["m_no_weights"] = _model_copy(tiny_bert_dir, d / "m_no_weights", drop=["model.safetensors"])
    out["m_bad_config"] = _model_copy(tiny_bert_dir, d / "m_bad_config", write={"config.json": b'{"model_type": "be'})
    out["m_list_config"] = _model_copy(tiny_bert_dir, d / "m_list_config", write={"config.json": b"[1, 2]"})
    out["m_no_config"] = _model_copy(tiny_bert_dir, d / "m_no_config", drop=["config.json"])
    out["m_bad_tokenizer"] = _model_copy(
        tiny_bert_dir, d / "m_bad_tokenizer", write={"tokenizer.json": b'{"version": "1.0", "trunc'}
    )

    # a checkpoint whose model (its saved hyperparameters) is a damaged directory
    hparams = {"_class_path": "lightning_modules.classifier.TextClassifier", "model_name_or_path": out["m_truncated"]}
    torch.save({"state_dict": {}, "hyper_parameters": hparams}, d / "ckpt" / "damaged_model.ckpt")
    out["ckpt_damaged_model_ckpt"] = str(d / "ckpt" / "damaged_model.ckpt")

    stages = {"name": "first", "config": [TINY_CONFIG]}
    put(
        "pipe_typo.yaml",
        yaml.safe_dump(
            {
                "stages": [
                    stages,
                    {"name": "second", "config": [TINY_CONFIG], "args": {"data.init_args.cache_dir": "{exprot:first}"}},
                ]
            }
        ),
    )
    put(
        "pipe_later.yaml",
        yaml.safe_dump(
            {
                "stages": [
                    {**stages, "args": {"data.init_args.cache_dir": "{dir:second}"}},
                    {"name": "second", "config": [TINY_CONFIG]},
                ]
            }
        ),
    )
    put("pipe_syntax.yaml", "stages:\n  - name: first\n    config: [" + TINY_CONFIG + "\n")
    put("pipe_stage_yaml.yaml", yaml.safe_dump({"stages": [stages, {"name": "second", "config": [out["bad_yaml"]]}]}))
    put("abl_yaml.yaml", yaml.safe_dump({"base": [TINY_CONFIG], "arms": [{"name": "a", "config": [out["bad_yaml"]]}]}))
    put(
        "abl_pipe.yaml",
        yaml.safe_dump({"base": [TINY_CONFIG], "arms": [{"name": "a", "pipeline": out["pipe_typo_yaml"]}]}),
    )
    put("abl_syntax.yaml", "arms: [{name: a}\n")
    data = {
        "model.init_args.model_name_or_path": tiny_bert_dir,
        "data.init_args.splits.train_file": tiny_csvs["train"],
        "data.init_args.splits.val_file": tiny_csvs["val"],
        "data.init_args.cache_dir": str(d / "cache"),
    }
    first = {"name": "first", "config": [TINY_CONFIG], "init_from": "none", "args": data}
    second = {"name": "second", "config": [TINY_CONFIG]}
    put("pipe_lr.yaml", yaml.safe_dump({"stages": [first, {**second, "args": {"model.init_args.lr": 0}}]}))
    missing = {"data.init_args.splits.val_file": str(d / "gone.csv")}
    put("pipe_data.yaml", yaml.safe_dump({"stages": [first, {**second, "args": missing}]}))
    arms = [{"name": "fine", "args": data}, {"name": "bad", "args": {**data, "data.init_args.loader.batch_size": 0}}]
    put("abl_args.yaml", yaml.safe_dump({"base": [TINY_CONFIG], "root": str(d / "abl"), "arms": arms}))
    return out


# (id, subcommand or "pipeline"/"ablate", arguments, needles); "{name}" in either is a path from ``p``.
CASES = [
    # ---- data files, blamed by name
    ("train header only", "fit", ["--data.splits.train_file", "{header_only_csv}"], ["{header_only_csv}: no rows"]),
    ("val header only", "fit", ["--data.splits.val_file", "{header_only_csv}"], ["{header_only_csv}: no rows"]),
    ("test header only", "test", ["--data.splits.test_file", "{header_only_csv}"], ["{header_only_csv}: no rows"]),
    ("train 0 bytes", "fit", ["--data.splits.train_file", "{empty_csv}"], ["{empty_csv}: the file is empty"]),
    ("val 0 bytes", "fit", ["--data.splits.val_file", "{empty_csv}"], ["{empty_csv}: the file is empty"]),
    ("one class", "fit", ["--data.splits.train_file", "{one_class_csv}"], ["{one_class_csv}", "1 class(es)"]),
    ("unseen test label", "test", ["--data.splits.test_file", "{test_meh_csv}"], ["{test_meh_csv}", "['meh']"]),
    ("csv named parquet", "fit", ["--data.splits.train_file", "{csv_as_parquet}"], ["{csv_as_parquet}: not a Parquet"]),
    ("broken parquet", "fit", ["--data.splits.train_file", "{broken_parquet}"], ["{broken_parquet}: cannot read as"]),
    (
        "broken jsonl",
        "fit",
        ["--data.splits.train_file", "{broken_jsonl}"],
        ["{broken_jsonl}", "cannot parse as jsonl"],
    ),
    ("unknown format", "fit", ["--data.splits.train_file", "{data_xlsx}"], ["unknown data format '.xlsx'"]),
    ("dir not a dataset", "fit", ["--data.splits.train_file", "{d}/not_a_dataset"], ["not a datasets.save_to_disk"]),
    ("val not utf-8", "fit", ["--data.splits.val_file", "{latin1_val_csv}"], ["{latin1_val_csv}: not valid UTF-8"]),
    ("tsv no label", "fit", ["--data.splits.train_file", "{no_label_tsv}"], ["{no_label_tsv}: no column 'label'"]),
    ("missing val", "fit", ["--data.splits.val_file", "{d}/no/val.csv"], ["data file '{d}/no/val.csv' does not"]),
    ("missing predict", "predict", ["--data.splits.predict_file", "{d}/p.csv"], ["data file '{d}/p.csv' does not"]),
    ("no pair column", "fit", ["--data.splits.text_pair_column", "hyp"], ["{train}: no column 'hyp'"]),
    ("unk", "fit", ["--data.splits.train_file", "{chinese_csv}"], ["{chinese_csv}: ", "[UNK]", "'茶'", "max_unk"]),
    ("soft labels missing", "fit", ["--data.soft_labels_file", "{d}/soft.npz"], ["soft_labels_file '{d}/soft.npz'"]),
    ("predict_split", "predict", ["--data.predict_split", "dev"], ["predict_split must be one of"]),
    (
        "unknown source",
        "fit",
        ["--data.splits.train_file", "null", "--data.splits.source", "imdb"],
        ["unknown data source 'imdb'"],
    ),
    ("no data", "fit", ["--data.splits.train_file", "null"], ["give data"]),
    # ---- conflicting settings
    ("source + train_file", "fit", ["--data.splits.source", "fine_food"], ["source 'fine_food' conflicts with"]),
    ("predict nothing", "predict", [], ["predict has nothing to predict"]),
    # ---- outputs
    ("root under a file", "fit", ["--trainer.default_root_dir", "{file}/run"], ["default_root_dir", "is under a file"]),
    ("root is a file", "fit", ["--trainer.default_root_dir", "{file}"], ["default_root_dir '{file}' is a file"]),
    ("export under file", "fit", ["--export.dirpath", "{file}/x/export"], ["export.dirpath", "is under a file"]),
    ("cache under file", "fit", ["--data.cache_dir", "{file}/cache"], ["data.cache_dir", "is under a file"]),
    (
        "predictions under a file",
        "predict",
        ["--data.splits.predict_file", "{test}", "--predictions.output_path", "{file}/pred.csv"],
        ["predictions.output_path", "is under a file"],
    ),
    (
        "predictions is a dir",
        "predict",
        ["--data.splits.predict_file", "{test}", "--predictions.output_path", "{d}"],
        ["predictions.output_path '{d}' is a directory"],
    ),
    # ---- the model directory
    (
        "max_length > positions",
        "fit",
        ["--data.max_length", "100"],
        ["max_length 100 is longer", "--data.max_length 64"],
    ),
    (
        "garbage weights",
        "fit",
        ["--model.model_name_or_path", "{m_garbage}"],
        ["{m_garbage}/model.safetensors: corrupt"],
    ),
    ("truncated weights", "fit", ["--model.model_name_or_path", "{m_truncated}"], ["{m_truncated}/model.safetensors"]),
    ("0-byte weights", "fit", ["--model.model_name_or_path", "{m_empty_weights}"], ["model.safetensors: corrupt"]),
    ("no weights", "fit", ["--model.model_name_or_path", "{m_no_weights}"], ["{m_no_weights}' has no weights"]),
    ("bad config.json", "fit", ["--model.model_name_or_path", "{m_bad_config}"], ["{m_bad_config}/config.json: not"]),
    ("list config.json", "fit", ["--model.model_name_or_path", "{m_list_config}"], ["config.json: not a model config"]),
    ("no config.json", "fit", ["--model.model_name_or_path", "{m_no_config}"], ["(no config.json there)"]),
    ("bad tokenizer", "fit", ["--model.model_name_or_path", "{m_bad_tokenizer}"], ["no usable tokenizer"]),
    ("model is a file", "fit", ["--model.model_name_or_path", "{file}"], ["model '{file}' is not a model directory"]),
    # ---- --ckpt_path
    ("ckpt missing", "validate", ["--ckpt_path", "{d}/none.ckpt"], ["--ckpt_path '{d}/none.ckpt' does not exist"]),
    ("ckpt is a dir", "test", ["--ckpt_path", "{ckpt_dir}"], ["(it is a directory)"]),
    ("ckpt garbage", "validate", ["--ckpt_path", "{ckpt_garbage_ckpt}"], ["'{ckpt_garbage_ckpt}' does not load"]),
    ("ckpt text", "test", ["--ckpt_path", "{ckpt_text_ckpt}"], ["'{ckpt_text_ckpt}' does not load"]),
    ("ckpt empty", "fit", ["--ckpt_path", "{ckpt_empty_ckpt}"], ["'{ckpt_empty_ckpt}' does not load"]),
    ("ckpt pickle", "validate", ["--ckpt_path", "{ckpt_pickle}"], ["'{ckpt_pickle}' does not load"]),
    ("ckpt truncated", "validate", ["--ckpt_path", "{ckpt_truncated_ckpt}"], ["'{ckpt_truncated_ckpt}' does not"]),
    ("ckpt truncated, test", "test", ["--ckpt_path", "{ckpt_truncated_ckpt}"], ["'{ckpt_truncated_ckpt}' does not"]),
    (
        "ckpt truncated, predict",
        "predict",
        ["--data.splits.predict_file", "{test}", "--ckpt_path", "{ckpt_truncated_ckpt}"],
        ["'{ckpt_truncated_ckpt}' does not"],
    ),
    (
        "ckpt's model damaged",
        "validate",
        ["--ckpt_path", "{ckpt_damaged_model_ckpt}"],
        ["{m_truncated}/model.safetensors: corrupt or truncated"],
    ),
    (
        "ckpt's model damaged, predict",
        "predict",
        ["--data.splits.predict_file", "{test}", "--ckpt_path", "{ckpt_damaged_model_ckpt}"],
        ["{m_truncated}/model.safetensors: corrupt or truncated"],
    ),
    (
        "damaged model, test",
        "test",
        ["--model.model_name_or_path", "{m_truncated}"],
        ["{m_truncated}/model.safetensors: corrupt or truncated"],
    ),
    ("ckpt objects", "fit", ["--ckpt_path", "{ckpt_evil}"], ["'{ckpt_evil}' does not load", "bertlab saved"]),
    # ---- hyperparameters in range
    ("lr 0", "fit", ["--model.lr", "0"], ["--model.lr must be > 0, got 0"]),
    ("lr < 0", "fit", ["--model.lr=-1e-3"], ["--model.lr must be > 0, got -0.001"]),
    ("weight decay < 0", "fit", ["--model.weight_decay=-0.1"], ["--model.weight_decay must be >= 0"]),
    ("warmup_ratio", "fit", ["--model.warmup_ratio", "1.5"], ["--model.warmup_ratio must be in [0, 1), got 1.5"]),
    ("layer_decay", "fit", ["--model.layer_decay", "0"], ["layer_decay must be in (0, 1]"]),
    ("batch_size 0", "fit", ["--data.loader.batch_size", "0"], ["--data.loader.batch_size must be >= 1, got 0"]),
    ("eval batch 0", "validate", ["--data.loader.eval_batch_size", "0"], ["--data.loader.eval_batch_size must be"]),
    ("num_workers", "fit", ["--data.loader.num_workers=-1"], ["--data.loader.num_workers must be >= 0"]),
    ("max_length 1", "fit", ["--data.max_length", "1"], ["--data.max_length must be >= 2, got 1"]),
    ("truncation", "fit", ["--data.truncation", "middle"], ["truncation"]),
    ("val_fraction", "fit", ["--data.splits.val_file", "null", "--data.splits.val_fraction", "1.5"], ["val_fraction"]),
    ("max_unk_fraction", "fit", ["--data.max_unk_fraction", "2"], ["--data.max_unk_fraction must be in [0, 1]"]),
    ("max_epochs 0", "fit", ["--trainer.max_epochs", "0"], ["--trainer.max_epochs must be >= 1 (or -1"]),
    ("max_steps 0", "fit", ["--trainer.max_steps", "0"], ["--trainer.max_steps must be >= 1 (or -1"]),
    ("accumulate 0", "fit", ["--trainer.accumulate_grad_batches", "0"], ["accumulate_grad_batches must be >= 1"]),
    ("clip < 0", "fit", ["--trainer.gradient_clip_val=-1"], ["--trainer.gradient_clip_val must be >= 0"]),
    # ---- YAML files
    ("yaml syntax", "fit", ["--config", "{bad_yaml}"], ["{bad_yaml}: YAML syntax error at line 3"]),
    ("yaml tab", "fit", ["--config", "{tab_yaml}"], ["{tab_yaml}: YAML syntax error at line 2"]),
    ("yaml missing", "fit", ["--config", "{d}/nope.yaml"], ["config file '{d}/nope.yaml' does not exist"]),
    # ---- pipelines and ablations: checked before the first stage or arm trains
    (
        "pipeline placeholder",
        "pipeline",
        ["{pipe_typo_yaml}"],
        ["stage second", "unknown placeholder {{exprot:first}}"],
    ),
    ("pipeline later stage", "pipeline", ["{pipe_later_yaml}"], ["stage first: a placeholder names 'second'"]),
    ("pipeline syntax", "pipeline", ["{pipe_syntax_yaml}"], ["{pipe_syntax_yaml}: YAML syntax error"]),
    ("pipeline stage yaml", "pipeline", ["{pipe_stage_yaml_yaml}"], ["{bad_yaml}: YAML syntax error at line 3"]),
    ("ablation arm yaml", "ablate", ["{abl_yaml_yaml}"], ["{bad_yaml}: YAML syntax error at line 3"]),
    ("ablation pipeline", "ablate", ["{abl_pipe_yaml}"], ["unknown placeholder {{exprot:first}}"]),
    ("ablation syntax", "ablate", ["{abl_syntax_yaml}"], ["{abl_syntax_yaml}: YAML syntax error"]),
    ("pipeline stage 2 lr", "pipeline", ["{pipe_lr_yaml}"], ["--model.lr must be > 0, got 0"]),
    ("pipeline stage 2 data", "pipeline", ["{pipe_data_yaml}"], ["data file '{d}/gone.csv' does not exist"]),
    ("ablation arm 2 batch", "ablate", ["{abl_args_yaml}"], ["--data.loader.batch_size must be >= 1, got 0"]),
]


@pytest.mark.parametrize("name,sub,args,needles", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line(p, tmp_path, name, sub, args, needles):
    root = tmp_path / "run"
    args = [a.format(**p) for a in args]
    if sub in ("pipeline", "ablate"):
        argv = [sub, *args, *(["--root", str(root)] if sub == "pipeline" else [])]
    else:
        base = tiny_args(p["model"], p, str(root), str(tmp_path / "cache"))
        argv = [sub, *base, "--trainer.max_epochs", "1", *args]
    assert_error(run_main(*argv), root, *(n.format(**p) for n in needles))
    assert not root.exists() or not os.listdir(root)  # nothing ran: no logs, no checkpoints
    assert not os.path.exists(os.path.join(p["d"], "abl"))  # no arm of an ablation ran


def test_the_table_is_large_enough():
    assert len(CASES) + 17 >= 60  # with test_bad_input.py's cases


def test_a_checkpoint_that_bertlab_saved_passes_the_check(tiny_bert_dir, tiny_csvs, tmp_path):
    """The ``weights_only=True`` check must not refuse the checkpoints that bertlab itself saves; a run sweeps
    what a killed run left beside its export and in its cache."""
    root = tmp_path / "run"
    args = tiny_args(tiny_bert_dir, tiny_csvs, str(root), str(tmp_path / "cache"))
    host, dead = _owner().rsplit("-", 1)[0], _dead_pid()
    debris = [root / f".export.{host}-{dead}.k1ll3d", tmp_path / "cache" / "tokens" / f".abc.{host}-{dead}.x"]
    for path in debris:
        path.mkdir(parents=True)
    assert run_main("fit", *args, "--trainer.max_epochs", "1").returncode == 0
    assert [p for p in debris if p.exists()] == []
    ckpt = next((root / "checkpoints").glob("*.ckpt"))
    proc = run_main("validate", *args, "--ckpt_path", str(ckpt))
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_unk_check_can_be_overridden(p, tmp_path):
    root = tmp_path / "run"
    args = tiny_args(p["model"], p, str(root), str(tmp_path / "cache"))
    proc = run_main("validate", *args, "--data.splits.train_file", p["chinese_csv"], "--data.max_unk_fraction", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_root(p, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        args = tiny_args(p["model"], p, str(locked / "run"), str(tmp_path / "cache"))
        assert_error(run_main("fit", *args), None, "default_root_dir", "is not writable")
    finally:
        locked.chmod(stat.S_IRWXU)


def test_a_stage_that_starts_from_a_damaged_export_is_refused_before_anything_runs(p, tmp_path):
    """``init_from`` gets the check ``fit`` runs on its model directory: an earlier stage's export that a crash or a
    copy damaged is named before the first stage trains."""
    from bertlab.pipeline_spec import export_dir

    root = tmp_path / "root"
    shutil.copytree(p["m_truncated"], export_dir(str(root), "first"))
    data = {
        "model.init_args.model_name_or_path": p["model"],
        "data.init_args.splits.train_file": p["train"],
        "data.init_args.splits.val_file": p["val"],
        "data.init_args.cache_dir": str(tmp_path / "cache"),
    }
    path = tmp_path / "p.yaml"
    first = {"name": "first", "config": [TINY_CONFIG], "init_from": "none", "args": data}
    path.write_text(yaml.safe_dump({"stages": [first, {"name": "second", "config": [TINY_CONFIG]}]}))
    proc = run_main("pipeline", str(path), "--root", str(root))
    assert_error(proc, None, f"{export_dir(str(root), 'first')}/model.safetensors: corrupt or truncated")
    assert os.listdir(root) == ["first"] and os.listdir(root / "first") == ["export"]
