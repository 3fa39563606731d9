import numpy as np
import pandas as pd
import pytest
import torch

from bertlab.core.errors import BertlabError
from datamodules.augment import EDA, build_augmenter
from datamodules.augment.thesaurus import SynonymDict
from datamodules.batching import PadCollator
from datamodules.classification import ClassificationDataModule
from datamodules.samplers import LengthGroupedSampler
from tests.dm_args import grouped


@pytest.fixture
def dm_factory(tiny_bert_dir, tiny_csvs, tmp_path):
    def make(**kwargs):
        args = dict(
            tokenizer=tiny_bert_dir, train_file=tiny_csvs["train"], cache_dir=str(tmp_path / "cache"), batch_size=8
        )
        args.update(kwargs)
        return ClassificationDataModule(**grouped(**args))

    return make


def test_label_map_is_sorted_and_val_split_is_stratified_and_deterministic(dm_factory):
    a, b = dm_factory(val_fraction=0.25), dm_factory(val_fraction=0.25)
    assert a.id2label == {0: "neg", 1: "pos"} and a.label2id == {"neg": 0, "pos": 1} and a.num_labels == 2
    assert len(a.frames["val"]) == 40 and len(a.frames["train"]) == 120
    assert a.frames["val"]["label"].value_counts().to_dict() == {"pos": 20, "neg": 20}
    assert a.frames["val"]["text"].tolist() == b.frames["val"]["text"].tolist()
    c = dm_factory(val_fraction=0.25, split_seed=1)
    assert c.frames["val"]["text"].tolist() != a.frames["val"]["text"].tolist()


def test_unknown_label_in_val_is_an_error(dm_factory, tmp_path, tiny_csvs):
    bad = tmp_path / "val.csv"
    pd.DataFrame({"text": ["fresh tea", "stale tea"], "label": ["pos", "meh"]}).to_csv(bad, index=False)
    with pytest.raises(BertlabError, match=r"label\(s\) \['meh'\] do not occur in the training data"):
        _ = dm_factory(val_file=str(bad)).frames


def test_setup_without_the_split_names_what_to_set(dm_factory):
    dm = dm_factory()
    with pytest.raises(BertlabError, match=r"stage 'test' needs a test split; set `test_file`"):
        dm.setup("test")


def test_batches_carry_ids_labels_and_dynamic_padding(dm_factory):
    dm = dm_factory(val_fraction=0.25)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "idx", "labels"}
    assert batch["idx"].tolist() == list(range(8))
    assert batch["input_ids"].shape[1] == int(batch["attention_mask"].sum(1).max())  # padded to the longest only
    assert batch["labels"].tolist() == dm.frames["val"]["label"].map(dm.label2id).tolist()[:8]


def test_pad_collator_pads_to_a_multiple():
    out = PadCollator(0, pad_to_multiple_of=8)(
        [{"input_ids": np.array([5, 6, 7]), "labels": 1}, {"input_ids": np.array([5]), "labels": 0}]
    )
    assert out["input_ids"].tolist() == [[5, 6, 7, 0, 0, 0, 0, 0], [5, 0, 0, 0, 0, 0, 0, 0]]
    assert out["attention_mask"].sum(1).tolist() == [3, 1] and out["labels"].tolist() == [1, 0]


def test_length_grouped_sampler_is_a_permutation_with_less_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, size=1000)
    sampler = LengthGroupedSampler(lengths, batch_size=16, seed=3)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == list(range(1000)) and first != second  # a new order each epoch
    assert list(LengthGroupedSampler(lengths, batch_size=16, seed=3)) == first  # deterministic per (seed, epoch)

    def padding(order):
        batches = [np.array(order[i : i + 16]) for i in range(0, len(order), 16)]
        return sum(int(lengths[b].max() * len(b) - lengths[b].sum()) for b in batches)

    random_order = rng.permutation(1000).tolist()
    assert padding(first) < 0.2 * padding(random_order)


def test_train_subset_is_stratified(dm_factory):
    dm = dm_factory(val_fraction=0.25, train_subset=30)
    assert len(dm.frames["train"]) == 30 and dm.frames["train"]["label"].value_counts().to_dict() == {
        "pos": 15,
        "neg": 15,
    }
    with pytest.raises(BertlabError, match=r"train_subset must be in \[1, 120\]"):
        _ = dm_factory(val_fraction=0.25, train_subset=500).frames


def test_augmentation_grows_train_by_n_aug_per_example_and_leaves_val_test_alone(dm_factory, tiny_csvs, monkeypatch):
    synonyms = SynonymDict(
        {"coffee": ["espresso"], "tea": ["chai"], "box": ["carton"], "snack": ["treat"], "kids": ["children"]}
    )
    spec = [EDA(n_aug=3, synonyms=synonyms)]
    plain = dm_factory(val_fraction=0.25, test_file=tiny_csvs["test"])
    aug = dm_factory(val_fraction=0.25, test_file=tiny_csvs["test"], augment=spec)
    n = len(plain.frames["train"])
    train = aug.frames["train"]
    assert len(train) == n * 4
    assert train["source_idx"].tolist() == list(range(n)) + [i for i in range(n) for _ in range(3)]
    assert (
        train["label"].to_numpy()[n:] == plain.frames["train"]["label"].to_numpy()[train["source_idx"].to_numpy()[n:]]
    ).all()
    for split in ("val", "test"):
        assert aug.frames[split].equals(plain.frames[split])
    again = dm_factory(val_fraction=0.25, test_file=tiny_csvs["test"], augment=spec)
    assert again.frames["train"]["text"].tolist() == train["text"].tolist()  # deterministic (and cached)
    aug.setup("fit")
    batch = next(iter(aug.train_dataloader()))
    assert "source_idx" in batch and torch.all(batch["source_idx"] < n)


def test_unknown_augmenter_is_an_error():
    with pytest.raises(
        BertlabError, match="unknown augmenter 'mixup'; known augmenters: eda, contextual, back_translation"
    ):
        build_augmenter("mixup")
    assert build_augmenter("eda", synonyms=SynonymDict({})).n_aug == 4
