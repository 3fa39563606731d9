"""``DownstreamProbe``: the patience rule on scripted curves, a real probe on the tiny MLM, and a
scripted probe curve that must stop training at the predicted step with the predicted best."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from bertlab.core.errors import BertlabError
from callbacks.linear_probe import pool
from callbacks.probe import DownstreamProbe, PatienceTracker
from datamodules.batching import Loader
from datamodules.splits import Splits
from tests.dm_args import grouped

CURVE = [0.60, 0.65, 0.64, 0.66, 0.65, 0.65, 0.64]


def run_tracker(curve, **kwargs) -> tuple[int | None, int | None]:
    """(index of the best, index at which the rule says stop)."""
    tracker = PatienceTracker(**kwargs)
    for i, score in enumerate(curve):
        _, stop = tracker.update(i, score)
        if stop:
            return tracker.best_step, i
    return tracker.best_step, None


@pytest.mark.parametrize("min_delta, best, stop", [(0.0, 3, 6), (0.02, 1, 4), (0.2, 0, 3)])
def test_patience_on_a_scripted_curve(min_delta, best, stop):
    assert run_tracker(CURVE, patience=3, min_delta=min_delta) == (best, stop)


def test_patience_min_mode_and_ties():
    assert run_tracker([3.0, 2.0, 2.5, 1.0, 1.0, 1.0], patience=2, mode="min") == (3, 5)  # a tie is no improvement
    assert run_tracker(CURVE, patience=10) == (3, None)


def test_pooling():
    hidden = torch.arange(12.0).reshape(1, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0]])
    assert torch.equal(pool(hidden, mask, "mean"), torch.tensor([[1.5, 2.5, 3.5]]))  # padding ignored
    assert torch.equal(pool(hidden, mask, "cls"), torch.tensor([[0.0, 1.0, 2.0]]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"every_n_steps": 0}, "every_n_steps must be an integer >= 1"),
        ({"patience": 0}, "patience must be an integer >= 1"),
        ({"probe": "mlp"}, "unknown probe 'mlp'; probes: logreg"),
        ({"pooling": "max"}, "unknown pooling 'max'; poolings: mean, cls"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(BertlabError, match=match):
        DownstreamProbe(**kwargs)


def test_a_task_without_labelled_train_and_val_is_refused(tiny_bert_dir, tiny_csvs):
    module = SimpleNamespace(hparams=SimpleNamespace(model_name_or_path=tiny_bert_dir))
    from datamodules.classification import ClassificationDataModule

    task = ClassificationDataModule(
        **grouped(tokenizer=tiny_bert_dir, predict_file=tiny_csvs["test"], labels=["neg", "pos"])
    )
    unlabelled = DownstreamProbe(task=task)
    with pytest.raises(BertlabError, match="no labelled train or val split"):
        unlabelled.build_data(None, module)
    with pytest.raises(BertlabError, match="needs a labelled `task`"):
        DownstreamProbe().build_data(SimpleNamespace(hparams={"task": None}), module)


# ---------------------------------------------------------------- on the tiny MLM


def fit_mlm(tmp_path, tiny_bert_dir, tiny_csvs, probe: DownstreamProbe, max_steps: int):
    from datamodules.mlm import MLMDataModule
    from lightning_modules.masked_lm import MaskedLM

    data = MLMDataModule(
        tokenizer=tiny_bert_dir,
        task=Splits(train_file=tiny_csvs["train"], val_file=tiny_csvs["val"]),
        max_length=32,
        loader=Loader(batch_size=16),
        cache_dir=str(tmp_path / "cache"),
    )
    module = MaskedLM(model_name_or_path=tiny_bert_dir, warmup_steps=0)
    trainer = pl.Trainer(
        default_root_dir=str(tmp_path),
        callbacks=[probe],
        accelerator="cpu",
        max_epochs=1000,
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=data)
    return trainer, module


def test_probe_on_the_tiny_mlm(tmp_path, tiny_bert_dir, tiny_csvs):
    probe = DownstreamProbe(every_n_steps=2, patience=5)  # task: the MLM data module's
    trainer, module = fit_mlm(tmp_path, tiny_bert_dir, tiny_csvs, probe, max_steps=4)
    assert sorted(probe.history) == [2, 4]
    assert all(0.0 <= acc <= 1.0 for acc in probe.history.values())
    assert float(trainer.callback_metrics["probe/acc"]) == pytest.approx(probe.history[4])
    assert probe.monitor == "probe/acc" and probe.best_step in (2, 4)
    assert float(probe.best_model_score) == pytest.approx(max(probe.history.values()))
    assert torch.load(probe.best_model_path, weights_only=False)["global_step"] == probe.best_step
    with open(tmp_path / "probe_history.json") as f:
        written = json.load(f)
    assert (
        written["history"] == {str(k): v for k, v in probe.history.items()} and written["best_step"] == probe.best_step
    )
    assert len(probe.data["train"][0]) == 160 and len(probe.data["val"][0]) == 40

    # frozen and deterministic; every submodule's mode comes back
    module.train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    first, second = probe.score(trainer, module), probe.score(trainer, module)
    assert first == second
    assert all(m.training for m in module.modules())
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_train_subset_is_stratified_and_fixed(tmp_path, tiny_bert_dir, tiny_csvs):
    from datamodules.classification import ClassificationDataModule

    task = ClassificationDataModule(
        **grouped(tokenizer=tiny_bert_dir, train_file=tiny_csvs["train"], val_file=tiny_csvs["val"])
    )
    module = SimpleNamespace(hparams=SimpleNamespace(model_name_or_path=tiny_bert_dir))
    a = DownstreamProbe(task=task, max_train_examples=50).build_data(None, module)
    b = DownstreamProbe(task=task, max_train_examples=50).build_data(None, module)
    assert len(a["train"][0]) == 50 and a["train"][1].tolist() == b["train"][1].tolist()
    assert a["train"][1].sum() == 25  # the tiny train split is half pos, half neg
    assert [r["input_ids"] for r in a["train"][0]] == [r["input_ids"] for r in b["train"][0]]


@pytest.mark.parametrize("stop, last_step", [(True, 8), (False, 10)])
def test_scripted_curve_stops_at_the_predicted_step(tmp_path, tiny_bert_dir, tiny_csvs, monkeypatch, stop, last_step):
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.66])  # probes at steps 2, 4, 6, 8, 10
    monkeypatch.setattr(DownstreamProbe, "score", lambda self, trainer, module: next(scores))
    probe = DownstreamProbe(every_n_steps=2, patience=2, stop=stop)
    trainer, _ = fit_mlm(tmp_path, tiny_bert_dir, tiny_csvs, probe, max_steps=10)
    assert trainer.global_step == last_step  # with stop: 0.6 and 0.65 fail to beat 0.7, so step 8
    assert probe.best_step == 4 and float(probe.best_model_score) == pytest.approx(0.7)
    assert torch.load(probe.best_model_path, weights_only=False)["global_step"] == 4
    assert os.path.dirname(probe.best_model_path) == str(tmp_path / "probe")


def test_at_start_probes_the_starting_weights_which_can_stay_the_best(tmp_path, tiny_bert_dir, tiny_csvs, monkeypatch):
    scores = iter([0.8, 0.7, 0.75])  # probes at steps 0, 2, 4: the unchanged model is the best
    monkeypatch.setattr(DownstreamProbe, "score", lambda self, trainer, module: next(scores))
    probe = DownstreamProbe(every_n_steps=2, patience=5, at_start=True)
    fit_mlm(tmp_path, tiny_bert_dir, tiny_csvs, probe, max_steps=4)
    assert probe.history == {0: 0.8, 2: 0.7, 4: 0.75}
    assert probe.best_step == 0 and torch.load(probe.best_model_path, weights_only=False)["global_step"] == 0
    with open(tmp_path / "probe_history.json") as f:
        assert json.load(f)["history"] == {"0": 0.8, "2": 0.7, "4": 0.75}
