"""What the hardware computes natively: bf16 on this CPU or GPU, and the dtype inference should use.

Part of the base layer, so that data modules (corpus scoring) and the orchestration layer
(``trainer.precision: auto``) decide bf16 by the same test. bf16 pays only where the hardware has
bf16 arithmetic: a CPU with AVX512-BF16 or AMX tiles (this project's 2-core CPU: 828 vs 200
GFLOP/s in matmul), or a CUDA device with bf16 (Ampere and newer). Elsewhere it is emulated and
slower than fp32.
"""

from __future__ import annotations

import torch

INFERENCE_PRECISIONS = ("auto", "bf16", "fp32")


def cpu_has_bf16() -> tuple[bool, str]:
    """(whether this CPU has native bf16 arithmetic, the feature that says so)."""
    cpu = getattr(torch, "cpu", None)
    for feature, probe in (("AMX", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported")):
        check = getattr(cpu, probe, None)
        if check is not None and check():
            return True, feature
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False, ""
    for flag, feature in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16")):
        if flag in flags:
            return True, feature
    return False, ""


def inference_dtype(precision: str, device: str = "cpu") -> torch.dtype:
    """The autocast dtype for an inference pass: ``auto`` is bf16 where ``device`` computes bf16 natively."""
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"precision must be one of {INFERENCE_PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_bf16()[0] else torch.float32
