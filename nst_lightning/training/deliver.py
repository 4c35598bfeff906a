"""What a finished run hands over (``export_at_end=true``): the trained network as a slim model file, ready for
``stylize.py``, and a preview of it on one of the run's photos."""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image

from nst_lightning.image import open_rgb
from nst_lightning.inference import export_model, load_model, stylize

log = logging.getLogger(__name__)
MODEL_FILE = "model.pt"
PREVIEW_FILE = "preview.jpg"
PREVIEW_SIZE = 512  # longest side of the preview's photo


def export_and_preview(ckpt: str | Path, out_dir: str | Path, photo: str | Path) -> dict[str, str]:
    """Export ``ckpt``'s network to ``out_dir/model.pt`` and write ``out_dir/preview.jpg``: ``photo`` (longest
    side at most 512 px) beside its stylized version.

    Returns:
        ``{"model": path, "preview": path}``.
    """
    out_dir = Path(out_dir)
    model_path = export_model(ckpt, out_dir / MODEL_FILE)
    image = open_rgb(photo)
    image.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))
    stylized = stylize(image, load_model(model_path))
    preview = Image.new("RGB", (image.width + stylized.width, max(image.height, stylized.height)), "white")
    preview.paste(image, (0, 0))
    preview.paste(stylized, (image.width, 0))
    preview_path = out_dir / PREVIEW_FILE
    preview.save(preview_path, quality=90)
    log.info("exported %s (python stylize.py ckpt=%s input=PHOTO); preview %s", model_path, model_path, preview_path)
    return {"model": str(model_path), "preview": str(preview_path)}
