"""StyleTransferModule's grouped hyper-parameters: complete in checkpoints, enough to rebuild the module."""

import lightning as L
import pytest
import torch

from nst_lightning.errors import NSTError
from nst_lightning.training.hparams import OptimGroup, TransferGroup
from nst_lightning.training.module import StyleTransferModule


def test_unknown_keys_and_schedules_fail_before_anything_is_built():
    with pytest.raises(NSTError, match="unknown optim key\\(s\\) lr_schedul; known: lr, betas"):
        StyleTransferModule(optim={"lr_schedul": "cosine"})
    with pytest.raises(NSTError, match="unknown optim.lr_schedule 'linear'"):
        StyleTransferModule(optim={"lr_schedule": "linear"})


def test_groups_fill_what_was_left_out_and_travel_as_primitives():
    optim = OptimGroup.from_dict({"lr": 0.01, "betas": [0.5, 0.9]}, "optim")
    assert optim.betas == (0.5, 0.9) and optim.lr_schedule == OptimGroup().lr_schedule
    assert optim.to_dict()["betas"] == [0.5, 0.9]
    assert TransferGroup.from_dict(None, "transfer") == TransferGroup()


def test_checkpoint_hyperparameters_rebuild_the_module(tiny_ckpt):
    raw = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    assert set(raw["hyper_parameters"]) == {"model", "style", "loss", "optim", "runtime", "transfer", "smooth"}
    module = StyleTransferModule.load_from_checkpoint(tiny_ckpt, map_location="cpu")
    assert dict(module.hparams) == raw["hyper_parameters"]
    state = {k[4:]: v for k, v in raw["state_dict"].items() if k.startswith("net.")}
    assert all(torch.equal(module.net.state_dict()[k], v) for k, v in state.items())


def test_pure_distillation_trains_on_the_teacher_alone_and_skips_the_loss_network(tiny_ckpt):
    """``distill.objective_weight=0``: the training loss is the pixel term only and the VGG loss network never
    runs in a training step (most of a CPU step's cost); validation still scores the perceptual objective."""
    hparams = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
    common = {k: hparams[k] for k in ("model", "style", "loss", "runtime")}
    with pytest.raises(NSTError, match="every weight 0 trains nothing"):
        StyleTransferModule(**common, transfer={"teacher": str(tiny_ckpt), "objective_weight": 0})
    module = StyleTransferModule(**common, transfer={"teacher": str(tiny_ckpt), "pixel_weight": 2.0,
                                                     "objective_weight": 0})  # fmt: skip
    module.setup("fit")
    calls = []
    module.loss_fn.register_forward_hook(lambda *args: calls.append(1))
    module.trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    module.log = lambda *args, **kwargs: None  # outside a fit loop
    batch = torch.rand(2, 3, 32, 32)
    loss = module.training_step(batch, 0)
    with torch.no_grad():
        expected = 2.0 * torch.nn.functional.mse_loss(module.net(batch), module.teacher(batch))
    torch.testing.assert_close(loss.detach(), expected)
    assert calls == []
    module.validation_step(batch, 0)
    assert calls  # the objective is still what validation reports
    blended = StyleTransferModule(**common, transfer={"teacher": str(tiny_ckpt), "pixel_weight": 2.0,
                                                      "objective_weight": 0.5})  # fmt: skip
    blended.setup("fit")
    blended.trainer = module.trainer
    blended.log = lambda *args, **kwargs: None
    blended.net.load_state_dict(module.net.state_dict())
    with torch.no_grad():
        objective = blended.loss_fn(blended.net(batch), batch)["objective"]
        torch.testing.assert_close(blended.training_step(batch, 0), expected + 0.5 * objective)
