"""Keep freed memory for reuse while training on a CPU (glibc's malloc thresholds).

A training step allocates and frees the same large activation buffers every step (VGG's first layers alone hold
B×64×H×W floats each). glibc serves blocks above its mmap threshold (128 KiB at first, growing on its own up
to 32 MiB) with fresh ``mmap`` pages and unmaps them on ``free``, so the next step page-faults them in again
and the kernel zeroes every page: tens of thousands of faults per step and system time that does no arithmetic
(``benchmarks/train_throughput.py`` reports both). Raising the mmap and trim thresholds keeps those buffers in
the heap for the next step. The cost is memory the process keeps after a peak, which a training run reuses at
once; the service does not use this (it gives memory back after each request).

Torch only (no Lightning, no Hydra).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import lru_cache

from nst_lightning.errors import BadValue

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP = {_M_MMAP_THRESHOLD: 1 << 30, _M_TRIM_THRESHOLD: (1 << 31) - 1}  # 1 GiB blocks from the heap; never trim
_GLIBC_DEFAULT = {_M_MMAP_THRESHOLD: 128 * 1024, _M_TRIM_THRESHOLD: 128 * 1024}
MODES = ("reuse", "system")


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:  # find_library runs ldconfig: once per process
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def set_allocator(mode: str) -> bool:
    """``reuse``: keep freed blocks of any size for reuse; ``system``: glibc's initial thresholds (and give free memory
    back now). Returns whether it applied (False where the C library is not glibc: nothing changes there)."""
    if mode not in MODES:
        raise BadValue(f"allocator mode must be one of {', '.join(MODES)}, got {mode!r}")
    libc = _libc()
    if libc is None:
        return False
    for option, value in (_KEEP if mode == "reuse" else _GLIBC_DEFAULT).items():
        if not libc.mallopt(option, value):
            log.debug("mallopt(%d, %d) refused", option, value)
            return False
    if mode == "system":
        libc.malloc_trim(0)
    return True


def use_allocator(mode: str) -> bool:
    """Apply the machine rule's choice (:func:`~nst_lightning.training.precision.resolve_precision`): ``reuse``
    keeps freed blocks; ``system`` leaves glibc's own adaptive thresholds alone. Returns whether it changed them."""
    return set_allocator("reuse") if mode == "reuse" else False
