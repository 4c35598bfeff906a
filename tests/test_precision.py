"""Mixed precision: bf16 autocast trains like fp32 (short run), with fp32 Grams and finite losses."""

import os

import pytest
import torch

from nst_lightning.cli.train import run as train
from nst_lightning.training.precision import Capabilities, PrecisionChoice, cpu_flags, resolve_precision

from .conftest import ObjectiveRecorder, tiny_train_cfg


def run(tmp_path, image_dir, style_path, precision: str) -> list[float]:
    torch.manual_seed(0)
    cfg = tiny_train_cfg(
        tmp_path / precision,
        image_dir,
        style_path,
        [f"trainer.precision={precision}", "trainer.max_steps=8", "trainer.val_check_interval=8",
         "data.shuffle=false", "data.augment=false", "callbacks.grid.every_n_steps=0"],
    )  # fmt: skip
    recorder = ObjectiveRecorder()
    train(cfg, extra_callbacks=[recorder])
    return recorder.values


@pytest.mark.slow
def test_bf16_mixed_loss_curve_follows_fp32(tmp_path, image_dir, style_path):
    fp32 = run(tmp_path, image_dir, style_path, "32-true")
    bf16 = run(tmp_path, image_dir, style_path, "bf16-mixed")
    assert len(fp32) == len(bf16) == 8
    assert all(torch.isfinite(torch.tensor(bf16)))
    gaps = [abs(a - b) / a for a, b in zip(fp32, bf16, strict=True)]
    assert max(gaps) < 0.08, (fp32, bf16)
    assert abs(sum(bf16) - sum(fp32)) / sum(fp32) < 0.03, (fp32, bf16)


def caps(cuda: bool = False, cuda_bf16: bool = False, flags: tuple[str, ...] = (), capability: str = "AVX2"):
    return Capabilities(cuda=cuda, cuda_bf16=cuda_bf16, mps=False, cpu_capability=capability,
                        cpu_flags=frozenset(("fpu", "avx2", *flags)))  # fmt: skip


@pytest.mark.parametrize(
    ("machine", "accelerator", "precision", "channels_last"),
    [
        (caps(flags=("amx_bf16", "amx_tile", "avx512f")), "auto", "bf16-mixed", True),  # Sapphire Rapids
        (caps(flags=("avx512_bf16", "avx512f"), capability="AVX512"), "cpu", "bf16-mixed", True),  # Zen 4
        (caps(flags=("avx512f",), capability="AVX512"), "auto", "32-true", False),  # Skylake-SP: emulated bf16
        (caps(), "auto", "32-true", False),  # AVX2 only (typical CI)
        (caps(cuda=True, cuda_bf16=True), "auto", "bf16-mixed", True),  # Ampere and later
        (caps(cuda=True, cuda_bf16=True), "gpu", "bf16-mixed", True),
        (caps(cuda=True, cuda_bf16=False), "auto", "32-true", False),  # Volta/Turing
        (caps(cuda=True, cuda_bf16=True), "cpu", "32-true", False),  # a GPU machine told to use its AVX2 CPU
    ],
)
def test_auto_precision_follows_the_hardware(machine, accelerator, precision, channels_last):
    choice = resolve_precision("auto", accelerator, "auto", caps=machine)
    assert (choice.precision, choice.channels_last) == (precision, channels_last)
    assert choice.reason


def test_explicit_settings_are_kept():
    amx = caps(flags=("amx_bf16",))
    kept = PrecisionChoice("32-true", False, "as configured", allocator="reuse")
    assert resolve_precision("32-true", "cpu", "auto", caps=amx) == kept
    assert resolve_precision("16-mixed", "cuda", True, caps=caps()).precision == "16-mixed"
    assert resolve_precision("auto", "cpu", False, caps=amx).channels_last is False
    assert resolve_precision(32, "cpu", True, caps=caps(), allocator="system") == PrecisionChoice(
        "32", True, "as configured", allocator="system"
    )


