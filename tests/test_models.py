import pytest
import torch

from nst_lightning.errors import NSTError
from nst_lightning.models import create_model, list_models
from nst_lightning.models.timm_unet import InstanceNormAct

SIZES = [(32, 32), (33, 47), (50, 37)]


def test_registry_lists_the_reference_networks():
    assert {"johnson", "mobilenetv3", "resnet50"} <= set(list_models())


def test_unknown_model_is_a_clear_error():
    with pytest.raises(NSTError, match="unknown model 'nope'.*johnson"):
        create_model("nope")


@pytest.mark.parametrize("name", list_models())
def test_every_network_keeps_shape_and_range_for_odd_sizes(name):
    torch.manual_seed(0)
    net = create_model(name).eval()
    for h, w in SIZES:
        x = torch.rand(2, 3, h, w)
        with torch.no_grad():
            y = net(x)
        assert y.shape == x.shape, (name, h, w)
        assert torch.isfinite(y).all()
        assert y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("name", list_models())
def test_every_network_passes_gradients_to_its_parameters(name):
    torch.manual_seed(0)
    net = create_model(name).train()
    x = torch.rand(2, 3, 33, 35)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    # Two steps: residual branches that start zero-initialised (timm's resnet) pass gradients after one.
    for _ in range(2):
        opt.zero_grad()
        # A content-dependent loss, so that gradients reach the whole network.
        (net(x) - x.flip(-1)).pow(2).mean().backward()
        opt.step()
    params = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    without = [n for n, p in params if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not without, f"{name}: no/invalid gradient for {without[:5]}"
    nonzero = sum(int(p.grad.abs().sum() > 0) for _, p in params)
    assert nonzero / len(params) > 0.9


def test_johnson_matches_the_reference_layout():
    net = create_model("johnson")
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size[0] for c in (convs[0], convs[-1])] == [9, 9]
    assert [c.out_channels for c in convs[:3]] == [32, 64, 128]
    assert [c.stride[0] for c in convs[:3]] == [1, 2, 2]
    assert len(net.residuals) == 5
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(1.68e6, rel=0.02)


@pytest.mark.parametrize("name", ["mobilenetv3", "resnet50"])
def test_timm_decoder_is_sized_from_feature_info(name):
    net = create_model(name, decoder_max_channels=64)
    channels = net.encoder.feature_info.channels()
    assert net.bottleneck[1].in_channels == channels[-1]
    assert net.stages[-1][1].in_channels == min(channels[1], 64) + channels[0]
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules())


def test_batchnorm_modes():
    inst = create_model("resnet50")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in inst.encoder.modules())
    assert any(isinstance(m, InstanceNormAct) for m in inst.encoder.modules())
    # Instance norm: an image's output does not depend on the rest of the batch, in train mode too.
    x = torch.rand(2, 3, 32, 32)
    inst.train()
    with torch.no_grad():
        assert torch.allclose(inst(x)[:1], inst(x[:1]), atol=1e-5)

    frozen = create_model("mobilenetv3", bn_mode="frozen").train()
    bns = [m for m in frozen.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert frozen.training and frozen.stages.training


@pytest.fixture
def no_cached_weights(tmp_path, monkeypatch):
    """Offline, with empty weight caches, whatever this machine has downloaded before: torch.hub and the
    Hugging Face hub look in empty folders under ``tmp_path``."""
    import huggingface_hub.constants as hf

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The hub reads its environment once, when it is imported (before this fixture runs).
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize("name", ["mobilenetv3", "resnet50"])
def test_pretrained_weights_offline_fail_clearly(name, no_cached_weights):
    with pytest.raises(NSTError, match="could not load ImageNet weights.*model.pretrained=false"):
        create_model(name, pretrained=True)


@pytest.mark.parametrize("name", ["mobilenetv3", "resnet50"])
def test_checkpointed_encoders_have_no_in_place_activations(name):
    # timm < 1.0.31 checkpoints resnet's stem ReLU(inplace=True) alone and backward fails (seen on a GPU run).
    net = create_model(name, checkpointing=True)
    assert not [n for n, m in net.encoder.named_modules() if getattr(m, "inplace", None) is True]


@pytest.mark.parametrize("name", ["johnson", "mobilenetv3"])
def test_gradient_checkpointing_gives_the_same_gradients(name):
    torch.manual_seed(0)
    plain = create_model(name)
    ckpt = create_model(name, checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 48, 40)
    plain(x).pow(2).mean().backward()
    ckpt(x).pow(2).mean().backward()
    for (n, a), b in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-6), n
