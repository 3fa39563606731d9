"""The ``bertlab`` command: LightningCLI in subclass mode, plus ``bertlab pipeline``, ``ablate`` and ``demo``.

``bertlab fit|validate|test|predict --config FILE [--config DELTA.yaml] [--key value ...]``
takes any LightningModule / LightningDataModule by ``class_path``. Errors of ours
(``BertlabError``) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import os
import signal
import sys

if __name__ == "__main__":  # `python -m bertlab.cli`: choose the allocator before torch allocates anything
    from bertlab.allocator import preload_and_reexecute

    preload_and_reexecute()

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # bertlab never downloads; fail fast instead of hanging
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytorch_lightning as pl  # noqa: E402
from pytorch_lightning.cli import LightningCLI  # noqa: E402
from pytorch_lightning.utilities import rank_zero_info  # noqa: E402

import datamodules.classification  # noqa: E402,F401  (imports register the class_path short names)
import lightning_modules.classifier  # noqa: E402,F401
from bertlab.allocator import allocator_in_use  # noqa: E402
from bertlab.core.errors import BertlabError  # noqa: E402
from bertlab.core.files import atomic_path  # noqa: E402
from bertlab.core.provenance import provenance
from bertlab.core.yaml_files import read_yaml  # noqa: E402
from bertlab.precision import AUTO, allow_auto, resolve_precision  # noqa: E402
from bertlab.preflight import SPECIAL_CKPTS, check_checkpoint, check_run, is_pending, sweep_outputs  # noqa: E402
from callbacks.graceful_stop import GracefulStop  # noqa: E402
from callbacks.hf_export import HFExport  # noqa: E402
from callbacks.predictions import PredictionCSV  # noqa: E402
from callbacks.process_group import LeaveProcessGroup, leave_process_group  # noqa: E402
from callbacks.rng_state import RNGState  # noqa: E402
from callbacks.test_predictions import TestPredictions  # noqa: E402

for _optional in (
    "lightning_modules.masked_lm",
    "lightning_modules.pet",
    "datamodules.mlm",
    "datamodules.pet",
    "callbacks.step_budget",
    "callbacks.probe",
    "callbacks.soft_labels",
):
    try:
        __import__(_optional)
    except ModuleNotFoundError as _e:
        if _e.name != _optional:
            raise


def data_num_labels(dm) -> int | None:
    return getattr(dm, "num_labels", None)


def data_id2label(dm) -> dict | None:
    return getattr(dm, "id2label", None)


def data_knowledge_dim(dm) -> int:
    return dm.knowledge_dim if hasattr(type(dm), "knowledge_dim") else 0  # getattr would hide the data's errors


def write_json(path: str, payload) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(payload, f, indent=1, sort_keys=True, default=str)


def default_loggers(root: str, wandb_args) -> list:
    from pytorch_lightning.loggers import CSVLogger, WandbLogger

    loggers = [CSVLogger(save_dir=root, name="csv")]
    if os.environ.get("WANDB_MODE", "offline") != "disabled":
        os.makedirs(root, exist_ok=True)
        loggers.append(
            WandbLogger(
                save_dir=root,
                project=wandb_args["project"],
                group=wandb_args["group"],
                tags=list(wandb_args["tags"]),
                name=wandb_args["name"],
            )
        )
    return loggers


class PreflightDone(Exception):
    """Raised once a stage's pre-flight check has passed, when that is all that was asked for."""


class BertlabCLI(LightningCLI):
    preflight_only = False  # parse and check, then stop (``preflight_stage``)
    pending: tuple[str, ...] = ()  # folders whose missing paths earlier stages will write (not checked)

    def add_arguments_to_parser(self, parser) -> None:
        allow_auto(parser)
        parser.add_lightning_class_args(HFExport, "export")
        parser.add_lightning_class_args(PredictionCSV, "predictions")
        parser.add_lightning_class_args(TestPredictions, "test_predictions")
        parser.add_argument(
            "--wandb.project",
            type=str,
            default="bertlab",
            help="W&B project (offline unless WANDB_MODE says otherwise)",
        )
        parser.add_argument(
            "--wandb.group", type=str | None, default=None, help="W&B group, e.g. the experiment or ablation name"
        )
        parser.add_argument("--wandb.tags", type=list[str], default=[], help="W&B tags")
        parser.add_argument("--wandb.name", type=str | None, default=None, help="W&B run name")
        parser.link_arguments("model.init_args.model_name_or_path", "data.init_args.tokenizer")
        parser.link_arguments("data", "model.init_args.num_labels", compute_fn=data_num_labels, apply_on="instantiate")
        parser.link_arguments("data", "model.init_args.id2label", compute_fn=data_id2label, apply_on="instantiate")
        parser.link_arguments(
            "data", "model.init_args.knowledge_dim", compute_fn=data_knowledge_dim, apply_on="instantiate"
        )

    def _parse_ckpt_path(self) -> None:
        # Lightning reads the checkpoint's hyperparameters here, before any hook: check it loads first, and read
        # them from that one (memory-mapped) load
        subcommand = self.config.get("subcommand")
        ckpt = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt or str(ckpt) in SPECIAL_CKPTS or is_pending(str(ckpt), self.pending):
            return
        hparams = dict(check_checkpoint(str(ckpt)).get("hyper_parameters", {}))
        hparams.pop("_instantiator", None)
        class_path = hparams.pop("_class_path", None)
        if not hparams:
            return
        if class_path is None:  # Lightning's own merge
            model = hparams
        else:
            # Lightning's version hands every saved hyperparameter to the model, including the data links
            # (num_labels, ...) that a MaskedLM does not take: resuming an MLM fit failed. Keep what the class takes.
            import inspect

            module, _, name = class_path.rpartition(".")
            accepted = inspect.signature(getattr(__import__(module, fromlist=[name]), name).__init__).parameters
            model = {"class_path": class_path, "dict_kwargs": {k: v for k, v in hparams.items() if k in accepted}}
        from jsonargparse import Namespace

        try:
            self.config = self.parser.parse_object(Namespace({subcommand: {"model": model}}), self.config)
        except SystemExit:
            if class_path is None:
                sys.stderr.write("Parsing of ckpt_path hyperparameters failed!\n")
            raise

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand].as_dict()
        check_run(self.subcommand, config, self.pending)
        if self.preflight_only:
            raise PreflightDone
        sweep_outputs(self.subcommand, config)

    def _instantiate_trainer(self, config, callbacks):
        if config.get("logger") in (None, True):  # default: CSV + W&B under the run's root
            config["logger"] = default_loggers(
                config.get("default_root_dir") or os.getcwd(), self.config_init[self.subcommand]["wandb"]
            )
        precision, why = resolve_precision(config.get("precision", AUTO), config.get("accelerator", "auto"))
        if config.get("precision") == AUTO:
            rank_zero_info(f"bertlab: precision auto -> {precision} ({why}); override with --trainer.precision")
        config["precision"] = precision
        rank_zero_info(f"bertlab: allocator {allocator_in_use()}; BERTLAB_ALLOCATOR=system|tcmalloc|auto chooses")
        return super()._instantiate_trainer(config, [*callbacks, GracefulStop(), RNGState(), LeaveProcessGroup()])

    def _dump_metrics(self, name: str) -> None:
        if self.trainer.is_global_zero:
            metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items()}
            metrics["provenance"] = provenance(str(self.trainer.precision), allocator_in_use())
            write_json(os.path.join(self.trainer.default_root_dir, f"{name}_metrics.json"), metrics)

    def after_fit(self) -> None:
        self._dump_metrics("fit")

    def after_validate(self) -> None:
        self._dump_metrics("validate")

    def after_test(self) -> None:
        self._dump_metrics("test")


