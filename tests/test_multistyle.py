"""Many styles in one network (conditional instance norm): training, choosing and blending, exports, tiling,
adding a style by training its scales and shifts alone, and a single-style network as the start."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nst_lightning.cli.train import run as train
from nst_lightning.errors import NSTError
from nst_lightning.inference import load_model, stylize
from nst_lightning.models import create_model
from nst_lightning.models.conditional import (
    ConditionalInstanceNorm2d,
    conditional_layers,
    num_styles,
    resolve_style,
    style_parameters,
)
from tests.conftest import compose_train, synthetic_photo, tiny_train_cfg


def _painting(folder: Path, name: str, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:48, 0:64].astype(np.float32)
    f = rng.uniform(1, 4, 3)
    img = np.stack([0.5 + 0.5 * np.sin(xx / f[0]), 0.5 + 0.5 * np.cos((xx + yy) / f[1]), 0.5 + 0.5 * np.sin(yy / f[2])])
    path = folder / f"{name}.png"
    Image.fromarray((img.transpose(1, 2, 0) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def paintings(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("paintings")
    return [_painting(folder, name, seed) for seed, name in enumerate(["the_wave", "candy", "udnie"])]


@pytest.fixture(scope="module")
def multi_ckpt(tmp_path_factory, image_dir, style_path, paintings) -> Path:
    """A 4-step two-style johnson_tiny checkpoint (styles ``the_wave`` and ``candy``)."""
    styles = f"styles=[{paintings[0]},{paintings[1]}]"
    cfg = tiny_train_cfg(tmp_path_factory.mktemp("multi"), image_dir, style_path, [styles, "style.style_weight=30"])
    return Path(train(cfg)["last_ckpt"])


def _random_styles(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every style its own (random) scales and shifts, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in conditional_layers(net):
            for params, centre in ((layer.scale, 1.0), (layer.shift, 0.0)):
                for p in params:
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.5 + centre)
    return net.eval()


# -- the layer and the network --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["johnson_tiny", "mobilenetv3"])
def test_each_style_is_its_own_scales_and_a_blend_lies_between(name):
    kwargs = {"decoder_max_channels": 16} if name == "mobilenetv3" else {}
    net = _random_styles(create_model(name, num_styles=2, **kwargs))
    assert num_styles(net) == 2 and conditional_layers(net)
    x = torch.rand(2, 3, 64, 48)
    with torch.no_grad():
        a, b = net(x, torch.tensor([0, 0])), net(x, torch.tensor([1, 1]))
        assert torch.equal(net(x, torch.tensor([1.0, 0.0])), a)  # one-hot weights are the style, exactly
        assert torch.equal(net(x, torch.tensor([[0.0, 1.0], [0.0, 1.0]])), b)
        assert torch.equal(net(x), a)  # no style: the first
        mixed = net(x, torch.tensor([0.5, 0.5]))
        per_image = net(x, torch.tensor([0, 1]))  # each image its own style
    assert torch.equal(per_image[0], a[0]) and torch.equal(per_image[1], b[1])
    gap = (a - b).abs().mean()
    assert gap > 0.01
    assert (mixed - a).abs().mean() < gap and (mixed - b).abs().mean() < gap


def test_the_layer_blends_scales_and_shifts_convexly():
    layer = ConditionalInstanceNorm2d(4, 3)
    with torch.no_grad():
        for s in range(3):
            layer.scale[s].fill_(s + 1.0)
            layer.shift[s].fill_(10.0 * s)
    layer.style = torch.tensor([[0.2, 0.3, 0.5]])
    x = torch.randn(1, 4, 5, 5)
    normalized = torch.nn.functional.instance_norm(x)
    expected = normalized * (0.2 * 1 + 0.3 * 2 + 0.5 * 3) + (0.3 * 10 + 0.5 * 20)
    torch.testing.assert_close(layer(x), expected)


def test_a_single_style_network_is_unchanged():
    net = create_model("johnson_tiny")
    assert num_styles(net) == 1 and not conditional_layers(net)
    assert "encoder.0.2.weight" in net.state_dict()  # today's checkpoints load as they are


def test_resolve_style_names_indices_and_mixes():
    names = ["a", "b", "c"]
    assert resolve_style(names).tolist() == [1, 0, 0]
    assert resolve_style(names, "c").tolist() == [0, 0, 1]
    assert resolve_style(names, 1).tolist() == [0, 1, 0]
    torch.testing.assert_close(resolve_style(names, style_mix={"a": 7, "c": 3}), torch.tensor([0.7, 0.0, 0.3]))
    for bad in [dict(style="z"), dict(style=5), dict(style_mix={"a": -1}), dict(style_mix={"a": 0}),
                dict(style="a", style_mix={"b": 1})]:  # fmt: skip
        with pytest.raises(NSTError):
            resolve_style(names, **bad)


# -- training, checkpoint, choosing and blending --------------------------------------------------------------
def test_multistyle_checkpoint_lists_its_styles_and_chooses_and_blends(multi_ckpt, paintings):
    raw = torch.load(multi_ckpt, map_location="cpu", weights_only=True)
    styles = raw["hyper_parameters"]["styles"]
    assert [s["name"] for s in styles] == ["the_wave", "candy"]
    assert styles[0]["style_weight"] == 30.0 and styles[0]["image"] == str(paintings[0]) and "size" in styles[0]
    assert raw["hyper_parameters"]["model"]["kwargs"]["num_styles"] == 2
    loaded = load_model(multi_ckpt)
    assert num_styles(loaded.net) == 2 and loaded.net.style_names == ["the_wave", "candy"]

    photo = synthetic_photo(40, 36, seed=3)
    pixels = {name: np.asarray(stylize(photo, loaded, style=name), dtype=np.int16) for name in ("the_wave", "candy")}
    assert np.abs(pixels["the_wave"] - pixels["candy"]).mean() > 0  # each style its own output
    assert np.array_equal(np.asarray(stylize(photo, loaded)), pixels["the_wave"])  # default: the first style
    for name, mix in (("the_wave", {"the_wave": 1, "candy": 0}), ("candy", {"the_wave": 0.0, "candy": 1.0})):
        assert np.array_equal(np.asarray(stylize(photo, loaded, style_mix=mix)), pixels[name])
    x = torch.rand(1, 3, 40, 36)
    a, b = (stylize(x, loaded, style=s) for s in ("the_wave", "candy"))
    half = stylize(x, loaded, style_mix={"the_wave": 0.5, "candy": 0.5})
    assert (half - a).abs().mean() < (a - b).abs().mean() and (half - b).abs().mean() < (a - b).abs().mean()
    with pytest.raises(NSTError, match="the_wave, candy"):
        stylize(photo, loaded, style="nope")


def test_training_logs_each_style(multi_ckpt):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(multi_ckpt.parent.parent)).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/style/the_wave", "train/style/candy", "val/style/the_wave", "val/style/candy"} <= tags


def test_stylize_cli_picks_and_blends(multi_ckpt, tmp_path):
    from hydra import compose, initialize_config_dir

    from nst_lightning.cli.config import config_dir
    from nst_lightning.cli.stylize import run as stylize_cli

    src = tmp_path / "photo.png"
    synthetic_photo(40, 36, seed=5).save(src)
    outs = {}
    for label, extra in {"one": ["style=candy"], "mix": ["style_mix={the_wave: 0, candy: 1}"], "first": []}.items():
        out = tmp_path / f"{label}.png"
        common = [f"ckpt={multi_ckpt}", f"input={src}", f"output={out}", "device=cpu", "tile_size=null"]
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            stylize_cli(compose("stylize", overrides=[*common, *extra]))
        outs[label] = np.asarray(Image.open(out))
    assert np.array_equal(outs["one"], outs["mix"]) and not np.array_equal(outs["one"], outs["first"])


# -- exports and tiling ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["torchscript", "torch_export", "onnx"])
def test_exports_take_the_style_weights_as_an_input(multi_ckpt, tmp_path, fmt):
    from nst_lightning.export import export, load_runtime
    from nst_lightning.export.graph import SUFFIXES

    loaded = load_model(multi_ckpt)
    path = export(loaded, fmt, tmp_path / f"model{SUFFIXES[fmt]}")
    runtime = load_runtime(path, style_mix={"the_wave": 0.3, "candy": 0.7})
    eager = load_runtime(multi_ckpt, style_mix={"the_wave": 0.3, "candy": 0.7})
    assert runtime.style_names == ["the_wave", "candy"]
    x = torch.rand(2, 3, 45, 37)
    assert (runtime(x) - eager(x)).abs().max() < 1e-4
    per_image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # a style per image, through the graph's input
    assert (runtime(x, per_image) - eager(x, per_image)).abs().max() < 1e-4
    one = stylize(x, runtime, style="candy")
    assert (one - stylize(x, loaded, style="candy")).abs().max() < 1e-4


def test_tiling_records_each_styles_statistics(multi_ckpt):
    loaded = load_model(multi_ckpt)
    _random_styles(loaded.net)  # styles far apart (4 training steps leave them close)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 15, 14), size=(150, 140), mode="bilinear")
    whole = {s: stylize(x, loaded, style=s) for s in ("the_wave", "candy")}
    tiled = stylize(x, loaded, style="candy", tile_size=64, tile_overlap=16, tile_stats_size=150)
    assert (tiled - whole["candy"]).abs().mean() < 0.5 * (tiled - whole["the_wave"]).abs().mean()


# -- adding a style ---------------------------------------------------------------------------------------------
def _add_style(tmp_path, image_dir, source, painting, steps=2):
    """``train.py experiment=add_style`` at the tiny experiment's scale."""
    cfg = compose_train([
        "experiment=add_style", f"init_from={source}", "style=custom", f"style.image={painting}", "style.size=64",
        "model=johnson_tiny", "loss=tiny", "data=tiny", "trainer=tiny", f"data.root={image_dir}",
        f"paths.output_dir={tmp_path / 'run'}", "data.image_size=32", "data.batch_size=2", "data.num_workers=0",
        "data.val_count=2", "data.val_size=32", "model.channels_last=false", "trainer.precision=32-true",
        "trainer.max_time=null", f"trainer.max_steps={steps}", "trainer.val_check_interval=1",
        "trainer.log_every_n_steps=1", "callbacks.grid.every_n_steps=100",
    ])  # fmt: skip
    return train(cfg)


