"""Exported ONNX and torch.export files stand alone: a plain client (no nst_lightning import) gives them an
image of any size and gets the library's result, reading the value range and layout from the file itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nst_lightning.export import export
from nst_lightning.image import pil_to_tensor
from nst_lightning.inference import load_model, stylize
from tests.conftest import REPO, synthetic_photo

# What docs/export.md shows a client: onnxruntime, numpy and Pillow only.
ONNX_CLIENT = r"""
import json, sys
import numpy as np, onnxruntime as ort
from PIL import Image

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map  # layout NCHW, channels RGB, input_range 0..1
x = np.asarray(Image.open(sys.argv[2]).convert("RGB"), dtype=np.float32)[None].transpose(0, 3, 1, 2) / 255
y = session.run(None, {session.get_inputs()[0].name: x})[0]
Image.fromarray((y[0].transpose(1, 2, 0).clip(0, 1) * 255).round().astype(np.uint8)).save(sys.argv[3])
assert not [m for m in sys.modules if m.startswith("nst_lightning")]
print(json.dumps({"layout": meta["layout"], "input_range": meta["input_range"], "sizes": meta["sizes"]}))
"""

TORCH_CLIENT = r"""
import sys, torch
program = torch.export.load(sys.argv[1])
x = torch.load(sys.argv[2])
torch.save(program.module()(x), sys.argv[3])
assert not [m for m in sys.modules if m.startswith("nst_lightning")]
"""


def _client(script: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300,
                         env=env, cwd="/")  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


@pytest.mark.slow
def test_plain_onnxruntime_stylizes_an_odd_size_like_the_library(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    path = export(load_model("starry_night"), "onnx", tmp_path / "starry_night.onnx")
    photo = synthetic_photo(301, 203, seed=5)
    photo.save(tmp_path / "photo.png")
    meta = json.loads(_client(ONNX_CLIENT, str(path), str(tmp_path / "photo.png"), str(tmp_path / "out.png")))
    assert meta["layout"] == "NCHW" and meta["input_range"] == "0..1" and "any H, W" in meta["sizes"]
    client = np.asarray(Image.open(tmp_path / "out.png"), dtype=np.int16)
    # the exported graph is the network alone: the stylize core's input noise (against striped skies) is off here
    library = np.asarray(stylize(photo, "starry_night", input_noise=0), dtype=np.int16)
    assert client.shape == library.shape == (203, 301, 3)
    assert np.abs(client - library).max() <= 1  # within one 8-bit level


@pytest.mark.slow
def test_plain_torch_export_program_takes_any_size(tmp_path: Path) -> None:
    loaded = load_model("starry_night")
    path = export(loaded, "torch_export", tmp_path / "starry_night.pt2")
    x = torch.stack([pil_to_tensor(synthetic_photo(301, 203, seed=6))] * 2)
    torch.save(x, tmp_path / "x.pt")
    _client(TORCH_CLIENT, str(path), str(tmp_path / "x.pt"), str(tmp_path / "y.pt"))
    got = torch.load(tmp_path / "y.pt")
    with torch.inference_mode():
        expected = loaded.net(x)
    assert got.shape == x.shape and float((got - expected).abs().max()) < 1e-4


def test_loading_onnx_runtime_leaves_nothing_in_the_temp_folder(tmp_path: Path) -> None:
    """onnxruntime's telemetry writes a ``.ses`` file into the temp folder on import: a long-running service
    must not leave it behind (the service's soak counts temp-file bytes)."""
    code = "from nst_lightning.export.runtime import _import_onnxruntime; _import_onnxruntime()"
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    assert [p.name for p in tmp_path.iterdir() if p.is_file() or any(p.iterdir())] == []
