"""``bertlab --help`` lists every subcommand; pipeline/ablate/demo each have their own help with an example, and
LightningCLI's subcommand help still works."""

import pytest

from bertlab.cli import main
from bertlab.help import SUBCOMMANDS


def test_top_level_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    listed = [line.split("  ")[1] for line in out.splitlines() if line.startswith("  ") and not line.startswith("   ")]
    assert [name for name, _ in SUBCOMMANDS] == [
        "fit",
        "validate",
        "test",
        "predict",
        "predict --model EXPORT_DIR --input FILE",
        "pipeline",
        "ablate",
        "report",
        "demo",
    ]
    assert listed[: len(SUBCOMMANDS)] == [name for name, _ in SUBCOMMANDS]
    assert max(len(line) for line in out.splitlines()) <= 120
    assert main([]) == 2 and "subcommands:" in capsys.readouterr().err  # no subcommand: help, and a usage error


@pytest.mark.parametrize(
    "sub,example", [("pipeline", "--set finetune"), ("ablate", "--launcher slurm"), ("demo", "--only")]
)
def test_own_subcommands_have_help_with_an_example(capsys, sub, example):
    with pytest.raises(SystemExit) as exit_:
        main([sub, "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and out.startswith(f"usage: bertlab {sub}")
    examples = out.split("examples:\n", 1)[1]
    assert f"  bertlab {sub}" in examples and example in examples


def test_lightning_subcommand_help_is_lightnings(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    for option in ("--trainer.max_epochs", "--model CONFIG", "--data CONFIG", "--test_predictions.output_path"):
        assert option in out
