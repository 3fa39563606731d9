"""The floors (README, Layout): the base imports no other project code, components stand on the base
and third-party code only, and only orchestration imports components. Imports are read with ``ast``,
including those inside functions, so a lazy import cannot slip past."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = "bertlab.core"
COMPONENTS = ("datamodules", "lightning_modules", "callbacks")
PROJECT = ("bertlab", *COMPONENTS)


def module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def imported(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module name ``source`` imports, relative imports made absolute."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                anchor = parts if is_package else parts[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
                if base:
                    out.add(base)
                if not node.module:
                    out.update(".".join(filter(None, (base, alias.name))) for alias in node.names)
            else:
                out.add(node.module)
    return out


def layer(name: str) -> str | None:
    """``base``, a component package's name, ``orchestration``, or None (third-party)."""
    top = name.split(".")[0]
    if name == BASE or name.startswith(BASE + "."):
        return "base"
    if top in COMPONENTS:
        return top
    if top == "bertlab":
        return "orchestration"
    return None


def violations(module: str, imports: set[str]) -> list[str]:
    """The imports of ``module`` that break the rules."""
    own = layer(module)
    bad = []
    for name in sorted(imports):
        target = layer(name)
        if target is None or own == "orchestration":
            continue
        if own == "base" and target != "base":
            bad.append(f"{module} (base) imports {name}: the base imports no other project code")
        elif own in COMPONENTS and target not in ("base", own):
            bad.append(f"{module} ({own}) imports {name}: a component stands on the base and third-party code only")
    return bad


def project_modules() -> list[tuple[str, str]]:
    out = []
    for top in PROJECT:
        for directory, _, files in os.walk(os.path.join(ROOT, top)):
            out += [
                (os.path.join(directory, f), module_name(os.path.join(directory, f)))
                for f in files
                if f.endswith(".py")
            ]
    return sorted(out)


def test_every_module_keeps_to_its_floor():
    modules = project_modules()
    assert len(modules) > 30 and any(m == "bertlab.core.errors" for _, m in modules)
    bad = []
    for path, module in modules:
        with open(path, encoding="utf-8") as f:
            bad += violations(module, imported(f.read(), module, path.endswith("__init__.py")))
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    "module, source, broken",
    [
        ("datamodules.mlm", "def f():\n    from lightning_modules.hf_loading import from_pretrained\n", True),
        ("lightning_modules.classifier", "import callbacks.probe\n", True),
        ("callbacks.probe", "from datamodules.batching import PadCollator\n", True),
        ("datamodules.pet", "from bertlab.cli import main\n", True),
        ("bertlab.core.models", "from bertlab import pipeline\n", True),
        ("bertlab.core.models", "from .errors import BertlabError\n", False),
        ("datamodules.augment.eda", "from ..sources import read_table\nfrom .base import Augmenter\n", False),
        ("datamodules.augment.eda", "from ... import lightning_modules\n", True),
        ("callbacks.probe", "from bertlab.core.errors import BertlabError\nimport torch\n", False),
        ("bertlab.pipeline", "import datamodules.mlm\nimport callbacks.probe\n", False),
    ],
)
def test_the_rules_catch_what_they_should(module, source, broken):
    assert bool(violations(module, imported(source, module))) == broken


def test_importing_the_base_loads_no_component_and_no_cli():
    code = (
        "import sys\n"
        "import bertlab.core.errors, bertlab.core.models, bertlab.core.hf_loading, bertlab.core.files, "
        "bertlab.core.fingerprint\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('datamodules', 'lightning_modules', 'callbacks')"
        " or m in ('bertlab.cli', 'bertlab.pipeline')]\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
