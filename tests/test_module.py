"""StyleTransferModule's grouped hyper-parameters: complete in checkpoints, enough to rebuild the module."""

import pytest
import torch

from nst_lightning.errors import NSTError
from nst_lightning.training.hparams import OptimGroup, TransferGroup
from nst_lightning.training.module import StyleTransferModule


def test_unknown_keys_and_schedules_fail_before_anything_is_built():
    with pytest.raises(NSTError, match="unknown optim keys lr_schedul; known: lr, betas"):
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
    assert set(raw["hyper_parameters"]) == {"model", "style", "loss", "optim", "runtime", "transfer"}
    module = StyleTransferModule.load_from_checkpoint(tiny_ckpt, map_location="cpu")
    assert dict(module.hparams) == raw["hyper_parameters"]
    state = {k[4:]: v for k, v in raw["state_dict"].items() if k.startswith("net.")}
    assert all(torch.equal(module.net.state_dict()[k], v) for k, v in state.items())
