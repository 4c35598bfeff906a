"""scripts/gpu_release.sh: the winner rule, the gates, the resume plan, the session, shipping and installing (each
phase module of scripts/release/ on its own), and the CPU rehearsal of every phase."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from scripts.release import check, manifest, pick, plan, profiles, session, ship
from tests.conftest import synthetic_photo

REPO = Path(__file__).resolve().parent.parent


def _row(name, objective, verdict, stripe=0.05, overrides=None):
    return {"name": name, "eval_objective": objective, "verdict": verdict, "stripe_rms": stripe,
            "overrides": overrides if overrides is not None else [f"{name}=1"]}  # fmt: skip


def test_winner_is_the_lowest_objective_beyond_the_noise_floor_without_more_checkerboard():
    rows = [
        _row("baseline", 10.0, "reference", overrides=[]),
        _row("seed1", 9.6, "noise floor (seed only)"),
        _row("ema", 9.0, "objective better (-10.0%); checkerboard within noise (×1.10)"),
        _row("bilinear", 8.0, "objective better (-20.0%); checkerboard more (×4.00)"),
        _row("tv", 8.5, "objective better (-15.0%); checkerboard within noise (×1.00)", stripe=0.09),
        _row("cosine", 9.8, "objective within noise (-2.0%); checkerboard less (×0.5)"),
    ]
    assert pick.pick_winner(rows) == {"name": "ema", "overrides": ["ema=1"], "measured": True}
    assert pick.pick_winner(rows[:2] + rows[3:])["name"] == "baseline"  # nothing else qualifies
    assert pick.pick_winner([_row("baseline", None, "failed", overrides=[])])["measured"] is False


def test_gates_for_styles_students_and_replacements():
    manifest = {"models": {"starry_night": {"ratio_256": 1.6}}}
    ok = {"bytes": 3_400_000, "fp16_parity": 0.004, "ratio_256": 1.25}
    assert check.gates("starry_night", ok, {}, manifest) == []
    assert check.gates("starry_night", {**ok, "ratio_256": 1.45}, {}, manifest)  # above 1.40
    assert check.gates("starry_night", {**ok, "ratio_256": 1.39}, {}, {"models": {"starry_night": {"ratio_256": 1.3}}})
    assert check.gates("candy", {**ok, "fp16_parity": 0.05}, {}, manifest)
    assert check.gates("candy", {**ok, "bytes": 5_000_000}, {}, manifest)
    assert check.gates("multistyle", {**ok, "bytes": 5_000_000}, {}, manifest) == []
    teacher = {"candy": {"ratio_256": 1.2}}
    assert check.gates("candy_student", {**ok, "ratio_256": 1.3}, teacher, manifest) == []
    assert check.gates("candy_student", {**ok, "ratio_256": 1.4}, teacher, manifest)  # > 1.10 × the teacher's


def test_plan_skips_what_ships_and_passes_and_fine_tunes_from_it(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest, "PRETRAINED", tmp_path)
    monkeypatch.setattr(plan, "finetune_is_faster", lambda: True)
    (tmp_path / "starry_night.pt").write_bytes(b"x")
    shipped = {"models": {"starry_night": {"file": "starry_night.pt", "passed": True, "ratio_256": 1.2}}}
    run = session.Session(tmp_path / "out", tmp_path / "work", 60, profiles.GPU, dry=False)
    waves = plan.plan_training(run, {"name": "ema", "overrides": ["ema.decay=0.999"]}, shipped)
    guarded = {"multistyle", "decoder"}  # trained only where that work exists
    names = {k: [j["name"] for j in waves[k] if j["name"] not in guarded] for k in ("wave_a", "wave_b", "wave_c")}
    four = ("the_scream", "the_wave", "candy", "mosaic")
    assert "starry_night" not in sum(names.values(), []) and waves["skipped_shipped"] == ["starry_night"]
    # starry_night ships: its student and the four fine-tunes from it start at once, their students after them
    assert set(names["wave_a"]) == {"starry_night_student", *four}
    assert all(j["init_from_starry"] and "ema.decay=0.999" in j["overrides"] for j in waves["wave_a"][:4])
    assert set(names["wave_b"]) == {f"{s}_student" for s in four} and names["wave_c"] == []
    fresh = plan.plan_training(run, {"name": "baseline", "overrides": []}, manifest.load_manifest())
    # the shipped starry_night failed its gates: trained again
    assert [j["name"] for j in fresh["wave_a"] if j["name"] not in guarded] == ["starry_night"]
    assert set(j["name"] for j in fresh["wave_b"]) == {*four, "starry_night_student"}
    assert len(fresh["wave_c"]) == 4


def test_a_session_runs_jobs_in_parallel_and_records_each_run(tmp_path):
    run = session.Session(tmp_path / "out", tmp_path / "work", 60, profiles.DRY, dry=True)
    code = "import sys; print('{\"i\": ' + sys.argv[1] + '}')"
    jobs = [session.Job(f"j{i}", [sys.executable, "-c", code, str(i)], tmp_path / f"j{i}.log", 30) for i in range(3)]
    run.run_all(jobs, parallel=2)
    assert [j.returncode for j in jobs] == [0, 0, 0]
    assert [j.json_lines() for j in jobs] == [[{"i": i}] for i in range(3)]
    slow = session.Job("slow", [sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "slow.log", 1)
    run.run_all([slow])
    assert slow.returncode == -15 and slow.seconds < 20  # killed at its own timeout
    run.record("check", "x", value=1)
    row = json.loads((tmp_path / "out" / "runs.jsonl").read_text())
    assert row["phase"] == "check" and row["value"] == 1 and session.max_time(3725) == "00:01:02:05"


def test_ship_packs_the_passing_models_and_install_puts_them_where_the_package_looks(tmp_path, monkeypatch):
    run = session.Session(tmp_path / "out", tmp_path / "work", 60, profiles.DRY, dry=True)
    models = {}
    for name in ("candy", "candy_student", "mosaic"):
        models[name] = tmp_path / "work" / "models" / f"{name}.pt"
        models[name].parent.mkdir(parents=True, exist_ok=True)
        models[name].write_bytes(name.encode())
    rows = {"candy": {"bytes": 5, "passed": True}, "candy_student": {"bytes": 13, "passed": True},
            "mosaic": {"bytes": 6, "passed": False, "failed_gates": ["ratio_32 9 > 1.4"]}}  # fmt: skip
    ship.phase_ship(run, models, rows, {"name": "baseline", "overrides": [], "measured": True})
    assert {p.name for p in run.out.iterdir()} == {"runs.jsonl", "release.json", "logs.tgz", "models_1.tgz"}
    with tarfile.open(run.out / "models_1.tgz") as tar:
        assert sorted(tar.getnames()) == ["candy.pt", "fast/candy.pt"]
    pretrained = tmp_path / "pretrained"
    monkeypatch.setattr(manifest, "PRETRAINED", pretrained)
    monkeypatch.setattr(manifest, "MANIFEST", pretrained / "release.json")
    manifest.install(run.out)
    assert (pretrained / "fast" / "candy.pt").read_bytes() == b"candy_student"
    installed = manifest.load_manifest(pretrained / "release.json")
    assert set(installed["models"]) == {"candy", "candy_student"} and installed["recipe"]["measured"]


def test_style_overrides_carry_the_preset_and_the_estimate_prices_every_phase(tmp_path):
    overrides = plan.style_overrides("candy")
    assert overrides[0] == "style=candy" and any(o.startswith("style.style_weight=") for o in overrides)
    assert plan.style_overrides("starry_night") == []  # experiment=starry_night pins its own
    run = session.Session(tmp_path / "out", tmp_path / "work", 60, profiles.DRY, dry=True)
    waves = plan.plan_training(run, {"name": "baseline", "overrides": []}, {"models": {}})
    assert set(plan.estimate(run, waves, images_per_s=10.0)) == {"pick", "train", "check", "ship"}


def _tiny_data(root: Path) -> Path:
    for sub, count in (("train", 8), ("eval/content", 1)):
        (root / sub).mkdir(parents=True)
        for i in range(count):
            synthetic_photo(64, 48, seed=i + 10 * len(sub)).save(root / sub / f"p{i}.jpg")
    (root / "styles").mkdir()
    for i, style in enumerate(profiles.STYLES):
        synthetic_photo(64, 64, seed=100 + i).save(root / "styles" / f"{style}.jpg")
    return root


@pytest.mark.slow
def test_dry_run_runs_every_phase_and_brings_back_at_most_8_small_files(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable, "NST_DATA_DIR": str(_tiny_data(tmp_path / "d"))}
    done = subprocess.run(["bash", "scripts/gpu_release.sh", str(out)], cwd=REPO, env=env, timeout=1500,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert {"plan", "pick", "train", "check", "ship"} <= {r["phase"] for r in rows}
    trained = {r["name"] for r in rows if r["phase"] == "train" and r.get("model")}
    assert {*profiles.DRY.styles, *(f"{s}_student" for s in profiles.DRY.styles)} <= trained
    checked = {r["name"]: r for r in rows if r["phase"] == "check" and "ratio_32" in r}
    assert "starry_night" in checked and checked["starry_night"]["ratio_48"] > 0
    assert any(r["name"].startswith("throughput_x") and r.get("aggregate_images_per_s") for r in rows)
    multi = next(r for r in rows if r["name"] == "multistyle_vs_single")  # after shipping, from the new starry_night
    assert multi["returncode"] == 0 and set(multi["multi_vs_single"]) == {"starry_night", "candy"}
    assert multi["source"].endswith(".pt") and multi["multi_vs_single"]["candy"] > 0
    release = json.loads((out / "release.json").read_text())
    assert set(release["models"]) == {r["name"] for r in rows if r["phase"] == "check" and "bytes" in r}
    files = [p for p in out.iterdir() if p.name != "work"]
    assert {"runs.jsonl", "release.json", "session.log", "logs.tgz"} <= {p.name for p in files}
    assert len(files) <= 8 and all(p.stat().st_size <= 16 * 2**20 for p in files)


def test_released_files_land_where_the_package_and_the_service_look():
    from nst_lightning.inference.checkpoint import PRETRAINED_DIR, PRETRAINED_FAST_DIR

    assert PRETRAINED_DIR / manifest.package_file("candy") == PRETRAINED_DIR / "candy.pt"
    assert PRETRAINED_DIR / manifest.package_file("candy_student") == PRETRAINED_FAST_DIR / "candy.pt"
    assert (PRETRAINED_DIR / manifest.package_file("decoder")).parent == PRETRAINED_DIR / "zeroshot"


def test_every_shipped_model_file_is_package_data():
    """A wheel holds what ``pyproject.toml`` lists: every file the package looks for under ``pretrained/``
    (models, students, decoders, the manifest) must match one of its patterns."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    from nst_lightning.inference.checkpoint import PRETRAINED_DIR

    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    listed = patterns["nst_lightning.pretrained"]
    files = [p.relative_to(PRETRAINED_DIR) for p in PRETRAINED_DIR.rglob("*") if p.is_file() and p.suffix != ".py"]
    assert files and all(any(f.match(pattern) and len(f.parts) == len(Path(pattern).parts) for pattern in listed)
                         for f in files), (files, listed)  # fmt: skip
