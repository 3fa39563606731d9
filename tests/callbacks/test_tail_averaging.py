"""``TailAveraging``: the final weights are the mean of the weights after each tail step, and nothing
is averaged before the tail starts."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from bertlab.core.errors import BertlabError
from callbacks.tail_averaging import TailAveraging
from lightning_modules.classifier import TextClassifier
from lightning_modules.heads import MeanHead
from tests.conftest import quiet_trainer
from tests.lightning_modules.test_fresh_start import classifier_batches


class Record(pl.Callback):
    def __init__(self):
        self.after_step = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.after_step.append({k: v.detach().clone() for k, v in module.named_parameters()})


def train(module, callbacks, steps=6):
    quiet_trainer(max_steps=steps, callbacks=callbacks).fit(
        module, DataLoader(classifier_batches(module, steps), batch_size=None)
    )


@pytest.mark.parametrize("start, every, averaged_steps", [(0.5, 1, [3, 4, 5]), (0.0, 2, [0, 2, 4])])
def test_final_weights_are_the_mean_over_the_tail(tiny_bert_dir, start, every, averaged_steps):
    pl.seed_everything(0)
    module = TextClassifier(tiny_bert_dir, head=MeanHead, lr=1e-2, warmup_ratio=0.0)
    record, avg = Record(), TailAveraging(start_fraction=start, every_n_steps=every)
    train(module, [record, avg])  # Record runs first: it sees each step's own weights
    assert avg.start_step == int(start * 6) and avg.averaged == len(averaged_steps)
    for name, p in module.named_parameters():
        expected = torch.stack([record.after_step[i][name] for i in averaged_steps]).mean(0)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6)
    last = record.after_step[-1]["classifier.weight"]
    assert not torch.allclose(module.classifier.weight, last)  # the average, not the last step


def test_a_late_start_averages_the_last_step_only(tiny_bert_dir):
    pl.seed_everything(0)
    module = TextClassifier(tiny_bert_dir, head=MeanHead, lr=1e-2, warmup_ratio=0.0)
    record, avg = Record(), TailAveraging(start_fraction=0.99)
    train(module, [record, avg], steps=3)  # start step int(0.99 * 3) = 2: the last step only
    assert avg.averaged == 1
    torch.testing.assert_close(module.classifier.weight.detach(), record.after_step[-1]["classifier.weight"])


def test_before_any_update_checkpoints_and_validation_keep_the_current_weights(tiny_bert_dir):
    module = TextClassifier(tiny_bert_dir, head=MeanHead)
    avg = TailAveraging(start_fraction=0.5)
    avg.setup(None, module, "fit")  # the average model: a copy of the initial weights, n_averaged 0
    with torch.no_grad():
        module.classifier.weight.add_(1.0)  # training moved on; no tail step yet
    current = {k: v.clone() for k, v in module.state_dict().items()}
    checkpoint = {"state_dict": dict(current)}
    avg.on_save_checkpoint(None, module, checkpoint)
    assert checkpoint["state_dict"].keys() == current.keys() and "current_model_state" not in checkpoint
    avg.on_validation_epoch_start(None, module)
    torch.testing.assert_close(module.classifier.weight, current["classifier.weight"])
    avg.on_validation_epoch_end(None, module)
    torch.testing.assert_close(module.classifier.weight, current["classifier.weight"])


@pytest.mark.parametrize("kwargs", [{"start_fraction": 1.0}, {"start_fraction": -0.1}, {"every_n_steps": 0}])
def test_bad_arguments(kwargs):
    with pytest.raises(BertlabError, match="TailAveraging"):
        TailAveraging(**kwargs)
