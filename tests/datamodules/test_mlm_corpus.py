"""``MLMCorpus``: its cache key names the corpus by content and by everything that shapes the sequences and the
cut, and nothing else; ``build`` fills the entry once."""

import dataclasses
import os

import pandas as pd

from bertlab.core.models import load_tokenizer
from datamodules.corpus_plan import Cut
from datamodules.mlm_corpus import MLMCorpus, layout
from datamodules.splits import Splits
from tests.conftest import make_texts


def _file(path, lines) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _task(tmp_path, val_seed: int) -> Splits:
    paths = {}
    for split, n, seed in [("train", 20, 1), ("val", 8, val_seed)]:
        texts, labels = make_texts(n, seed)
        paths[split] = str(tmp_path / f"{split}-{seed}.csv")
        pd.DataFrame({"text": texts, "label": labels}).to_csv(paths[split], index=False)
    return Splits(train_file=paths["train"], val_file=paths["val"])


def test_the_key_changes_with_each_part_it_names_and_with_nothing_else(tiny_bert_dir, tmp_path):
    tok = load_tokenizer(tiny_bert_dir)
    entry = _file(tmp_path / "c.txt", make_texts(30, seed=5)[0])
    base = dict(
        entries=[entry],
        task=_task(tmp_path, val_seed=2),
        task_train_texts=True,
        tokenizer=tok,
        layout=layout(tok, "line_by_line", 32, False),
        cut=Cut(0, 0.1, None),
        cache_dir=str(tmp_path / "cache"),
    )
    key = MLMCorpus(**base).key
    assert len(key) >= 16
    # not parts of the key: how many processes tokenize, and which object holds the same settings
    assert MLMCorpus(**base | {"workers": 3}).key == key
    assert MLMCorpus(**base | {"cut": Cut(0, 0.1, None), "tokenizer": load_tokenizer(tiny_bert_dir)}).key == key
    changed = {
        "the task's held-out texts": {"task": _task(tmp_path, val_seed=9)},
        "the task's train texts left out": {"task_train_texts": False},
        "max_length": {"layout": layout(tok, "line_by_line", 16, False)},
        "mode": {"layout": layout(tok, "packed", 32, False)},
        "word ids": {"layout": layout(tok, "line_by_line", 32, True)},
        "the seed": {"cut": Cut(1, 0.1, None)},
        "val_fraction": {"cut": Cut(0, 0.2, None)},
        "max_documents": {"cut": Cut(0, 0.1, 10)},
        "another entry": {"entries": [entry, _file(tmp_path / "d.txt", ["one more line"])]},
    }
    keys = {name: MLMCorpus(**base | delta).key for name, delta in changed.items()}
    assert key not in keys.values() and len(set(keys.values())) == len(keys), keys
    _file(tmp_path / "c.txt", make_texts(30, seed=6)[0])  # the same path, other content
    os.utime(entry, (1, 1))  # and another mtime, so the remembered hash is not reused
    assert MLMCorpus(**base).key != key


def test_build_fills_the_entry_once_and_records_what_it_holds(tiny_bert_dir, tmp_path):
    tok = load_tokenizer(tiny_bert_dir)
    texts = make_texts(40, seed=5)[0]
    args = dict(
        entries=[_file(tmp_path / "c.txt", texts + texts[:10])],  # 10 repeats, dropped
        task=None,
        task_train_texts=True,
        tokenizer=tok,
        layout=layout(tok, "line_by_line", 32, False),
        cut=Cut(0, 0.25, None),
        cache_dir=str(tmp_path / "cache"),
        workers=1,
    )
    corpus = MLMCorpus(**args)
    assert corpus.build() is True and MLMCorpus(**args).build() is False
    meta = corpus.meta()
    unique = len(set(texts))
    assert meta["key"] == corpus.key and os.path.basename(corpus.path) == corpus.key
    assert meta["val"]["sequences"] == round(0.25 * unique)
    assert meta["train"]["sequences"] == unique - round(0.25 * unique)
    docs = corpus.documents()
    assert sorted(docs["train"] + docs["val"]) == sorted(set(texts))
    assert dataclasses.replace(corpus, workers=2).key == corpus.key
