"""Write a loaded network as an nst_lightning ``.pt``, TorchScript, torch.export ``.pt2`` or ONNX file, and
check the written file against the eager network."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from nst_lightning.errors import NSTError
from nst_lightning.export import graph
from nst_lightning.export.openvino_runtime import save_ir
from nst_lightning.export.runtime import EagerRuntime, Runtime, export_info, load_runtime
from nst_lightning.inference.checkpoint import LoadedModel, export_model

# Two sizes per check: one a multiple of every network's stride, one odd (exercises the padding).
PARITY_SIZES: tuple[tuple[int, int], ...] = ((96, 128), (161, 119))


def export(
    loaded: LoadedModel, format: str, output: str | Path, half: bool = False, onnx_exporter: str = "auto"
) -> Path:
    """Write ``loaded`` to ``output`` in ``format`` (``nst``, ``torchscript``, ``torch_export``, ``onnx``,
    ``openvino``: IR ``.xml`` + ``.bin``).

    ``half`` (nst only) stores fp16 weights. The graph formats take dynamic batch, height and width (see
    :mod:`nst_lightning.export.graph`) and carry the metadata that :func:`load_runtime` needs.

    Raises:
        NSTError: unknown format, a format the network cannot be captured in, or an unwritable output.
    """
    if format not in graph.FORMATS:
        raise NSTError(f"unknown export format {format!r}; choose one of: {', '.join(graph.FORMATS)}")
    if half and format != "nst":
        raise NSTError("half=true applies to format=nst only (graph formats are exported in fp32)")
    out = Path(output).expanduser()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NSTError(f"cannot create the output folder {out.parent} ({exc})") from exc
    if out.is_dir():
        raise NSTError(f"output {out} is a folder; give a file name such as {out / ('model' + graph.SUFFIXES[format])}")
    if format == "torch_export" and out.suffix != ".pt2":
        raise NSTError(f"torch.export files must end in .pt2 (torch.export.load needs it): {out}")
    if format == "nst":
        source = loaded.meta.get("source")
        if not source:
            raise NSTError("format=nst re-exports a checkpoint file; this model was not loaded from one")
        return export_model(source, out, half=half)

    net = loaded.net.to("cpu").float().eval()
    info = export_info(loaded, format)
    if format == "torchscript":
        module = graph.to_torchscript(net, info.contract)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation: see docs/export.md
            torch.jit.save(module, str(out), _extra_files={graph.META_KEY: info.to_json()})
    elif format == "torch_export":
        program = graph.to_torch_export(net, info.contract)
        torch.export.save(program, str(out), extra_files={graph.META_KEY: info.to_json()})
    else:
        model, info.onnx_exporter = graph.to_onnx(net, info.contract, onnx_exporter)
        info.set_padding(info.onnx_exporter == "dynamo")
        if format == "openvino":  # IR .xml + .bin, converted from the ONNX graph
            return save_ir(model, info, out.with_suffix(".xml"))
        out.write_bytes(graph.with_onnx_metadata(model, info))
    return out


@torch.inference_mode()
def check_parity(
    reference: LoadedModel | Runtime,
    candidate: Runtime | str | Path,
    sizes: Sequence[Sequence[int]] = PARITY_SIZES,
    batch: int = 1,
    seed: int = 0,
) -> dict[tuple[int, int], float]:
    """Max absolute difference between the eager network and ``candidate`` (a runtime or a file) per size.

    Inputs are uniform noise in [0, 1] (B×3×H×W for each (H, W) in ``sizes``): harder than photos, since
    every pixel differs from its neighbours.
    """
    ref = reference if isinstance(reference, Runtime) else EagerRuntime(
        reference.net, torch.device("cpu"), reference.model_name, reference.meta
    )  # fmt: skip
    run = candidate if isinstance(candidate, Runtime) else load_runtime(candidate, device=ref.device)
    generator = torch.Generator().manual_seed(seed)
    diffs: dict[tuple[int, int], float] = {}
    for h, w in sizes:
        images = torch.rand(batch, 3, int(h), int(w), generator=generator)
        expected, got = ref(images), run(images).to(ref.device)
        if got.shape != expected.shape:
            shapes = f"{tuple(got.shape)}, expected {tuple(expected.shape)}"
            raise NSTError(f"{run.name} returned shape {shapes} for a {h}×{w} input")
        diffs[(int(h), int(w))] = float((got - expected).abs().max())
    return diffs