def test_cpu_work_keeps_freed_memory_for_the_next_step():
    """``allocator=auto``: reuse on a CPU (no page faults per step), the system allocator on a GPU."""
    gpu = caps(cuda=True, cuda_bf16=True)
    assert resolve_precision("auto", "cpu", caps=caps()).allocator == "reuse"
    assert resolve_precision("auto", "cuda", caps=gpu).allocator == "system"
    assert resolve_precision("auto", "cpu", caps=caps(), allocator="system").allocator == "system"
    with pytest.raises(ValueError, match="auto, reuse or system"):
        resolve_precision("auto", "cpu", caps=caps(), allocator="jemalloc")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512_bf16 amx_bf16\n\nprocessor\t: 1\nflags\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "sse", "avx2", "avx512_bf16", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()  # macOS, Windows: no /proc/cpuinfo


def test_training_logs_the_precision_choice(tmp_path, image_dir, style_path, caplog):
    cfg = tiny_train_cfg(tmp_path, image_dir, style_path, ["trainer.precision=auto", "trainer.max_steps=1",
                                                           "callbacks.grid.every_n_steps=0"])  # fmt: skip
    expected = resolve_precision("auto", "cpu", cfg.model.channels_last)
    with caplog.at_level("INFO", logger="nst_lightning.cli.train"):
        result = train(cfg)
    assert (f"precision {expected.precision}, channels_last={expected.channels_last}, allocator="
            f"{expected.allocator} ({expected.reason})") in caplog.text  # fmt: skip
    ckpt = torch.load(result["last_ckpt"], map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["runtime"]["channels_last"] is expected.channels_last


def test_forcing_bf16_on_a_cpu_without_it_warns_once_with_the_measured_cost(monkeypatch, caplog):
    from nst_lightning.training import precision

    forced = resolve_precision("bf16-mixed", "cpu", "auto", caps=caps())
    assert (
        forced.emulated_bf16
        and not resolve_precision("bf16-mixed", "cpu", caps=caps(flags=("amx_bf16",))).emulated_bf16
    )
    monkeypatch.setattr(precision, "bf16_slowdown", lambda: 37.0)
    precision._warn_emulated_once.cache_clear()
    with caplog.at_level("WARNING", logger="nst_lightning.training.precision"):
        precision.warn_if_emulated(forced)
        precision.warn_if_emulated(forced)
        precision.warn_if_emulated(resolve_precision("32-true", "cpu", caps=caps()))
    assert [r.getMessage().count("37x slower") for r in caplog.records] == [1]


@pytest.mark.parametrize(
    ("flags", "dtype", "channels_last"), [((), None, False), (("amx_bf16",), torch.bfloat16, True)]
)
def test_the_baseline_follows_the_training_machine_rule(monkeypatch, flags, dtype, channels_last):
    from nst_lightning.baseline.optimize import machine_choice
    from nst_lightning.training import precision

    monkeypatch.setattr(precision, "detect_capabilities", lambda: caps(flags=flags))
    assert machine_choice("auto", None, torch.device("cpu")) == (dtype, channels_last)
    assert machine_choice("fp32", True, torch.device("cpu")) == (None, True)


ALLOC_SCRIPT = """
import resource, sys, torch
from nst_lightning.training.allocator import set_allocator
applied = set_allocator(sys.argv[1])
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        x = torch.ones(4, 1024, 1024)  # 16 MiB, written: every page touched
        y = torch.ones(4, 1024, 1024)
        del x, y
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()
print(applied, faults())
"""


def test_reused_memory_is_not_page_faulted_in_again(tmp_path):
    """What ``allocator=reuse`` buys, counted (not timed): 16 MiB buffers freed and allocated again come back
    without page faults; with glibc's initial thresholds every round faults all their pages in again."""
    import subprocess
    import sys

    from tests.conftest import REPO

    def faults(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", ALLOC_SCRIPT, mode], capture_output=True, text=True, timeout=120,
                             cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)  # fmt: skip
        applied, count = out.stdout.split()
        return applied, int(count)

    applied, reused = faults("reuse")
    if applied != "True":
        pytest.skip("not glibc: the allocator setting does not apply here")
    _, system = faults("system")
    pages = 40 * 16 * 2**20 // 4096  # twenty rounds of two 16 MiB buffers
    assert reused < pages // 20 and system > pages // 2, (reused, system)
