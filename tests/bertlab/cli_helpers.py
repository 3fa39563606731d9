"""Running the ``bertlab`` CLI as a subprocess, the way a user does."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MLM_CONFIG = os.path.join(ROOT, "configs/mlm/fine_food_tapt.yaml")
QUIET = [
    "--trainer.logger",
    "false",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.precision",
    "32-true",  # the same arithmetic on every CPU; `auto` has its own tests
]


def cli_env(extra_pythonpath: str | None = None) -> dict[str, str]:
    """The environment of a CLI subprocess: offline, quiet, one thread, the repository importable."""
    return dict(
        os.environ,
        WANDB_MODE="disabled",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join(filter(None, [ROOT, extra_pythonpath, os.environ.get("PYTHONPATH")])),
    )


def run_cli(
    *args: str, cwd: str = ROOT, timeout: int = 300, extra_pythonpath: str | None = None
) -> subprocess.CompletedProcess:
    env = cli_env(extra_pythonpath)
    return subprocess.run(
        [sys.executable, "-m", "bertlab.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def tiny_args(model_dir: str, csvs: dict, root: str, cache: str) -> list[str]:
    return [
        "--config",
        os.path.join(ROOT, "tests/configs/tiny_test.yaml"),
        "--model.model_name_or_path",
        model_dir,
        "--data.splits.train_file",
        csvs["train"],
        "--data.splits.val_file",
        csvs["val"],
        "--data.splits.test_file",
        csvs["test"],
        "--data.cache_dir",
        cache,
        "--trainer.default_root_dir",
        root,
        *QUIET,
    ]


def mlm_args(model_dir: str, cache: str, root: str, *extra: str) -> list[str]:
    """A 2-step MLM fit of ``model_dir`` with no task texts (``extra`` gives the corpus or what a test changes)."""
    return [
        "--config",
        MLM_CONFIG,
        "--model.init_args.model_name_or_path",
        model_dir,
        "--data.init_args.task",
        "null",
        "--data.init_args.max_length",
        "32",
        "--data.init_args.loader.batch_size",
        "8",
        "--data.init_args.cache_dir",
        cache,
        "--trainer.max_steps",
        "2",
        "--trainer.accelerator",
        "cpu",
        "--trainer.callbacks",
        "[]",
        *QUIET,
        "--trainer.default_root_dir",
        root,
        *extra,
    ]
