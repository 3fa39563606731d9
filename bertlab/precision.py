"""``trainer.precision: auto``: bf16 mixed precision where the hardware computes in bf16, else fp32.

bf16 keeps fp32's exponent range, so unlike fp16 it needs no loss scaling; on hardware with bf16
matrix units it is 2-4× faster per FLOP (this project's 2-core CPU: 828 vs 200 GFLOP/s in matmul).
``auto`` resolves, when the trainer is built, to

* ``bf16-mixed`` on a CUDA device that supports bf16 (Ampere and newer);
* ``bf16-mixed`` on a CPU with AVX512-BF16 or AMX tiles (Cooper Lake, Sapphire Rapids and newer,
  Zen 4 and newer);
* ``32-true`` everywhere else (older CPUs emulate bf16 and are slower than fp32; Apple MPS).

Any explicit value (``--trainer.precision 32-true``) is used as given.
"""

from __future__ import annotations

import torch

from bertlab.core.hardware import cpu_has_bf16

AUTO = "auto"


def _uses_cuda(accelerator) -> bool:
    name = accelerator if isinstance(accelerator, str) else type(accelerator).__name__.lower()
    if name in ("cpu", "mps") or "cpu" in name:
        return False
    return torch.cuda.is_available()


def resolve_precision(precision, accelerator="auto") -> tuple[object, str]:
    """(the Trainer precision to use, why): ``auto`` becomes ``bf16-mixed`` or ``32-true``; other values pass."""
    if precision != AUTO:
        return precision, "as configured"
    if _uses_cuda(accelerator):
        if torch.cuda.is_bf16_supported():
            return "bf16-mixed", f"{torch.cuda.get_device_name()} supports bf16"
        return "32-true", f"{torch.cuda.get_device_name()} has no bf16"
    has_bf16, feature = cpu_has_bf16()
    if has_bf16:
        return "bf16-mixed", f"the CPU has {feature}"
    return "32-true", "the CPU has no native bf16 (AVX512-BF16 or AMX)"


def allow_auto(parser) -> None:
    """Let ``trainer.precision`` take ``auto`` (Lightning's type lists only concrete precisions), and default to it."""
    from typing import Literal, Union

    for action in parser._actions:
        if getattr(action, "dest", None) == "trainer.precision" and hasattr(action, "_typehint"):
            action._typehint = Union[action._typehint, Literal["auto"]]  # noqa: UP007 - a runtime typing object
            action.default = AUTO
    parser.set_defaults({"trainer.precision": AUTO})
