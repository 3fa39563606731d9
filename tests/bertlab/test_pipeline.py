"""``bertlab pipeline`` on a tiny 2-stage pipeline (a from-scratch BERT, then a classifier fit), and ablation
reports."""

import json
import os
import struct

import pytest
import yaml

from bertlab.ablation_report import mean_std, write_report
from bertlab.ablation_spec import Ablation, Arm, load_ablation, parse_seeds
from bertlab.core.errors import BertlabError
from bertlab.pipeline import main, parse_overrides, run_pipeline
from bertlab.pipeline_spec import load_pipeline
from tests.bertlab.cli_helpers import ROOT, run_cli
from tests.conftest import make_texts

TINY_CONFIG = os.path.join(ROOT, "tests/configs/tiny_test.yaml")


def _json(path) -> dict:
    with open(path) as f:
        return json.load(f)


def _read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


def _write(path, spec: dict) -> str:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def _spec(corpus: str, csvs: dict, init_extra=(), finetune_extra=None) -> dict:
    return {
        "name": "tiny",
        "stages": [
            {
                "name": "init",
                "kind": "init_model",
                "args": [
                    "--corpus",
                    corpus,
                    "--vocab-size",
                    "120",
                    "--hidden",
                    "32",
                    "--layers",
                    "1",
                    "--heads",
                    "2",
                    "--max-position",
                    "64",
                    *init_extra,
                ],
            },
            {
                "name": "finetune",
                "config": [TINY_CONFIG],
                "args": {
                    "data.init_args.splits.train_file": csvs["train"],
                    "data.init_args.splits.val_file": csvs["val"],
                    "data.init_args.cache_dir": "{root}/cache",
                    "trainer.max_epochs": 1,
                    "trainer.limit_train_batches": 3,
                    "wandb.name": "{export:init}|{dir:init}|{root}",
                    **(finetune_extra or {}),
                },
            },
        ],
    }


def _statuses(root) -> dict:
    return {s["name"]: s["status"] for s in _json(os.path.join(root, "summary.json"))["stages"]}


def _mtimes(root) -> dict:
    return {
        name: os.stat(os.path.join(root, name, "export", "model.safetensors")).st_mtime_ns
        for name in ("init", "finetune")
    }


def _assert_one_checkpoint(root) -> None:
    """The stage's checkpoints folder holds the checkpoint its export names, and nothing from an earlier run."""
    exported = _json(os.path.join(root, "finetune", "export", "bertlab_export.json"))["checkpoint"]
    assert os.listdir(os.path.join(root, "finetune", "checkpoints")) == [os.path.basename(exported)]


def _stage_config(root, name="finetune") -> dict:
    return yaml.safe_load(_read(os.path.join(root, name, "config.yaml")))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_csvs):
    tmp = tmp_path_factory.mktemp("pipeline")
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n".join(make_texts(300, seed=0)[0]) + "\n")
    path, root = tmp / "tiny.yaml", str(tmp / "root")
    _write(path, _spec(str(corpus), tiny_csvs))
    proc = run_cli("pipeline", str(path), "--root", root)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    # a snapshot: the re-run test below changes the files
    return {
        "root": root,
        "path": path,
        "corpus": str(corpus),
        "stdout": proc.stdout,
        "summary": _json(os.path.join(root, "summary.json")),
        "summary_md": _read(os.path.join(root, "summary.md")),
        "config": _stage_config(root),
        "mtimes": _mtimes(root),
    }


def test_each_stage_starts_from_the_export_before_it(first_run):
    root = first_run["root"]
    assert first_run["config"]["model"]["init_args"]["model_name_or_path"] == os.path.join(root, "init", "export")
    scratch = _json(os.path.join(root, "init", "export", "config.json"))
    assert (
        scratch["hidden_size"],
        scratch["num_hidden_layers"],
        scratch["num_attention_heads"],
        scratch["max_position_embeddings"],
    ) == (32, 1, 2, 64)
    vocab = _json(os.path.join(root, "init", "export", "tokenizer.json"))["model"]["vocab"]
    assert scratch["vocab_size"] == len(vocab) <= 120
    tuned = _json(os.path.join(root, "finetune", "export", "config.json"))
    assert (
        tuned["id2label"] == {"0": "neg", "1": "pos"}
        and tuned["hidden_size"] == 32
        and tuned["vocab_size"] == scratch["vocab_size"]
    )


def test_placeholders_are_filled(first_run):
    root, config = first_run["root"], first_run["config"]
    assert config["wandb"]["name"] == f"{root}/init/export|{root}/init|{root}"
    assert config["data"]["init_args"]["cache_dir"] == f"{root}/cache"
    assert len(os.listdir(os.path.join(root, "cache", "tokens"))) == 2  # train, val


