"""The LightningCLI engine: ``BertlabCLI``, ``run_lightning`` (one stage: fit, validate, test or predict) and
``preflight_stage`` (parse and check a stage, instantiating nothing).

The command dispatcher (``bertlab.cli``) and the orchestration that runs stages (``bertlab.pipeline``,
``bertlab.ablation``, ``bertlab.demo``) import this module; it imports none of them.
"""

from __future__ import annotations

import json
import os
import sys

from bertlab.core.environment import set_defaults

set_defaults()  # offline, before torch and transformers load

import pytorch_lightning as pl  # noqa: E402
from pytorch_lightning.cli import LightningCLI  # noqa: E402
from pytorch_lightning.utilities import rank_zero_info  # noqa: E402

import datamodules.classification  # noqa: E402,F401  (imports register the class_path short names)
import lightning_modules.classifier  # noqa: E402,F401
from bertlab.allocator import allocator_in_use  # noqa: E402
from bertlab.core.files import atomic_path  # noqa: E402
from bertlab.core.hf_loading import check_checkpoint  # noqa: E402
from bertlab.core.provenance import provenance  # noqa: E402
from bertlab.core.yaml_files import read_yaml  # noqa: E402
from bertlab.precision import AUTO, allow_auto, resolve_precision  # noqa: E402
from bertlab.preflight import SPECIAL_CKPTS, check_run, is_pending, sweep_outputs  # noqa: E402
from bertlab.save_config import SaveConfigWhenChecked  # noqa: E402
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


def resumed_version(root: str, ckpt_path) -> int | None:
    """K when a fit resumes from a checkpoint under ``ROOT/csv/version_K``: it logs on in that version, so its
    ModelCheckpoint keeps its folder, and with it the best score and paths it restores (Lightning drops them when
    the folder moved, and a resumed fit would then choose another best checkpoint)."""
    if not isinstance(ckpt_path, str) or not os.path.isfile(ckpt_path):
        return None
    rel = os.path.relpath(os.path.abspath(ckpt_path), os.path.join(os.path.abspath(root), "csv"))
    head = rel.split(os.sep)[0]
    number = head.removeprefix("version_")
    return int(number) if number != head and number.isdigit() else None


def default_loggers(root: str, wandb_args, version: int | None = None) -> list:
    from pytorch_lightning.loggers import CSVLogger, WandbLogger

    loggers = [CSVLogger(save_dir=root, name="csv", version=version)]
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


def write_metrics(trainer: pl.Trainer, name: str) -> None:
    """``ROOT/NAME_metrics.json``: what the run logged last, with its provenance (rank 0 writes it)."""
    if trainer.is_global_zero:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        metrics["provenance"] = provenance(str(trainer.precision), allocator_in_use())
        write_json(os.path.join(trainer.default_root_dir, f"{name}_metrics.json"), metrics)


class FitRecord(pl.Callback):
    """Writes the fit's record, ``fit_metrics.json``, as training ends, before the export. A fit killed after that
    and resumed from its final checkpoint has nothing left to train, so Lightning runs no training hook at all:
    the record its attempt wrote stands (``BertlabCLI.after_fit``)."""

    ended = False

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.ended = True
        write_metrics(trainer, "fit")


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
            root = config.get("default_root_dir") or os.getcwd()
            resumes = self.config[self.subcommand].get("ckpt_path") if self.subcommand == "fit" else None
            config["logger"] = default_loggers(
                root, self.config_init[self.subcommand]["wandb"], resumed_version(root, resumes)
            )
        precision, why = resolve_precision(config.get("precision", AUTO), config.get("accelerator", "auto"))
        if config.get("precision") == AUTO:
            rank_zero_info(f"bertlab: precision auto -> {precision} ({why}); override with --trainer.precision")
        config["precision"] = precision
        rank_zero_info(f"bertlab: allocator {allocator_in_use()}; BERTLAB_ALLOCATOR=system|tcmalloc|auto chooses")
        self.fit_record = FitRecord()
        ours = [GracefulStop(), RNGState(), LeaveProcessGroup(), self.fit_record]
        return super()._instantiate_trainer(config, [*callbacks, *ours])

    def after_fit(self) -> None:
        if self.fit_record.ended:
            return
        resumed = self.config[self.subcommand].get("ckpt_path") is not None
        # a resumed fit whose checkpoint was taken at the very end of training: no step ran, so nothing was logged
        if resumed and os.path.isfile(os.path.join(self.trainer.default_root_dir, "fit_metrics.json")):
            rank_zero_info("bertlab: fit_metrics.json stands as written when training ended")
            return
        if resumed:
            rank_zero_info("bertlab: the fit resumed at its end, before its record was written; validating for it")
            self.trainer.validate(self.model, datamodule=self.datamodule, verbose=False)
        write_metrics(self.trainer, "fit")  # (ddp_spawn: training ran in other processes)

    def after_validate(self) -> None:
        write_metrics(self.trainer, "validate")

    def after_test(self) -> None:
        write_metrics(self.trainer, "test")


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
        save_config_callback=SaveConfigWhenChecked,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={sub: base for sub in ("fit", "validate", "test", "predict")},
    )
    leave_process_group()  # under torchrun every rank is this process
