"""Tests name a data module's arguments flat (``train_file=...``, ``batch_size=8``); ``grouped`` puts them
into the typed groups the constructors take (``splits``, ``loader``)."""

from __future__ import annotations

import dataclasses

from datamodules.batching import Loader
from datamodules.splits import Splits

SPLIT_FIELDS = {f.name for f in dataclasses.fields(Splits)}
LOADER_FIELDS = {f.name for f in dataclasses.fields(Loader)}


def grouped(**flat) -> dict:
    splits = {k: flat.pop(k) for k in SPLIT_FIELDS & set(flat)}
    loader = {k: flat.pop(k) for k in LOADER_FIELDS & set(flat)}
    if splits:
        flat["splits"] = Splits(**splits)
    if loader:
        flat["loader"] = Loader(**loader)
    return flat
