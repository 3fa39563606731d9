"""Per-example extras beside the tokens: teacher soft labels and knowledge vectors.

Both are aligned by **example id**: the row number of an example in its split as
``ClassificationDataModule.frames`` builds it (the ``idx`` in every batch and in every
prediction dump). For a split read from a file and not cut further, that is the file's data
row; the train split that validation was cut from is renumbered after the cut.

* Soft labels (self-knowledge distillation): ``soft_labels.npz`` as ``SoftLabelWriter``
  writes it — ``idx`` [N], ``probs`` [N, C], ``labels`` (class names), ``split`` and
  ``data_fingerprint`` (of the texts the teacher saw). Attached to the train split only.
* Knowledge vectors (``knowledge:`` on the data module), for every split; one source:

  - ``{provider: vader}`` — computed from the text (VADER lexicon, Hutto & Gilbert 2014:
    [pos, neg, neu, compound] per example; English), cached on disk;
  - ``{provider: encoder, model_dir: DIR}`` — sentence embeddings of a second, frozen local
    encoder (any language; ``pooling: mean`` (default) or ``cls``, ``max_length`` 128), cached on disk;
  - ``{column: NAME}`` — a data column holding a list or a JSON list per row;
  - ``{files: {train: a.npy, val: b.npy, ...}}`` — per split, an ``.npy`` whose row i is
    example id i, or an ``.npz`` with ``idx`` and ``vectors``;
  - ``{table: FILE, key_column: NAME}`` — entity -> vector, as JSON ``{"key": [..]}``, TSV
    (key, then the numbers; a header line is allowed) or NPZ (``keys``, ``vectors``),
    looked up with the data column ``key_column``.

  ``dim: N`` may be added to assert the width. Missing vectors or mixed widths are errors.

Everything is checked here, naming the file, split and ids; the model trusts what comes out.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from bertlab.core.errors import BertlabError
from bertlab.core.files import atomic_path
from bertlab.core.fingerprint import dir_identity, stable_hash
from bertlab.core.models import resolve_model_dir
from datamodules.sources import text_fingerprint

KNOWLEDGE_SOURCES = ("provider", "column", "files", "table")
SOFT_LABEL_KEYS = ("idx", "probs")


def _preview(values, n: int = 5) -> str:
    values = list(values)
    return ", ".join(map(str, values[:n])) + (", ..." if len(values) > n else "")


# ---------------------------------------------------------------- arguments


def check_extras_args(
    predict_split: str, predict_file: str | None, soft_labels_file: str | None, knowledge: dict | None
) -> None:
    """The data module's arguments for extras, checked when it is built, before any data is read.

    ``predict_split`` belongs here because its use is the soft-label dump (``predict_split: train``).
    """
    splits = ("train", "val", "test", "predict")
    if predict_split not in splits:
        raise BertlabError(f"predict_split must be one of {', '.join(splits)}, got {predict_split!r}")
    if predict_split != "predict" and predict_file:
        raise BertlabError(
            f"predict_split is {predict_split!r}, so predict_file {predict_file!r} would be ignored; drop one of them"
        )
    if soft_labels_file is not None and not os.path.isfile(soft_labels_file):
        raise BertlabError(
            f"soft_labels_file {soft_labels_file!r} does not exist; write it with `bertlab predict` + "
            "SoftLabelWriter over the train split"
        )
    if knowledge is None:
        return
    if not isinstance(knowledge, dict):
        raise BertlabError(f"knowledge must be a mapping such as {{provider: vader}}, got {knowledge!r}")
    chosen = [k for k in KNOWLEDGE_SOURCES if knowledge.get(k) is not None]
    if len(chosen) != 1:
        raise BertlabError(f"knowledge needs exactly one of {', '.join(KNOWLEDGE_SOURCES)}, got {chosen or 'none'}")
    unknown = sorted(set(knowledge) - {*KNOWLEDGE_SOURCES, "dim", "key_column", *ENCODER_KEYS})
    if unknown:
        raise BertlabError(
            f"knowledge: unknown key(s) {unknown}; a knowledge source has one of {', '.join(KNOWLEDGE_SOURCES)}, "
            f"and dim, key_column, or {', '.join(ENCODER_KEYS)} for the encoder provider"
        )
    stray = sorted(k for k in ENCODER_KEYS if k in knowledge and knowledge.get("provider") != "encoder")
    if stray:
        raise BertlabError(f"knowledge: {', '.join(stray)} belong to {{provider: encoder}} only")
    if knowledge.get("key_column") and chosen[0] != "table":
        raise BertlabError(f"knowledge.key_column is for a `table` source, not {chosen[0]!r}")
    if chosen[0] == "provider" and knowledge["provider"] not in PROVIDERS:
        raise BertlabError(f"unknown knowledge provider {knowledge['provider']!r}; known: {', '.join(PROVIDERS)}")
    if knowledge.get("provider") == "encoder":
        resolve_model_dir(knowledge.get("model_dir"), "knowledge encoder model_dir")
        if knowledge.get("pooling", "mean") not in ("mean", "cls"):
            raise BertlabError(f"knowledge.pooling must be mean or cls, got {knowledge['pooling']!r}")
        length = knowledge.get("max_length", 128)
        if isinstance(length, bool) or not isinstance(length, int) or length < 2:
            raise BertlabError(f"knowledge.max_length must be an integer >= 2, got {length!r}")
    if chosen[0] == "table":
        if not knowledge.get("key_column"):
            raise BertlabError("a knowledge table needs `key_column`: the data column holding each example's key")
        if not os.path.isfile(knowledge["table"]):
            raise BertlabError(f"knowledge table {knowledge['table']!r} does not exist")
    if chosen[0] == "files":
        files = knowledge["files"]
        if not isinstance(files, dict) or not files:
            raise BertlabError("knowledge.files must map split names (train/val/test/predict) to .npy/.npz files")
        bad = sorted(set(files) - {"train", "val", "test", "predict"})
        if bad:
            raise BertlabError(f"knowledge.files: unknown split(s) {bad}; use train, val, test, predict")
    dim = knowledge.get("dim")
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
        raise BertlabError(f"knowledge.dim must be an integer >= 1, got {dim!r}")


def carry_columns(raw: pd.DataFrame, df: pd.DataFrame, where: str, knowledge: dict | None, skip: tuple) -> pd.DataFrame:
    """Keep the data column that knowledge needs beside the validated text/label columns.

    ``skip``: the text/label/pair column names, which the frame already holds (renamed).
    """
    name = (knowledge or {}).get("column") or (knowledge or {}).get("key_column")
    if not name or name in skip:
        return df
    if name in df.columns:  # "text"/"label"/"text_pair" of the frame, taken from other columns
        raise BertlabError(
            f"{where}: the knowledge column may not be called {name!r} unless it is the text or label column; rename it"
        )
    if name not in raw.columns:
        raise BertlabError(
            f"{where}: no column {name!r} for the knowledge vectors; the columns are "
            f"{', '.join(map(repr, map(str, raw.columns)))}"
        )
    out = df.copy()
    out[name] = raw[name].to_numpy()
    return out


# ---------------------------------------------------------------- attaching to a split


def align_by_id(path: str, idx: np.ndarray, values: np.ndarray, n: int, what: str, examples: str) -> np.ndarray:
    """``values`` [len(idx), D] scattered to [n, D] float32 rows by id; every id 0..n-1 exactly once."""
    if not np.issubdtype(idx.dtype, np.integer):
        raise BertlabError(f"{path}: idx must be integers, got {idx.dtype}")
    ids, counts = np.unique(idx, return_counts=True)
    if (counts > 1).any():
        raise BertlabError(
            f"{path}: {int((counts > 1).sum())} example id(s) appear more than once (e.g. "
            f"{_preview(ids[counts > 1])}); keep one row per id"
        )
    outside = ids[(ids < 0) | (ids >= n)]
    if len(outside):
        raise BertlabError(
            f"{path}: {len(outside)} id(s) beyond the {n} {examples} 0..{n - 1} (e.g. {_preview(outside)}); is it "
            "the file of another split?"
        )
    missing = np.setdiff1d(np.arange(n), ids)
    if len(missing):
        raise BertlabError(
            f"{path}: {what} missing for {len(missing)} of {n} {examples} (ids {_preview(missing)}); the file has "
            f"{len(ids)}"
        )
    out = np.empty((n, values.shape[1]), dtype=np.float32)
    out[idx] = values
    bad = np.flatnonzero(~np.isfinite(out).all(1))
    if len(bad):
        raise BertlabError(f"{path}: {what} with NaN/inf for {len(bad)} of the {examples} (ids {_preview(bad)})")
    return out


def split_extras(dm, split: str, df: pd.DataFrame) -> dict[str, np.ndarray]:
    """The extras of one split of ``dm`` (a ``ClassificationDataModule``), row i = example id i."""
    h = dm.hparams
    out: dict[str, np.ndarray] = {}
    if h.soft_labels_file and split == "train":
        out["soft_labels"] = load_soft_labels(h.soft_labels_file, df, dm.label_names)
    if h.knowledge:
        source = h.predict_split if split == "predict" else split
        renamed = {
            h.text_column: "text",
            h.label_column: "label",
            **({h.text_pair_column: "text_pair"} if h.text_pair_column else {}),
        }
        out["knowledge"] = load_knowledge(h.knowledge, source, df, renamed, dm.cache_dir)
    return out


def load_soft_labels(path: str, df: pd.DataFrame, label_names: list[str]) -> np.ndarray:
    """[N, C] teacher probabilities for the N training examples, by id; every id must be there exactly once."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise BertlabError(
            f"{path}: cannot read as .npz ({str(e).splitlines()[0]}); write it with SoftLabelWriter"
        ) from None
    missing_keys = [k for k in SOFT_LABEL_KEYS if k not in data]
    if missing_keys:
        raise BertlabError(f"{path}: no array(s) {missing_keys}; a soft-label file holds idx [N] and probs [N, C]")
    idx, probs = data["idx"], data["probs"]
    n, c = len(df), len(label_names)
    if probs.ndim != 2 or idx.ndim != 1 or len(idx) != len(probs):
        raise BertlabError(
            f"{path}: idx has shape {idx.shape} and probs {probs.shape}; expected idx [N] and probs [N, C]"
        )
    if probs.shape[1] != c:
        raise BertlabError(
            f"{path}: {probs.shape[1]} class probabilities per example, but the data has {c} labels {label_names}; "
            "dump the teacher on this label set"
        )
    if "labels" in data and [str(x) for x in data["labels"]] != list(label_names):
        raise BertlabError(
            f"{path}: the teacher's labels {[str(x) for x in data['labels']]} differ from the data's {label_names}"
        )
    if "split" in data and str(data["split"]) != "train":
        raise BertlabError(
            f"{path}: soft labels of the {str(data['split'])!r} split; dump the train split (data.predict_split: train)"
        )
    if "data_fingerprint" in data and str(data["data_fingerprint"]) != text_fingerprint(df):
        raise BertlabError(
            f"{path}: the teacher predicted on different training texts (fingerprint {str(data['data_fingerprint'])} "
            "vs "
            f"{text_fingerprint(df)}); use the same data, split_seed and val_fraction for teacher and student"
        )
    out = align_by_id(path, idx, probs, n, "soft labels", "training examples")
    bad = np.flatnonzero((out < 0).any(1) | (np.abs(out.sum(1) - 1) > 1e-3))
    if len(bad):
        raise BertlabError(
            f"{path}: {len(bad)} row(s) are not probability distributions (ids {_preview(bad)}); write softmax "
            "probabilities"
        )
    return out


