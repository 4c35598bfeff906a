"""``trainer.precision=auto``, ``model.channels_last=auto`` and ``model.allocator=auto``: the fastest safe setting
for this machine.

bf16 autocast pays off only where the hardware has bf16 arithmetic: CUDA GPUs that support it, and CPUs with
AMX-BF16 or AVX-512 BF16 (Sapphire Rapids and later, Zen 4 and later). Elsewhere PyTorch emulates bf16 on the
CPU, about 100× slower than fp32, so ``auto`` means ``32-true`` there. Channels-last (NHWC) goes with bf16,
where it was measured faster (docs/quickstart.md); in fp32 on CPU it was not. On a CPU, freed activation buffers
are kept for the next step (``allocator``): measured 1.2× on a 2-core AVX2 machine (docs/quickstart.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import lru_cache

import torch

from nst_lightning.cpu_features import CPU_BF16_FLAGS, cpu_flags, has_fast_bf16
from nst_lightning.errors import BadValue
from nst_lightning.training.allocator import MODES

log = logging.getLogger(__name__)
AUTO = "auto"
__all__ = ["CPU_BF16_FLAGS", "Capabilities", "PrecisionChoice", "cpu_flags", "detect_capabilities", "resolve_precision"]


@dataclass(frozen=True)
class Capabilities:
    """What the machine offers. ``cpu_flags`` are the /proc/cpuinfo flags (empty where there is none)."""

    cuda: bool
    cuda_bf16: bool
    mps: bool
    cpu_capability: str
    cpu_flags: frozenset[str]

    @property
    def cpu_fast_bf16(self) -> bool:
        """True for CPUs with native bf16 arithmetic (AMX-BF16 or AVX-512 BF16)."""
        return has_fast_bf16(self.cpu_flags)


@dataclass(frozen=True)
class PrecisionChoice:
    """The resolved Lightning precision, memory format and CPU allocator mode, and why."""

    precision: str
    channels_last: bool
    reason: str
    emulated_bf16: bool = False  # bf16 asked for on a CPU without bf16 arithmetic (see warn_if_emulated)
    allocator: str = "system"  # glibc malloc: reuse (keep freed blocks) or system (training/allocator.py)


@lru_cache(maxsize=1)
def detect_capabilities() -> Capabilities:
    """The capabilities of this machine (cached: they do not change while the process runs)."""
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return Capabilities(
        cuda=cuda,
        cuda_bf16=cuda and torch.cuda.is_bf16_supported(),
        mps=mps,
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        cpu_flags=cpu_flags(),
    )


def device_type(accelerator: str | None, caps: Capabilities | None = None) -> str:
    """Lightning's accelerator name → ``cuda``, ``mps`` or ``cpu`` (``auto`` picks as Lightning does) on this
    machine (or on ``caps``)."""
    caps = caps or detect_capabilities()
    accelerator = str(accelerator or AUTO).lower()
    if accelerator in ("gpu", "cuda"):
        return "cuda" if caps.cuda else ("mps" if caps.mps else "cpu")
    if accelerator == AUTO:
        return "cuda" if caps.cuda else ("mps" if caps.mps else "cpu")
    return accelerator


def resolve_precision(
    requested: str | int | None,
    accelerator: str | None = AUTO,
    channels_last: bool | str | None = AUTO,
    caps: Capabilities | None = None,
    allocator: str = AUTO,
) -> PrecisionChoice:
    """Resolve ``auto`` precision and memory format for ``accelerator`` on this machine (or on ``caps``).

    Args:
        requested: ``trainer.precision``; any value other than ``auto`` is kept as given.
        accelerator: ``trainer.accelerator`` (``auto``, ``cpu``, ``gpu``, ``cuda``, ``mps``, ...).
        channels_last: ``model.channels_last``; ``auto`` follows the resolved precision, a bool is kept.
        caps: the machine's capabilities (default: :func:`detect_capabilities`); tests pass fakes.
        allocator: ``model.allocator``; ``auto`` is ``reuse`` when the work runs on the CPU (its activation
            buffers are page-faulted in again every step otherwise: :mod:`~nst_lightning.training.allocator`),
            ``system`` elsewhere; ``reuse`` or ``system`` is kept.

    Returns:
        The Lightning precision string, whether to use channels-last, the allocator mode, and a one-line reason
        for the log.
    """
    caps = caps or detect_capabilities()
    device = device_type(str(accelerator), caps)
    if str(requested).lower() != AUTO:
        precision, reason = str(requested), "as configured"
    elif device == "cuda" and caps.cuda_bf16:
        precision, reason = "bf16-mixed", "CUDA GPU with bf16"
    elif device == "cpu" and caps.cpu_fast_bf16:
        found = sorted(f for f in CPU_BF16_FLAGS if f in caps.cpu_flags)
        precision, reason = "bf16-mixed", f"CPU with {'/'.join(found)} ({caps.cpu_capability})"
    else:
        what = "CUDA GPU without bf16" if device == "cuda" else f"{device} without native bf16"
        precision, reason = "32-true", f"{what} ({caps.cpu_capability if device == 'cpu' else device})"
    if isinstance(channels_last, str) and channels_last.lower() == AUTO or channels_last is None:
        channels_last = precision.startswith("bf16") and device in ("cuda", "cpu")
    emulated = precision.startswith("bf16") and device == "cpu" and not caps.cpu_fast_bf16
    allocator = str(allocator).lower()
    if allocator == AUTO:
        allocator = "reuse" if device == "cpu" else "system"
    elif allocator not in MODES:
        raise BadValue(f"model.allocator must be auto, {' or '.join(MODES)}, got {allocator!r}")
    return PrecisionChoice(precision, bool(channels_last), reason, emulated, allocator)


def bf16_slowdown(channels: int = 64, size: int = 64, repeats: int = 3) -> float:
    """How many times slower a 3×3 convolution (forward and backward, 1×C×S×S) runs under CPU bf16 autocast
    than in fp32 on this machine: the best of ``repeats`` timings each (about a second where bf16 is emulated)."""
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
    x = torch.randn(1, channels, size, size, requires_grad=True)

    def best(bf16: bool) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = conv(x)
            out.float().sum().backward()
            times.append(time.perf_counter() - start)
        return min(times)

    return best(True) / best(False)


@lru_cache(maxsize=1)
def _warn_emulated_once(capability: str) -> None:
    log.warning(
        "bf16 on this CPU (%s, no AMX/AVX-512 BF16) is emulated: a convolution measured %.0fx slower than fp32 "
        "here; precision=auto chooses fp32 on this machine",
        capability, bf16_slowdown(),
    )  # fmt: skip


def warn_if_emulated(choice: PrecisionChoice) -> None:
    """Warn once per process, with the slowdown measured here, when bf16 was forced on a CPU that emulates it."""
    if choice.emulated_bf16:
        _warn_emulated_once(detect_capabilities().cpu_capability)