# The blocks every stage shares, loaded before any --config (jsonargparse's default config files).
BASE_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "base.yaml")


def config_files(args: list[str]) -> list[str]:
    """The files given with ``--config FILE`` / ``--config=FILE`` / ``-c FILE``."""
    out = []
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            out.append(args[i + 1])
        elif arg.startswith("--config="):
            out.append(arg.split("=", 1)[1])
    return out


def preflight_stage(args: list[str], pending: tuple[str, ...] = ()) -> None:
    """Parse a stage's arguments and run its pre-flight check, instantiating nothing: how a pipeline checks
    every stage before the first one trains. Paths under ``pending`` that do not exist yet (the exports and
    checkpoints of earlier stages) are not checked."""
    cli = type("PreflightCLI", (BertlabCLI,), {"preflight_only": True, "pending": tuple(pending)})
    try:
        run_lightning(args, cli)
    except PreflightDone:
        pass


def run_lightning(args: list[str] | None, cli: type[BertlabCLI] = BertlabCLI) -> None:
    for path in config_files(list(sys.argv[1:] if args is None else args)):
        if os.path.isfile(path) or path.endswith((".yaml", ".yml")):  # else inline YAML, jsonargparse's to read
            read_yaml(path)  # a syntax error names the file, line and column (jsonargparse would not)
    base = {"default_config_files": [BASE_CONFIG]} if os.path.isfile(BASE_CONFIG) else {}
    cli(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={sub: base for sub in ("fit", "validate", "test", "predict")},
    )
    leave_process_group()  # under torchrun every rank is this process


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        from bertlab.help import top_level_help

        print(top_level_help(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    try:
        if args and args[0] == "pipeline":
            from bertlab.pipeline import main as pipeline_main

            return pipeline_main(args[1:])
        if args and args[0] == "ablate":
            from bertlab.ablation import main as ablation_main

            return ablation_main(args[1:])
        if args[:1] == ["predict"]:
            from bertlab import predict_export  # --model EXPORT_DIR --input FILE: no checkpoint, no config

            if predict_export.wants_export(args[1:]):
                return predict_export.main(args[1:])
        if args and args[0] == "report":
            from bertlab.report import main as report_main

            return report_main(args[1:])
        if args and args[0] == "demo":
            from bertlab.demo import main as demo_main

            return demo_main(args[1:])
        run_lightning(argv)
    except SystemExit as e:
        resume = getattr(e, "bertlab_resume", None)  # set by GracefulStop on SIGTERM / SIGINT
        if resume is None:
            raise
        signum, path = resume
        print(
            f"bertlab: stopped by {signal.Signals(signum).name}; saved {path}; resume with the same command and "
            f"--ckpt_path {path}",
            file=sys.stderr,
        )
        return 128 + signum
    except Exception as e:  # noqa: BLE001 - ours may arrive wrapped by jsonargparse's instantiation
        ours = find_ours(e)
        if ours is None:
            raise
        if isinstance(ours, BertlabError):
            print(f"bertlab: error: {ours}", file=sys.stderr)
        else:
            print(
                "bertlab: error: the trainer configuration: "
                f"{(str(ours).strip() or type(ours).__name__).splitlines()[0]}",
                file=sys.stderr,
            )
        return 2
    return 0


def find_ours(error: BaseException | None) -> Exception | None:
    """The error behind ``error`` that is the user's to fix, following ``__cause__``/``__context__``:
    a ``BertlabError``, or Lightning's ``MisconfigurationException`` (conflicting trainer settings,
    e.g. ``enable_checkpointing: false`` with a ModelCheckpoint in the callbacks)."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, (BertlabError, MisconfigurationException)):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


if __name__ == "__main__":
    sys.exit(main())
