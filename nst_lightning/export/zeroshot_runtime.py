"""The zero-shot model's VGG-19 encoder and decoders in OpenVINO (fp32, or bf16 where the CPU has it).

    model = zeroshot_runtime(load_zeroshot("painting.jpg"), "auto")   # logs the choice and why

Per decoder level, the encoder (image → ``relu{b}_1`` features, its input normalisation included) and the decoder
(features → image) are plain convolution stacks: each is converted once by ``openvino.convert_model`` with a
dynamic B×C×H×W input, kept as IR under ``<cache dir>/runtimes/`` (keyed by its weights and the OpenVINO
version, so the next process skips the conversion) and compiled with the precision of the runtime
(:func:`~nst_lightning.export.openvino_runtime.compile_config`). What stays in torch: the whitening–colouring
(or AdaIN) transform between them (a per-image eigendecomposition), the painting's statistics (once per
painting) and the refinement steps, which take gradients through VGG-19 and so run eager
(:mod:`nst_lightning.inference.refine`).

``auto`` measures eager, ``openvino`` and (on a CPU with AVX-512 BF16 or AMX) ``openvino_bf16`` on gate photos
with the model's refinement steps, keeps those within the gate of :mod:`nst_lightning.export.gate` (mean abs
difference to eager ≤ 1/255) and picks the fastest; the choice is cached per machine like a style network's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
import weakref
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nst_lightning.cpu_features import has_fast_bf16, this_cpu_flags
from nst_lightning.errors import NSTError
from nst_lightning.export.auto import median_ms
from nst_lightning.export.gate import check_gate
from nst_lightning.export.openvino_runtime import compile_config, compile_cpu, core, import_openvino
from nst_lightning.export.quantize import CALIBRATION_COUNT, training_photos
from nst_lightning.inference.zeroshot import ZeroShotModel
from nst_lightning.models.decoder import level_channels

log = logging.getLogger(__name__)
RUNTIMES = ("eager", "openvino", "openvino_bf16")
GATE_PHOTOS = 2
TIMING_REPEATS = 2
CACHE_VERSION = 1


class CompiledPart:
    """A convolution stack compiled by OpenVINO: float32 B×C×H×W → float32 B×C'×H'×W' (any H, W)."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        request = self.compiled.create_infer_request()  # one per call: concurrent calls never share one
        out = request.infer({0: x.detach().to("cpu", torch.float32).contiguous().numpy()})
        return torch.from_numpy(out[self.compiled.output(0)])


# Per decoder (the shipped ones are shared by every zero-shot model of the process), its level's compiled encoder
# and decoder: {(id of the encoder's VGG, runtime, threads): (encoder, decoder)}.
_COMPILED: weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple[CompiledPart, CompiledPart]]] = (
    weakref.WeakKeyDictionary()
)


class _Encoder(nn.Module):
    """VGG-19 from the image to one level (what :meth:`ZeroShotModel.part` runs eagerly)."""

    def __init__(self, model: ZeroShotModel, level: str) -> None:
        super().__init__()
        self.vgg, self.level = model.vgg, level

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vgg(images, [self.level])[self.level]


