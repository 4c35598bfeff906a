"""Post-training static int8 quantization of an exported ONNX graph, calibrated on training photos.

ONNX Runtime's ``quantize_static`` writes QDQ nodes (QuantizeLinear/DequantizeLinear pairs) around every
convolution: int8 weights per output channel, uint8 activations with ranges measured on the calibration
photos. OpenVINO fuses those pairs into int8 convolutions (VNNI / AMX-INT8 where the CPU has them). Whether
the result is good enough is not assumed: :mod:`nst_lightning.export.gate` measures it.

Calibration images: 1×3×H×W float32 in [0, 1] (default: :func:`training_photos`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from nst_lightning.errors import NSTError
from nst_lightning.export import graph
from nst_lightning.image import list_images, load_image

SAMPLE_TRAIN = Path(__file__).resolve().parents[1] / "data" / "sample" / "train"  # shipped with the package
CALIBRATION_SIZE = 256  # longest side of a calibration photo
CALIBRATION_COUNT = 8


def training_photos(
    count: int = CALIBRATION_COUNT, size: int = CALIBRATION_SIZE, offset: int = 0
) -> list[torch.Tensor]:  # fmt: skip
    """``count`` training photos (``$NST_DATA_DIR/train`` when it holds images, else the package's sample
    photos), each 1×3×h×w with longest side ``size``; ``offset`` skips the first ones (gate photos that the
    calibration did not see)."""
    folder = Path(os.environ.get("NST_DATA_DIR", "")) / "train"
    files = list_images(folder, recursive=False) if os.environ.get("NST_DATA_DIR") and folder.is_dir() else []
    files = files or list_images(SAMPLE_TRAIN, recursive=False)
    chosen = files[offset : offset + count] or files[:count]
    return [load_image(path, size) for path in chosen]


def _feeds(calibration: list[torch.Tensor], num_styles: int) -> Iterator[dict[str, np.ndarray]]:
    """One feed per photo; a multi-style network sees each style in turn, then an even blend."""
    for index, image in enumerate(calibration):
        feed = {graph.INPUT_NAME: image.float().numpy()}
        if num_styles > 1:
            weights = np.zeros((image.shape[0], num_styles), np.float32)
            if index % (num_styles + 1) == num_styles:
                weights[:] = 1.0 / num_styles
            else:
                weights[:, index % (num_styles + 1)] = 1.0
            feed[graph.STYLE_INPUT_NAME] = weights
        yield feed


@contextlib.contextmanager
def _quiet_root() -> Iterator[None]:
    """ONNX Runtime's quantizer logs a warning per tensor on the root logger: errors only while it runs."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_static_int8(
    model: bytes, num_styles: int = 1, calibration: list[torch.Tensor] | None = None
) -> bytes:  # fmt: skip
    """The ONNX ``model`` with int8 convolutions (QDQ, per-channel weights, calibrated activations).

    Args:
        model: a serialized ONNX graph as :func:`nst_lightning.export.graph.to_onnx` makes it.
        num_styles: the network's style count (its graph then takes B×S style weights too).
        calibration: 1×3×H×W photos in [0, 1] (default: :func:`training_photos`).

    Raises:
        NSTError: onnxruntime is missing or cannot quantize the graph.
    """
    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    except ImportError as exc:
        raise NSTError("int8 quantization needs onnxruntime: pip install 'nst_lightning[export]'") from exc
    photos = calibration if calibration is not None else training_photos()
    feeds = iter(list(_feeds(photos, num_styles)))

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(feeds, None)

    with tempfile.TemporaryDirectory(prefix="nst-int8-") as folder, _quiet_root():
        src, dst = Path(folder) / "model.onnx", Path(folder) / "int8.onnx"
        src.write_bytes(model)
        try:
            quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["Conv"])  # fmt: skip
        except Exception as exc:
            raise NSTError(f"int8 quantization failed ({type(exc).__name__}: {str(exc).strip()[:200]})") from exc
        return dst.read_bytes()
