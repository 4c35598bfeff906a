"""Every recipe adapts to the machine it runs on: on a CPU without bf16 arithmetic it resolves to fp32, a
worker count from the cores present and batches a CPU carries; on a GPU with bf16, to the GPU settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nst_lightning.cli.config import config_dir
from nst_lightning.cli.train import apply_auto_precision
from nst_lightning.data.datamodule import resolve_num_workers
from nst_lightning.training import precision

from .conftest import compose_train

AVX2_LAPTOP = precision.Capabilities(cuda=False, cuda_bf16=False, mps=False, cpu_capability="AVX2",
                                     cpu_flags=frozenset({"fpu", "avx2", "fma"}))  # fmt: skip
GPU_BF16 = precision.Capabilities(cuda=True, cuda_bf16=True, mps=False, cpu_capability="AVX2",
                                  cpu_flags=frozenset({"fpu", "avx2"}))  # fmt: skip
RECIPES = sorted(p.stem for p in (Path(config_dir()) / "experiment").glob("*.yaml"))
CPU_PIXELS_PER_STEP = 4 * 256 * 256  # Johnson's batch 4 at 256 px: the most a CPU recipe asks of one step


def _compose(recipe: str, machine: precision.Capabilities, monkeypatch) -> tuple:
    monkeypatch.setattr(precision, "detect_capabilities", lambda: machine)
    cfg = compose_train([f"experiment={recipe}", "paths.output_dir=out"])
    choice = apply_auto_precision(cfg)
    return cfg, choice


@pytest.mark.parametrize("recipe", RECIPES)
def test_each_recipe_on_a_two_core_cpu_without_bf16_is_fp32_with_sane_workers_and_batches(recipe, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    cfg, choice = _compose(recipe, AVX2_LAPTOP, monkeypatch)
    assert (choice.precision, choice.channels_last, choice.emulated_bf16) == ("32-true", False, False)
    assert resolve_num_workers(cfg.data.num_workers) <= 1
    assert cfg.data.batch_size * cfg.data.image_size**2 <= CPU_PIXELS_PER_STEP


def test_finetune_on_a_cpu_stops_by_a_fifteen_minute_budget_and_on_a_gpu_keeps_its_gpu_settings(monkeypatch):
    cpu, _ = _compose("finetune", AVX2_LAPTOP, monkeypatch)
    assert cpu.trainer.max_time == "00:00:15:00" and cpu.export_at_end and cpu.init_from == "starry_night"
    gpu, choice = _compose("finetune", GPU_BF16, monkeypatch)
    assert (gpu.data.batch_size, gpu.data.image_size, gpu.trainer.max_time) == (16, 256, "00:00:01:30")
    assert choice.precision == "bf16-mixed"


def test_accelerator_cpu_takes_the_cpu_values_on_a_gpu_machine(monkeypatch):
    monkeypatch.setattr(precision, "detect_capabilities", lambda: GPU_BF16)
    cfg = compose_train(["experiment=finetune", "paths.output_dir=out", "trainer.accelerator=cpu"])
    assert OmegaConf.to_container(cfg.data, resolve=True)["batch_size"] == 2


def test_auto_workers_are_half_the_cores_from_one_to_eight(monkeypatch):
    for cores, workers in ((1, 1), (2, 1), (16, 8), (64, 8)):
        monkeypatch.setattr("os.sched_getaffinity", lambda pid, n=cores: set(range(n)), raising=False)
        assert resolve_num_workers("auto") == workers
    assert resolve_num_workers(3) == 3


@pytest.mark.slow
def test_finetune_from_the_shipped_model_ends_with_an_exported_model_and_a_preview(tmp_path, image_dir, style_path):
    from nst_lightning.cli.train import run as train
    from nst_lightning.inference import load_model

    cfg = compose_train(
        ["experiment=finetune", "style=custom", f"style.image={style_path}", "style.size=64", "loss=tiny",
         f"data.root={image_dir}", "data.image_size=32", "data.val_size=32", "trainer.accelerator=cpu",
         "trainer.max_steps=2", "trainer.val_check_interval=2", f"paths.output_dir={tmp_path / 'run'}"]
    )  # fmt: skip
    result = train(cfg)
    assert result["global_step"] == 2 and Path(result["preview"]).is_file()
    assert load_model(result["model"]).meta["transfer"]["init_provenance"]
