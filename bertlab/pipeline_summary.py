"""A pipeline's summary under its root: ``summary.json`` (every stage's status, export and metrics, with the
pipeline's provenance) and ``summary.md`` (the same as a table, which ``bertlab pipeline`` prints), each written
atomically."""

from __future__ import annotations

import json
import os

from bertlab.allocator import allocator_in_use
from bertlab.core.files import atomic_path
from bertlab.core.provenance import provenance

VALIDATION = ("val/acc", "val/f1", "val/loss", "val/perplexity", "probe/best_acc")
TEST = ("test/acc", "test/f1", "test/loss")


def _fmt(metrics: dict, keys: tuple[str, ...]) -> str:
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in keys if k in metrics)


def write_summary(root: str, summary: dict) -> None:
    summary["provenance"] = provenance(allocator=allocator_in_use())
    with atomic_path(os.path.join(root, "summary.json")) as tmp, open(tmp, "w") as f:
        json.dump(summary, f, indent=1)
    lines = [
        f"# Pipeline {summary['pipeline']}",
        "",
        "| stage | status | final validation | test | export |",
        "|---|---|---|---|---|",
    ]
    for s in summary["stages"]:
        fit, test = s["metrics"].get("fit", {}), s["metrics"].get("test", {})
        lines.append(f"| {s['name']} | {s['status']} | {_fmt(fit, VALIDATION)} | {_fmt(test, TEST)} | {s['export']} |")
    with atomic_path(os.path.join(root, "summary.md")) as tmp, open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
