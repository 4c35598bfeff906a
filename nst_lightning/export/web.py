"""``format=web``: a static folder that stylizes photos in the browser (ONNX Runtime Web, no server code).

The folder holds ``index.html``, ``page.js`` (the page), ``nst.js`` (the loader and tiled runner a web developer
reuses), ``style.css``, the network as ``model.onnx`` (dynamic size, pads itself: :mod:`.graph`), ``model.json``
(its styles, size contract, tile size and I/O names) and ``ort/``: the ONNX Runtime Web module and its
WebAssembly file, copied from the npm package that ``npm ci --prefix web`` installs in the repository (no CDN).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from nst_lightning.errors import NSTError
from nst_lightning.export import graph
from nst_lightning.export.exporter import export
from nst_lightning.inference.checkpoint import LoadedModel, style_names_of_meta

STATIC_DIR = Path(__file__).parent / "web_static"
PAGE_FILES = ("index.html", "page.js", "nst.js", "style.css")
# The WebGPU build of ONNX Runtime Web also runs the WebAssembly backend (SIMD, threads when cross-origin isolated).
ORT_FILES = ("ort.webgpu.min.mjs", "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm")
WEB_PACKAGE_DIR = Path(__file__).resolve().parents[2] / "web"  # package.json + package-lock.json (repository)
ORT_DIR_ENV = "NST_ORT_WEB_DIR"
MODEL_FILE = "model.onnx"
# Tiles of this many pixels (overlapping by TILE_OVERLAP) keep the tab's WebAssembly memory near that of one tile.
TILE_SIZE, TILE_OVERLAP = 512, 64


def ort_web_dir(explicit: str | Path | None = None) -> Path:
    """The folder with ONNX Runtime Web's files: ``explicit``, ``$NST_ORT_WEB_DIR``, or the repository's
    ``web/node_modules/onnxruntime-web/dist``.

    Raises:
        NSTError: the files are not there (with the command that installs them).
    """
    chosen = explicit or os.environ.get(ORT_DIR_ENV)
    folder = Path(chosen).expanduser() if chosen else WEB_PACKAGE_DIR / "node_modules" / "onnxruntime-web" / "dist"
    missing = [name for name in ORT_FILES if not (folder / name).is_file()]
    if missing:
        how = f"npm ci --prefix {WEB_PACKAGE_DIR}" if not chosen else f"point {ORT_DIR_ENV} at onnxruntime-web's dist/"
        raise NSTError(f"the ONNX Runtime Web files are missing ({', '.join(missing)} in {folder}); run: {how}")
    return folder


def web_info(loaded: LoadedModel, contract: graph.SizeContract) -> dict[str, object]:
    """``model.json``: what ``nst.js`` needs to run the model (and what a developer reads)."""
    styles = style_names_of_meta(loaded.meta)
    return {
        "model": MODEL_FILE,
        "title": f"{', '.join(styles)} ({loaded.model_name})",
        "model_name": loaded.model_name,
        "styles": styles,
        "input": graph.INPUT_NAME,
        "style_input": graph.STYLE_INPUT_NAME if len(styles) > 1 else None,
        "output": graph.OUTPUT_NAME,
        "min_size": contract.min_size,
        "tile_size": TILE_SIZE,
        "tile_overlap": TILE_OVERLAP,
        "io": graph.io_description(contract, pads_inside=True),
    }


def export_web(loaded: LoadedModel, folder: str | Path, ort_dir: str | Path | None = None) -> Path:
    """Write the web bundle for ``loaded`` into ``folder`` (created; existing bundle files are replaced).

    Returns the path of the bundle's ``model.onnx`` (what the parity check runs).

    Raises:
        NSTError: missing ONNX Runtime Web files, an output that is a file, or a network ONNX cannot capture.
    """
    source = ort_web_dir(ort_dir)  # before the slow ONNX export
    out = Path(folder).expanduser()
    if out.exists() and not out.is_dir():
        raise NSTError(f"format=web writes a folder, but {out} is a file; give output=FOLDER")
    (out / "ort").mkdir(parents=True, exist_ok=True)
    model = export(loaded, "onnx", out / MODEL_FILE, onnx_exporter="dynamo")
    for name in PAGE_FILES:
        shutil.copyfile(STATIC_DIR / name, out / name)
    for name in ORT_FILES:
        shutil.copyfile(source / name, out / "ort" / name)
    info = web_info(loaded, graph.size_contract(loaded.net))
    (out / "model.json").write_text(json.dumps(info, indent=2) + "\n")
    return model
