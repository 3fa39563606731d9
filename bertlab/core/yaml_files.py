"""Reading YAML files the user wrote, with a syntax error that names the file, line and column."""

from __future__ import annotations

import os

import yaml

from bertlab.core.errors import BertlabError


def read_yaml(path: str, what: str = "config file"):
    """The parsed content of ``path``; a missing file or a YAML syntax error is a ``BertlabError``."""
    if not os.path.isfile(path):
        raise BertlabError(f"{what} {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except UnicodeDecodeError as e:
        raise BertlabError(f"{path}: not valid UTF-8 at byte offset {e.start}; re-save the file as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise BertlabError(f"{path}: YAML syntax error{where}: {problem}; fix the file") from None
