"""The model card every export carries: ``README.md`` in the export directory, as HF Trainer writes one.

YAML front matter that ``huggingface_hub.ModelCard`` and the Hub read (``library_name``, ``pipeline_tag``,
``tags``, ``datasets`` and ``model-index`` with the metrics), and under ``bertlab`` the facts the text is
written from: the base checkpoint, every stage that made the model (a stage started from an earlier export
reads that export's card and adds itself), each stage's recipe (its module's and data's arguments), the data
and its splits, and the metrics. The markdown body below says the same for a reader, with intended use and
limits: a head that started from random weights, the token budget texts were cut to.

``HFExport`` writes it inside the atomic export, and again (atomically) when the exported checkpoint is tested.
An export made inside an ablation gets the table's facts under ``ablation`` (``bertlab.ablation_cards``), and
``ablation_lines`` renders them: the arm over its seeds and its interval against the baseline.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import yaml

CARD = "README.md"
TASKS = {"TextClassifier": "text-classification", "MaskedLM": "fill-mask", "PET": "fill-mask"}
TASKS["TokenTagger"] = "token-classification"
TASK_NAMES = {
    "text-classification": "Text Classification",
    "fill-mask": "Masked Language Modeling",
    "token-classification": "Token Classification",
}
METRIC_TYPES = {"acc": "accuracy", "f1": "f1", "loss": "loss", "perplexity": "perplexity", "mlm_acc": "accuracy"}
MACHINE_SPECIFIC = {"cache_dir", "id2label", "_instantiator", "_class_path"}


def plain(value):
    """``value`` as plain YAML data: a class as its import path, a ``class_path`` callable as its config."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, functools.partial):
        cls = next((a for a in (value.func, *value.args) if isinstance(a, type)), value.func)
        return {"class_path": plain(cls), "init_args": plain(value.keywords)}
    if dataclasses.is_dataclass(value):
        return plain(dataclasses.asdict(value))
    if hasattr(value, "items"):
        return {str(k): plain(v) for k, v in value.items() if str(k) not in MACHINE_SPECIFIC}
    if isinstance(value, list | tuple | set):
        return [plain(v) for v in value]
    return str(value)


def read_card(directory: str) -> dict | None:
    """The ``bertlab`` facts of the card in ``directory`` (an export), or None when it has no bertlab card."""
    path = os.path.join(str(directory), CARD)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not text.startswith("---\n") or "\n---\n" not in text[4:]:
        return None
    meta = yaml.safe_load(text[4 : text.index("\n---\n", 4)]) or {}
    return meta.get("bertlab") if isinstance(meta.get("bertlab"), dict) else None


def _new_parameters(module) -> str | None:
    """What started from random weights in this stage, in words (None: nothing beyond the usual new layer)."""
    names = sorted(getattr(module, "fresh_names", ()) or ())
    mlm_head = [n for n in names if ".cls." in n or ".lm_head." in n or ".vocab_" in n]
    if mlm_head:
        count = sum(p.numel() for n, p in module.named_parameters() if n in set(mlm_head))
        return f"the MLM head ({count:,} parameters) was newly initialised: the checkpoint it started from had none"
    encoder = [n for n in names if n.startswith("encoder.")]
    return f"{len(encoder)} encoder tensors were newly initialised" if encoder else None


def _split_sizes(dm) -> dict:
    frames = dm.__dict__.get("frames") if dm is not None else None  # read already: never read data for the card
    parts = frames or (getattr(dm, "datasets", None) or {})
    return {str(k): len(v) for k, v in parts.items()}


def stage_facts(module, info: dict) -> dict:
    """This stage: what it trained, from what, on what, how, and the validation score of the exported weights."""
    trainer = getattr(module, "_trainer", None)
    dm = getattr(trainer, "datamodule", None) if trainer is not None else None
    hparams = plain(dict(getattr(module, "hparams", {}) or {}))
    data = plain(dict(getattr(dm, "hparams", {}) or {})) if dm is not None else {}
    root = getattr(trainer, "default_root_dir", None)
    kind = type(module).__name__
    started = hparams.get("model_name_or_path") if not hparams.get("from_scratch") else "random weights (from scratch)"
    stage = {
        "name": os.path.basename(os.path.normpath(root)) if root else kind,
        "module": f"{type(module).__module__}.{kind}",
        "task": TASKS.get(kind, "feature-extraction"),
        "started_from": started,
        "steps": info.get("global_step"),
        "recipe": hparams,
        "data": {"class_path": f"{type(dm).__module__}.{type(dm).__name__}", **data} if dm is not None else None,
        "splits": _split_sizes(dm),
        "new_parameters": _new_parameters(module),
    }
    if info.get("monitor") and info.get("best_score") is not None:
        stage["metrics"] = {str(info["monitor"]): float(info["best_score"])}
    elif trainer is not None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        stage["metrics"] = metrics
    return stage


def build(module, info: dict) -> dict:
    """The card's facts for exporting ``module``: the stages of the export it started from, then this one."""
    stage = stage_facts(module, info)
    before = read_card(stage["started_from"]) if stage["started_from"] else None
    stages = [*(before or {}).get("stages", []), stage]
    base = (before or {}).get("base") or stage["started_from"]
    labels = getattr(module, "label_names", None)
    return {
        "base": base,
        "stages": stages,
        "labels": labels() if callable(labels) else None,
        "tokenization": info.get("tokenization"),
    }


