"""Text augmentation for classification: EDA, contextual substitution, back-translation.

A config names augmenters by class (``class_path: datamodules.augment.EDA`` with ``init_args``);
``build_augmenter(name, **settings)`` builds one by its short name from Python. Every augmenter maps
``(texts, seed)`` to ``n_aug`` variants per text and names its settings in ``fingerprint()`` for caching.
"""

from __future__ import annotations

import inspect

from bertlab.core.errors import BertlabError

from .back_translation import BackTranslation
from .base import Augmenter
from .contextual import ContextualSubstitution
from .eda import EDA
from .thesaurus import (
    Cilin,
    MyThes,
    SynonymDict,
    SynonymSource,
    SynonymTSV,
    default_synonym_source,
    open_synonym_source,
)

AUGMENTERS: dict[str, type[Augmenter]] = {
    "eda": EDA,
    "contextual": ContextualSubstitution,
    "back_translation": BackTranslation,
}

__all__ = [
    "AUGMENTERS",
    "Augmenter",
    "BackTranslation",
    "Cilin",
    "ContextualSubstitution",
    "EDA",
    "MyThes",
    "SynonymDict",
    "SynonymSource",
    "SynonymTSV",
    "build_augmenter",
    "default_synonym_source",
    "open_synonym_source",
]


def build_augmenter(name: str, **settings) -> Augmenter:
    if name not in AUGMENTERS:
        raise BertlabError(f"unknown augmenter {name!r}; known augmenters: {', '.join(AUGMENTERS)}")
    cls = AUGMENTERS[name]
    try:
        inspect.signature(cls).bind(**settings)
    except TypeError as e:
        known = ", ".join(inspect.signature(cls).parameters)
        raise BertlabError(f"augmenter {name!r}: {e}; its settings are {known}") from None
    return cls(**settings)
