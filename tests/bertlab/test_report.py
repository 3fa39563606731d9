"""``bertlab report``: the committed docs/results.md is exactly what the committed results/*.json and the
template make, and every directive fails loudly on a record it cannot read."""

import json
import os

import pytest

from bertlab.core.errors import BertlabError
from bertlab.report import main, render, status, verdict
from tests.bertlab.cli_helpers import ROOT


def test_the_committed_results_page_is_what_the_records_make():
    template = open(os.path.join(ROOT, "docs", "results.template.md")).read()
    page = render(template, os.path.join(ROOT, "results"))
    assert page == open(os.path.join(ROOT, "docs", "results.md")).read(), "run `bertlab report` and commit"
    assert "{{" not in page and page.count("| arm | n |") >= 10


def _table(tmp_path, runs: dict, **meta) -> str:
    data = {arm: {"_runs": r} for arm, r in runs.items()}
    data["_table"] = {
        "name": "toy",
        "baseline": "base",
        "bases": {},
        "metrics": ["test/acc"],
        "args": ["--trainer.max_epochs", "3"],
        "seeds": [int(s) for s in next(iter(runs.values()))],
        "pretrain_seeds": [],
        "command": "bertlab ablate toy.yaml",
        **meta,
    }
    (tmp_path / "toy.json").write_text(json.dumps(data))
    return str(tmp_path)


def test_directives_fill_tables_verdicts_and_values(tmp_path):
    prov = {"provenance": {"commit": "f" * 40, "dirty": False, "code": "c", "precision": "bf16-mixed", "threads": 1}}
    base = {str(s): {"test/acc": 0.80 + 0.001 * s, **prov} for s in range(5)}
    arm = {str(s): {"test/acc": 0.83 + 0.001 * s + 0.0005 * (s % 2), **prov} for s in range(5)}
    results = _table(tmp_path, {"base": base, "arm": arm})
    (tmp_path / "anchor.json").write_text(json.dumps({"test/acc": {"mean": 0.84712}}))
    page = render("A {{value anchor test/acc.mean .3f}} B {{verdict toy arm}}\n{{table toy}}\n", results)
    assert page.splitlines()[1] == "A 0.847 B 0.8322 ± 0.0016, Δ +0.0302 [+0.0299, +0.0305]: **gain**"
    assert "**Rebuilt** at commit `fffffff` (10 runs; precision bf16-mixed; 1 thread(s) per run)" in page
    assert "| arm | 5 | 0.8322 ± 0.0016 | +0.0302 [+0.0299, +0.0305] | 5 |" in page
    assert verdict(results, "toy base") == "0.8020 ± 0.0016 (the baseline)"
    base["0"].pop("provenance")
    _table(tmp_path, {"base": base, "arm": arm})
    assert status(json.loads((tmp_path / "toy.json").read_text())).startswith("**Not rebuilt.** Old budget")
    for bad, message in [
        ("{{table missing}}", "missing.json: cannot read"),
        ("{{value anchor test/f1}}", "has no 'test/f1'"),
        ("{{verdict toy nobody}}", "has no arm 'nobody'"),
    ]:
        with pytest.raises(BertlabError, match=message):
            render(bad, results)


def test_check_mode_writes_nothing_and_says_when_the_page_is_stale(tmp_path, capsys):
    results = _table(tmp_path, {"base": {"0": {"test/acc": 0.8}}})
    template = tmp_path / "t.md"
    template.write_text("{{table toy}}\n")
    out = tmp_path / "page.md"
    args = ["--results", results, "--template", str(template), "--out", str(out)]
    assert main(args + ["--check"]) == 1 and not out.exists()
    assert main(args) == 0 and main(args + ["--check"]) == 0
    first = out.read_bytes()
    assert main(args) == 0 and out.read_bytes() == first  # a second run changes nothing
