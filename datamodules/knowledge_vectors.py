"""Knowledge vectors: one external vector per example, for every split (Ostendorff et al. 2019).

``Knowledge`` names exactly one source:

* ``provider: vader`` or ``provider: encoder`` (with ``model_dir``) — computed from the text
  (``datamodules.knowledge_providers``), cached on disk;
* ``column: NAME`` — a data column holding a list or a JSON list per row;
* ``files: {train: a.npy, val: b.npy, ...}`` — per split, an ``.npy`` whose row i is example id i, or
  an ``.npz`` with ``idx`` and ``vectors``;
* ``table: FILE`` + ``key_column: NAME`` — entity -> vector, as JSON ``{"key": [..]}``, TSV (key, then
  the numbers; a header line is allowed) or NPZ (``keys``, ``vectors``), looked up by a data column.

``dim: N`` may be added to assert the width. Missing vectors or mixed widths are errors that name
the file, split and ids; the model trusts what comes out. Rows are aligned by example id
(``datamodules.soft_label_file``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from bertlab.core.errors import BertlabError
from bertlab.core.models import resolve_model_dir
from datamodules.knowledge_providers import PROVIDERS
from datamodules.soft_label_file import _preview, align_by_id

SPLITS = ("train", "val", "test", "predict")
SOURCES = ("provider", "column", "files", "table")
ENCODER_KEYS = ("model_dir", "pooling", "max_length")


@dataclass
class Knowledge:
    """One source of per-example knowledge vectors (exactly one of ``provider``, ``column``, ``files``, ``table``).

    Args:
        provider: ``vader`` (English lexicon features) or ``encoder`` (a second, frozen encoder).
        column: a data column holding each example's vector (a list or a JSON list).
        files: per split (train/val/test/predict), an ``.npy`` or ``.npz`` of vectors by example id.
        table: an entity -> vector table (JSON, TSV or NPZ), looked up by ``key_column``.
        key_column: the data column holding each example's key into ``table``.
        dim: assert this width.
        model_dir: the ``encoder`` provider's model directory.
        pooling: the ``encoder`` provider's pooling, ``mean`` (default) or ``cls``.
        max_length: the ``encoder`` provider's token budget per text (default 128).
    """

    provider: Literal["vader", "encoder"] | None = None
    column: str | None = None
    files: dict[str, str] | None = None
    table: str | None = None
    key_column: str | None = None
    dim: int | None = None
    model_dir: str | None = None
    pooling: Literal["mean", "cls"] | None = None
    max_length: int | None = None

    def __post_init__(self) -> None:
        chosen = [k for k in SOURCES if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise BertlabError(f"knowledge needs exactly one of {', '.join(SOURCES)}, got {chosen or 'none'}")
        stray = [k for k in ENCODER_KEYS if getattr(self, k) is not None and self.provider != "encoder"]
        if stray:
            raise BertlabError(f"knowledge: {', '.join(stray)} belong to {{provider: encoder}} only")
        if self.key_column and chosen[0] != "table":
            raise BertlabError(f"knowledge.key_column is for a `table` source, not {chosen[0]!r}")
        if self.provider is not None and self.provider not in PROVIDERS:
            raise BertlabError(f"unknown knowledge provider {self.provider!r}; known: {', '.join(PROVIDERS)}")
        if self.provider == "encoder":
            resolve_model_dir(self.model_dir, "knowledge encoder model_dir")
            if self.pooling not in (None, "mean", "cls"):
                raise BertlabError(f"knowledge.pooling must be mean or cls, got {self.pooling!r}")
            length = self.max_length
            if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 2):
                raise BertlabError(f"knowledge.max_length must be an integer >= 2, got {length!r}")
        if self.table is not None:
            if not self.key_column:
                raise BertlabError("a knowledge table needs `key_column`: the data column holding each example's key")
            if not os.path.isfile(self.table):
                raise BertlabError(f"knowledge table {self.table!r} does not exist")
        if self.files is not None:
            if not self.files:
                raise BertlabError("knowledge.files must map split names (train/val/test/predict) to .npy/.npz files")
            bad = sorted(set(self.files) - set(SPLITS))
            if bad:
                raise BertlabError(f"knowledge.files: unknown split(s) {bad}; use train, val, test, predict")
        dim = self.dim
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise BertlabError(f"knowledge.dim must be an integer >= 1, got {dim!r}")


def carry_columns(
    raw: pd.DataFrame, df: pd.DataFrame, where: str, knowledge: Knowledge | None, skip: tuple
) -> pd.DataFrame:
    """Keep the data column that knowledge needs beside the validated text/label columns.

    ``skip``: the text/label/pair column names, which the frame already holds (renamed).
    """
    name = knowledge and (knowledge.column or knowledge.key_column)
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


def read_vector_table(path: str) -> dict[str, list[float]]:
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
    table = read_vector_table(path)
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


def load_knowledge(
    spec: Knowledge, split: str, df: pd.DataFrame, renamed: dict[str, str], cache_dir: str
) -> np.ndarray:
    """[N, D] float32 knowledge vectors for the examples of ``split`` (frame ``df``), by id."""
    where = f"{split} split"
    if spec.provider is not None:
        out = PROVIDERS[spec.provider](spec, df, cache_dir)
    elif spec.column is not None:
        out = _from_column(df, renamed.get(spec.column, spec.column), where)
    elif spec.files is not None:
        if split not in spec.files:
            raise BertlabError(
                f"knowledge.files has no file for the {split} split; give one for every split in use "
                f"({', '.join(spec.files)} given)"
            )
        out = _from_file(spec.files[split], len(df), where)
    else:
        name = spec.key_column
        if renamed.get(name, name) not in df:
            raise BertlabError(
                f"{where}: no column {name!r} to look knowledge up by (built-in sources have only text and label)"
            )
        out = _from_table(df, spec.table, name, renamed.get(name, name), where)
    dim = spec.dim
    if dim is not None and out.shape[1] != dim:
        raise BertlabError(f"{where}: knowledge vectors are {out.shape[1]} wide but knowledge.dim is {dim}")
    return out