def _dataset(stage: dict) -> str:
    """The data a stage trained on, in a few words: its corpus entries and its labelled source or file."""
    data = stage.get("data") or {}
    splits = data.get("splits") or data.get("task") or {}
    given = [v for v in (splits.get("source"), splits.get("train_file")) if v not in (None, "None", "null")]
    names = [os.path.basename(str(e)) for e in data.get("corpus") or []] + [os.path.basename(str(v)) for v in given[:1]]
    return ", ".join(names) or "unrecorded"


def model_index(card: dict) -> list[dict]:
    """HF's ``model-index``: the last stage's metrics, validation (of the exported checkpoint) and test."""
    stage = card["stages"][-1]
    results = []
    for split, metrics in (("validation", stage.get("metrics") or {}), ("test", stage.get("test_metrics") or {})):
        rows = [
            {"type": METRIC_TYPES.get(k.rpartition("/")[2], k.rpartition("/")[2]), "value": v, "name": k}
            for k, v in sorted(metrics.items())
        ]
        if rows:
            name = _dataset(stage)
            results.append(
                {
                    "task": {"type": stage["task"], "name": TASK_NAMES.get(stage["task"], stage["task"])},
                    "dataset": {"name": name, "type": name, "split": split},
                    "metrics": rows,
                }
            )
    return [{"name": stage["name"], "results": results}]


def render(card: dict) -> str:
    """The whole ``README.md``: front matter (metadata + the facts) and the markdown a reader sees."""
    last = card["stages"][-1]
    meta = {
        "library_name": "transformers",
        "pipeline_tag": last["task"],
        "tags": ["bertlab", last["task"], *(s["name"] for s in card["stages"])],
        "datasets": sorted({_dataset(s) for s in card["stages"]}),
        "model-index": model_index(card),
        "bertlab": card,
    }
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{front}---\n\n{body(card)}"


def _metrics_line(metrics: dict | None) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in sorted((metrics or {}).items())) or "none recorded"


def body(card: dict) -> str:
    last = card["stages"][-1]
    lines = [f"# {last['name']} (bertlab)", "", f"A {last['task']} model made by bertlab from `{card['base']}`."]
    lines += [
        "",
        "## Stages",
        "",
        "| # | stage | module | started from | steps | new weights |",
        "|---|---|---|---|---|---|",
    ]
    for i, s in enumerate(card["stages"], 1):
        new = s.get("new_parameters") or "-"
        module = s["module"].rpartition(".")[2]
        lines.append(f"| {i} | {s['name']} | {module} | `{s['started_from']}` | {s.get('steps')} | {new} |")
    lines += ["", "## Recipe", ""]
    for s in card["stages"]:
        recipe = yaml.safe_dump({"model": s.get("recipe"), "data": s.get("data")}, sort_keys=False, width=1000)
        lines += [f"Stage `{s['name']}`:", "", "```yaml", recipe.rstrip(), "```", ""]
    lines += ["## Data and splits", ""]
    for s in card["stages"]:
        sizes = ", ".join(f"{k} {v}" for k, v in s.get("splits", {}).items()) or "sizes not recorded"
        lines.append(f"- `{s['name']}`: {_dataset(s)} ({sizes})")
    lines += ["", "## Results", "", f"- validation (the exported checkpoint): {_metrics_line(last.get('metrics'))}"]
    lines.append(f"- test: {_metrics_line(last.get('test_metrics')) if last.get('test_metrics') else 'not tested'}")
    lines += ["", "## Intended use and limits", ""]
    if card.get("labels"):
        lines.append(f"- Classifies text into {', '.join(map(str, card['labels']))}, text like `{_dataset(last)}`.")
    tok = card.get("tokenization") or {}
    if tok.get("max_length"):
        lines.append(
            f"- Texts are cut to {tok['max_length']} tokens ({tok.get('truncation', 'head')}), as in training."
        )
    for s in card["stages"]:
        if s.get("new_parameters"):
            lines.append(f"- Stage `{s['name']}` from `{s['started_from']}`: {s['new_parameters']}.")
    ablation = card.get("ablation")
    if ablation:
        lines += ["", *ablation_lines(ablation)]
    else:
        lines.append("- One training run: the scores are one seed's; compare recipes with `bertlab ablate` intervals.")
    return "\n".join(lines) + "\n"


def ablation_lines(a: dict) -> list[str]:
    """The section an ablation adds (``bertlab.ablation_cards``): the arm over its seeds, and its interval."""
    lines = [
        "## In its ablation",
        "",
        f"- Seed {a['seed']} of arm `{a['arm']}` in table `{a['table']}`: {a['metric']} {a['mean']:.4f} ± "
        f"{a['std']:.4f} (mean ± std over {a['seeds']} seeds). This export is one of those seeds.",
    ]
    d = a.get("difference")
    if d and d.get("low") is not None:
        lines.append(
            f"- Against `{a['baseline']}`: Δ {d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] "
            f"({d['confidence']:.0%} paired t-interval over {d['units']} units), Holm p {d['holm_p']:.3g}: "
            f"{d['verdict']}."
        )
    elif d:
        lines.append(f"- Against `{a['baseline']}`: Δ {d['mean']:+.4f}, {d['units']} unit(s): {d['verdict']}.")
    elif a["arm"] == a["baseline"]:
        lines.append("- This arm is the table's baseline.")
    if a.get("command"):
        lines.append(f"- Reproduce the table: `{a['command']}`")
    return lines
