"""The process environment every bertlab command runs under, set before torch or transformers load:
offline (bertlab never downloads; a missing file fails fast instead of hanging on the hub), W&B offline
unless the user chose otherwise, and no tokenizer thread pool fighting the DataLoader's workers.

Only defaults are set: a value the user exported wins.
"""

from __future__ import annotations

import os

DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "TOKENIZERS_PARALLELISM": "false",
}


def set_defaults() -> None:
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