def test_summary_lists_every_stage(first_run):
    root, summary = first_run["root"], first_run["summary"]
    assert [(s["name"], s["kind"], s["status"], s["export"]) for s in summary["stages"]] == [
        ("init", "init_model", "ran", os.path.join(root, "init", "export")),
        ("finetune", "lightning", "ran", os.path.join(root, "finetune", "export")),
    ]
    fit = summary["stages"][1]["metrics"]["fit"]
    assert fit == _json(os.path.join(root, "finetune", "fit_metrics.json")) and 0.0 <= fit["val/acc"] <= 1.0
    assert summary["provenance"]["code"] == fit["provenance"]["code"]  # the stage and its pipeline: one code
    md = first_run["summary_md"].splitlines()
    assert md[2:4] == ["| stage | status | final validation | test | export |", "|---|---|---|---|---|"]
    assert md[4] == f"| init | ran |  |  | {root}/init/export |"
    assert md[5].startswith(
        f"| finetune | ran | val/acc {fit['val/acc']:.4f}, val/f1 {fit['val/f1']:.4f}, val/loss {fit['val/loss']:.4f} |"
    )
    assert md[5].endswith(f"| {root}/finetune/export |") and len(md) == 6
    assert first_run["summary_md"] in first_run["stdout"]  # the CLI prints the table


def test_reruns_skip_what_is_unchanged(first_run, tiny_csvs):
    root, path, corpus = first_run["root"], first_run["path"], first_run["corpus"]
    before = first_run["mtimes"]

    _assert_one_checkpoint(root)
    assert main([str(path), "--root", root]) == 0
    assert _statuses(root) == {"init": "skipped (unchanged)", "finetune": "skipped (unchanged)"}
    assert _mtimes(root) == before

    # the last stage's arguments changed: only it re-runs
    _write(path, _spec(corpus, tiny_csvs, finetune_extra={"trainer.limit_train_batches": 2}))
    assert main([str(path), "--root", root]) == 0
    assert _statuses(root) == {"init": "skipped (unchanged)", "finetune": "ran"}
    after = _mtimes(root)
    assert after["init"] == before["init"] and after["finetune"] > before["finetune"]
    assert _stage_config(root)["trainer"]["limit_train_batches"] == 2
    _assert_one_checkpoint(root)  # not the first run's step-3 checkpoint beside this run's

    # --set overrides one stage's argument
    assert main([str(path), "--root", root, "--set", "finetune.data.init_args.loader.batch_size=4"]) == 0
    assert _statuses(root) == {"init": "skipped (unchanged)", "finetune": "ran"}
    assert _stage_config(root)["data"]["init_args"]["loader"]["batch_size"] == 4
    _assert_one_checkpoint(root)  # the same name as the run before: Lightning would have written a -v1 beside it
    before, weights = _mtimes(root), _read(os.path.join(root, "init", "export", "model.safetensors"), "rb")

    # the first stage changed: both re-run, the second only because the first did
    _write(
        path, _spec(corpus, tiny_csvs, init_extra=["--seed", "1"], finetune_extra={"trainer.limit_train_batches": 2})
    )
    assert main([str(path), "--root", root, "--set", "finetune.data.init_args.loader.batch_size=4"]) == 0
    assert _statuses(root) == {"init": "ran", "finetune": "ran"}
    after = _mtimes(root)
    assert after["init"] > before["init"] and after["finetune"] > before["finetune"]
    assert (
        _read(os.path.join(root, "init", "export", "model.safetensors"), "rb") != weights
    )  # another seed, other weights


def test_a_stage_refused_at_its_start_leaves_no_folder(tmp_path, tiny_bert_dir, tiny_csvs):
    """The pipeline's pre-flight takes paths under its root on trust (an earlier stage may write them); the stage's
    own check then refuses the missing file, and nothing of the stage is left behind."""
    args = {
        "model.init_args.model_name_or_path": tiny_bert_dir,
        "data.init_args.splits.train_file": "{root}/missing.csv",
        "data.init_args.splits.val_file": tiny_csvs["val"],
        "data.init_args.cache_dir": str(tmp_path / "cache"),
    }
    path = _write(tmp_path / "p.yaml", {"stages": [{"name": "tune", "config": [TINY_CONFIG], "args": args}]})
    root = tmp_path / "root"
    with pytest.raises(BertlabError, match="stage tune failed with exit code 2"):
        run_pipeline(path, str(root))
    assert sorted(os.listdir(root)) == [".bertlab.lock"]  # no empty ROOT/tune


def test_bad_overrides():
    for item in ("finetune.trainer.max_epochs", "finetune=1", "finetune.=1"):
        with pytest.raises(BertlabError, match=r"expected STAGE\.KEY=VALUE"):
            parse_overrides([item])
    assert parse_overrides(["a.trainer.max_epochs=1", "a.data.x=y=z"]) == {
        "a": ["--trainer.max_epochs", "1", "--data.x", "y=z"]
    }


def test_skip_runs_a_shorter_pipeline_beside_the_full_one(tmp_path, monkeypatch):
    import bertlab.pipeline as pipeline

    stages = [{"name": n, "config": TINY_CONFIG} for n in ("a", "b", "c")]
    path = _write(tmp_path / "p.yaml", {"name": "p", "stages": stages})
    calls = []
    monkeypatch.setattr(pipeline, "run_stages", lambda stages, root, *rest: calls.append((stages, root)))
    run_pipeline(path, skip=["b"], overrides={"c": ["--trainer.max_steps", "2"]})
    run_pipeline(path, str(tmp_path / "mine"), skip=["a", "b"])
    assert [[s.name for s in c[0]] for c in calls] == [["a", "c"], ["c"]]
    assert calls[0][0][1].args == ["--trainer.max_steps", "2"]
    assert [c[1] for c in calls] == [os.path.join("runs", "p_without_b"), str(tmp_path / "mine")]
    with pytest.raises(BertlabError, match=r"--skip names stage 'd'; stages: \['a', 'b', 'c'\]"):
        run_pipeline(path, skip=["d"])


