"""A network says what its callers need (its size multiple, its per-image norm layers); no caller checks its class.

``ToyNet`` is a network the package has never seen: a stride of 8 and its own norm layer type. Registered by
name, it is loaded, tiled with whole-image statistics and exported without any change to those callers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nst_lightning.export import SizeContract, load_runtime, size_contract
from nst_lightning.image import pil_to_tensor
from nst_lightning.inference import EXPORT_FORMAT, load_model, stylize
from nst_lightning.inference.tiling import GlobalNormStats
from nst_lightning.models import create_model, list_models, register_model
from nst_lightning.models.base import TransformNet, norm_layers
from nst_lightning.models.blocks import pad_to_multiple
from nst_lightning.models.timm_unet import InstanceNormAct

from .conftest import synthetic_photo

TOY = "contract_toy"


class ToyNorm(nn.Module):
    """A per-image norm the package does not know: affine instance norm followed by a leaky ReLU."""

    per_image_norm = True

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(1 + 0.1 * torch.randn(channels))
        self.bias = nn.Parameter(0.1 * torch.randn(channels))
        self.eps = 1e-5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_norm(F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps))

    def after_norm(self, y: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(y, 0.2)


class ToyNet(TransformNet):
    """Three stride-2 convolutions with ``ToyNorm`` and a nearest-upsampling decoder: stride 8."""

    size_multiple = 8

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.down = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1, padding_mode="reflect"), ToyNorm(width),
            nn.Conv2d(width, width, 3, stride=2, padding=1, padding_mode="reflect"), ToyNorm(width),
            nn.Conv2d(width, width, 3, stride=2, padding=1, padding_mode="reflect"), ToyNorm(width),
        )  # fmt: skip
        self.up = nn.Sequential(nn.Upsample(scale_factor=8, mode="nearest"), nn.Conv2d(width, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, (h, w) = pad_to_multiple(x, self.size_multiple, min_size=2 * self.size_multiple)
        return torch.sigmoid(self.up(self.down(padded))[..., :h, :w] + padded[..., :h, :w])


if TOY not in list_models():
    register_model(TOY)(ToyNet)


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy network saved as an exported model file, as a user's own network would be."""
    torch.manual_seed(0)
    net = create_model(TOY, width=8)
    path = tmp_path_factory.mktemp("toy") / "toy.pt"
    torch.save(
        {"format": EXPORT_FORMAT, "model_name": TOY, "model_kwargs": {"width": 8}, "state_dict": net.state_dict()},
        path,
    )
    return path


def test_the_shipped_networks_declare_their_multiple_and_norm_layers():
    johnson = create_model("johnson_tiny")
    assert johnson.size_multiple == 4 and size_contract(johnson) == SizeContract(4, 8)
    assert norm_layers(johnson) and all(isinstance(m, nn.InstanceNorm2d) for m in norm_layers(johnson))
    unet = create_model("mobilenetv3")
    assert unet.size_multiple == 32 and size_contract(unet) == SizeContract(32, 64)
    assert any(isinstance(m, InstanceNormAct) for m in unet.norm_layers())


def test_a_new_network_is_found_by_its_declarations(toy_file: Path):
    net = load_model(toy_file).net
    assert isinstance(net, ToyNet) and size_contract(net) == SizeContract(8, 16)
    assert [type(m) for m in GlobalNormStats(net).layers] == [ToyNorm] * 3


def test_a_module_without_declarations_is_searched_and_refused_by_export():
    plain = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.InstanceNorm2d(3, affine=True))
    assert norm_layers(plain) == [plain[1]]  # tiling still finds torch's own instance norm
    with pytest.raises(Exception, match="size_multiple"):
        size_contract(plain)


def test_a_new_network_tiles_with_whole_image_statistics(toy_file: Path, monkeypatch: pytest.MonkeyPatch):
    """Tiled is close to untiled once its own norm layers get the whole image's statistics; not without them.

    (Not equal: tiles start off the network's stride-8 grid, which shifts its sampling.)"""
    net = load_model(toy_file).net
    photo = pil_to_tensor(synthetic_photo(160, 112, seed=3)).unsqueeze(0)
    untiled = stylize(photo, net, tile_size=None)
    tiled = stylize(photo, net, tile_size=64, tile_overlap=16, tile_stats_size=160)
    assert (tiled - untiled).abs().mean() < 2e-3

    monkeypatch.setattr(ToyNorm, "per_image_norm", False)  # the layers no longer say what they are
    per_tile = stylize(photo, net, tile_size=64, tile_overlap=16, tile_stats_size=160)
    assert (per_tile - untiled).abs().mean() > 10 * (tiled - untiled).abs().mean()


@pytest.mark.parametrize("runtime", ["torchscript", "torch_export"])
def test_a_new_network_exports_and_matches_eager_off_its_stride(toy_file: Path, runtime: str):
    eager = load_model(toy_file).net
    x = torch.rand(2, 3, 37, 53)  # neither side a multiple of 8
    with torch.inference_mode():
        expected = eager(x)
    got = load_runtime(toy_file, runtime)(x)
    assert got.shape == x.shape and torch.allclose(got, expected, atol=1e-5)
