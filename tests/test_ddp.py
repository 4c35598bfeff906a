"""DDP on 2 CPU processes (gloo): sharded data, rank-zero outputs, same trajectory as one process."""

from types import SimpleNamespace

import pytest
import torch

from nst_lightning.data.datamodule import FolderDataModule
from nst_lightning.inference import load_model
from nst_lightning.models import create_model

from .conftest import run_cli


def test_each_rank_gets_a_disjoint_shard_without_repeats(image_dir):
    seen = []
    for rank in range(2):
        dm = FolderDataModule(str(image_dir), image_size=16, batch_size=2, num_workers=0, val_count=1)
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        dm.setup("fit")
        seen.append([index for index, _ in dm.train_dataloader().sampler])
    assert not set(seen[0]) & set(seen[1])
    assert len(seen[0]) == len(seen[1]) == 4  # 9 training images: the odd one out is dropped, not repeated


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tmp_path, image_dir, style_path):
    common = ["experiment=tiny", "style=custom", f"style.image={style_path}", f"data.root={image_dir}",
              "data.shuffle=false", "data.augment=false", "trainer.max_steps=3", "trainer.val_check_interval=3",
              "callbacks.grid.every_n_steps=0", "optim.lr=1e-2"]  # fmt: skip
    single = run_cli("train.py", *common, "data.batch_size=4", f"hydra.run.dir={tmp_path / 'single'}")
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = run_cli("train.py", *common, "data.batch_size=2", "trainer=ddp", "trainer.accelerator=cpu",
                  "trainer.devices=2", "trainer.precision=32-true", f"hydra.run.dir={tmp_path / 'ddp'}")  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    nets = [load_model(tmp_path / run / "checkpoints/last.ckpt").net for run in ("single", "ddp")]
    x = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out_single, out_ddp = nets[0](x), nets[1](x)
    assert torch.allclose(out_single, out_ddp, atol=2e-3), (out_single - out_ddp).abs().max()
    # Training moved the network: the comparison above is not between two untouched initialisations.
    torch.manual_seed(0)
    assert (out_single - create_model("johnson_tiny")(x)).abs().max() > 1e-2
    # Logging and checkpointing happen on rank zero only: one event file, one set of checkpoints.
    assert len(list((tmp_path / "ddp").glob("events.out.tfevents*"))) == 1
    assert sorted(p.name for p in (tmp_path / "ddp/checkpoints").iterdir()) == sorted(
        p.name for p in (tmp_path / "single/checkpoints").iterdir()
    )
