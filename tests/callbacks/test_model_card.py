"""Every export carries a model card (``README.md``): front matter that huggingface_hub parses, with
``model-index``; every stage that made the model, read from the card of the export a stage started from;
the recipe, data and splits; and the test metrics once the exported weights are tested."""

from __future__ import annotations

import os

import pytest
import yaml

from callbacks.hf_export import HFExport, add_test_metrics
from callbacks.model_card import read_card
from datamodules.batching import Loader
from datamodules.classification import ClassificationDataModule
from datamodules.mlm import MLMDataModule
from datamodules.splits import Splits
from lightning_modules.classifier import TextClassifier
from lightning_modules.heads import MeanHead
from lightning_modules.masked_lm import MaskedLM
from tests.conftest import quiet_trainer


def front_matter(path: str) -> dict:
    text = open(os.path.join(path, "README.md"), encoding="utf-8").read()
    assert text.startswith("---\n")
    return yaml.safe_load(text[4 : text.index("\n---\n", 4)])


@pytest.fixture(scope="module")
def two_stages(tiny_bert_dir, tiny_csvs, tmp_path_factory):
    """A TAPT stage from the tiny BERT (a bare encoder, like MiniLM: no MLM head), then a tested fine-tune."""
    root = tmp_path_factory.mktemp("card")
    splits = Splits(train_file=tiny_csvs["train"], val_file=tiny_csvs["val"], test_file=tiny_csvs["test"])
    tapt = str(root / "tapt" / "export")
    mlm = MLMDataModule(
        tokenizer=tiny_bert_dir, task=splits, max_length=32, loader=Loader(batch_size=16), cache_dir=str(root / "c")
    )
    trainer = quiet_trainer(max_steps=2, callbacks=[HFExport(dirpath=tapt)], default_root_dir=str(root / "tapt"))
    trainer.fit(MaskedLM(model_name_or_path=tiny_bert_dir, warmup_steps=0), datamodule=mlm)
    finetune = str(root / "finetune" / "export")
    dm = ClassificationDataModule(
        tokenizer=tapt, splits=splits, max_length=24, loader=Loader(batch_size=16), cache_dir=str(root / "c")
    )
    model = TextClassifier(tapt, num_labels=2, id2label={0: "neg", 1: "pos"}, head=MeanHead, lr=1e-3)
    trainer = quiet_trainer(
        max_steps=3, callbacks=[HFExport(dirpath=finetune)], default_root_dir=str(root / "finetune")
    )
    trainer.fit(model, datamodule=dm)
    tested = trainer.test(model, datamodule=dm, verbose=False)[0]
    return {"tapt": tapt, "finetune": finetune, "tested": tested}


def test_the_card_parses_with_the_hub_tools_and_holds_the_test_metrics(two_stages):
    from huggingface_hub import ModelCard

    card = ModelCard.load(os.path.join(two_stages["finetune"], "README.md"))
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-classification"
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    tested = two_stages["tested"]
    assert {k for k in results if k[0] == "test"} == {("test", "accuracy"), ("test", "f1"), ("test", "loss")}
    assert results[("test", "accuracy")] == pytest.approx(tested["test/acc"], abs=1e-12)
    assert results[("test", "f1")] == pytest.approx(tested["test/f1"], abs=1e-12)
    assert card.data.eval_results[0].task_type == "text-classification"
    assert card.data.eval_results[0].dataset_name == "train.csv"
    assert f"- test: test/acc {tested['test/acc']:.4f}" in card.text


def test_the_card_names_every_stage_its_base_recipe_data_and_limits(two_stages, tiny_bert_dir):
    meta = front_matter(two_stages["finetune"])
    facts = meta["bertlab"]
    assert meta["model-index"][0]["name"] == "finetune" and "tapt" in meta["tags"]
    assert facts["base"] == tiny_bert_dir
    tapt, finetune = facts["stages"]
    assert (tapt["name"], tapt["task"], tapt["started_from"]) == ("tapt", "fill-mask", tiny_bert_dir)
    assert (finetune["name"], finetune["started_from"], finetune["steps"]) == ("finetune", two_stages["tapt"], 3)
    assert (
        tapt["new_parameters"].startswith("the MLM head (")
        and "the checkpoint it started from had none" in (tapt["new_parameters"])
    )
    assert finetune["recipe"]["head"] == "lightning_modules.heads.MeanHead" and finetune["recipe"]["lr"] == 1e-3
    assert finetune["data"]["splits"]["train_file"].endswith("train.csv") and finetune["data"]["max_length"] == 24
    assert finetune["splits"] == {"train": 160, "val": 40, "test": 40}
    assert facts["labels"] == ["neg", "pos"] and facts["tokenization"]["max_length"] == 24
    text = open(os.path.join(two_stages["finetune"], "README.md"), encoding="utf-8").read()
    assert f"| 1 | tapt | MaskedLM | `{tiny_bert_dir}` | 2 |" in text
    assert f"- Stage `tapt` from `{tiny_bert_dir}`: the MLM head (" in text
    assert "- Texts are cut to 24 tokens (head), as in training." in text


def test_an_untested_export_says_so_and_a_card_is_what_the_next_stage_reads(two_stages):
    meta = front_matter(two_stages["tapt"])
    assert meta["pipeline_tag"] == "fill-mask" and [s["name"] for s in meta["bertlab"]["stages"]] == ["tapt"]
    assert read_card(two_stages["tapt"]) == meta["bertlab"]
    assert "test_metrics" not in meta["bertlab"]["stages"][0]
    assert "- test: not tested" in open(os.path.join(two_stages["tapt"], "README.md"), encoding="utf-8").read()


def test_test_metrics_go_only_into_the_card_of_the_weights_tested(two_stages):
    before = open(os.path.join(two_stages["tapt"], "README.md"), encoding="utf-8").read()
    assert not add_test_metrics(two_stages["tapt"], "/elsewhere/best.ckpt", {"test/acc": 1.0})
    assert open(os.path.join(two_stages["tapt"], "README.md"), encoding="utf-8").read() == before