# ---------------------------------------------------------------- knowledge vectors


def _stack(rows: list, where: str, ids) -> np.ndarray:
    """Rows of numbers as a float32 matrix; missing rows and mixed widths name their ids."""
    missing = [i for i, r in zip(ids, rows) if r is None]
    if missing:
        raise BertlabError(f"{where}: knowledge vectors missing for {len(missing)} example(s): {_preview(missing)}")
    widths = pd.Series([len(r) for r in rows], index=list(ids))
    if widths.nunique() > 1:
        common = int(widths.mode()[0])
        odd = widths[widths != common]
        raise BertlabError(
            f"{where}: knowledge vectors have inconsistent dimensions: most are {common} wide, but {len(odd)} are not "
            f"({_preview(f'{i}: {w}' for i, w in odd.items())})"
        )
    if len(rows) and widths.iloc[0] == 0:
        raise BertlabError(f"{where}: knowledge vectors are empty")
    try:
        out = np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)
    except (TypeError, ValueError):
        raise BertlabError(f"{where}: knowledge vectors must hold numbers only") from None
    bad = np.flatnonzero(~np.isfinite(out).all(1))
    if len(bad):
        raise BertlabError(
            f"{where}: knowledge vectors with NaN/inf for {len(bad)} example(s): {_preview(np.asarray(list(ids))[bad])}"
        )
    return out