def test_add_style_trains_only_the_new_scales_and_keeps_old_styles_bit_identical(
    multi_ckpt, tmp_path, image_dir, style_path, paintings
):
    result = _add_style(tmp_path, image_dir, multi_ckpt, paintings[2])
    raw = torch.load(result["last_ckpt"], map_location="cpu", weights_only=True)
    assert [s["name"] for s in raw["hyper_parameters"]["styles"]] == ["the_wave", "candy", "udnie"]
    assert raw["hyper_parameters"]["transfer"]["init_provenance"]["styles"] == ["the_wave", "candy"]
    old, new = load_model(multi_ckpt), load_model(result["last_ckpt"])
    assert num_styles(new.net) == 3
    x = torch.rand(2, 3, 40, 44)
    with torch.no_grad():
        for s in (0, 1):
            assert torch.equal(new.net(x, torch.tensor([s, s])), old.net(x, torch.tensor([s, s])))
        assert not torch.equal(new.net(x, torch.tensor([2, 2])), old.net(x, torch.tensor([0, 0])))
    # Only the new style's scales and shifts have optimizer state: one style's worth of parameters.
    state = raw["optimizer_states"][0]["state"]
    trained = sum(v["exp_avg"].numel() for v in state.values())
    one_style = sum(p.numel() for p in style_parameters(new.net, 2))
    assert trained == one_style and len(state) == 2 * len(conditional_layers(new.net))
    total = sum(p.numel() for p in new.net.parameters())
    assert one_style / total < 0.05


