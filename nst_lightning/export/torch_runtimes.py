"""The PyTorch runtimes: the eager module, a traced TorchScript module and a ``torch.export`` program."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nst_lightning.export import graph
from nst_lightning.export.base import Runtime
from nst_lightning.export.graph import ExportInfo
from nst_lightning.models.conditional import num_styles


class EagerRuntime(Runtime):
    """The PyTorch module itself."""

    name = "eager"

    def __init__(self, net: nn.Module, device: torch.device, model_name: str, meta: dict[str, Any]):
        super().__init__(device, graph.size_contract(net), model_name, meta)
        self.net = net.eval().requires_grad_(False).to(device)
        if num_styles(net) != self.num_styles:  # a bare network, without the checkpoint's list of styles
            self.style_names = [str(i) for i in range(num_styles(net))]

    def _forward(self, padded: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        return self.net(padded) if style is None else self.net(padded, style)


class TorchScriptRuntime(Runtime):
    """A traced TorchScript module (``torch.jit``; deprecated in current PyTorch)."""

    name = "torchscript"

    def __init__(self, module: torch.jit.ScriptModule, device: torch.device, info: ExportInfo, source: str):
        super().__init__(device, info.contract, info.model_name, {**info.meta, "source": source})
        self.module = module.to(device).eval()

    def _forward(self, padded: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        return self.module(padded) if style is None else self.module(padded, style)


class TorchExportRuntime(Runtime):
    """A ``torch.export`` program, run as its graph module."""

    name = "torch_export"

    def __init__(self, program: torch.export.ExportedProgram, device: torch.device, info: ExportInfo, source: str):
        super().__init__(device, info.contract, info.model_name, {**info.meta, "source": source})
        if device.type != "cpu":
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, device)
        self.program = program
        self.module = program.module()

    def _forward(self, padded: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        return self.module(padded) if style is None else self.module(padded, style)
