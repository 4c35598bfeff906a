"""What this CPU can do, read from /proc/cpuinfo: the ground floor for training's precision rule and for the
inference runtimes' precision choice (no torch, no other project module).

bf16 arithmetic is native only on CPUs with AMX-BF16 or AVX-512 BF16 (Sapphire Rapids and later, Zen 4 and
later); elsewhere bf16 is emulated and far slower than fp32. int8 dot products are native with AVX-512 VNNI,
AVX-VNNI or AMX-INT8.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
CPU_INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
# The flags that decide which inference runtime and precision are fastest (reported by the benchmarks).
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU feature flags of the first ``flags`` line of /proc/cpuinfo (Linux x86), else empty."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


@lru_cache(maxsize=1)
def this_cpu_flags() -> frozenset[str]:
    """:func:`cpu_flags` of this machine (cached: they do not change while the process runs)."""
    return cpu_flags()


def has_fast_bf16(flags: Iterable[str] | None = None) -> bool:
    """True for CPUs with native bf16 arithmetic (AMX-BF16 or AVX-512 BF16); ``flags`` default: this CPU's."""
    found = set(this_cpu_flags() if flags is None else flags)
    return any(flag in found for flag in CPU_BF16_FLAGS)


def has_fast_int8(flags: Iterable[str] | None = None) -> bool:
    """True for CPUs with int8 dot-product instructions (VNNI or AMX-INT8); ``flags`` default: this CPU's."""
    found = set(this_cpu_flags() if flags is None else flags)
    return any(flag in found for flag in CPU_INT8_FLAGS)


def reported_flags(flags: Iterable[str] | None = None) -> list[str]:
    """The :data:`REPORTED_FLAGS` this CPU (or ``flags``) has, in that order."""
    found = set(this_cpu_flags() if flags is None else flags)
    return [flag for flag in REPORTED_FLAGS if flag in found]
