"""``bertlab --help`` lists every subcommand; pipeline/ablate/demo each have their own help with an example, and
LightningCLI's subcommand help still works."""

import os
import subprocess
import sys

import pytest

from bertlab.cli import main
from bertlab.help import SUBCOMMANDS
from tests.bertlab.cli_helpers import ROOT


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


@pytest.mark.parametrize("argv", [["--help"], ["report", "--help"], ["ablate", "--help"], ["pipeline", "--help"]])
def test_commands_that_train_nothing_load_no_torch(argv):
    """Only fit/validate/test/predict load Lightning: help and the orchestrators start in a second, not in the
    several seconds torch, Lightning and torchmetrics take to import. The environment is offline all the same."""
    code = (
        "import os, sys\n"
        "from bertlab.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print([m for m in ('torch', 'pytorch_lightning', 'transformers') if m in sys.modules], "
        "os.environ['HF_HUB_OFFLINE'], file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stderr.strip().splitlines()[-1] == "[] 1"


def test_environment_defaults_leave_the_users_choice(monkeypatch):
    from bertlab.core.environment import DEFAULTS, set_defaults

    monkeypatch.setenv("WANDB_MODE", "online")
    for name in set(DEFAULTS) - {"WANDB_MODE"}:
        monkeypatch.delenv(name, raising=False)
    set_defaults()
    assert os.environ["WANDB_MODE"] == "online"
    assert all(os.environ[name] == value for name, value in DEFAULTS.items() if name != "WANDB_MODE")
