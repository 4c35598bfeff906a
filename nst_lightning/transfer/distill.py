"""Knowledge distillation: a frozen teacher network guides a smaller student (pixel and VGG-feature terms)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nst_lightning.inference.checkpoint import load_model
from nst_lightning.losses.vgg import VGG19Features


class Teacher(nn.Module):
    """A trained transformation network, frozen and always in eval mode; its forward runs without autograd.

    Args:
        source: checkpoint path, exported model or shipped model name (as
            :func:`nst_lightning.inference.checkpoint.load_model` takes).
        reduced_precision: ``auto`` runs the teacher under bf16 autocast on CUDA GPUs that support it (the
            shipped models train in bf16-mixed, so that is how they were trained to run) and in fp32 elsewhere
            (bf16 convolutions are emulated, slowly, on most CPUs); ``off`` always runs fp32.

    ``forward(images)`` maps B×3×H×W in [0, 1] to the teacher's stylized B×3×H×W fp32 images in [0, 1].
    """

    def __init__(self, source: str | Path, reduced_precision: str = "auto") -> None:
        super().__init__()
        loaded = load_model(source)
        self.net = loaded.net
        self.model_name, self.model_kwargs, self.meta = loaded.model_name, loaded.model_kwargs, loaded.meta
        self.reduced_precision = reduced_precision
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Teacher:
        """The teacher always stays in eval mode."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        cuda_bf16 = images.is_cuda and torch.cuda.is_bf16_supported()
        use_bf16 = self.reduced_precision == "auto" and cuda_bf16
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            return self.net(images).float()


def distill_terms(
    student: torch.Tensor,
    teacher: torch.Tensor,
    pixel_weight: float = 0.0,
    feature_weight: float = 0.0,
    vgg: VGG19Features | None = None,
    feature_layers: Sequence[str] = ("relu2_2",),
) -> dict[str, torch.Tensor]:
    """Weighted distillation terms between B×3×H×W student and teacher outputs (both in [0, 1]).

    ``distill_pixel`` is the MSE of the images; ``distill_feature`` the mean over ``feature_layers`` of the MSE
    of their VGG features (the teacher's pass without autograd). A zero weight skips its term's computation.

    Returns:
        ``{"distill_pixel", "distill_feature"}``: weighted fp32 scalars.
    """
    zero = student.new_zeros((), dtype=torch.float32)
    teacher = teacher.to(student.dtype)
    pixel = F.mse_loss(student.float(), teacher.float()) if pixel_weight else zero
    feature = zero
    if feature_weight:
        if vgg is None:
            raise ValueError("feature distillation needs the VGG network")
        fs = vgg(student, feature_layers)
        with torch.no_grad():
            ft = vgg(teacher, feature_layers)
        feature = sum(F.mse_loss(fs[n].float(), ft[n].float()) for n in feature_layers) / len(feature_layers)
    return {"distill_pixel": pixel_weight * pixel, "distill_feature": feature_weight * feature}
