"""``TestPredictions``: one row per test example id, sorted, the padding repeats of a DDP sampler dropped."""

from types import SimpleNamespace

import torch

from callbacks.test_predictions import TestPredictions, load_test_predictions


def test_rows_are_deduplicated_by_id_and_sorted(tmp_path):
    trainer = SimpleNamespace(world_size=1, is_global_zero=True, default_root_dir=str(tmp_path))
    cb = TestPredictions()
    cb.on_test_epoch_start(trainer, None)
    batches = [([3, 1], [0, 1], [0, 0]), ([2, 0, 3], [1, 1, 0], [1, 0, 0])]  # id 3 repeats, as padding does
    for i, (idx, preds, labels) in enumerate(batches):
        out = {"loss": torch.tensor(0.0), "idx": torch.tensor(idx), "preds": torch.tensor(preds)}
        cb.on_test_batch_end(trainer, None, {**out, "labels": torch.tensor(labels)}, None, i)
    cb.on_test_batch_end(trainer, None, torch.tensor(0.5), None, 2)  # an MLM test step: a bare loss
    cb.on_test_epoch_end(trainer, None)
    saved = load_test_predictions(str(tmp_path))
    assert cb.written_to == str(tmp_path / "test_predictions.npz")
    assert saved["idx"].tolist() == [0, 1, 2, 3]
    assert saved["preds"].tolist() == [1, 1, 1, 0]
    assert saved["labels"].tolist() == [0, 0, 1, 0]


def test_nothing_is_written_without_predictions(tmp_path):
    trainer = SimpleNamespace(world_size=1, is_global_zero=True, default_root_dir=str(tmp_path))
    cb = TestPredictions()
    cb.on_test_epoch_start(trainer, None)
    cb.on_test_batch_end(trainer, None, torch.tensor(0.5), None, 0)
    cb.on_test_epoch_end(trainer, None)
    assert cb.written_to is None and load_test_predictions(str(tmp_path)) is None