def test_refine_styles_trains_only_the_named_styles_and_starts_from_the_network_as_it_is(
    multi_ckpt, tmp_path, image_dir, style_path, paintings
):
    styles = f"styles=[{paintings[0]},{paintings[1]}]"
    overrides = [styles, "style.style_weight=30", f"init_from={multi_ckpt}", "refine_styles=[candy]"]
    cfg = tiny_train_cfg(tmp_path, image_dir, style_path, overrides)
    result = train(cfg)
    old, new = load_model(multi_ckpt), load_model(result["last_ckpt"])
    x = torch.rand(2, 3, 40, 44)
    with torch.no_grad():
        wave = torch.tensor([0, 0])
        assert torch.equal(new.net(x, wave), old.net(x, wave))  # not trained: bit-identical
        candy = torch.tensor([1, 1])
        assert not torch.equal(new.net(x, candy), old.net(x, candy))
    raw = torch.load(result["last_ckpt"], map_location="cpu", weights_only=True)
    assert raw["hyper_parameters"]["transfer"]["init_provenance"]["matched"] == ["the_wave", "candy"]  # not the mean
    state = raw["optimizer_states"][0]["state"]
    assert sum(v["exp_avg"].numel() for v in state.values()) == sum(p.numel() for p in style_parameters(new.net, 1))


