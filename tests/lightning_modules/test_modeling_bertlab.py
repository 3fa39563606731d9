"""The code an export ships stands alone: each file imports the standard library, torch, transformers and
its shipped siblings only, never bertlab; training imports these same files, so no parity test is needed
(``tests/bertlab/test_predict_export.py`` round-trips one export per head and fusion)."""

from __future__ import annotations

import ast
import importlib.util
import os

import pytest

from lightning_modules.custom_export import SHIPPED

SIBLINGS = {name.rpartition(".")[2] for name in SHIPPED}


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_code_imports_no_project_code(name):
    path = importlib.util.find_spec(name).origin
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    names = {alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    top = {name.split(".")[0] for name in names}
    assert top <= {"__future__", "dataclasses", "collections", "importlib", "inspect", "json", "os", "typing",
                   "torch", "transformers", "vaderSentiment"}, top  # fmt: skip
    relative = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level}
    assert relative <= SIBLINGS and all(
        n.level == 1 for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level
    )


def test_every_relative_import_of_the_shipped_code_is_shipped():
    """transformers copies a custom-code file's ``from .x import`` siblings, and only those, into its module cache."""
    from transformers.dynamic_module_utils import get_relative_imports

    for name in SHIPPED:
        path = importlib.util.find_spec(name).origin
        assert set(get_relative_imports(path)) <= SIBLINGS, name
    assert os.path.basename(importlib.util.find_spec(SHIPPED[0]).origin) == "modeling_bertlab.py"
