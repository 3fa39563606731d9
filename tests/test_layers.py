"""The floors (README, Layout): the base imports no other project code, components stand on the base
and third-party code only, and only orchestration imports components; and no project module imports
itself back through others (no import circle). Imports are read with ``ast``, including those inside
functions, so a lazy import cannot slip past."""

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
                out.update(f"{node.module}.{alias.name}" for alias in node.names)  # may be a submodule
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


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (``sources``: module name -> its code; packages end in
    ``.__init__`` so that relative imports resolve). A name that is not a module (``from a import f``) is dropped."""
    names = {m.removesuffix(".__init__") for m in sources}
    graph = {}
    for module, source in sources.items():
        name = module.removesuffix(".__init__")
        graph[name] = {t for t in imported(source, name, module.endswith(".__init__")) if t in names and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph``: its strongly connected components of more than one module (Tarjan),
    each sorted, so a circle reads the same however it was found."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(out)


def test_no_import_circle_among_project_modules():
    sources = {}
    for path, module in project_modules():
        with open(path, encoding="utf-8") as f:
            sources[module + (".__init__" if path.endswith("__init__.py") else "")] = f.read()
    graph = import_graph(sources)
    assert "bertlab.engine" in graph["bertlab.pipeline"] and "bertlab.pipeline" in graph["bertlab.cli"]
    found = circles(graph)
    assert not found, "import circles: " + "; ".join(" -> ".join(c) for c in found)


@pytest.mark.parametrize(
    "sources, expected",
    [
        # the circle issue 25 found: the dispatcher runs the pipeline, which took the pre-flight from the dispatcher
        (
            {
                "bertlab.cli": "def main():\n    from bertlab.pipeline import main\n",
                "bertlab.pipeline": "def pre():\n    from bertlab.cli import preflight_stage\n",
            },
            [["bertlab.cli", "bertlab.pipeline"]],
        ),
        # through a submodule named in `from package import module`, and three long
        (
            {
                "bertlab.__init__": "",
                "bertlab.a": "from bertlab import b\n",
                "bertlab.b": "import bertlab.c\n",
                "bertlab.c": "from .a import f\n",
            },
            [["bertlab.a", "bertlab.b", "bertlab.c"]],
        ),
        # the split: both import the engine, neither imports the other back
        (
            {
                "bertlab.cli": "from bertlab.engine import run_lightning\nfrom bertlab import pipeline\n",
                "bertlab.pipeline": "from bertlab.engine import preflight_stage\n",
                "bertlab.engine": "from bertlab.preflight import check_run\n",
                "bertlab.preflight": "import os\n",
            },
            [],
        ),
    ],
)
def test_circles_are_found(sources, expected):
    assert circles(import_graph(sources)) == expected


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
        " or m in ('bertlab.cli', 'bertlab.engine', 'bertlab.pipeline')]\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
