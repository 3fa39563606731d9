"""What a ``TextClassifier`` is configured with besides numbers: its pooling head, built from the config's
``class_path`` (``build_head``), and the option blocks of two recipes, ``LabelDescriptions`` (multi-task
training with a description per label) and ``Distillation`` (self-knowledge distillation)."""

from __future__ import annotations

import functools
import importlib
import math
from dataclasses import dataclass

from bertlab.core.errors import BertlabError
from lightning_modules.heads import ClsHead, Head


def build_head(head, hidden_size: int, num_layers: int) -> Head:
    """The head for an encoder of this width and depth. ``head`` is what the config gives (a class, or the
    callable jsonargparse makes of ``class_path`` + ``init_args``), a checkpoint's ``{class_path, init_args}``,
    or None (``ClsHead``); a bad option is a ``BertlabError`` naming the head."""
    if head is None:
        head = ClsHead
    elif isinstance(head, str):
        raise BertlabError(
            f"model head {head!r}: heads are chosen by class_path, e.g. `head: MeanHead` or `head: {{class_path: "
            "lightning_modules.heads.LastKHead, init_args: {k: 4}}`; see docs/extending.md for the old names"
        )
    elif isinstance(head, dict):
        module, _, name = head["class_path"].rpartition(".")
        head = functools.partial(getattr(importlib.import_module(module), name), **(head.get("init_args") or {}))
    cls = next(
        (a for a in (head, getattr(head, "func", None), *getattr(head, "args", ())) if isinstance(a, type)), head
    )
    try:
        built = head(hidden_size, num_layers)
    except (ValueError, TypeError) as e:
        raise BertlabError(f"model head {getattr(cls, '__name__', cls)}: {e}") from None
    if not isinstance(built, Head):
        raise BertlabError(f"model head {getattr(cls, '__name__', cls)} is not a lightning_modules.heads.Head")
    return built


@dataclass
class LabelDescriptions:
    """Multi-task training with label descriptions: loss = CE + ``weight`` · InfoNCE(example, its label's
    description) at temperature ``temperature``; ``descriptions`` maps every label name to a sentence."""

    descriptions: dict[str, str]
    weight: float = 0.1
    temperature: float = 0.1

    def __post_init__(self) -> None:
        if not (math.isfinite(float(self.weight)) and self.weight >= 0):
            raise BertlabError(f"label_descriptions.weight must be a finite number >= 0, got {self.weight}")


@dataclass
class Distillation:
    """Self-knowledge distillation from a teacher's soft labels (Hinton et al. 2015): ``losses.kd_loss``
    with temperature T and α, the weight of the soft-label term."""

    temperature: float = 2.0
    alpha: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(float(self.temperature)) and self.temperature > 0):
            raise BertlabError(
                f"distill.temperature must be a finite number > 0, got {self.temperature}; 1 to 4 is usual"
            )
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise BertlabError(f"distill.alpha (the weight of the soft-label term) must be in [0, 1], got {self.alpha}")