def test_set_naming_no_stage_is_an_error(tmp_path):
    path = _write(
        tmp_path / "p.yaml", {"stages": [{"name": "a", "config": TINY_CONFIG}, {"name": "b", "config": TINY_CONFIG}]}
    )
    with pytest.raises(BertlabError, match=r"--set names stage 'c'; stages: \['a', 'b'\]"):
        run_pipeline(path, str(tmp_path / "root"), overrides={"c": ["--trainer.max_epochs", "1"]})
    assert not os.path.exists(tmp_path / "root")


@pytest.mark.parametrize(
    "arg,message",
    [
        ("{export:nosuch}/x", r"stage first: a placeholder names 'nosuch', which is not an earlier stage"),
        ("{rot}/x", r"unknown placeholder \{rot\}"),
        ("{dir:}", r"a placeholder names '', which is not an earlier stage"),
        ("{prev}", r"stage first: \{prev\} in the first stage"),
        ("{ckpt:first}", r"stage first: a placeholder names 'first', which is not an earlier stage"),
    ],
)
def test_bad_placeholders_fail_before_the_stage_runs(tmp_path, arg, message):
    path = _write(
        tmp_path / "p.yaml",
        {"stages": [{"name": "first", "config": TINY_CONFIG, "init_from": "none", "args": {"wandb.name": arg}}]},
    )
    with pytest.raises(BertlabError, match=message):
        run_pipeline(path, str(tmp_path / "root"))
    assert not os.path.exists(tmp_path / "root" / "first")


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"stages": [{"name": "a", "confg": "x.yaml"}]}, r"stage 1: needs a `name`; unknown key\(s\) \['confg'\]"),
        ({"stages": [{"config": TINY_CONFIG}]}, r"stage 1: needs a `name`$"),
        (
            {"stages": [{"name": "a", "config": TINY_CONFIG}, {"name": "a", "config": TINY_CONFIG}]},
            r"stage names must be unique, got \['a', 'a'\]",
        ),
        (
            {"stages": [{"name": "a", "kind": "train"}]},
            r"stage 1 \(a\): unknown kind 'train'; kinds: lightning, init_model",
        ),
        (
            {"stages": [{"name": "a", "config": "no/such.yaml"}]},
            r"stage 1 \(a\): config file 'no/such.yaml' does not exist",
        ),
        ({"name": "p", "steps": []}, r"unknown key\(s\) \['steps'\]; a pipeline has name, root, stages"),
        ({"name": "p", "stages": []}, r"no stages"),
        ({"stages": [{"name": "a", "args": "--x 1"}]}, r"stage 1: `args` must be a mapping or a list, got str"),
    ],
)
def test_malformed_pipelines(tmp_path, spec, message):
    path = _write(tmp_path / "p.yaml", spec)
    with pytest.raises(BertlabError, match=message):
        load_pipeline(path)


def test_pipeline_root_defaults(tmp_path):
    path = _write(tmp_path / "my_pipe.yaml", {"stages": [{"name": "a", "config": TINY_CONFIG}]})
    assert load_pipeline(path)[0] == os.path.join("runs", "my_pipe")
    path = _write(
        tmp_path / "p.yaml",
        {
            "name": "named",
            "stages": [{"name": "a", "config": [TINY_CONFIG], "args": {"trainer.max_epochs": 2, "x": [1]}}],
        },
    )
    root, stages = load_pipeline(path)
    assert root == os.path.join("runs", "named")
    assert (stages[0].config, stages[0].args, stages[0].init_from) == (
        [TINY_CONFIG],
        ["--trainer.max_epochs", "2", "--x", "[1]"],
        "previous",
    )


# ------------------------------------------------------------ ablation reports


def test_mean_std_is_the_sample_std():
    mean, std = mean_std([0.8, 0.9, 1.0])
    assert mean == pytest.approx(0.9) and std == pytest.approx(0.1)
    assert mean_std([0.7]) == (0.7, 0.0)