def test_refine_styles_names_styles_of_the_run_and_needs_a_start(
    tmp_path, image_dir, style_path, paintings, multi_ckpt
):
    styles = f"styles=[{paintings[0]},{paintings[1]}]"
    for extra, message in (([f"init_from={multi_ckpt}", "refine_styles=[udnie]"], "udnie not among styles"),
                           (["refine_styles=[candy]"], "set init_from=")):  # fmt: skip
        with pytest.raises(NSTError, match=message):
            train(tiny_train_cfg(tmp_path, image_dir, style_path, [styles, *extra]))


def test_a_single_style_network_becomes_style_0(tiny_ckpt, tmp_path, image_dir, style_path, paintings):
    result = _add_style(tmp_path, image_dir, tiny_ckpt, paintings[2], steps=1)
    single, multi = load_model(tiny_ckpt), load_model(result["last_ckpt"])
    assert multi.net.style_names == [single.meta["style_name"], "udnie"]
    x = torch.rand(1, 3, 40, 44)
    with torch.no_grad():
        torch.testing.assert_close(multi.net(x, torch.tensor([0])), single.net(x), atol=1e-5, rtol=0)


def test_add_style_needs_a_start_and_a_new_name(multi_ckpt, tmp_path, image_dir, style_path, paintings):
    with pytest.raises(NSTError, match="already has a style named 'the_wave'"):
        _add_style(tmp_path, image_dir, multi_ckpt, paintings[0])


def test_a_multistyle_network_starts_from_a_trained_one_style_by_style(multi_ckpt):
    from nst_lightning.transfer import load_for_styles

    source = load_model(multi_ckpt)  # the_wave, candy
    net = create_model(source.model_name, **{**source.model_kwargs, "num_styles": 3}).eval()
    provenance = load_for_styles(net, multi_ckpt, ["candy", "udnie", "the_wave"])
    assert provenance["styles"] == ["the_wave", "candy"] and provenance["matched"] == ["candy", "the_wave"]
    x = torch.rand(1, 3, 40, 44)
    with torch.no_grad():
        assert torch.equal(net(x, torch.tensor([0])), source.net(x, torch.tensor([1])))
        assert torch.equal(net(x, torch.tensor([2])), source.net(x, torch.tensor([0])))
        # A style the source lacks starts from the mean of its scales and shifts: the even blend.
        torch.testing.assert_close(net(x, torch.tensor([1])), source.net(x, torch.tensor([[0.5, 0.5]])))
    with pytest.raises(NSTError, match="holds 3 style"):
        load_for_styles(net, multi_ckpt, ["candy", "udnie"])
    one = create_model(source.model_name, **{**source.model_kwargs, "num_styles": 1}).eval()  # a plain network
    load_for_styles(one, multi_ckpt, ["the_wave"])
    with torch.no_grad():
        torch.testing.assert_close(one(x), source.net(x, torch.tensor([0])), atol=1e-5, rtol=0)


def test_training_many_styles_from_a_single_style_network(tiny_ckpt, tmp_path, image_dir, style_path, paintings):
    """``experiment=multistyle init_from=ONE_STYLE``: the body and its style carry over, every style trains."""
    single = load_model(tiny_ckpt)
    styles = f"styles=[{paintings[0]},{style_path}]"
    overrides = [styles, f"init_from={tiny_ckpt}", "trainer.max_steps=1", "style_balance=false", "optim.style_lr=0.02"]
    cfg = tiny_train_cfg(tmp_path, image_dir, style_path, overrides)
    last = train(cfg)["last_ckpt"]
    raw = torch.load(last, map_location="cpu", weights_only=True)
    hp = raw["hyper_parameters"]
    assert [s["name"] for s in hp["styles"]] == ["the_wave", style_path.stem]
    # Neither name is the source's ("custom"), so both start from its one style (the mean of one).
    assert hp["transfer"]["init_provenance"]["styles"] == [single.meta["style_name"]]
    assert hp["balance"] is False and hp["optim"]["style_lr"] == 0.02
    groups = raw["optimizer_states"][0]["param_groups"]  # the shared weights, then the styles' scales and shifts
    assert [g["initial_lr"] for g in groups] == [hp["optim"]["lr"], 0.02]
    multi = load_model(last)
    state = raw["optimizer_states"][0]["state"]  # every parameter trains, both styles' scales and shifts included
    assert sum(v["exp_avg"].numel() for v in state.values()) == sum(p.numel() for p in multi.net.parameters())
    x = torch.rand(1, 3, 40, 44)
    fresh = create_model(multi.model_name, **multi.model_kwargs).eval()
    with torch.no_grad():
        reference = single.net(x)
        for style in (0, 1):  # one step away from the source, not from a random start
            near = (multi.net(x, torch.tensor([style])) - reference).abs().mean()
            assert near < 0.3 * (fresh(x, torch.tensor([style])) - reference).abs().mean()


