"""Network transfer: init_from, frozen stages, batch-norm statistics of timm encoders, distillation."""

import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nst_lightning.cli.train import build_module
from nst_lightning.cli.train import run as train
from nst_lightning.errors import NSTError
from nst_lightning.inference import export_model, load_model
from nst_lightning.losses.vgg import VGG19Features
from nst_lightning.models import create_model
from nst_lightning.training.callbacks import BatchNormReestimation
from nst_lightning.transfer import (
    Teacher,
    distill_terms,
    freeze,
    load_init_weights,
    reestimate_batchnorm,
    stage_names,
)
from nst_lightning.transfer.shrink import can_shrink, shrink_into

from .conftest import compose_train, net_state, run_cli, tiny_train_cfg


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, image_dir, style_path) -> Path:
    """A 4-step johnson_tiny checkpoint (another 'style' to start from)."""
    result = train(tiny_train_cfg(tmp_path_factory.mktemp("source"), image_dir, style_path))
    return Path(result["last_ckpt"])


# -- freezing ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["johnson", "mobilenetv3"])
def test_every_network_names_its_stages_and_freezes_its_encoder(name):
    net = create_model(name)
    assert stage_names(net)[0] == "encoder"
    assert freeze(net, "encoder") == ["encoder"]
    assert not any(p.requires_grad for p in net.encoder.parameters())
    assert all(p.requires_grad for n, p in net.named_parameters() if not n.startswith("encoder."))


def test_johnson_freezes_its_stem_and_some_residual_blocks():
    net = create_model("johnson")
    assert freeze(net, "encoder,residuals.0") == ["encoder", "residuals.0"]
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in net.named_parameters() if n.startswith(("encoder.", "residuals.0."))}
    with pytest.raises(NSTError, match="no such stage.*encoder, residuals.0, .*decoder"):
        freeze(net, ["stem"])


