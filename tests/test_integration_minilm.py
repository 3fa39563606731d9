"""Slow integration tests on the real MiniLM and the real fine-food reviews (bounded: a few minutes on 2 cores)."""

import pytest

from tests.conftest import quiet_trainer
from tests.dm_args import grouped

pytestmark = pytest.mark.slow


def test_minilm_learns_fine_food_well_above_the_majority_class(tmp_path):
    import pytorch_lightning as pl

    from datamodules.classification import ClassificationDataModule
    from lightning_modules.classifier import TextClassifier

    pl.seed_everything(0, verbose=False)
    dm = ClassificationDataModule(
        **grouped(
            tokenizer="minilm",
            source="fine_food",
            train_subset=800,
            max_length=64,
            batch_size=16,
            eval_batch_size=128,
            cache_dir=str(tmp_path / "cache"),
        )
    )
    model = TextClassifier("minilm", num_labels=dm.num_labels, id2label=dm.id2label, lr=1e-4)
    trainer = quiet_trainer(max_epochs=3, default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    result = trainer.test(model, datamodule=dm, verbose=False)[0]
    majority = dm.frames["test"]["label"].value_counts(normalize=True).max()
    assert majority == pytest.approx(0.658)
    assert result["test/acc"] > majority + 0.08, result
    assert result["test/f1"] > 0.65, result
