"""docs/extending.md's worked examples, run: every code block with a ``title`` is written to its file, its test
runs, and the head, the masker and the source each do their job in bertlab (a head trains and round-trips through
an export, a masker feeds an MLM stage, a source serves splits and a corpus). The page cannot go stale unseen."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "extending.md"


def blocks() -> dict[str, str]:
    text = PAGE.read_text(encoding="utf-8")
    return {title: code for _, title, code in re.findall(r'```(\w+) title="([^"]+)"\n(.*?)```', text, re.S)}


@pytest.fixture
def examples(tmp_path, monkeypatch):
    """The page's files in a directory on ``sys.path``, as a user's would be with ``PYTHONPATH=.``."""
    for title, code in blocks().items():
        if "/" not in title:
            (tmp_path / title).write_text(code, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith(("my_", "test_my_"))]:
        del sys.modules[name]


def print_config(capsys, configs: list[str]) -> str:
    from bertlab.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *[a for c in configs for a in ("--config", c)], "--print_config"])
    out = capsys.readouterr()
    assert exit_info.value.code in (0, None), out.err[-2000:]
    return out.out


def test_every_titled_block_is_run_here():
    assert set(blocks()) == {
        "my_heads.py",
        "test_my_heads.py",
        "my_head.yaml",
        "my_maskers.py",
        "test_my_maskers.py",
        "my_masker.yaml",
        "datamodules/sources.py",
        "test_tweet_device.py",
    }


def test_the_head_example_trains_and_round_trips_through_an_export(examples, tiny_bert_dir, capsys, monkeypatch):
    from transformers import AutoModelForSequenceClassification

    from lightning_modules.classifier import TextClassifier

    importlib.import_module("test_my_heads").test_max_pool_head_reads_the_real_tokens_of_its_layer_only()
    monkeypatch.chdir(ROOT)
    out = print_config(capsys, ["configs/classify/fine_food.yaml", str(examples / "my_head.yaml")])
    assert "class_path: my_heads.MaxPoolHead" in out and "layer: -2" in out
    head = yaml.safe_load((examples / "my_head.yaml").read_text())["model"]["init_args"]["head"]
    torch.manual_seed(0)
    model = TextClassifier(tiny_bert_dir, num_labels=2, head=head).eval()
    assert type(model.head).__name__ == "MaxPoolHead" and model.head.options == {"layer": -2}
    batch = {"input_ids": torch.tensor([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]])}
    batch["attention_mask"] = (batch["input_ids"] != 0).long()
    model._shared_step({**batch, "labels": torch.tensor([0, 1])}, "val").backward()
    assert model.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert model.export_pretrained(str(examples / "export")) is False  # custom code: the head is not HF's
    shipped = AutoModelForSequenceClassification.from_pretrained(str(examples / "export"), trust_remote_code=True)
    with torch.no_grad():
        torch.testing.assert_close(shipped.eval()(**batch).logits, model(batch), rtol=0, atol=1e-6)


def test_the_masker_example_feeds_an_mlm_stage(examples, tiny_bert_dir, tiny_csvs, tmp_path, capsys, monkeypatch):
    import functools

    from datamodules.batching import Loader
    from datamodules.mlm import MLMDataModule
    from datamodules.splits import Splits
    from lightning_modules.masked_lm import MaskedLM
    from tests.conftest import quiet_trainer

    importlib.import_module("test_my_maskers").test_every_nth_masker_predicts_one_maskable_token_in_n()
    monkeypatch.chdir(ROOT)
    out = print_config(capsys, ["configs/mlm/fine_food_tapt.yaml", str(examples / "my_masker.yaml")])
    assert "class_path: my_maskers.EveryNthMasker" in out and "n: 5" in out
    masker = functools.partial(importlib.import_module("my_maskers").EveryNthMasker, n=5)
    dm = MLMDataModule(
        tokenizer=tiny_bert_dir,
        task=Splits(train_file=tiny_csvs["train"], val_file=tiny_csvs["val"]),
        max_length=32,
        masker=masker,
        loader=Loader(batch_size=16),
        cache_dir=str(tmp_path / "cache"),
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    rate = (batch["labels"] != -100).sum() / (batch["attention_mask"].sum() - 2 * len(batch["labels"]))
    assert abs(float(rate) - 0.2) < 0.05
    quiet_trainer(max_steps=2).fit(MaskedLM(model_name_or_path=tiny_bert_dir, warmup_steps=0), datamodule=dm)


def test_the_source_example_serves_splits_and_a_corpus(examples, monkeypatch):
    from datamodules import sources

    namespace = dict(vars(sources))
    exec(blocks()["datamodules/sources.py"], namespace)
    monkeypatch.setitem(sources.BUILTIN_SOURCES, "tweet_device", namespace["tweet_device"])
    importlib.import_module("test_tweet_device").test_tweet_device_is_a_labelled_source_and_a_corpus()