class FreezeProbe(L.Callback):
    """Checks, during training, that the frozen encoder stays in eval mode and gets no gradient."""

    def __init__(self) -> None:
        self.checked = 0

    def on_train_start(self, trainer, pl_module) -> None:
        enc = pl_module.net.encoder
        self.before = {k: v.clone() for k, v in enc.state_dict().items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        net = pl_module.net
        assert pl_module.training and net.residuals.training
        assert not any(m.training for m in net.encoder.modules())
        assert all(p.grad is None for p in net.encoder.parameters())
        assert any(p.grad is not None for p in net.decoder.parameters())
        self.checked += 1


def test_frozen_encoder_gets_no_gradient_no_optimizer_state_and_keeps_its_batchnorm_statistics(
    tmp_path, image_dir, style_path
):
    probe = FreezeProbe()
    cfg = tiny_train_cfg(tmp_path, image_dir, style_path, ["model.freeze=encoder", "model.norm=batch"])
    result = train(cfg, extra_callbacks=[probe])
    assert probe.checked == 4
    ckpt = torch.load(result["last_ckpt"], map_location="cpu", weights_only=True)
    state = net_state(Path(result["last_ckpt"]))
    # Weights and running statistics of the frozen encoder are exactly as they started (eval-mode batch norm).
    for key, before in probe.before.items():
        assert torch.equal(state[f"encoder.{key}"], before), key
    assert not torch.equal(state["decoder.0.1.2.running_mean"], torch.zeros_like(state["decoder.0.1.2.running_mean"]))
    # No optimizer state for frozen parameters: Adam holds state for exactly the trainable ones.
    net = create_model("johnson_tiny", norm="batch")
    trainable = sum(1 for n, _ in net.named_parameters() if not n.startswith("encoder."))
    opt = ckpt["optimizer_states"][0]
    assert len(opt["state"]) == trainable
    assert sum(len(g["params"]) for g in opt["param_groups"]) == trainable
    assert ckpt["hyper_parameters"]["transfer"]["freeze"] == "encoder"


# -- weight initialisation -------------------------------------------------------------------------------
def test_init_from_loads_the_weights_and_records_their_provenance(tiny_ckpt, tmp_path, image_dir, style_path, caplog):
    source = tmp_path / "source.ckpt"
    shutil.copy(tiny_ckpt, source)
    net = create_model("johnson_tiny")
    provenance = load_init_weights(net, source)
    for key, value in net_state(source).items():
        assert torch.equal(net.state_dict()[key], value), key
    assert provenance["path"] == str(source.resolve()) and provenance["global_step"] == 4
    assert provenance["arch"].startswith("johnson_tiny(base_channels=8")

    module = build_module(tiny_train_cfg(tmp_path, image_dir, style_path, [f"init_from={source}"]), str(style_path))
    assert not torch.equal(module.net.state_dict()["encoder.0.1.weight"], net.state_dict()["encoder.0.1.weight"])
    assert module.hparams.transfer["init_provenance"] is None  # built, not yet trained: the source is not read

    cfg = tiny_train_cfg(tmp_path / "a", image_dir, style_path, [f"init_from={source}", "trainer.max_steps=2"])
    with caplog.at_level(logging.INFO, logger="nst_lightning.training.module"):
        result = train(cfg)
    assert f"starting from init_from={source}: johnson_tiny(" in caplog.text  # the log says what it starts from
    ckpt = torch.load(result["last_ckpt"], map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2  # a fresh schedule: the source's 4 steps are not carried over
    assert float(next(iter(ckpt["optimizer_states"][0]["state"].values()))["step"]) == 2  # fresh Adam
    assert ckpt["hyper_parameters"]["transfer"]["init_provenance"]["sha256"] == provenance["sha256"]
    exported = export_model(result["last_ckpt"], tmp_path / "model.pt")
    assert load_model(exported).meta["transfer"]["init_provenance"]["path"] == str(source.resolve())
    assert "init_from" in (Path(result["output_dir"]) / "hparams.yaml").read_text()

    # Resuming the fine-tune needs its own checkpoint only: the source may be gone, its provenance stays.
    source.unlink()
    resume = [f"init_from={source}", "trainer.max_steps=3", f"ckpt_path={result['last_ckpt']}"]
    with caplog.at_level(logging.INFO, logger="nst_lightning.training.module"):
        resumed = train(tiny_train_cfg(tmp_path / "b", image_dir, style_path, resume))
    assert f"resuming from {result['last_ckpt']}" in caplog.text
    ckpt = torch.load(resumed["last_ckpt"], map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3
    assert ckpt["hyper_parameters"]["transfer"]["init_provenance"]["sha256"] == provenance["sha256"]
    with pytest.raises(NSTError, match="checkpoint not found"):  # a fresh run does read it
        train(tiny_train_cfg(tmp_path / "c", image_dir, style_path, [f"init_from={source}", "trainer.max_steps=1"]))


def test_init_from_a_shipped_model_by_name():
    net = create_model("johnson")
    provenance = load_init_weights(net, "starry_night")
    shipped = load_model("starry_night").net.state_dict()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in shipped.items())
    assert provenance["style_name"] == "starry_night"


def test_a_single_style_run_starts_from_the_shipped_multistyle_network_by_its_style_or_their_mean():
    from nst_lightning.transfer import load_start

    multi = load_model("multistyle")
    names = [s["name"] for s in multi.meta["styles"]]
    x = torch.rand(1, 3, 36, 44)
    candy, custom = create_model("johnson").eval(), create_model("johnson").eval()
    assert load_start(candy, "multistyle", "candy")["style_name"] == "candy"
    assert load_start(custom, "multistyle", "custom")["style_name"] == f"the mean of {', '.join(names)}"
    with torch.no_grad():
        multi_net = multi.net.float()
        torch.testing.assert_close(candy(x), multi_net(x, torch.tensor([names.index("candy")])), atol=1e-5, rtol=0)
        even = torch.full((1, len(names)), 1 / len(names))
        torch.testing.assert_close(custom(x), multi_net(x, even), atol=1e-5, rtol=0)
    single = create_model("johnson")
    assert load_start(single, "starry_night", "candy")["style_name"] == "starry_night"  # a one-style source as before


def test_init_from_rejects_another_architecture_and_missing_files(tmp_path):
    other_decoder = create_model("johnson_tiny", upsample="pixel_shuffle")
    with pytest.raises(NSTError, match=r"holds a johnson\(base_channels=32.*does not fit the johnson_tiny\(base"):
        load_init_weights(other_decoder, "starry_night", arch="johnson_tiny(base_channels=8, upsample=pixel_shuffle)")
    with pytest.raises(NSTError, match="does not fit"):  # wider than the source: nothing to select from
        load_init_weights(create_model("johnson", base_channels=48), "starry_night")
    with pytest.raises(NSTError, match="checkpoint not found"):
        load_init_weights(create_model("johnson_tiny"), tmp_path / "nope.ckpt")


@pytest.mark.slow
def test_cli_init_from_another_architecture_exits_2_naming_both(tmp_path, image_dir, style_path):
    result = run_cli("train.py", "experiment=tiny", "style=custom", f"style.image={style_path}",
                     f"data.root={image_dir}", f"hydra.run.dir={tmp_path / 'r'}", "init_from=starry_night",
                     "model.upsample=pixel_shuffle")  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "johnson(base_channels=32" in result.stderr and "johnson_tiny(base_channels=8" in result.stderr


def _embed(narrow: torch.nn.Module, wide: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``wide``'s state holding ``narrow`` in its first channels and its last blocks; every other channel and
    block is switched off (instance-norm scale and shift 0), so the two compute the same function."""
    torch.manual_seed(1)
    ns, extra = narrow.state_dict(), len(wide.residuals) - len(narrow.residuals)
    out = {}
    for key, value in wide.state_dict().items():
        value = torch.randn_like(value) if value.dim() > 1 else torch.zeros_like(value)
        parts = key.split(".")
        if parts[0] == "residuals":
            if int(parts[1]) < extra:
                out[key] = value
                continue
            key_n = ".".join([parts[0], str(int(parts[1]) - extra), *parts[2:]])
        else:
            key_n = key
        src = ns[key_n]
        value[tuple(slice(0, n) for n in src.shape)] = src
        out[key] = value
    return out


def test_a_narrower_johnson_starts_from_the_channels_that_matter():
    """A wide network that is a narrow one plus switched-off channels and blocks shrinks back to exactly the
    narrow one: the selection keeps what carries the function and drops what does not."""
    torch.manual_seed(0)
    narrow, wide = create_model("johnson", base_channels=4, num_residual=2), create_model("johnson")
    for m in narrow.modules():  # instance-norm scales away from 1 and 0, as after training
        if isinstance(m, torch.nn.InstanceNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    wide.load_state_dict(_embed(narrow, wide))
    x = torch.rand(1, 3, 36, 28)
    with torch.no_grad():
        torch.testing.assert_close(wide(x), narrow(x))
    started = create_model("johnson", base_channels=4, num_residual=2)
    info = shrink_into(started, wide)
    assert info == {"kept_blocks": [3, 4], "from_width": 32, "from_blocks": 5}
    assert all(torch.equal(started.state_dict()[k], v) for k, v in narrow.state_dict().items())
    assert not can_shrink(wide, create_model("johnson", base_channels=4, upsample="bilinear"))


def test_init_from_a_wider_shipped_model_selects_its_channels():
    student = create_model("johnson", base_channels=16, num_residual=3)
    provenance = load_init_weights(student, "starry_night")
    assert provenance["shrunk"]["from_width"] == 32 and len(provenance["shrunk"]["kept_blocks"]) == 3
    teacher = load_model("starry_night").net.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():  # a stylizing start: nearer the teacher than a random network of the same shape
        near = (student.eval()(x) - teacher(x)).pow(2).mean()
        far = (create_model("johnson", base_channels=16, num_residual=3).eval()(x) - teacher(x)).pow(2).mean()
    assert near < far


# -- timm encoders: ImageNet weights from a local file, batch-norm statistics -----------------------------------
@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A timm classification model's state dict with recognisable BN statistics, saved as a weights file."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("mobilenetv3_small_050")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("timm") / "weights.pth"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def test_timm_encoder_starts_from_the_weights_file_and_drops_its_statistics_in_instance_mode(timm_weights):
    path, saved = timm_weights
    net = create_model("mobilenetv3", backbone="mobilenetv3_small_050", weights_file=str(path))
    assert torch.equal(net.encoder.conv_stem.weight, saved["conv_stem.weight"])
    assert torch.equal(net.encoder.bn1.weight, saved["bn1.weight"])  # the affine scale is kept ...
    assert not [k for k in net.state_dict() if "running_" in k]  # ... the ImageNet statistics are not


def test_batchnorm_statistics_are_reestimated_on_the_training_photos(timm_weights):
    path, saved = timm_weights
    net = create_model("mobilenetv3", backbone="mobilenetv3_small_050", weights_file=str(path), bn_mode="batch")
    assert torch.equal(net.encoder.bn1.running_mean, saved["bn1.running_mean"])
    net.train()
    freeze(net, "encoder.blocks")  # a frozen stage keeps its statistics
    photos = torch.rand(4, 3, 64, 64)  # 64 px: a multiple of the encoder's reduction, so no padding
    with torch.no_grad():
        stem = net.encoder.conv_stem((photos - net.mean) / net.std)
    assert reestimate_batchnorm(net, [photos]) == 1
    assert torch.allclose(net.encoder.bn1.running_mean, stem.mean(dim=(0, 2, 3)), atol=1e-5)
    assert net.encoder.bn1.momentum == 0.1  # restored after the cumulative average
    frozen_bn = next(m for m in net.encoder.blocks.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.equal(frozen_bn.running_mean, saved["blocks.0.0.bn1.running_mean"])


def test_batchnorm_reestimation_runs_for_a_fresh_pretrained_batch_mode_network_only():
    """The callback re-estimates before a fresh run's first step; a resume, init_from, bn_mode=frozen or random
    weights keep the statistics they have."""
    photos = torch.rand(4, 3, 8, 8) + 5.0  # far from the layer's initial mean of 0

    def run(kwargs: dict, ckpt_path: str | None = None, init_from: str | None = None) -> torch.Tensor:
        net = torch.nn.Sequential(torch.nn.BatchNorm2d(3)).train()
        module = SimpleNamespace(net=net, model_group=SimpleNamespace(kwargs=kwargs),
                                 transfer_group=SimpleNamespace(init_from=init_from))  # fmt: skip
        trainer = SimpleNamespace(ckpt_path=ckpt_path, train_dataloader=[photos])
        BatchNormReestimation().on_train_start(trainer, module)
        return net[0].running_mean

    pretrained = {"bn_mode": "batch", "pretrained": True}
    torch.testing.assert_close(run(pretrained), photos.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(run({"bn_mode": "batch", "weights_file": "w.pth"}), photos.mean(dim=(0, 2, 3)))
    for kept in (run(pretrained, ckpt_path="last.ckpt"), run(pretrained, init_from="starry_night"),
                 run({"bn_mode": "frozen", "pretrained": True}), run({"bn_mode": "batch"})):  # fmt: skip
        assert torch.equal(kept, torch.zeros(3))


# -- distillation --------------------------------------------------------------------------------------------
def test_distillation_term_is_zero_when_the_student_is_the_teacher(tiny_ckpt):
    teacher = Teacher(tiny_ckpt)
    student = load_model(tiny_ckpt).net.train().requires_grad_(True)
    vgg = VGG19Features(["relu2_2"])
    x = torch.rand(2, 3, 32, 32)
    terms = distill_terms(student(x), teacher(x), pixel_weight=1.0, feature_weight=1.0, vgg=vgg)
    assert float(terms["distill_pixel"]) == 0 and float(terms["distill_feature"]) == 0
    other = create_model("johnson_tiny")
    terms = distill_terms(other(x), teacher(x), pixel_weight=1.0, feature_weight=1.0, vgg=vgg)
    assert float(terms["distill_pixel"]) > 0 and float(terms["distill_feature"]) > 0
    teacher.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


@pytest.mark.slow
def test_distill_experiment_ends_with_a_loadable_student(tmp_path, image_dir, style_path):
    cfg = compose_train(
        ["experiment=distill", "teacher=starry_night", "style=custom", f"style.image={style_path}", "style.size=64",
         "loss=tiny", f"data.root={image_dir}", "data.image_size=32", "data.batch_size=2", "data.num_workers=0",
         "data.val_count=2", "data.val_size=32", "trainer=tiny", "trainer.precision=32-true", "trainer.max_steps=4",
         "trainer.val_check_interval=2", "trainer.log_every_n_steps=1", "model.channels_last=false",
         "distill.feature_weight=1.0", f"paths.output_dir={tmp_path / 'run'}"]
    )  # fmt: skip
    result = train(cfg)
    ckpt = torch.load(result["last_ckpt"], map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4
    assert not [k for k in ckpt["state_dict"] if k.startswith("teacher.")]
    assert ckpt["hyper_parameters"]["transfer"]["teacher"] == "starry_night"
    exported = export_model(result["last_ckpt"], tmp_path / "student.pt")
    student = load_model(exported)
    assert student.model_kwargs["base_channels"] == 16 and student.meta["transfer"]["teacher"] == "starry_night"
    assert student.meta["transfer"]["init_provenance"]["shrunk"]["from_width"] == 32  # the teacher's channels
    assert student.net(torch.rand(1, 3, 40, 30)).shape == (1, 3, 40, 30)
    events = next(Path(result["output_dir"]).glob("events.out.tfevents*"))
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
    acc.Reload()
    assert {"train/distill_pixel", "train/distill_feature", "val/teacher_objective"} <= set(acc.Tags()["scalars"])
