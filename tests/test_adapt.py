"""Learning a new painting in minutes: a new style's scales and shifts on a trained network, cached by digest."""

from __future__ import annotations

import pytest
import torch

from nst_lightning.errors import NSTError
from nst_lightning.inference import load_model
from nst_lightning.inference.checkpoint import write_model
from nst_lightning.models.conditional import style_parameters
from nst_lightning.transfer.adapt import AdaptRecipe, adapt_style

from .conftest import synthetic_photo

TINY = AdaptRecipe(crop=32, batch=1, style_size=64)


@pytest.fixture
def painting(tmp_path):
    path = tmp_path / "my painting.png"
    synthetic_photo(48, 40, seed=3).save(path)
    return path


def test_adapt_learns_a_new_style_then_serves_it_from_the_cache(painting, tmp_path):
    base = load_model("starry_night")
    x = torch.rand(1, 3, 40, 48)
    seen: list[dict] = []
    first = adapt_style(painting, 1.0, "starry_night", recipe=TINY, max_steps=2, cache_dir=tmp_path,
                        progress=seen.append)  # fmt: skip
    info = first.meta["adapted"]
    assert [p["step"] for p in seen] == [1, 2] and seen[-1]["fraction"] == 1.0
    assert info["steps"] == 2 and not info["cached"] and first.net.style_names == ["starry_night", "my painting"]
    assert [s["name"] for s in first.meta["styles"]] == ["starry_night", "my painting"]
    # The base's own style is untouched; the new one moved away from its start (the base's scales and shifts).
    assert torch.allclose(first.net(x, torch.tensor([0])), base.net(x), atol=1e-5)
    start = [p for p in style_parameters(first.net, 0)]
    moved = [not torch.equal(a, b) for a, b in zip(style_parameters(first.net, 1), start, strict=True)]
    assert any(moved)

    again = adapt_style(painting, 1.0, "starry_night", recipe=TINY, max_steps=2, cache_dir=tmp_path,
                        progress=seen.append)  # fmt: skip
    assert len(seen) == 2, "a cached style trains nothing"
    assert again.meta["adapted"]["cached"] and again.meta["adapted"]["steps"] == 2
    assert torch.equal(again.net(x, torch.tensor([1])), first.net(x, torch.tensor([1])))
    # Another budget is another style: learned anew.
    other = adapt_style(painting, 2.0, "starry_night", recipe=TINY, max_steps=1, cache_dir=tmp_path)
    assert not other.meta["adapted"]["cached"] and other.meta["adapted"]["steps"] == 1

    # Kept as a style of a network file the user keeps: it loads back with both styles, by name.
    saved = load_model(write_model(first, tmp_path / "mine.pt"))
    assert saved.net.style_names == ["starry_night", "my painting"]
    assert torch.allclose(saved.net(x, torch.tensor([1])), first.net(x, torch.tensor([1])))


def test_adapt_names_what_is_wrong(painting, tmp_path):
    with pytest.raises(NSTError, match="painting not found"):
        adapt_style(tmp_path / "missing.jpg", 1.0, "starry_night", cache_dir=tmp_path)
    with pytest.raises(NSTError, match="positive number of minutes"):
        adapt_style(painting, 0, "starry_night", cache_dir=tmp_path)
    with pytest.raises(NSTError, match="crop >= 16"):
        AdaptRecipe(crop=4)
    with pytest.raises(NSTError, match="precision must be one of"):
        AdaptRecipe(precision="fp8")


def test_stylize_cli_adapts_a_painting_saves_it_and_reuses_it(painting, tmp_path, monkeypatch, caplog):
    """``stylize.py style_image=P adapt=MIN``: learns P on the shipped multi-style network, stylizes with it,
    writes the network with the new style (``adapt_save``), and the second run comes from the cache."""
    import logging

    import numpy as np
    from hydra import compose, initialize_config_dir
    from PIL import Image

    from nst_lightning.cli.config import config_dir
    from nst_lightning.cli.stylize import run

    monkeypatch.setenv("NST_CACHE_DIR", str(tmp_path / "cache"))
    synthetic_photo(56, 40, seed=8).save(tmp_path / "photo.png")

    def stylize_cli(*extra: str) -> list:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose("stylize", overrides=[f"style_image={painting}", f"input={tmp_path / 'photo.png'}",
                                                "device=cpu", *extra])  # fmt: skip
        return run(cfg)

    with caplog.at_level(logging.INFO, logger="nst_lightning.cli.stylize"):
        out = stylize_cli("adapt=0.03", f"output={tmp_path / 'a.png'}", f"adapt_save={tmp_path / 'mine.pt'}")
    assert np.asarray(Image.open(out[0])).shape == (40, 56, 3)
    saved = load_model(tmp_path / "mine.pt")
    assert saved.net.style_names[-1] == "my painting" and len(saved.net.style_names) == 6
    assert "from the cache" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="nst_lightning.cli.stylize"):
        again = stylize_cli("adapt=0.03", f"output={tmp_path / 'b.png'}")
    assert "from the cache" in caplog.text
    assert np.array_equal(np.asarray(Image.open(again[0])), np.asarray(Image.open(out[0])))
    for bad, words in ((["adapt=0"], "adapt must be a number of minutes"), (["adapt=0.03", "ckpt=starry_night"],
                       "adapt_base="), (["adapt_save=x.pt"], "adapt_save= writes a learned style")):  # fmt: skip
        with pytest.raises(NSTError, match=words):
            stylize_cli(*bad, f"output={tmp_path / 'c.png'}")