def test_balanced_styles_pull_alike_whatever_the_scale_of_their_loss():
    from types import SimpleNamespace

    from nst_lightning.training.multistyle import MultiStyleModule

    module = SimpleNamespace(style_scale=torch.zeros(2))
    objectives = torch.tensor([10.0, 1.0], requires_grad=True)
    per_style = {k: {"objective": objectives[k]} for k in range(2)}
    loss = MultiStyleModule._balanced(module, per_style, {0: 0.5, 1: 0.5})
    loss.backward()
    torch.testing.assert_close(module.style_scale, torch.tensor([10.0, 1.0]))
    # Each style's share of the loss is the same: its gradient is inversely proportional to its scale.
    torch.testing.assert_close(loss.detach(), torch.tensor(5.5))
    torch.testing.assert_close(objectives.grad[1] / objectives.grad[0], torch.tensor(10.0))
    MultiStyleModule._balanced(module, {0: {"objective": torch.tensor(20.0)}}, {0: 1.0})  # a running mean
    torch.testing.assert_close(module.style_scale, torch.tensor([11.0, 1.0]))


def test_style_lr_moves_each_styles_scales_and_shifts_at_their_own_rate(paintings):
    import lightning as L

    from nst_lightning.training.multistyle import MultiStyleModule

    styles = [{"name": p.stem, "image": str(p), "size": 32, "content_weight": 1.0, "style_weight": 1.0,
               "tv_weight": 0.0} for p in paintings[:2]]  # fmt: skip
    trainer = L.Trainer(max_steps=4, logger=False, accelerator="cpu", enable_checkpointing=False)
    module = MultiStyleModule(styles=styles, model={"name": "johnson_tiny"}, optim={"lr": 1e-3, "style_lr": 3e-2})
    module.trainer = trainer
    optimizer = module.configure_optimizers()["optimizer"]
    shared, styled = optimizer.param_groups
    per_style = {id(p) for s in range(2) for p in style_parameters(module.net, s)}
    assert {id(p) for p in styled["params"]} == per_style and styled["lr"] == 3e-2 and shared["lr"] == 1e-3
    assert {id(p) for g in (shared, styled) for p in g["params"]} == {id(p) for p in module.net.parameters()}
    before = [p.detach().clone() for p in module.net.parameters()]
    for p in module.net.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()  # Adam's first step moves every element by about its group's learning rate
    moved = {id(p): float((p.detach() - b).abs().max()) for p, b in zip(module.net.parameters(), before, strict=True)}
    assert all(v == pytest.approx(3e-2, rel=1e-3) for k, v in moved.items() if k in per_style)
    assert all(v == pytest.approx(1e-3, rel=1e-3) for k, v in moved.items() if k not in per_style)
    plain = MultiStyleModule(styles=styles, model={"name": "johnson_tiny"}, optim={"lr": 1e-3, "style_lr": None})
    plain.trainer = trainer
    assert len(plain.configure_optimizers()["optimizer"].param_groups) == 1  # style_lr null: one rate


def test_the_benchmark_reuses_single_style_runs_only_when_measured_alike(tmp_path):
    import argparse
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("multistyle_bench", Path(__file__).parents[1] / "benchmarks" /
                                                  "multistyle.py")  # fmt: skip
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    arch = ("johnson", {"base_channels": 32})
    a = argparse.Namespace(init_from="starry_night", loss="default", crop=128, batch=4, steps=200, val_every=40,
                           val_count=8, styles=["candy", "mosaic"])  # fmt: skip
    earlier = {"init_from": "starry_night", "arch": "johnson({'base_channels': 32})", "loss": "default", "crop": 128,
               "batch": 4, "steps_per_style": 200, "val_every": 40, "val_count": 8,
               "curves": {"multi": {"candy": [[200, 7.0]]}, "single_candy": {"candy": [[0, 9.0], [200, 5.0]]}},
               "seconds": {"multi": 9.0, "single_candy": 1.5}}  # fmt: skip
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps(earlier))
    singles = bench.earlier_singles(str(path), a, arch)
    assert list(singles) == ["candy"]  # mosaic was not measured there: it trains again
    assert singles["candy"]["curves"] == {"candy": [[0, 9.0], [200, 5.0]]} and singles["candy"]["seconds"] == 1.5
    a.crop = 64
    with pytest.raises(SystemExit, match="crop"):
        bench.earlier_singles(str(path), a, arch)


