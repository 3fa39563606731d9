"""``StepBudget``: stops at exactly ``max_steps`` whatever the epochs, and exports each milestone once."""

from __future__ import annotations

import json
import os

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bertlab.core.errors import BertlabError
from callbacks.hf_export import EXPORT_INFO
from callbacks.step_budget import StepBudget
from datamodules.batching import Loader
from datamodules.splits import Splits
from tests.conftest import quiet_trainer as cpu_trainer


class Linear(pl.LightningModule):
    """The smallest module the callback can export: ``export_pretrained`` writes its weights."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def export_pretrained(self, directory: str) -> bool:
        torch.save(self.state_dict(), os.path.join(directory, "weights.pt"))
        return False


def quiet_trainer(root, callbacks, **kwargs) -> pl.Trainer:
    return cpu_trainer(default_root_dir=str(root), callbacks=callbacks, **{"limit_val_batches": 1.0, **kwargs})


def info(directory) -> dict:
    with open(os.path.join(directory, EXPORT_INFO)) as f:
        return json.load(f)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_stops_at_exactly_max_steps_and_exports_each_milestone_once(tmp_path, accumulate):
    loader = DataLoader(TensorDataset(torch.randn(6, 2)), batch_size=2)  # 3 batches an epoch
    budget = StepBudget(max_steps=7, milestones=[5, 2])
    trainer = quiet_trainer(tmp_path, [budget], max_epochs=1000, accumulate_grad_batches=accumulate)
    with pytest.warns(UserWarning, match="LR schedule spans"):  # no trainer.max_steps: the schedule ignores the budget
        trainer.fit(Linear(), loader)
    assert trainer.global_step == 7 and budget.stopped_at == 7
    assert trainer.current_epoch < 1000
    assert sorted(budget.exported) == [2, 5]
    for step in (2, 5):
        directory = tmp_path / "milestones" / f"step-{step}"
        assert budget.exported[step] == str(directory)
        assert info(directory)["global_step"] == step and info(directory)["milestone"] == step
        assert (directory / "weights.pt").is_file()
    assert sorted(os.listdir(tmp_path / "milestones")) == ["step-2", "step-5"]  # no temporary directories left


def test_milestone_at_the_budget_is_exported_before_stopping(tmp_path):
    loader = DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2)
    module = Linear()
    budget = StepBudget(max_steps=3, milestones=[3], export_dir=str(tmp_path / "out"))
    quiet_trainer(tmp_path, [budget], max_epochs=-1, max_steps=50).fit(module, loader)
    final = torch.load(tmp_path / "out" / "step-3" / "weights.pt")
    assert all(
        torch.equal(final[k], v) for k, v in module.state_dict().items()
    )  # the weights after step 3, the last step


def test_masked_lm_milestones_are_loadable_hf_directories(tmp_path, tiny_bert_dir, tiny_csvs):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from datamodules.mlm import MLMDataModule
    from lightning_modules.masked_lm import MaskedLM

    data = MLMDataModule(
        tokenizer=tiny_bert_dir,
        task=Splits(train_file=tiny_csvs["train"], val_file=tiny_csvs["val"]),
        max_length=32,
        loader=Loader(batch_size=16),
        cache_dir=str(tmp_path / "cache"),
    )
    budget = StepBudget(max_steps=3, milestones=[1, 3])
    module = MaskedLM(model_name_or_path=tiny_bert_dir, warmup_steps=0)
    quiet_trainer(tmp_path, [budget], max_epochs=100, max_steps=3, limit_val_batches=0).fit(module, datamodule=data)
    assert info(budget.exported[1])["global_step"] == 1 and info(budget.exported[3])["hf_native"] is True
    first = AutoModelForMaskedLM.from_pretrained(budget.exported[1])
    last = AutoModelForMaskedLM.from_pretrained(budget.exported[3])
    AutoTokenizer.from_pretrained(budget.exported[3])
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(last.state_dict()[name], module.model.state_dict()[name])
    assert not torch.equal(first.state_dict()[name], last.state_dict()[name])  # step 1 is not step 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_steps": 10, "milestones": [5, 20]}, r"\[20\] lie beyond max_steps 10"),
        ({"max_steps": 10, "milestones": [0, 5]}, "positive integers"),
        ({"max_steps": 10, "milestones": [-3]}, "positive integers"),
        ({"max_steps": 0}, "max_steps must be a positive integer"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(BertlabError, match=match):
        StepBudget(**kwargs)
