"""Extras aligned by example id: soft labels (train only) and knowledge vectors (every split),
from every kind of source, and every way they can be wrong."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bertlab.core.errors import BertlabError
from datamodules.classification import ClassificationDataModule
from datamodules.knowledge_vectors import Knowledge, read_vector_table
from datamodules.sources import text_fingerprint
from tests.dm_args import grouped


@pytest.fixture
def data(tiny_csvs, tmp_path):
    """train (160) / val (40) CSVs with an ``entity`` key and a JSON ``vec`` column."""
    out = {}
    for split in ("train", "val"):
        df = pd.read_csv(tiny_csvs[split])
        df["entity"] = [f"e{i % 7}" for i in range(len(df))]
        df["vec"] = [json.dumps([i, -i]) for i in range(len(df))]
        path = tmp_path / f"{split}.csv"
        df.to_csv(path, index=False)
        out[split] = str(path)
    return out


def make_dm(tiny_bert_dir, data, tmp_path, **kwargs) -> ClassificationDataModule:
    if isinstance(kwargs.get("knowledge"), dict):
        kwargs["knowledge"] = Knowledge(**kwargs["knowledge"])
    return ClassificationDataModule(
        **grouped(
            tokenizer=tiny_bert_dir,
            train_file=data["train"],
            val_file=data["val"],
            max_length=32,
            cache_dir=str(tmp_path / "cache"),
            **kwargs,
        )
    )


def write_soft_labels(path, n: int, c: int = 2, drop=(), dup=False, shuffle=True, **extra) -> np.ndarray:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(c), size=n).astype(np.float32)
    idx = np.array([i for i in range(n) if i not in set(drop)] + ([0] if dup else []))
    order = rng.permutation(len(idx)) if shuffle else np.arange(len(idx))
    np.savez(path, idx=idx[order], probs=probs[idx][order], **extra)
    return probs


# ---------------------------------------------------------------- soft labels


def test_soft_labels_attach_to_train_only_aligned_by_id(tiny_bert_dir, data, tmp_path):
    path = tmp_path / "soft.npz"
    probs = write_soft_labels(path, 160)
    dm = make_dm(tiny_bert_dir, data, tmp_path, soft_labels_file=str(path))
    dm.setup("fit")
    train = dm.datasets["train"]
    np.testing.assert_array_equal(train.extras["soft_labels"], probs)  # the file was shuffled; rows are by id
    assert train[5]["soft_labels"].shape == (2,) and "soft_labels" not in dm.datasets["val"].extras
    batch = next(iter(dm.train_dataloader()))
    np.testing.assert_allclose(batch["soft_labels"].numpy(), probs[batch["idx"].numpy()])


def test_soft_labels_with_the_writer_metadata_are_checked(tiny_bert_dir, data, tmp_path):
    dm = make_dm(tiny_bert_dir, data, tmp_path)
    fp = text_fingerprint(dm.frames["train"])
    good = tmp_path / "good.npz"
    write_soft_labels(
        good, 160, labels=np.array(["neg", "pos"]), split=np.array("train"), data_fingerprint=np.array(fp)
    )
    make_dm(tiny_bert_dir, data, tmp_path, soft_labels_file=str(good)).setup("fit")
    bad = tmp_path / "other_data.npz"
    write_soft_labels(
        bad, 160, labels=np.array(["neg", "pos"]), split=np.array("train"), data_fingerprint=np.array("0" * 16)
    )
    with pytest.raises(BertlabError, match="different training texts"):
        make_dm(tiny_bert_dir, data, tmp_path, soft_labels_file=str(bad)).setup("fit")
    val = tmp_path / "val_split.npz"
    write_soft_labels(val, 160, split=np.array("val"))
    with pytest.raises(BertlabError, match="'val' split"):
        make_dm(tiny_bert_dir, data, tmp_path, soft_labels_file=str(val)).setup("fit")
    labels = tmp_path / "labels.npz"
    write_soft_labels(labels, 160, labels=np.array(["bad", "good"]))
    with pytest.raises(BertlabError, match="teacher's labels"):
        make_dm(tiny_bert_dir, data, tmp_path, soft_labels_file=str(labels)).setup("fit")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n": 160, "drop": (3, 7, 100)}, r"soft labels missing for 3 of 160 training examples \(ids 3, 7, 100\)"),
        ({"n": 160, "c": 3}, "3 class probabilities per example, but the data has 2 labels"),
        ({"n": 160, "dup": True}, "more than once"),
        ({"n": 170}, "beyond the 160 training examples 0..159"),
    ],
)
def test_bad_soft_label_files_name_the_file_and_counts(tiny_bert_dir, data, tmp_path, kwargs, match):
    path = tmp_path / "soft.npz"
    write_soft_labels(path, **kwargs)
    with pytest.raises(BertlabError, match=match) as e:
        make_dm(tiny_bert_dir, data, tmp_path, soft_labels_file=str(path)).setup("fit")
    assert str(path) in str(e.value)


def test_soft_labels_must_be_probabilities_and_the_file_must_exist(tiny_bert_dir, data, tmp_path):
    path = tmp_path / "logits.npz"
    np.savez(path, idx=np.arange(160), probs=np.full((160, 2), 3.0, dtype=np.float32))
    with pytest.raises(BertlabError, match="not probability distributions"):
        make_dm(tiny_bert_dir, data, tmp_path, soft_labels_file=str(path)).setup("fit")
    np.savez(tmp_path / "keys.npz", ids=np.arange(160))
    with pytest.raises(BertlabError, match=r"no array\(s\) \['idx', 'probs'\]"):
        make_dm(tiny_bert_dir, data, tmp_path, soft_labels_file=str(tmp_path / "keys.npz")).setup("fit")
    with pytest.raises(BertlabError, match="does not exist"):
        make_dm(tiny_bert_dir, data, tmp_path, soft_labels_file=str(tmp_path / "nope.npz"))


# ---------------------------------------------------------------- predict_split


def test_predict_split_train_predicts_over_the_training_examples(tiny_bert_dir, data, tmp_path):
    dm = make_dm(tiny_bert_dir, data, tmp_path, predict_split="train")
    dm.setup("predict")
    assert len(dm.datasets["predict"]) == len(dm.frames["train"]) == 160
    assert dm.texts("predict") is dm.frames["train"]
    with pytest.raises(BertlabError, match="predict_split must be one of"):
        make_dm(tiny_bert_dir, data, tmp_path, predict_split="dev")
    with pytest.raises(BertlabError, match="would be ignored"):
        make_dm(tiny_bert_dir, data, tmp_path, predict_split="train", predict_file=data["val"])


# ---------------------------------------------------------------- knowledge: one test per source


def knowledge_of(dm, split: str) -> np.ndarray:
    dm.setup({"train": "fit", "val": "validate", "predict": "predict"}[split])
    return dm.datasets[split].extras["knowledge"]


def test_knowledge_from_a_json_column(tiny_bert_dir, data, tmp_path):
    dm = make_dm(tiny_bert_dir, data, tmp_path, knowledge={"column": "vec", "dim": 2})
    k = knowledge_of(dm, "val")
    np.testing.assert_array_equal(k, np.array([[i, -i] for i in range(40)], dtype=np.float32))
    assert k.dtype == np.float32


def test_knowledge_column_survives_the_train_val_cut(tiny_bert_dir, data, tmp_path):
    dm = ClassificationDataModule(
        **grouped(
            tokenizer=tiny_bert_dir,
            train_file=data["train"],
            val_fraction=0.25,
            max_length=32,
            cache_dir=str(tmp_path / "cache"),
            knowledge=Knowledge(column="vec"),
        )
    )
    raw = pd.read_csv(data["train"]).set_index("text")
    dm.setup("fit")
    for split in ("train", "val"):
        expected = np.array([json.loads(raw.loc[t, "vec"]) for t in dm.frames[split]["text"]], dtype=np.float32)
        np.testing.assert_array_equal(dm.datasets[split].extras["knowledge"], expected)


def test_knowledge_column_from_jsonl_lists(tiny_bert_dir, tiny_csvs, tmp_path):
    paths = {}
    for split in ("train", "val"):
        df = pd.read_csv(tiny_csvs[split])
        df["kv"] = [[float(i), 1.0, 2.0] for i in range(len(df))]
        paths[split] = tmp_path / f"{split}.jsonl"
        df.to_json(paths[split], orient="records", lines=True)
    dm = ClassificationDataModule(
        **grouped(
            tokenizer=tiny_bert_dir,
            train_file=str(paths["train"]),
            val_file=str(paths["val"]),
            max_length=32,
            cache_dir=str(tmp_path / "cache"),
            knowledge=Knowledge(column="kv"),
        )
    )
    np.testing.assert_array_equal(knowledge_of(dm, "val"), np.array([[i, 1, 2] for i in range(40)], dtype=np.float32))
    dm = ClassificationDataModule(
        **grouped(
            tokenizer=tiny_bert_dir,
            train_file=str(paths["train"]),
            val_file=tiny_csvs["val"],
            max_length=32,
            cache_dir=str(tmp_path / "cache"),
            knowledge=Knowledge(column="kv"),
        )
    )
    with pytest.raises(BertlabError, match=r"val.csv: no column 'kv' for the knowledge vectors"):
        _ = dm.frames


def test_knowledge_column_errors(tiny_bert_dir, data, tmp_path):
    df = pd.read_csv(data["val"])
    df.loc[[3, 9], "vec"] = ""
    df.to_csv(data["val"], index=False)
    with pytest.raises(
        BertlabError, match=r"val split, column 'vec': knowledge vectors missing for 2 example\(s\): 3, 9"
    ):
        knowledge_of(make_dm(tiny_bert_dir, data, tmp_path, knowledge={"column": "vec"}), "val")
    df.loc[[3, 9], "vec"] = "[1, 2, 3]"
    df.to_csv(data["val"], index=False)
    with pytest.raises(BertlabError, match=r"inconsistent dimensions: most are 2 wide, but 2 are not \(3: 3, 9: 3\)"):
        knowledge_of(make_dm(tiny_bert_dir, data, tmp_path, knowledge={"column": "vec"}), "val")
    with pytest.raises(BertlabError, match="no column 'nope'"):
        _ = make_dm(tiny_bert_dir, data, tmp_path, knowledge={"column": "nope"}).frames


def test_knowledge_from_npy_and_npz_by_id(tiny_bert_dir, data, tmp_path):
    train = np.random.default_rng(0).normal(size=(160, 3)).astype(np.float32)
    np.save(tmp_path / "train.npy", train)
    val = np.random.default_rng(1).normal(size=(40, 3)).astype(np.float32)
    order = np.random.default_rng(2).permutation(40)
    np.savez(tmp_path / "val.npz", idx=order, vectors=val[order])
    dm = make_dm(
        tiny_bert_dir,
        data,
        tmp_path,
        knowledge=Knowledge(files={"train": str(tmp_path / "train.npy"), "val": str(tmp_path / "val.npz")}),
    )
    dm.setup("fit")
    np.testing.assert_array_equal(dm.datasets["train"].extras["knowledge"], train)
    np.testing.assert_array_equal(dm.datasets["val"].extras["knowledge"], val)


def test_knowledge_file_errors(tiny_bert_dir, data, tmp_path):
    np.save(tmp_path / "short.npy", np.zeros((150, 3), dtype=np.float32))
    np.save(tmp_path / "val.npy", np.zeros((40, 3), dtype=np.float32))
    dm = make_dm(
        tiny_bert_dir,
        data,
        tmp_path,
        knowledge=Knowledge(files={"train": str(tmp_path / "short.npy"), "val": str(tmp_path / "val.npy")}),
    )
    with pytest.raises(
        BertlabError,
        match=r"short.npy: knowledge vectors missing for 10 of 160 examples of the train split \(ids 150, 151",
    ):
        dm.setup("fit")
    dm = make_dm(tiny_bert_dir, data, tmp_path, knowledge={"files": {"train": str(tmp_path / "val.npy")}})
    with pytest.raises(BertlabError, match="knowledge.files has no file for the val split"):
        knowledge_of(dm, "val")
    np.save(tmp_path / "long.npy", np.zeros((41, 3), dtype=np.float32))
    dm = make_dm(tiny_bert_dir, data, tmp_path, knowledge={"files": {"val": str(tmp_path / "long.npy")}})
    with pytest.raises(BertlabError, match="beyond the 40 examples"):
        knowledge_of(dm, "val")


@pytest.mark.parametrize("fmt", ["json", "tsv", "npz"])
def test_knowledge_from_a_keyed_table(tiny_bert_dir, data, tmp_path, fmt):
    table = {f"e{j}": [float(j), 10.0 + j] for j in range(7)}
    path = tmp_path / f"entities.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(table))
    elif fmt == "tsv":
        path.write_text("entity\tx\ty\n" + "".join(f"{k}\t{v[0]}\t{v[1]}\n" for k, v in table.items()))
    else:
        np.savez(path, keys=np.array(list(table)), vectors=np.array(list(table.values())))
    dm = make_dm(tiny_bert_dir, data, tmp_path, knowledge={"table": str(path), "key_column": "entity"})
    k = knowledge_of(dm, "val")
    np.testing.assert_array_equal(k, np.array([table[f"e{i % 7}"] for i in range(40)], dtype=np.float32))


def test_knowledge_table_errors(tiny_bert_dir, data, tmp_path):
    path = tmp_path / "entities.json"
    path.write_text(json.dumps({f"e{j}": [1.0, 2.0] for j in range(5)}))  # no e5, e6
    dm = make_dm(tiny_bert_dir, data, tmp_path, knowledge={"table": str(path), "key_column": "entity"})
    with pytest.raises(
        BertlabError,
        match=r"val split: 10 example\(s\) have no vector in .*entities.json for their 'entity': "
        r"keys e5, e6 \(example ids 5, 6, 12, 13, 19",
    ):
        knowledge_of(dm, "val")
    path.write_text(json.dumps({"e0": [1.0], **{f"e{j}": [1.0, 2.0] for j in range(1, 7)}}))
    with pytest.raises(BertlabError, match=r"inconsistent dimensions \[1, 2\]"):
        knowledge_of(
            make_dm(tiny_bert_dir, data, tmp_path, knowledge={"table": str(path), "key_column": "entity"}), "val"
        )
    bad = tmp_path / "bad.tsv"
    bad.write_text("e0\t1\t2\ne1\t1\tx\n")
    with pytest.raises(BertlabError, match="line 2: the fields after the key must be numbers"):
        read_vector_table(str(bad))


@pytest.mark.parametrize(
    "spec,match",
    [
        ({}, "exactly one of"),
        ({"provider": "vader", "column": "vec"}, "exactly one of"),
        ({"provider": "sentiwordnet"}, "unknown knowledge provider"),
        ({"table": "entities.json"}, "needs `key_column`"),
        ({"column": "vec", "key_column": "entity"}, "key_column is for a `table`"),
        ({"files": {"dev": "x.npy"}}, r"unknown split\(s\) \['dev'\]"),
        ({"column": "vec", "dim": 0}, "knowledge.dim"),
    ],
)
def test_knowledge_spec_errors_at_construction(tiny_bert_dir, data, tmp_path, spec, match):
    with pytest.raises(BertlabError, match=match):
        make_dm(tiny_bert_dir, data, tmp_path, knowledge=spec)


def test_declared_dim_must_match(tiny_bert_dir, data, tmp_path):
    with pytest.raises(BertlabError, match="2 wide but knowledge.dim is 3"):
        knowledge_of(make_dm(tiny_bert_dir, data, tmp_path, knowledge={"column": "vec", "dim": 3}), "val")


def test_vader_features_are_lexicon_scores_and_cached(tiny_bert_dir, data, tmp_path, monkeypatch):
    dm = make_dm(tiny_bert_dir, data, tmp_path, knowledge={"provider": "vader", "dim": 4})
    k = knowledge_of(dm, "val")
    texts = dm.frames["val"]["text"]
    assert k.shape == (40, 4) and np.all((k[:, :3] >= 0) & (k[:, :3] <= 1)) and np.all(np.abs(k[:, 3]) <= 1)
    np.testing.assert_allclose(k[:, :3].sum(1), 1.0, atol=2e-3)  # pos + neg + neu
    positive = texts.str.contains("excellent|wonderful|lovely").to_numpy()
    negative = texts.str.contains("terrible|awful|disappointing").to_numpy()
    assert k[positive, 3].mean() > 0 > k[negative, 3].mean()
    import vaderSentiment.vaderSentiment as vs

    monkeypatch.setattr(vs, "SentimentIntensityAnalyzer", None)  # a second build must read the cache
    again = knowledge_of(make_dm(tiny_bert_dir, data, tmp_path, knowledge={"provider": "vader"}), "val")
    np.testing.assert_array_equal(again, k)


def test_encoder_embeddings_are_masked_means_of_the_local_encoder_and_cached(
    tiny_bert_dir, data, tmp_path, monkeypatch
):
    import torch
    from transformers import AutoModel, AutoTokenizer

    dm = make_dm(
        tiny_bert_dir, data, tmp_path, knowledge={"provider": "encoder", "model_dir": tiny_bert_dir, "max_length": 16}
    )
    k = knowledge_of(dm, "val")
    texts = list(dm.frames["val"]["text"])
    tok, enc = AutoTokenizer.from_pretrained(tiny_bert_dir), AutoModel.from_pretrained(tiny_bert_dir).eval()
    with torch.no_grad():  # one text at a time, no padding: the mean over its own tokens
        expect = np.stack(
            [
                enc(**tok(t, truncation=True, max_length=16, return_tensors="pt")).last_hidden_state[0].mean(0).numpy()
                for t in texts[:5]
            ]
        )
    assert k.shape == (40, enc.config.hidden_size)
    np.testing.assert_allclose(k[:5], expect, atol=1e-5)
    cls = knowledge_of(
        make_dm(
            tiny_bert_dir,
            data,
            tmp_path,
            knowledge={"provider": "encoder", "model_dir": tiny_bert_dir, "pooling": "cls", "max_length": 16},
        ),
        "val",
    )
    with torch.no_grad():
        first = (
            enc(**tok(texts[0], truncation=True, max_length=16, return_tensors="pt")).last_hidden_state[0, 0].numpy()
        )
    np.testing.assert_allclose(cls[0], first, atol=1e-5)
    import transformers

    monkeypatch.setattr(transformers, "AutoModel", None)  # a second build must read the cache
    again = knowledge_of(
        make_dm(
            tiny_bert_dir,
            data,
            tmp_path,
            knowledge={"provider": "encoder", "model_dir": tiny_bert_dir, "max_length": 16},
        ),
        "val",
    )
    np.testing.assert_array_equal(again, k)


@pytest.mark.parametrize(
    "spec,match",
    [
        ({"provider": "encoder"}, "knowledge encoder model_dir None is not a model directory"),
        ({"provider": "encoder", "model_dir": "no/such/dir"}, "'no/such/dir' is not a model directory"),
        ({"provider": "vader", "pooling": "mean"}, r"pooling belong to \{provider: encoder\} only"),
        ({"provider": "encoder", "model_dir": "TINY", "pooling": "max"}, "pooling must be mean or cls"),
        ({"provider": "encoder", "model_dir": "TINY", "max_length": 1}, "max_length must be an integer >= 2"),
    ],
)
def test_encoder_provider_errors(tiny_bert_dir, data, tmp_path, spec, match):
    spec = {k: (tiny_bert_dir if v == "TINY" else v) for k, v in spec.items()}
    with pytest.raises(BertlabError, match=match):
        make_dm(tiny_bert_dir, data, tmp_path, knowledge=spec)