def test_write_report_rows_and_plot(tmp_path):
    spec = Ablation(
        name="toy",
        root=str(tmp_path),
        seeds=[0, 1, 2],
        args=["--trainer.max_epochs", "1"],
        metrics=["test/acc", "test/f1"],
        baseline="base",
    )
    results = {
        "base": {"test/acc": [0.8, 0.9, 1.0], "test/f1": [0.7, 0.8, 0.9], "_runs": {}},
        "better": {"test/acc": [0.9, 0.95, 1.0], "test/f1": [0.75, 0.8, 0.85]},
        "pending": {},
    }
    text = write_report(spec, results, "bertlab ablate toy.yaml")
    assert text == (tmp_path / "results.md").read_text()
    lines = text.splitlines()
    assert lines[0] == "# Ablation `toy`"
    assert lines[2] == "Seeds: [0, 1, 2]. Same budget for every arm: `--trainer.max_epochs 1`."
    assert lines[3] == "Reproduce: `bertlab ablate toy.yaml`"
    assert lines[5].startswith("| arm | n | test/acc (mean ± std) | test/f1 (mean ± std) | Δ test/acc [95 % CI] |")
    assert lines[7:10] == [
        "| base | 3 | 0.9000 ± 0.1000 | 0.8000 ± 0.1000 | baseline | — | — | — | — | — |",
        "| better | 3 | 0.9500 ± 0.0500 | 0.8000 ± 0.0500 | — (no paired seeds) | — | — | — | — | — |",  # no `_runs`
        "| pending | 0 | — | — | — (no paired seeds) | — | — | — | — | — |",
    ]
    png = (tmp_path / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (480, 420)  # 4 x 3.5 inches at 120 dpi: two arms with results


# ------------------------------------------------------------ shared pre-training across seeds


def _ablation_with_pipeline(tmp_path, stages: list[dict], pretrain_seed=0) -> str:
    pipe = _write(tmp_path / "pipe.yaml", {"name": "pipe", "stages": stages})
    return _write(
        tmp_path / "abl.yaml",
        {
            "name": "abl",
            "root": str(tmp_path / "out"),
            "base": [TINY_CONFIG],
            "seeds": [0, 1, 2],
            "pretrain_seed": pretrain_seed,
            "args": {"trainer.max_epochs": 1},
            "arms": [{"name": "tapt", "pipeline": pipe}],
        },
    )


def test_pretrain_seed_runs_the_stages_before_the_last_once_and_each_seed_fine_tunes_from_them(tmp_path, monkeypatch):
    import bertlab.ablation as ablation
    import bertlab.ablation_run as ablation_run

    calls, done = [], set()

    def fake_run_stages(stages, root, label, force=False, extra_args=None, check_only=False):
        key = (root, tuple(s.name for s in stages))
        if check_only and key not in done:
            return None  # would run
        if not check_only:
            calls.append(([s.name for s in stages], root, list(extra_args), [list(s.args) for s in stages]))
            done.add(key)
        return {"stages": [{"metrics": {"test": {"test/acc": 0.5, "test/f1": 0.5}}}]}

    monkeypatch.setattr(ablation_run, "run_stages", fake_run_stages)
    path = _ablation_with_pipeline(
        tmp_path,
        [
            {"name": "mlm", "config": [TINY_CONFIG], "init_from": "none"},
            {"name": "finetune", "config": [TINY_CONFIG], "test": True},
        ],
        pretrain_seed=7,
    )
    ablation.run_ablation(path)
    shared_root = os.path.join(str(tmp_path / "out"), "tapt", "pretrain")
    pre = [c for c in calls if c[1] == shared_root]
    per_seed = [c for c in calls if c[1] != shared_root]
    assert calls[0][1] == shared_root  # the shared stages first, before any seed's run: parallel runs never race
    assert len(pre) == 1 and pre[0][0] == ["mlm"]  # then each seed's run finds them done and does not run them
    assert all(c[2][c[2].index("--seed_everything") + 1] == "7" for c in pre)
    assert [c[1] for c in per_seed] == [os.path.join(str(tmp_path / "out"), "tapt", f"seed{s}") for s in (0, 1, 2)]
    for seed, (names, _, extra, args) in zip((0, 1, 2), per_seed):
        assert names == ["finetune"]
        assert extra[:4] == ["--trainer.max_epochs", "1", "--seed_everything", str(seed)]
        assert args[0][-2:] == ["--model.init_args.model_name_or_path", os.path.join(shared_root, "mlm", "export")]


def test_an_arms_set_reaches_its_stage_in_the_shared_pre_training_and_in_the_preflight(tmp_path, monkeypatch):
    import bertlab.ablation as ablation
    import bertlab.ablation_run as ablation_run

    calls, checked = [], []

    def fake_run_stages(stages, root, label, force=False, extra_args=None, check_only=False):
        if not check_only:
            calls.append({s.name: list(s.args) for s in stages})
        return None if check_only else {"stages": [{"metrics": {"test": {"test/acc": 0.5, "test/f1": 0.5}}}]}

    monkeypatch.setattr(ablation_run, "run_stages", fake_run_stages)
    monkeypatch.setattr("bertlab.engine.preflight_stage", lambda cmd, pending: checked.append(cmd))
    stages = [
        {"name": "mlm", "config": [TINY_CONFIG], "init_from": "none", "args": {"trainer.max_steps": 2}},
        {"name": "finetune", "config": [TINY_CONFIG], "test": True},
    ]
    path = _ablation_with_pipeline(tmp_path, stages)
    spec = yaml.safe_load(open(path))
    spec["arms"][0]["set"] = {"mlm.trainer.max_steps": 3}
    _write(tmp_path / "abl.yaml", spec)
    ablation.run_ablation(path, seeds=[0])
    assert calls[0] == {"mlm": ["--trainer.max_steps", "3"]}  # the shared MLM stage, its own value replaced
    finetune = [c["finetune"] for c in calls if "finetune" in c]
    assert finetune and finetune[0][:1] == ["--model.init_args.model_name_or_path"]  # no `set` of its own
    assert "--trainer.max_steps 3" in " ".join(checked[0])  # checked before anything ran
    assert "--trainer.max_steps 2" not in " ".join(checked[0])


def _nested_ablation(tmp_path, monkeypatch) -> tuple[str, dict, list]:
    """A 2-stage pipeline arm with seeds 0-3 nested under pretrain_seeds [3, 4], run by a fake ``run_stages``
    that records each call (root, extra args, stage args): (the file, its spec, the calls)."""
    import bertlab.ablation as ablation
    import bertlab.ablation_run as ablation_run

    calls, done = [], set()

    def fake_run_stages(stages, root, label, force=False, extra_args=None, check_only=False):
        key = (root, tuple(s.name for s in stages))
        if check_only and key not in done:
            return None
        if not check_only:
            calls.append((root, list(extra_args), [list(s.args) for s in stages]))
            done.add(key)
        prov = {"provenance": {"code": "x"}}
        return {"stages": [{"metrics": {"test": {"test/acc": 0.5, **prov}, "fit": prov}}]}

    monkeypatch.setattr(ablation_run, "run_stages", fake_run_stages)
    path = _ablation_with_pipeline(
        tmp_path,
        [
            {"name": "mlm", "config": [TINY_CONFIG], "init_from": "none"},
            {"name": "finetune", "config": [TINY_CONFIG], "test": True},
        ],
        pretrain_seed=None,
    )
    spec = yaml.safe_load(open(path)) | {"pretrain_seeds": [3, 4], "seeds": "0-3"}
    spec.pop("pretrain_seed")
    path = _write(tmp_path / "nested.yaml", spec)
    monkeypatch.setattr(ablation, "code_hash", lambda: "x")
    return path, spec, calls


def test_pretrain_seeds_nest_the_fine_tune_seeds_under_each_pre_training_run(tmp_path, monkeypatch):
    from bertlab.ablation import run_ablation

    path, spec, calls = _nested_ablation(tmp_path, monkeypatch)
    run_ablation(path)
    out = str(tmp_path / "out")
    pre = {
        root: extra[extra.index("--seed_everything") + 1]
        for root, extra, _ in calls
        if os.path.basename(root).startswith("pretrain")
    }
    assert pre == {os.path.join(out, "tapt", "pretrain_seed3"): "3", os.path.join(out, "tapt", "pretrain_seed4"): "4"}
    sources = {root: args[0][-1] for root, _, args in calls if not os.path.basename(root).startswith("pretrain")}
    assert sources == {
        os.path.join(out, "tapt", f"seed{s}"): os.path.join(out, "tapt", f"pretrain_seed{p}", "mlm", "export")
        for s, p in ((0, 3), (1, 3), (2, 4), (3, 4))
    }
    runs = json.load(open(os.path.join(out, "results.json")))["tapt"]["_runs"]
    assert {s: r["pretrain_seed"] for s, r in runs.items()} == {"0": 3, "1": 3, "2": 4, "3": 4}
    bad = _write(tmp_path / "uneven.yaml", spec | {"seeds": [0, 1, 2]})
    with pytest.raises(BertlabError, match="3 seeds do not split evenly over 2 pretrain_seeds"):
        load_ablation(bad)


def test_seeds_on_the_command_line_keep_the_files_nesting(tmp_path, monkeypatch):
    """``--seeds 1`` runs fine-tune seed 1 from the pre-training run the whole file gives it (pretrain seed 3, the
    first of seeds 0-3's two groups), and no other pre-training run; a seed outside the file's cannot be nested."""
    from bertlab.ablation import run_ablation

    path, _, calls = _nested_ablation(tmp_path, monkeypatch)
    out = str(tmp_path / "out")
    run_ablation(path, seeds=[1])
    assert [root for root, *_ in calls] == [os.path.join(out, "tapt", p) for p in ("pretrain_seed3", "seed1")]
    assert calls[1][2][0][-1] == os.path.join(out, "tapt", "pretrain_seed3", "mlm", "export")
    run_ablation(path, seeds=[2])  # the second group: pretrain seed 4 runs now
    assert [root for root, *_ in calls[2:]] == [os.path.join(out, "tapt", p) for p in ("pretrain_seed4", "seed2")]
    runs = json.load(open(os.path.join(out, "results.json")))["tapt"]["_runs"]
    assert {s: r["pretrain_seed"] for s, r in runs.items()} == {"1": 3, "2": 4}
    with pytest.raises(BertlabError, match=r"--seeds \[7\]: not among .*'s seeds \[0, 1, 2, 3\]"):
        run_ablation(path, seeds=[0, 7])


def test_pretrain_seed_refuses_a_last_stage_that_names_earlier_files(tmp_path):
    from bertlab.ablation import run_ablation

    path = _ablation_with_pipeline(
        tmp_path,
        [
            {"name": "model0", "config": [TINY_CONFIG], "init_from": "none"},
            {"name": "mlm", "config": [TINY_CONFIG], "init_from": "none"},
            {"name": "finetune", "config": [TINY_CONFIG], "args": {"data.init_args.cache_dir": "{dir:model0}"}},
        ],
    )
    with pytest.raises(BertlabError, match="last stage may not name earlier stages' files"):
        run_ablation(path)


def test_pretrain_seed_must_be_an_integer(tmp_path):
    path = _ablation_with_pipeline(tmp_path, [{"name": "ft", "config": [TINY_CONFIG]}], pretrain_seed="zero")
    with pytest.raises(BertlabError, match="pretrain_seed must be an integer seed, got 'zero'"):
        load_ablation(path)


STEP_BUDGET_5 = {"class_path": "callbacks.step_budget.StepBudget", "init_args": {"milestones": [5]}}


def test_a_milestone_set_by_an_argument_is_found(tmp_path):
    path = _milestone_ablation(
        tmp_path, [{"name": "a", "from_milestone": 5, "set": {"mlm.trainer.callbacks": [STEP_BUDGET_5]}}]
    )
    assert load_ablation(path).arms[0].from_milestone == 5


def _milestone_ablation(tmp_path, arms: list[dict], milestones=(1, 2)) -> str:
    step_budget = {"class_path": "callbacks.step_budget.StepBudget", "init_args": {"milestones": list(milestones)}}
    budget = _write(tmp_path / "budget.yaml", {"trainer": {"callbacks": [step_budget]}})
    stages = [
        {"name": "mlm", "config": [TINY_CONFIG, budget], "init_from": "none"},
        {"name": "finetune", "config": [TINY_CONFIG], "test": True},
    ]
    pipe = _write(tmp_path / "pipe.yaml", {"name": "pipe", "stages": stages})
    for arm in arms:
        arm.setdefault("pipeline", pipe)
        if arm["pipeline"] is None:
            del arm["pipeline"]
    spec = {"name": "abl", "root": str(tmp_path / "out"), "base": [TINY_CONFIG], "seeds": [0, 1], "arms": arms}
    return _write(tmp_path / "abl.yaml", {**spec, "pretrain_seed": 0})


def test_a_pretrain_group_runs_one_mlm_and_each_arm_fine_tunes_from_its_milestone(tmp_path, monkeypatch):
    import bertlab.ablation as ablation
    import bertlab.ablation_run as ablation_run

    calls, done = [], set()

    def fake_run_stages(stages, root, label, force=False, extra_args=None, check_only=False):
        key = (root, tuple(s.name for s in stages))
        if check_only and key not in done:
            return None
        if not check_only:
            calls.append((root, [list(s.args) for s in stages], stages[0].name))
            done.add(key)
            if stages[0].name == "mlm":  # what StepBudget writes
                for step in (1, 2):
                    os.makedirs(os.path.join(root, "mlm", "milestones", f"step-{step}"), exist_ok=True)
        return {"stages": [{"metrics": {"test": {"test/acc": 0.5, "test/f1": 0.5}}}]}

    monkeypatch.setattr(ablation_run, "run_stages", fake_run_stages)
    path = _milestone_ablation(
        tmp_path,
        [
            {"name": "mlm_1", "pretrain": "curve", "from_milestone": 1},
            {"name": "mlm_2", "pretrain": "curve", "from_milestone": 2},
        ],
    )
    ablation.run_ablation(path)
    shared_root = os.path.join(str(tmp_path / "out"), "curve", "pretrain")
    # one MLM root for both arms (each seed's run asks it again and finds it done)
    assert calls[0][0] == shared_root and {c[0] for c in calls if c[2] == "mlm"} == {shared_root}
    fine_tunes = [c for c in calls if c[2] == "finetune"]
    assert len(fine_tunes) == 4
    starts = {c[0]: c[1][0][c[1][0].index("--model.init_args.model_name_or_path") + 1] for c in fine_tunes}
    for arm, step in (("mlm_1", 1), ("mlm_2", 2)):
        for seed in (0, 1):
            root = os.path.join(str(tmp_path / "out"), arm, f"seed{seed}")
            assert starts[root] == os.path.join(shared_root, "mlm", "milestones", f"step-{step}")


@pytest.mark.parametrize(
    "arms, pretrain_seed, message",
    [
        ([{"name": "a", "pretrain": "g", "from_milestone": 3}], 0, r"from_milestone 3, but stage mlm of .* exports "),
        ([{"name": "a", "from_milestone": 0}], 0, "from_milestone must be a positive step, got 0"),
        ([{"name": "a", "from_milestone": 1}], None, "pretrain and from_milestone need a pipeline and pretrain_seed"),
        (
            [{"name": "a", "pretrain": "g"}, {"name": "b", "pretrain": "g", "args": {"trainer.max_steps": 9}}],
            0,
            "arms a and b share pre-training group 'g' but differ in pipeline, args, set or skip",
        ),
        (
            [{"name": "a", "pretrain": "g"}, {"name": "b", "pretrain": "g", "skip": ["mlm"]}],
            0,
            "arms a and b share pre-training group 'g' but differ in pipeline, args, set or skip",
        ),
        (  # a --trainer.callbacks argument replaces the config files' list, milestones and all
            [{"name": "a", "from_milestone": 2, "set": {"mlm.trainer.callbacks": [STEP_BUDGET_5]}}],
            0,
            r"from_milestone 2, but stage mlm of .* exports milestones \[5\]",
        ),
    ],
)
def test_pretrain_groups_and_milestones_are_checked_when_the_file_loads(tmp_path, arms, pretrain_seed, message):
    path = _milestone_ablation(tmp_path, arms)
    spec = yaml.safe_load(open(path))
    spec["pretrain_seed"] = pretrain_seed
    _write(tmp_path / "abl.yaml", spec)
    with pytest.raises(BertlabError, match=message):
        load_ablation(path)


def test_the_curve_puts_milestone_arms_at_their_step_beside_the_probe_and_perplexity(tmp_path):
    from bertlab.curve_report import write_curve

    path = _milestone_ablation(
        tmp_path,
        [
            {"name": "none", "pipeline": None},
            {"name": "mlm_2", "pretrain": "curve", "from_milestone": 2},
            {"name": "mlm_1", "pretrain": "curve", "from_milestone": 1},
        ],
    )
    spec = load_ablation(path)
    mlm = tmp_path / "out" / "curve" / "pretrain" / "mlm"
    (mlm / "csv" / "version_0").mkdir(parents=True)
    (mlm / "probe_history.json").write_text(json.dumps({"history": {"0": 0.6, "1": 0.7, "2": 0.65}}))
    (mlm / "csv" / "version_0" / "metrics.csv").write_text(
        "epoch,step,train/loss_step,val/perplexity\n0,0,5.0,\n0,0,,40.0\n0,1,,30.5\n"
    )
    results = {"none": {"test/acc": [0.8, 0.9]}, "mlm_1": {"test/acc": [0.85, 0.95]}, "mlm_2": {"test/acc": [0.7]}}
    data = write_curve(spec, results)
    assert [(p["arm"], p["step"], p["n"]) for p in data["fine_tuned"]] == [
        ("none", 0, 2),
        ("mlm_1", 1, 2),
        ("mlm_2", 2, 1),
    ]
    assert data["fine_tuned"][1]["mean"] == pytest.approx(0.9) and data["fine_tuned"][1]["std"] == pytest.approx(
        0.0707, abs=1e-4
    )
    assert data["probe_val_acc"] == {0: 0.6, 1: 0.7, 2: 0.65}
    assert data["mlm_val_perplexity"] == {1: 40.0, 2: 30.5}  # Lightning logs validation at the step before
    assert json.loads((tmp_path / "out" / "curve.json").read_text())["probe_val_acc"] == {"0": 0.6, "1": 0.7, "2": 0.65}
    assert (tmp_path / "out" / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_arm_with_its_own_baseline_is_compared_with_it(tmp_path):
    runs = {
        "ft_100": {str(s): {"test/acc": 0.70 + 0.01 * s} for s in range(3)},
        "pet_100": {str(s): {"test/acc": 0.72 + 0.01 * s} for s in range(3)},
        "ft_500": {str(s): {"test/acc": 0.80 + 0.01 * s} for s in range(3)},
        "pet_500": {str(s): {"test/acc": 0.79 + 0.01 * s} for s in range(3)},
    }
    results = {arm: {"_runs": r, "test/acc": [m["test/acc"] for m in r.values()]} for arm, r in runs.items()}
    arms = [Arm("ft_100"), Arm("pet_100"), Arm("ft_500"), Arm("pet_500", baseline="ft_500")]
    spec = Ablation("toy", str(tmp_path), seeds=[0, 1, 2], metrics=["test/acc"], baseline="ft_100", arms=arms)
    text = write_report(spec, results, "bertlab ablate toy.yaml")
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in text.splitlines() if line.startswith("| ")}
    assert rows["arm"][3] == "Δ test/acc [95 % CI]"
    assert rows["ft_100"][3] == "baseline" and rows["ft_500"][3] == "baseline"  # pet_500's: a reference arm
    assert rows["pet_100"][3] == "+0.0200 [+0.0200, +0.0200]"
    assert rows["pet_500"][3] == "-0.0100 [-0.0100, -0.0100] (vs ft_500)"


def test_a_baseline_must_name_an_arm(tmp_path):
    path = _write(
        tmp_path / "abl.yaml",
        {"name": "a", "base": [TINY_CONFIG], "arms": [{"name": "x"}, {"name": "y", "baseline": "z"}]},
    )
    with pytest.raises(BertlabError, match=r"baseline 'z' names no arm \(\['x', 'y'\]\)"):
        load_ablation(path)


def test_a_fine_tune_older_than_its_shared_pre_training_runs_again(tmp_path, monkeypatch):
    """The fine-tune's fingerprint names the shared export's path only: a re-run pre-training must not be missed."""
    import bertlab.ablation as ablation
    import bertlab.ablation_run as ablation_run

    calls = []
    out = tmp_path / "out"

    def fake_run_stages(stages, root, label, force=False, extra_args=None, check_only=False):
        if not check_only:
            calls.append((root, force))
        prov = {"provenance": {"code": "x"}}  # every stage "finished", on the code running now
        return {"stages": [{"metrics": {"test": {"test/acc": 0.5, "test/f1": 0.5, **prov}, "fit": prov}}]}

    monkeypatch.setattr(ablation_run, "run_stages", fake_run_stages)
    monkeypatch.setattr(ablation, "code_hash", lambda: "x")
    path = _ablation_with_pipeline(
        tmp_path,
        [
            {"name": "mlm", "config": [TINY_CONFIG], "init_from": "none"},
            {"name": "finetune", "config": [TINY_CONFIG], "test": True},
        ],
    )
    records = {s: out / "tapt" / f"seed{s}" / "finetune" / "stage.json" for s in (0, 1, 2)}
    pre = out / "tapt" / "pretrain" / "mlm" / "stage.json"
    for f in [*records.values(), pre]:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("{}")
    os.utime(records[0], (1000, 1000))  # seed 0 finished before the pre-training's latest run
    os.utime(pre, (2000, 2000))
    for s in (1, 2):
        os.utime(records[s], (3000, 3000))
    ablation.run_ablation(path)
    # the shared stages have finished on this code and are not run again; only the stale seed runs, forced
    assert calls == [(str(out / "tapt" / "seed0"), True)]


# ------------------------------------------------------------ one table, one code, one writer per directory


def test_ablate_refuses_twin_arm_names_and_bad_seeds_in_one_line(tmp_path, capsys):
    from bertlab.cli import main as bertlab_main

    spec = {"name": "abl", "root": str(tmp_path / "out"), "base": [TINY_CONFIG], "arms": [{"name": "a"}, {"name": "a"}]}
    twins = _write(tmp_path / "twins.yaml", spec)
    ok = _write(tmp_path / "ok.yaml", spec | {"arms": [{"name": "a"}]})
    cases = [
        ([twins], "arm name(s) ['a'] used twice"),
        ([ok, "--seeds", "0,x"], "--seeds: 'x' is not an integer seed or a range like 0-4"),
        ([ok, "--seeds", "4-1"], "--seeds: range '4-1' runs backwards"),
        ([ok, "--seeds", "1,1"], "--seeds: seeds must be distinct integers"),
        ([ok, "--jobs", "0"], "--jobs and --threads must be at least 1"),
    ]
    for args, message in cases:
        code, err = bertlab_main(["ablate", *args]), capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and err.startswith("bertlab: error: ") and message in err, err
    assert not os.path.exists(tmp_path / "out")
    assert parse_seeds("0-4", "s") == [0, 1, 2, 3, 4] and parse_seeds([3, 1], "s") == [3, 1]
    assert parse_seeds("2,5-6", "s") == [2, 5, 6] and parse_seeds(7, "s") == [7]


def test_ablate_builds_no_table_from_two_training_codes(tmp_path, monkeypatch):
    import bertlab.ablation as ablation
    import bertlab.ablation_run as ablation_run

    code = {"now": "new"}

    def fake_run_stages(stages, root, label, force=False, extra_args=None, check_only=False):
        done = os.path.join(root, "done")
        if check_only and not os.path.exists(done):
            return None
        if not check_only and (force or not os.path.exists(done)):
            os.makedirs(root, exist_ok=True)
            open(done, "w").write(code["now"])
        seed = int(extra_args[extra_args.index("--seed_everything") + 1])
        test = {"test/acc": 0.5 + 0.01 * seed, "provenance": {"code": open(done).read(), "commit": "c" * 40}}
        return {"stages": [{"metrics": {"test": test}}]}

    monkeypatch.setattr(ablation_run, "run_stages", fake_run_stages)
    monkeypatch.setattr(ablation, "code_hash", lambda: code["now"])
    monkeypatch.setattr(ablation, "preflight_arm", lambda spec, arm: None)
    spec = {"name": "abl", "root": str(tmp_path / "out"), "base": [TINY_CONFIG], "seeds": [0, 1]}
    path = _write(tmp_path / "abl.yaml", spec | {"arms": [{"name": "base"}, {"name": "arm"}]})
    ablation.run_ablation(path, arms=["base"])
    code["now"] = "newer"  # the code changed between the baseline's runs and the arm's
    with pytest.raises(BertlabError, match=r"2 finished run\(s\) of this table ran on other training code"):
        ablation.run_ablation(path)
    assert not os.path.exists(tmp_path / "out" / "arm")  # refused before anything ran
    text, _ = ablation.run_ablation(path, allow_mixed=True)
    runs = json.load(open(tmp_path / "out" / "results.json"))
    assert {r["provenance"]["code"] for r in runs["base"]["_runs"].values()} == {"new"}
    ablation.run_ablation(path, rerun_stale=True)
    runs = json.load(open(tmp_path / "out" / "results.json"))
    assert {r["provenance"]["code"] for a in ("base", "arm") for r in runs[a]["_runs"].values()} == {"newer"}


def test_one_writer_per_run_directory(tmp_path):
    from bertlab.core.files import exclusive_dir

    with exclusive_dir(str(tmp_path / "run")):
        with pytest.raises(BertlabError, match=r"run directory .*/run is in use by pid \d+"):
            with exclusive_dir(str(tmp_path / "run")):
                pass
    with exclusive_dir(str(tmp_path / "run")):  # released: the next writer gets it
        pass