# -- evaluation and the service ---------------------------------------------------------------------------------
def test_evaluate_scores_each_style_on_its_own_objective(multi_ckpt, image_dir, tmp_path):
    from hydra import compose, initialize_config_dir

    from nst_lightning.cli.config import config_dir
    from nst_lightning.cli.evaluate import run as evaluate_cli

    common = [f"ckpt={multi_ckpt}", f"eval_dir={image_dir}", "size=32", "lbfgs_iterations=[2]", "max_images=1",
              f"output_dir={tmp_path}", "device=cpu", "grid_cell=32", "tensorboard=false"]  # fmt: skip
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        every, one = compose("evaluate", overrides=common), compose("evaluate", overrides=[*common, "style=candy"])
    reports = evaluate_cli(every)
    assert sorted(reports) == ["candy", "the_wave"] and reports["candy"]["style"] == "candy"
    assert (tmp_path / "the_wave" / "report.json").exists() and (tmp_path / "candy" / "grid.png").exists()
    objective = {s: r["summary"]["mean"]["network"]["objective"] for s, r in reports.items()}
    assert objective["the_wave"] != objective["candy"]
    assert list(evaluate_cli(one)) == ["candy"]


def test_service_serves_each_style_and_blends(multi_ckpt, tmp_path):
    import shutil

    import httpx

    from nst_lightning.serve import ServeSettings, create_app
    from nst_lightning.serve.models import load_styles
    from nst_lightning.serve.server import running_in_thread

    shutil.copy(multi_ckpt, tmp_path / "duo.ckpt")
    styles = load_styles([], str(tmp_path), "eager", "cpu", thumbnail_size=32)
    assert sorted(styles) == ["duo", "duo.candy", "duo.the_wave"]
    photo = tmp_path / "photo.png"
    synthetic_photo(48, 40, seed=2).save(photo)
    app = create_app(ServeSettings(runtime="eager", max_size=64), styles)
    with running_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        listing = client.get("/styles").json()
        assert listing["networks"] == {"duo": ["the_wave", "candy"]}
        entry = {s["name"]: s for s in listing["styles"]}["duo.candy"]
        assert entry["network"] == "duo" and entry["style"] == "candy"

        def post(**fields: str) -> httpx.Response:
            return client.post("/stylize", files={"image": ("p.png", photo.read_bytes(), "image/png")}, data=fields)

        one, mixed, first = post(style="duo.candy"), post(style="duo", style_mix='{"candy": 1}'), post(style="duo")
        assert one.status_code == mixed.status_code == first.status_code == 200
        assert one.content == mixed.content != first.content
        for bad in ('{"nope": 1}', "[1]", '{"the_wave": -1}', '{"the_wave": 0}', '{"candy": 1' + "0" * 400 + "}"):
            response = post(style="duo", style_mix=bad)
            assert response.status_code == 422, (bad, response.text)


def test_each_style_of_a_network_gets_the_networks_fast_variant(multi_ckpt, tmp_path):
    import shutil

    import httpx

    from nst_lightning.serve import ServeSettings, create_app
    from nst_lightning.serve.models import load_styles
    from nst_lightning.serve.server import running_in_thread

    shutil.copy(multi_ckpt, tmp_path / "duo.ckpt")
    styles = load_styles([], str(tmp_path), "eager", "cpu", thumbnail_size=32, fast_runtime="torchscript")
    fast = {id(m.fast) for m in styles.values()}
    assert len(fast) == 1 and styles["duo"].fast is not None  # one fast runner, shared by the network's styles
    photo = synthetic_photo(48, 40, seed=3)
    app = create_app(ServeSettings(runtime="eager", max_size=64), styles)
    with running_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        buf = io.BytesIO()
        photo.save(buf, format="PNG")

        def post(**fields: str) -> httpx.Response:
            return client.post("/stylize", files={"image": ("p.png", buf.getvalue(), "image/png")}, data=fields)

        candy, wave = post(style="duo.candy", quality="fast"), post(style="duo.the_wave", quality="fast")
        mixed = post(style="duo", style_mix='{"candy": 1}', quality="fast")
        assert candy.status_code == wave.status_code == mixed.status_code == 200
        assert candy.headers["X-Variant"] == mixed.headers["X-Variant"] == "fast"
        assert candy.content == mixed.content != wave.content  # the style reaches the fast runner
