"""The one contract every runtime keeps: :class:`Runtime` (pads any B×3×H×W, picks a multi-style network's
style weights, crops back) and the metadata an exported file carries (:func:`export_info`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from nst_lightning.errors import NSTError
from nst_lightning.export import graph
from nst_lightning.export.graph import ExportInfo, SizeContract
from nst_lightning.inference.checkpoint import LoadedModel, style_names_of_meta
from nst_lightning.models.conditional import resolve_style, style_weights


class Runtime(ABC):
    """A loaded style network: ``runtime(images)`` maps B×3×H×W in [0, 1] to B×3×H×W in [0, 1].

    Attributes:
        name: ``eager``, ``torchscript``, ``torch_export`` or ``onnxruntime``.
        device: where inputs are run and outputs are returned.
        model_name: the network's registry name (``johnson``, ``mobilenetv3``, ...).
        meta: what the checkpoint says about the model (``style_name``, ``styles``, ...).
        source: the file it was loaded from.
        style_names: a multi-style network's styles, in order (one name for a single-style network).
        style: the S style weights used when a call names none (style 0 unless :meth:`set_style` chose).
    """

    name: str = ""

    def __init__(self, device: torch.device, contract: SizeContract, model_name: str, meta: dict[str, Any]):
        self.device = device
        self.contract = contract
        self.model_name = model_name
        self.meta = meta
        self.source = str(meta.get("source", ""))
        self.style_names = style_names_of_meta(meta)
        self.style: torch.Tensor | None = None

    @property
    def num_styles(self) -> int:
        return len(self.style_names)

    def set_style(self, style: str | int | None = None, style_mix: dict[str, float] | None = None) -> Runtime:
        """Choose the style (a name or index) or blend (``{name: weight}``) used when a call names none."""
        weights = resolve_style(self.style_names, style, style_mix)
        self.style = weights if self.num_styles > 1 else None
        return self

    @abstractmethod
    def _forward(self, padded: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        """Padded B×3×H'×W' float32 on ``self.device`` (and B×S style weights for a multi-style network, else
        None) → B×3×H'×W'."""

    def __call__(self, images: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """B×3×H×W in [0, 1] → B×3×H×W; ``style``: S or B×S weights, or B indices (default :attr:`style`)."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] < 1 or images.shape[3] < 1:
            raise NSTError(f"expected images of shape B×3×H×W, got {tuple(images.shape)}")
        padded, (h, w) = self.contract.pad(images.to(self.device, torch.float32))
        weights = None
        if self.num_styles > 1:
            chosen = style if style is not None else self.style
            weights = style_weights(chosen, self.num_styles, images.shape[0], self.device)
            weights = weights.to(self.device, torch.float32).contiguous()
        with torch.inference_mode():
            out = self._forward(padded.contiguous(), weights)
        return out[..., :h, :w].float().clamp(0, 1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model_name!r}, device={self.device}, source={self.source!r})"


def export_info(loaded: LoadedModel, exported_as: str) -> ExportInfo:
    """The metadata an exported file carries for ``loaded``."""
    contract = graph.size_contract(loaded.net)
    meta = {k: v for k, v in loaded.meta.items() if k != "source"}
    info = ExportInfo(exported_as, loaded.model_name, contract.multiple, contract.min_size,
                      dict(loaded.model_kwargs), meta)  # fmt: skip
    # The legacy ONNX exporter's graph does not pad itself (see to_onnx), the others do.
    info.set_padding(exported_as in ("torch_export", "onnx", "onnxruntime", "openvino"))
    return info
