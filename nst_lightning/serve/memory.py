"""Give freed memory back to the operating system after a large request.

glibc keeps freed memory in its arenas (one per thread that allocated), so a process that once decoded a large
image stays at its peak RSS; ``malloc_trim(0)`` returns the free pages. Elsewhere (musl, macOS) it is a no-op.
OpenVINO keeps each compiled model's activation buffers for the largest input it has run; they are released
first (:func:`nst_lightning.export.openvino_runtime.release_memory`), when OpenVINO is in use at all.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache


@cache
def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_memory() -> bool:
    """Release OpenVINO's idle activation buffers, then return free heap pages to the OS; False where the C
    library has no ``malloc_trim``."""
    openvino_runtime = sys.modules.get("nst_lightning.export.openvino_runtime")  # never imported just for this
    if openvino_runtime is not None:
        openvino_runtime.release_memory()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
