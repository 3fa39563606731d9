"""Fixtures shared by the classifier-recipe tests."""

import pytest

from datamodules.classification import ClassificationDataModule
from tests.dm_args import grouped


@pytest.fixture
def dm(tiny_bert_dir, tiny_csvs, tmp_path):
    data = ClassificationDataModule(
        **grouped(
            tokenizer=tiny_bert_dir,
            train_file=tiny_csvs["train"],
            val_file=tiny_csvs["val"],
            batch_size=8,
            max_length=32,
            cache_dir=str(tmp_path / "cache"),
        )
    )
    data.setup("fit")
    return data
