import pytest
import torch

from nst_lightning.errors import NSTError
from nst_lightning.losses import PerceptualLoss
from nst_lightning.losses import functional as LF
from nst_lightning.losses.styles import style_grams


def test_gram_is_symmetric_psd_and_normalised():
    f = torch.randn(2, 8, 5, 7)
    g = LF.gram_matrix(f)
    assert g.shape == (2, 8, 8)
    assert torch.allclose(g, g.transpose(1, 2))
    assert torch.linalg.eigvalsh(g).min() > -1e-5
    assert torch.allclose(g[0, 0, 0], f[0, 0].pow(2).sum() / (8 * 5 * 7))


def test_gram_is_fp32_under_autocast():
    f = torch.randn(1, 4, 8, 8, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = LF.gram_matrix(f * 100)
    assert g.dtype == torch.float32
    assert torch.isfinite(g).all()


def test_losses_are_zero_on_identical_inputs():
    x = torch.rand(2, 3, 16, 16)
    assert LF.content_loss(x, x) == 0
    assert LF.style_loss(LF.gram_matrix(x), LF.gram_matrix(x)) == 0
    assert LF.total_variation(torch.ones(1, 3, 8, 8)) == 0
    assert LF.total_variation(torch.rand(1, 3, 8, 8)) > 0


def small_loss(**kwargs) -> PerceptualLoss:
    return PerceptualLoss(content_layers=["relu2_1"], style_layers=["relu1_1", "relu2_1"], **kwargs)


def test_perceptual_loss_terms_and_zero_at_the_targets():
    loss = small_loss(tv_weight=1.0)
    style = torch.rand(1, 3, 32, 32)
    loss.set_style_images([style])
    same = loss(style, style)
    assert set(same) == {"content", "style", "tv", "objective"}
    assert same["content"] == 0 and float(same["style"]) < 1e-6
    other = loss(torch.rand(1, 3, 32, 32), style)
    assert other["content"] > 0 and other["style"] > 0 and other["tv"] > 0
    total = other["content"] + other["style"] + other["tv"]
    assert torch.allclose(other["objective"], total)


def test_perceptual_loss_is_fp32_under_bf16_autocast():
    loss = PerceptualLoss(content_layers=["relu1_2"], style_layers=["relu1_1"])
    loss.set_style_images([torch.rand(1, 3, 16, 16)])
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = loss(x, torch.rand(1, 3, 16, 16))
    assert all(v.dtype == torch.float32 for v in terms.values())
    assert all(torch.isfinite(v) for v in terms.values())
    terms["objective"].backward()
    assert torch.isfinite(x.grad).all()


def test_auto_balance_makes_layers_comparable():
    torch.manual_seed(0)
    style, x = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    raw = small_loss(style_balance="none", style_layer_weights=[1.0, 0.0])
    raw.set_style_images([style])
    raw_deep = small_loss(style_balance="none", style_layer_weights=[0.0, 1.0])
    raw_deep.set_style_images([style])
    ratio_raw = float(raw_deep(x)["style"] / raw(x)["style"])
    bal = small_loss(style_balance="auto", style_layer_weights=[1.0, 0.0])
    bal.set_style_images([style])
    bal_deep = small_loss(style_balance="auto", style_layer_weights=[0.0, 1.0])
    bal_deep.set_style_images([style])
    ratio_bal = float(bal_deep(x)["style"] / bal(x)["style"])
    # Without balancing the deeper layer dominates by orders of magnitude; balanced, they are comparable.
    assert ratio_raw > 30
    assert 0.1 < ratio_bal < 10


def test_loss_state_dict_holds_no_style_targets():
    loss = small_loss()
    loss.set_style_images([torch.rand(1, 3, 16, 16)])
    assert not any("gram" in k for k in loss.state_dict())


def test_style_layer_weight_count_is_checked():
    with pytest.raises(NSTError, match="style_layer_weights has 1 entries"):
        small_loss(style_layer_weights=[1.0])


def test_multiple_styles_blend_grams():
    loss = small_loss()
    a, b = torch.rand(1, 3, 16, 16), torch.zeros(1, 3, 16, 16)
    ga, gb = loss.compute_grams(a), loss.compute_grams(b)
    loss.set_style_images([a, b], weights=[3, 1])
    for name in loss.style_layers:
        assert torch.allclose(loss.target_grams[name], 0.75 * ga[name] + 0.25 * gb[name], rtol=1e-5, atol=1e-6)


def test_style_grams_are_cached_in_memory_and_on_disk(style_path, tmp_path, monkeypatch):
    from nst_lightning.losses import styles

    loss = small_loss()
    first = style_grams(style_path, 32, loss, cache_dir=tmp_path)
    files = list((tmp_path / "grams").glob("*.pt"))
    assert len(files) == 1

    def fail(*args, **kwargs):
        raise AssertionError("Grams were recomputed instead of read from the cache")

    monkeypatch.setattr(loss, "compute_grams", fail)
    assert style_grams(style_path, 32, loss, cache_dir=tmp_path) is first  # memory
    monkeypatch.setattr(styles, "_MEMORY_CACHE", {})
    from_disk = style_grams(style_path, 32, loss, cache_dir=tmp_path)  # disk
    assert all(torch.equal(from_disk[k], first[k]) for k in first)
    # A different size is a different key.
    monkeypatch.undo()
    style_grams(style_path, 24, loss, cache_dir=tmp_path)
    assert len(list((tmp_path / "grams").glob("*.pt"))) == 2


def test_content_branch_has_no_autograd_and_matches_a_joint_pass():
    torch.manual_seed(0)
    loss = PerceptualLoss(content_layers=["relu2_1"], style_layers=["relu1_1", "relu3_1"])
    loss.set_style_images([torch.rand(1, 3, 32, 32)])
    generated = torch.rand(2, 3, 32, 32, requires_grad=True)
    content = torch.rand(2, 3, 32, 32, requires_grad=True)
    terms = loss(generated, content)
    terms["objective"].backward()
    assert content.grad is None  # the content branch never enters the autograd graph
    # Same numbers as the textbook single pass over the concatenated batch.
    feats = loss.vgg(torch.cat([generated, content]).detach())
    expected = loss.content_weight * LF.content_loss(feats["relu2_1"][:2], feats["relu2_1"][2:])
    assert torch.allclose(terms["content"], expected, rtol=1e-5)


def test_vgg_stops_at_the_deepest_layer_asked_for(monkeypatch):
    loss = PerceptualLoss(content_layers=["relu1_2"], style_layers=["relu1_1", "relu5_1"])
    ran = []
    for name, module in loss.vgg.net.named_children():
        module.register_forward_hook(lambda m, i, o, name=name: ran.append(name))
    loss.vgg(torch.rand(1, 3, 32, 32), ["relu1_2"])
    assert ran[-1] == "relu1_2"


def test_gram_is_the_same_for_channels_last_features():
    f = torch.randn(2, 16, 9, 7)
    nhwc = f.contiguous(memory_format=torch.channels_last)
    assert torch.allclose(LF.gram_matrix(nhwc), LF.gram_matrix(f), rtol=1e-5, atol=1e-6)


def test_precomputed_content_targets_give_the_same_terms():
    loss = small_loss(tv_weight=0.5)
    loss.set_style_images([torch.rand(1, 3, 32, 32)])
    x, c = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    a, b = loss(x, c), loss(x, content_targets=loss.content_targets(c))
    assert all(torch.allclose(a[k], b[k]) for k in a)
