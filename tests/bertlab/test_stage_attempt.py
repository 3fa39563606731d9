"""``bertlab.stage_attempt``: which checkpoint a killed fit stage resumes from, and what a refused one leaves;
``bertlab.engine.resumed_version``: the log version a resumed fit continues in."""

from __future__ import annotations

import os

import pytest
import torch

from bertlab import stage_attempt
from bertlab.engine import resumed_version


def _ckpt(path, step: int) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"global_step": step, "state_dict": {"w": torch.zeros(2)}}, path)
    return str(path)


def test_the_checkpoint_with_most_steps_of_this_stage_is_chosen(tmp_path, capsys):
    out = str(tmp_path / "mlm")
    stage_attempt.begin(out, "fp1")
    ckpts = tmp_path / "mlm" / "csv" / "version_0" / "checkpoints"
    _ckpt(ckpts / "best-epoch=0-step=4.ckpt", 4)
    last = _ckpt(ckpts / "last.ckpt", 6)
    _ckpt(tmp_path / "mlm" / "export" / "step-9.ckpt", 9)  # the export's: never resumed from
    assert stage_attempt.resume_point(out, "fp1", "mlm") == last
    assert stage_attempt.resume_point(out, "fp2", "mlm") is None  # another config's attempt: start over
    with open(last, "r+b") as f:  # cut short: passed over, and named
        f.truncate(os.path.getsize(last) // 2)
    assert stage_attempt.resume_point(out, "fp1", "mlm") == str(ckpts / "best-epoch=0-step=4.ckpt")
    printed = capsys.readouterr().out
    assert "mlm: not resuming from it: checkpoint" in printed and "last.ckpt' does not load" in printed


def test_no_attempt_record_no_resume(tmp_path):
    _ckpt(tmp_path / "mlm" / "checkpoints" / "last.ckpt", 6)  # left by a bertlab before attempts were recorded
    assert stage_attempt.resume_point(str(tmp_path / "mlm"), "fp1", "mlm") is None


def test_a_refused_stage_leaves_nothing_and_a_killed_one_keeps_its_checkpoints(tmp_path):
    fresh, earlier, killed = (str(tmp_path / n) for n in ("fresh", "earlier", "killed"))
    os.makedirs(os.path.join(earlier, "export"))
    for out in (fresh, earlier, killed):
        stage_attempt.begin(out, "fp")
    _ckpt(tmp_path / "killed" / "checkpoints" / "last.ckpt", 2)
    for out in (fresh, earlier, killed):
        stage_attempt.refused(out)
    assert not os.path.exists(fresh)
    assert os.listdir(earlier) == ["export"]  # an earlier run's export stays; the failed attempt's record goes
    assert sorted(os.listdir(killed)) == ["attempt.json", "checkpoints"]


def test_clear_keeps_only_the_export(tmp_path):
    out = tmp_path / "ft"
    _ckpt(out / "csv" / "version_0" / "checkpoints" / "last.ckpt", 2)
    (out / "export").mkdir()
    (out / "fit_metrics.json").write_text("{}")
    stage_attempt.clear(str(out))
    assert os.listdir(out) == ["export"]


def test_a_resumed_fit_logs_on_in_its_checkpoints_version(tmp_path):
    root = tmp_path / "run"
    inside = _ckpt(root / "csv" / "version_3" / "checkpoints" / "last.ckpt", 2)
    elsewhere = _ckpt(tmp_path / "other" / "csv" / "version_1" / "checkpoints" / "last.ckpt", 2)
    assert resumed_version(str(root), inside) == 3
    assert resumed_version(str(root), elsewhere) is None  # another run's: a new version here
    assert resumed_version(str(root), "last") is None and resumed_version(str(root), None) is None


def test_an_attempt_on_other_code_is_not_resumed(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "mlm")
    stage_attempt.begin(out, "fp1")
    _ckpt(tmp_path / "mlm" / "checkpoints" / "last.ckpt", 6)
    monkeypatch.setattr(stage_attempt, "code_hash", lambda: "another")
    assert stage_attempt.resume_point(out, "fp1", "mlm") is None
    assert "mlm: its checkpoints are of other bertlab code; running it from its start" in capsys.readouterr().out


@pytest.mark.parametrize(
    "fresh, subcommand, resumes", [(False, "fit", True), (True, "fit", False), (False, "predict", False)]
)
def test_only_an_unforced_fit_resumes(tmp_path, monkeypatch, fresh, subcommand, resumes):
    """``--force`` (and an ablation's stale or --rerun-stale runs, which force) starts over: a stale fine-tune's
    checkpoints are of a pre-training that has since changed under the same fingerprint."""
    from bertlab import pipeline

    root, seen = str(tmp_path), []
    stage_attempt.begin(os.path.join(root, "ft"), "fp")
    last = _ckpt(tmp_path / "ft" / "csv" / "version_0" / "checkpoints" / "last.ckpt", 4)
    monkeypatch.setattr(pipeline, "_run_stage_process", lambda stage, root, args, out, resume: seen.append(resume))
    pipeline.run_stage(pipeline.Stage("ft", subcommand=subcommand), root, [], "fp", fresh=fresh)
    assert seen == [["--ckpt_path", last] if resumes else []]
    assert os.path.exists(last) == resumes  # starting over clears the attempt's checkpoints