def _parse_vector(value):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if isinstance(value, (int, float)):
        return [value]
    try:
        return [float(x) for x in value]
    except (TypeError, ValueError):
        return None


def _from_column(df: pd.DataFrame, name: str, where: str) -> np.ndarray:
    rows = [_parse_vector(v) for v in df[name]]
    return _stack(rows, f"{where}, column {name!r}", range(len(df)))


def _from_file(path: str, n: int, where: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise BertlabError(f"{where}: knowledge file {path!r} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise BertlabError(f"{path}: cannot read as .npy/.npz ({str(e).splitlines()[0]})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded as z:
            if "idx" not in z.files or "vectors" not in z.files:
                raise BertlabError(
                    f"{path}: an .npz of knowledge vectors holds `idx` [N] and `vectors` [N, D]; it has {z.files}"
                )
            idx, vectors = z["idx"], z["vectors"]
    else:
        vectors, idx = loaded, np.arange(len(loaded))
    if vectors.ndim != 2 or idx.ndim != 1 or len(idx) != len(vectors):
        raise BertlabError(
            f"{path}: knowledge vectors must be a 2-D array [N, D] with one id per row; got shape {vectors.shape}"
        )
    return align_by_id(path, idx, vectors, n, "knowledge vectors", f"examples of the {where}")


def read_table(path: str) -> dict[str, list[float]]:
    """An entity -> vector table from JSON, TSV or NPZ; keys as strings."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".json":
        try:
            with open(path, encoding="utf-8") as f:
                table = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BertlabError(f"{path}: cannot parse as JSON ({e})") from None
        if not isinstance(table, dict):
            raise BertlabError(f"{path}: a JSON knowledge table is an object {{key: [numbers]}}")
        return {str(k): v for k, v in table.items()}
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "keys" not in z.files or "vectors" not in z.files:
                raise BertlabError(
                    f"{path}: an .npz knowledge table holds `keys` [N] and `vectors` [N, D]; it has {z.files}"
                )
            keys, vectors = z["keys"], z["vectors"]
        if vectors.ndim != 2 or len(keys) != len(vectors):
            raise BertlabError(
                f"{path}: `keys` {keys.shape} and `vectors` {vectors.shape} do not match; expected [N] and [N, D]"
            )
        return {str(k): list(v) for k, v in zip(keys, vectors)}
    if suffix == ".tsv":
        table: dict[str, list[float]] = {}
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                fields = line.rstrip("\n").split("\t")
                if not line.strip():
                    continue
                try:
                    table[fields[0].strip()] = [float(x) for x in fields[1:]]
                except ValueError:
                    if line_no == 1:
                        continue  # a header line
                    raise BertlabError(f"{path}: line {line_no}: the fields after the key must be numbers") from None
        return table
    raise BertlabError(f"{path}: unknown knowledge table format {suffix!r}; use .json, .tsv or .npz")


def _key(value) -> str | None:
    """A data value as a table key: ``3.0`` and ``3`` both become ``"3"``; missing stays None."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _from_table(df: pd.DataFrame, path: str, key_column: str, frame_column: str, where: str) -> np.ndarray:
    table = read_table(path)
    widths = {len(v) for v in table.values()}
    if len(widths) > 1:
        raise BertlabError(f"{path}: table vectors have inconsistent dimensions {sorted(widths)}")
    keys = df[frame_column].map(_key)
    absent = sorted({k for k in keys if k not in table}, key=str)
    if absent:
        rows = [i for i, k in enumerate(keys) if k not in table]
        raise BertlabError(
            f"{where}: {len(rows)} example(s) have no vector in {path} for their {key_column!r}: keys "
            f"{_preview(absent)} (example ids {_preview(rows)})"
        )
    return _stack([table[k] for k in keys], f"{where} via {path}", range(len(df)))


def load_knowledge(spec: dict, split: str, df: pd.DataFrame, renamed: dict[str, str], cache_dir: str) -> np.ndarray:
    """[N, D] float32 knowledge vectors for the examples of ``split`` (frame ``df``), by id."""
    where = f"{split} split"
    if spec.get("provider") is not None:
        out = PROVIDERS[spec["provider"]](spec, df, cache_dir)
    elif spec.get("column") is not None:
        name = spec["column"]
        out = _from_column(df, renamed.get(name, name), where)
    elif spec.get("files") is not None:
        if split not in spec["files"]:
            raise BertlabError(
                f"knowledge.files has no file for the {split} split; give one for every split in use "
                f"({', '.join(spec['files'])} given)"
            )
        out = _from_file(spec["files"][split], len(df), where)
    else:
        name = spec["key_column"]
        if renamed.get(name, name) not in df:
            raise BertlabError(
                f"{where}: no column {name!r} to look knowledge up by (built-in sources have only text and label)"
            )
        out = _from_table(df, spec["table"], name, renamed.get(name, name), where)
    dim = spec.get("dim")
    if dim is not None and out.shape[1] != dim:
        raise BertlabError(f"{where}: knowledge vectors are {out.shape[1]} wide but knowledge.dim is {dim}")
    return out


# ---------------------------------------------------------------- providers: vectors computed from the text


def _texts(df: pd.DataFrame) -> list[str]:
    return list(df["text"] if "text_pair" not in df else df["text"] + " " + df["text_pair"])


def _save_atomic(path: str, out: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, out)


def vader_features(spec: dict, df: pd.DataFrame, cache_dir: str) -> np.ndarray:
    """[pos, neg, neu, compound] of VADER (Hutto & Gilbert 2014) for each text; cached by the texts' fingerprint."""
    path = os.path.join(cache_dir, "knowledge", f"vader-{text_fingerprint(df)}.npy")
    if os.path.isfile(path):
        return np.load(path)
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        raise BertlabError(
            "the vader knowledge provider needs the PyPI package vaderSentiment (it bundles the lexicon): pip "
            "install vaderSentiment"
        ) from None
    analyzer = SentimentIntensityAnalyzer()
    scores = [analyzer.polarity_scores(t) for t in _texts(df)]
    out = np.asarray([[s["pos"], s["neg"], s["neu"], s["compound"]] for s in scores], dtype=np.float32).reshape(
        len(df), 4
    )
    _save_atomic(path, out)
    return out


def encoder_embeddings(spec: dict, df: pd.DataFrame, cache_dir: str, batch_size: int = 64) -> np.ndarray:
    """Sentence embeddings of a second, frozen encoder: the mask-weighted mean (or the first token)
    of its last hidden states, texts truncated to ``max_length`` tokens. Works for any language the
    encoder's tokenizer covers. Cached by the texts, the directory's files and the settings."""
    import torch
    from transformers import AutoModel

    from bertlab.core.hf_loading import from_pretrained
    from bertlab.core.models import load_tokenizer

    model_dir = resolve_model_dir(spec.get("model_dir"), "knowledge encoder model_dir")
    pooling, max_length = spec.get("pooling", "mean"), spec.get("max_length", 128)
    key = stable_hash(dir_identity(model_dir), pooling, str(max_length), text_fingerprint(df))
    path = os.path.join(cache_dir, "knowledge", f"encoder-{key:016x}.npy")
    if os.path.isfile(path):
        return np.load(path)
    tokenizer = load_tokenizer(model_dir)
    model, _ = from_pretrained(AutoModel, model_dir)
    model.eval()
    texts, parts = _texts(df), []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[start : start + batch_size],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            hidden = model(**enc).last_hidden_state
            if pooling == "cls":
                parts.append(hidden[:, 0])
            else:
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                parts.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))
    width = model.config.hidden_size
    out = torch.cat(parts).float().numpy() if parts else np.zeros((0, width), dtype=np.float32)
    _save_atomic(path, out)
    return out


PROVIDERS = {"vader": vader_features, "encoder": encoder_embeddings}
ENCODER_KEYS = ("model_dir", "pooling", "max_length")