def _digest(module: nn.Module, *parts: object) -> str:
    digest = hashlib.sha256()
    for part in (type(module).__name__, *parts):
        digest.update(str(part).encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def _ov_model(module: nn.Module, channels: int, level: str, folder: Path) -> Any:
    """``module`` as an ``openvino.Model`` with a dynamic ``-1×channels×-1×-1`` input, from the IR cache if there."""
    ov = import_openvino()
    xml = folder / f"zeroshot-{level}-{_digest(module, channels, level, ov.get_version())}.xml"
    if xml.is_file():
        try:
            return core().read_model(str(xml))
        except Exception as exc:  # a damaged cache entry: convert again
            log.warning("zero-shot: cannot read the cached %s (%s); converting again", xml, exc)
    size = 64
    example = torch.rand(1, channels, size, size)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # tracing warnings about the feature dict and shapes
            model = ov.convert_model(module.eval(), example_input=example,
                                     input=[ov.PartialShape([-1, channels, -1, -1])])  # fmt: skip
    except Exception as exc:
        raise NSTError(f"OpenVINO cannot convert the zero-shot {level} network ({type(exc).__name__}: {exc})") from exc
    try:
        folder.mkdir(parents=True, exist_ok=True)
        ov.save_model(model, str(xml), compress_to_fp16=False)
    except Exception as exc:  # a read-only cache costs a conversion next time, nothing else
        log.warning("zero-shot: could not cache the converted %s network in %s (%s)", level, folder, exc)
    return model


def with_runtime(model: ZeroShotModel, runtime: str, cache_dir: str | Path | None = None) -> ZeroShotModel:
    """``model`` (sharing its networks and style) with its encoders and decoders compiled as ``runtime``
    (``openvino`` or ``openvino_bf16``)."""
    if runtime not in RUNTIMES[1:]:
        raise NSTError(f"the zero-shot model runs with runtime=eager, auto, {', '.join(RUNTIMES[1:])}, not {runtime}")
    config = compile_config(runtime)  # refuses bf16 on a CPU without it
    folder = _cache_folder(cache_dir)
    parts = {}
    for level in model.levels:
        decoder = model.decoders[level]
        compiled = _COMPILED.setdefault(decoder, {})
        key = (id(model.vgg), runtime, torch.get_num_threads())
        if key not in compiled:
            compiled[key] = _compile(model, level, config, folder)
        parts[level] = compiled[key]
    other = model.with_style(model.style) if model.style is not None else _copy(model)
    other.parts, other.runtime = parts, runtime
    return other


def _compile(model: ZeroShotModel, level: str, config: dict[str, Any], folder: Path) -> tuple[CompiledPart, ...]:
    encoder = _ov_model(_Encoder(model, level), 3, level + "-encoder", folder)
    decoder = _ov_model(model.decoders[level], level_channels(level), level + "-decoder", folder)
    try:
        return CompiledPart(compile_cpu(encoder, config)), CompiledPart(compile_cpu(decoder, config))
    except Exception as exc:
        raise NSTError(f"OpenVINO cannot compile the zero-shot {level} networks ({type(exc).__name__})") from exc


def _copy(model: ZeroShotModel) -> ZeroShotModel:
    import copy

    other = copy.copy(model)
    other.__dict__["_modules"] = dict(model._modules)
    return other


def zeroshot_runtime(
    model: ZeroShotModel, runtime: str, cache_dir: str | Path | None = None, fallback: bool = False
) -> ZeroShotModel:
    """``model`` in ``runtime``: ``eager`` (itself), ``openvino``, ``openvino_bf16`` or ``auto`` (the fastest of
    them that passes the gate here, measured once per machine and cached; eager off the CPU or without
    OpenVINO, with the reason logged).

    Args:
        fallback: a runtime the zero-shot model has no conversion for (``onnxruntime``, ``torchscript``, ...; the
            service's setting for its trained styles) runs eager with a logged note instead of an error.

    Raises:
        NSTError: a named runtime that cannot run here (OpenVINO missing, bf16 on a CPU without it, a GPU, a
            runtime other than those above without ``fallback``).
    """
    if runtime == "eager":
        return model
    if fallback and runtime not in (*RUNTIMES, "auto"):
        log.info("runtime=%s: zero-shot eager (its encoder and decoders convert to %s or auto only)", runtime,
                 ", ".join(RUNTIMES[1:]))  # fmt: skip
        return model
    device = model._device()
    if device.type != "cpu":
        if runtime == "auto":
            log.info("runtime=auto: zero-shot eager (the OpenVINO runtimes run on the CPU; this model is on %s)",
                     device)  # fmt: skip
            return model
        raise NSTError(f"runtime={runtime} runs on the CPU; use device=cpu (or runtime=eager on {device})")
    if runtime != "auto":
        chosen = with_runtime(model, runtime, cache_dir)
        log.info("runtime=%s: zero-shot encoder and decoders as asked (refinement steps: eager)", runtime)
        return chosen
    try:
        version = import_openvino().get_version()
    except NSTError as exc:
        log.info("runtime=auto: zero-shot eager (%s)", exc)
        return model
    return _auto(model, version, cache_dir)


def _auto(model: ZeroShotModel, version: str, cache_dir: str | Path | None) -> ZeroShotModel:
    folder = _cache_folder(cache_dir)
    key = _machine_key(model, version)
    entry = _read_cache(folder / f"zeroshot-{key}.json")
    if entry is not None:
        log.info("runtime=auto: zero-shot %s (%s; cached for this machine in %s)", entry["runtime"], entry["reason"],
                 folder)  # fmt: skip
        return model if entry["runtime"] == "eager" else with_runtime(model, entry["runtime"], cache_dir)
    names = ["openvino", "openvino_bf16"] if has_fast_bf16() else ["openvino"]
    photos = training_photos(GATE_PHOTOS, offset=CALIBRATION_COUNT)
    probe = model if model.style is not None else model.with_style(training_photos(1)[0])
    reference = _Named(probe, "eager")
    ms = {"eager": median_ms(reference, photos[0], TIMING_REPEATS)}
    gates: dict[str, dict[str, Any]] = {}
    for name in names:
        candidate = _Named(with_runtime(probe, name, cache_dir), name)
        gate = check_gate(reference, candidate, photos)  # type: ignore[arg-type]
        gates[name] = gate.as_dict()
        if gate.passed:
            ms[name] = median_ms(candidate, photos[0], TIMING_REPEATS)
        log.info("runtime=auto: zero-shot %s %s", name, gate.reason + (f", {ms[name]:.0f} ms" if gate.passed else ""))
    best = min(ms, key=ms.__getitem__)
    gate_text = gates[best]["reason"] if best != "eager" else "the reference"
    size = "×".join(str(s) for s in photos[0].shape[-2:])
    reason = (f"fastest that passed the gate, {ms['eager'] / ms[best]:.1f}x eager at {size} px with "
              f"{model.refine_steps} eager refinement steps; gate {gate_text}")  # fmt: skip
    _write_cache(folder / f"zeroshot-{key}.json", {"version": CACHE_VERSION, "runtime": best, "reason": reason,
                 "ms": ms, "gates": gates, "cpu_flags": sorted(this_cpu_flags())})  # fmt: skip
    log.info("runtime=auto: zero-shot %s (%s)", best, reason)
    return model if best == "eager" else with_runtime(model, best, cache_dir)


class _Named:
    """A zero-shot model as the gate calls a runtime: ``name``, ``device``, images → clamped images."""

    def __init__(self, model: ZeroShotModel, name: str) -> None:
        self.model, self.name, self.device = model, name, torch.device("cpu")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(images).clamp(0, 1)


def _machine_key(model: ZeroShotModel, version: str) -> str:
    """What decides the choice: CPU flags, OpenVINO and torch threads, the decoders' weights, method, refinement."""
    return _digest(model.decoders, sorted(this_cpu_flags()), version, torch.get_num_threads(), model.method,
                   model.refine_steps, model.levels)  # fmt: skip


def _cache_folder(cache_dir: str | Path | None) -> Path:
    from nst_lightning.losses.styles import default_cache_dir

    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir() / "runtimes"


def _read_cache(path: Path) -> dict[str, Any] | None:
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(entry, dict) and entry.get("version") == CACHE_VERSION and entry.get("runtime") in RUNTIMES
    return entry if ok else None


def _write_cache(path: Path, entry: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(entry, indent=1))
    except OSError as exc:
        log.warning("runtime=auto: could not cache the zero-shot choice in %s (%s)", path.parent, exc)
