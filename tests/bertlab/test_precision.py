"""``trainer.precision: auto``: how it resolves, and that the CLI takes it and still takes explicit values."""

from __future__ import annotations

import pytest

import bertlab.precision as precision
from tests.bertlab.cli_helpers import ROOT, run_cli


def test_explicit_precision_passes_through():
    assert precision.resolve_precision("32-true") == ("32-true", "as configured")
    assert precision.resolve_precision("bf16-mixed", "cpu")[0] == "bf16-mixed"


@pytest.mark.parametrize("has_bf16, expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_on_cpu_follows_the_cpu_features(monkeypatch, has_bf16, expected):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: (has_bf16, "AVX512-BF16" if has_bf16 else ""))
    resolved, why = precision.resolve_precision("auto", "cpu")
    assert resolved == expected
    assert why == ("the CPU has AVX512-BF16" if has_bf16 else "the CPU has no native bf16 (AVX512-BF16 or AMX)")


def test_auto_on_cuda_asks_the_device(monkeypatch):
    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(precision.torch.cuda, "get_device_name", lambda: "GPU X")
    for supported, expected in ((True, "bf16-mixed"), (False, "32-true")):
        monkeypatch.setattr(precision.torch.cuda, "is_bf16_supported", lambda s=supported: s)
        assert precision.resolve_precision("auto", "auto")[0] == expected
        assert precision.resolve_precision("auto", "gpu")[0] == expected
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: (False, ""))
    assert precision.resolve_precision("auto", "cpu")[0] == "32-true"  # an explicit CPU run ignores the GPU


def test_this_machine_reports_a_consistent_feature():
    has, feature = precision.cpu_has_bf16()
    assert has == bool(feature)


def test_cli_defaults_to_auto_and_takes_explicit_values():
    cfg = f"{ROOT}/configs/classify/fine_food.yaml"
    default = run_cli("fit", "--config", cfg, "--print_config")
    assert default.returncode == 0, default.stderr
    assert "precision: auto" in default.stdout
    explicit = run_cli("fit", "--config", cfg, "--trainer.precision", "32-true", "--print_config")
    assert "precision: 32-true" in explicit.stdout
    bad = run_cli("fit", "--config", cfg, "--trainer.precision", "fp8", "--print_config")
    assert bad.returncode != 0 and "precision" in bad.stderr
