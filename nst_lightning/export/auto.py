"""``runtime=auto``: the fastest runtime that passes the quality gate on this machine, measured once and cached.

    from nst_lightning.export.auto import choose_runtime
    runtime = choose_runtime(load_model("starry_night"))   # logs: runtime=auto: openvino_bf16 (... why ...)

The candidates are the runtimes this CPU can run natively (:mod:`nst_lightning.cpu_features`): OpenVINO in
fp32, in bf16 where the CPU has AVX-512 BF16 or AMX, and statically quantized int8 where it has VNNI or
AMX-INT8, against eager fp32. Each is checked by :func:`nst_lightning.export.gate.check_gate` on training photos
the int8 calibration did not see (plus the objective when the caller passes one) and timed on a
``TIMING_SIZE``² image; the fastest that passes wins (eager always qualifies). The result and the chosen
graph (as OpenVINO IR) are cached under ``<cache dir>/runtimes/``, keyed by the CPU's flags, the OpenVINO
version, the thread count and the network's weights, so the next process loads it in a second. Without
OpenVINO (or off the CPU) ``auto`` is eager, and the log says why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nst_lightning.cpu_features import has_fast_bf16, has_fast_int8, this_cpu_flags
from nst_lightning.errors import NSTError
from nst_lightning.export.base import Runtime
from nst_lightning.export.gate import GateResult, Objective, check_gate
from nst_lightning.export.openvino_runtime import OpenVinoRuntime, import_openvino, info_of, read_model, save_ir
from nst_lightning.export.quantize import CALIBRATION_COUNT, training_photos
from nst_lightning.export.runtime import EagerRuntime, runtime_from_model
from nst_lightning.inference.checkpoint import LoadedModel

log = logging.getLogger(__name__)
TIMING_SIZE = 256
GATE_PHOTOS = 3
CACHE_VERSION = 1


@dataclass
class Choice:
    """What ``auto`` chose and why: per candidate its gate and its ms per ``TIMING_SIZE``² image."""

    runtime: str
    reason: str
    ms: dict[str, float] = field(default_factory=dict)
    gates: dict[str, dict[str, Any]] = field(default_factory=dict)


def candidate_names(flags: frozenset[str] | None = None) -> list[str]:
    """The OpenVINO runtimes worth measuring on a CPU with ``flags`` (default: this one's)."""
    names = ["openvino"]
    if has_fast_bf16(flags):
        names.append("openvino_bf16")
    if has_fast_int8(flags):
        names.append("openvino_int8")
    return names


def machine_key(loaded: LoadedModel, openvino_version: str) -> str:
    """A digest of what decides the choice: CPU flags, OpenVINO version, threads, network and weights."""
    digest = hashlib.sha256()
    for part in (sorted(this_cpu_flags()), openvino_version, torch.get_num_threads(), loaded.model_name):
        digest.update(str(part).encode())
    for name, tensor in sorted(loaded.net.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def median_ms(runtime: Callable[[torch.Tensor], Any], image: torch.Tensor, repeats: int = 2) -> float:
    """Median ms of ``repeats`` calls of ``runtime(image)`` after one warm-up call."""
    runtime(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runtime(image)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(
    loaded: LoadedModel, names: list[str], objective: Objective | None = None
) -> tuple[Choice, dict[str, Runtime]]:  # fmt: skip
    """Gate and time each runtime of ``names`` against eager fp32; the fastest that passes is chosen."""
    eager = EagerRuntime(loaded.net, torch.device("cpu"), loaded.model_name, loaded.meta)
    photos = training_photos(GATE_PHOTOS, offset=CALIBRATION_COUNT)
    image = torch.rand(1, 3, TIMING_SIZE, TIMING_SIZE, generator=torch.Generator().manual_seed(0))
    choice = Choice("eager", "", ms={"eager": median_ms(eager, image)})
    built: dict[str, Runtime] = {"eager": eager}
    fp32 = runtime_from_model(loaded, "openvino", "cpu")
    for name in names:
        runtime = _variant(fp32, name)
        gate: GateResult = check_gate(eager, runtime, photos, objective)
        choice.gates[name] = gate.as_dict()
        if gate.passed:
            choice.ms[name] = median_ms(runtime, image)
            built[name] = runtime
        log.info("runtime=auto: %s %s", name, gate.reason + (f", {choice.ms[name]:.0f} ms" if gate.passed else ""))
    best = min(choice.ms, key=choice.ms.__getitem__)
    speedup = choice.ms["eager"] / choice.ms[best]
    choice.runtime = best
    gate_text = choice.gates[best]["reason"] if best != "eager" else "the reference"
    choice.reason = f"fastest that passed the gate, {speedup:.1f}x eager at {TIMING_SIZE} px; gate {gate_text}"
    return choice, built


def _variant(fp32: OpenVinoRuntime, name: str) -> OpenVinoRuntime:
    if name == "openvino":
        return fp32
    return fp32.to_int8() if name == "openvino_int8" else fp32.with_precision(name)


def choose_runtime(
    loaded: LoadedModel,
    device: str | torch.device = "cpu",
    objective: Objective | None = None,
    cache_dir: str | Path | None = None,
    refresh: bool = False,
) -> Runtime:
    """The fastest gated runtime for ``loaded`` on this machine (see the module docstring); logs the choice.

    Args:
        loaded: the network (its weights are part of the cache key).
        device: anything but the CPU gives eager (the OpenVINO runtimes here are CPU-only).
        objective: ``(output, content) → float``, the training objective for the gate's 1 % test (None:
            the mean-abs-diff test only).
        cache_dir: default :func:`nst_lightning.losses.styles.default_cache_dir`.
        refresh: measure again even when a cached choice exists.
    """
    device = torch.device(device)
    eager = EagerRuntime(loaded.net, device, loaded.model_name, loaded.meta)
    if device.type != "cpu":
        log.info("runtime=auto: eager (the OpenVINO runtimes run on the CPU; this model runs on %s)", device)
        return eager
    try:
        version = import_openvino().get_version()
    except NSTError as exc:
        log.info("runtime=auto: eager (%s)", exc)
        return eager
    folder = _cache_folder(cache_dir)
    key = machine_key(loaded, version)
    cached = None if refresh else _read_cache(folder, key)
    if cached is not None:
        runtime = _from_cache(folder, key, cached["runtime"], eager)
        if runtime is not None:
            log.info("runtime=auto: %s (%s; cached for this machine in %s)", cached["runtime"], cached["reason"],
                     folder)  # fmt: skip
            return runtime
    choice, built = measure(loaded, candidate_names(), objective)
    _write_cache(folder, key, choice, built[choice.runtime])
    log.info("runtime=auto: %s (%s)", choice.runtime, choice.reason)
    return built[choice.runtime]


def _cache_folder(cache_dir: str | Path | None) -> Path:
    from nst_lightning.losses.styles import default_cache_dir

    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir() / "runtimes"


def _read_cache(folder: Path, key: str) -> dict[str, Any] | None:
    try:
        entry = json.loads((folder / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) and entry.get("version") == CACHE_VERSION else None


def _write_cache(folder: Path, key: str, choice: Choice, runtime: Runtime) -> None:
    """The choice as JSON and, for an OpenVINO choice, its graph as IR (``<key>.xml`` + ``.bin``)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if isinstance(runtime, OpenVinoRuntime) and runtime.model_bytes is not None:
            save_ir(runtime.model_bytes, runtime.info, folder / f"{key}.xml")
        entry = {"version": CACHE_VERSION, "runtime": choice.runtime, "reason": choice.reason, "ms": choice.ms,
                 "gates": choice.gates, "cpu_flags": sorted(this_cpu_flags())}  # fmt: skip
        (folder / f"{key}.json").write_text(json.dumps(entry, indent=1))
    except (OSError, NSTError) as exc:  # a read-only cache costs a measurement next time, nothing else
        log.warning("runtime=auto: could not cache the choice in %s (%s)", folder, exc)


def _from_cache(folder: Path, key: str, name: str, eager: EagerRuntime) -> Runtime | None:
    if name == "eager":
        return eager
    xml = folder / f"{key}.xml"
    try:
        info = info_of(read_model(xml, str(xml)), str(xml))
        info.meta = {**info.meta, **{k: v for k, v in eager.meta.items() if k != "source"}}
        runtime = OpenVinoRuntime(xml, eager.device, info, str(eager.meta.get("source", xml)), name)
    except NSTError as exc:
        log.warning("runtime=auto: the cached %s graph %s is unusable (%s); measuring again", name, xml, exc)
        return None
    return runtime


def auto_runtime(loaded: LoadedModel, runtime: str | None, device: str | torch.device = "cpu") -> Runtime:
    """The runtime a stylize path runs ``loaded`` in: :func:`choose_runtime` for ``auto``, else the named one
    (:func:`nst_lightning.export.runtime.runtime_from_model`; None or ``eager``: the network itself)."""
    if runtime == "auto":
        return choose_runtime(loaded, device)
    return runtime_from_model(loaded, runtime or "eager", device)
