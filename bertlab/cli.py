"""The ``bertlab`` command dispatcher: ``fit|validate|test|predict`` go to the LightningCLI engine
(``bertlab.engine``), ``predict --model``, ``pipeline``, ``ablate`` and ``demo`` to their modules.

``bertlab fit|validate|test|predict --config FILE [--config DELTA.yaml] [--key value ...]``
takes any LightningModule / LightningDataModule by ``class_path``. Errors of ours
(``BertlabError``) become one line on stderr and exit code 2. Nothing imports this module but ``__main__``.
"""

from __future__ import annotations

import signal
import sys

if __name__ == "__main__":  # `python -m bertlab.cli`: choose the allocator before torch allocates anything
    from bertlab.allocator import preload_and_reexecute
    from bertlab.core.lifetime import tie_to_starter

    tie_to_starter()  # a pipeline's stage dies with its pipeline
    preload_and_reexecute()

from bertlab.core.environment import set_defaults  # noqa: E402
from bertlab.core.errors import BertlabError  # noqa: E402

set_defaults()  # offline, before any subcommand loads torch or transformers


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
        from bertlab.engine import run_lightning  # Lightning loads only for the subcommands that train or predict

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
    fabric = sys.modules.get("lightning_fabric.utilities.exceptions")  # not loaded: none of its errors can exist
    ours = (BertlabError,) + ((fabric.MisconfigurationException,) if fabric else ())
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, ours):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


if __name__ == "__main__":
    sys.exit(main())
