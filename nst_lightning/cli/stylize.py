"""``python stylize.py ckpt=NAME_OR_PATH input=FILE_OR_FOLDER output=PATH``: stylize files with a trained network.

``style_image=PAINTING`` instead of ``ckpt=`` stylizes with any painting (zero-shot); a video ``input``
(``clip.mp4``) is stylized frame by frame into a video ``output``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nst_lightning.errors import NSTError
from nst_lightning.inference import choose_style, prepare_model, pretrained_models, stylize_paths
from nst_lightning.inference.video import is_video

log = logging.getLogger(__name__)
MULTISTYLE = "multistyle"  # the shipped network that style=NAME without ckpt= picks


def chosen_style(value: object) -> str | int | None:
    """``style=NAME`` on the command line: Hydra loads the preset of that name (``conf/style/NAME.yaml``), whose
    ``name`` is the style; a plain value (tests, the library) is taken as it is."""
    if OmegaConf.is_config(value):
        return value.get("name")  # type: ignore[union-attr]
    return value  # type: ignore[return-value]


def run(cfg: DictConfig) -> list[Path]:
    """Stylize ``cfg.input`` (file or folder) with ``cfg.ckpt`` into ``cfg.output``; returns written files.

    Images that cannot be read (or are too large) in a folder are reported and skipped; the others are still
    written, and the command then fails with the list of skipped files.
    """
    if not cfg.input:
        raise NSTError("no input given: use input=FILE_OR_FOLDER")
    model = _model(cfg)
    style, mix = chosen_style(cfg.style), cfg.style_mix
    if style is not None or mix:  # a multi-style network: the style is chosen once, for every image
        mix = OmegaConf.to_container(mix) if OmegaConf.is_config(mix) else mix
        if mix is not None and not isinstance(mix, dict):
            raise NSTError(f"style_mix must be a mapping {{NAME: WEIGHT, ...}}, got {mix!r}")
        model = choose_style(prepare_model(model, cfg.device), style, mix)
    if is_video(cfg.input):
        return [_video(cfg, model)]
    report = stylize_paths(
        model,
        cfg.input,
        cfg.output,
        suffix=cfg.suffix,
        strength=cfg.strength,
        preserve_color=cfg.preserve_color,
        max_size=cfg.max_size,
        tile_size=cfg.tile_size,
        tile_overlap=cfg.tile_overlap,
        max_pixels=cfg.max_pixels,
        device=cfg.device,
        progress=True,
        input_noise=cfg.input_noise,
        input_noise_smooth_only=cfg.input_noise_smooth_only,
    )
    if not report.ok:
        raise NSTError(report.summary())
    return report.written


def _model(cfg: DictConfig):
    """The checkpoint (``ckpt=``) or the zero-shot model with the painting ``style_image=``."""
    if cfg.style_image:
        if cfg.ckpt:
            raise NSTError("give either ckpt= (a trained network) or style_image= (zero-shot), not both")
        from nst_lightning.inference import resolve_device
        from nst_lightning.inference.zeroshot import load_zeroshot

        device = str(resolve_device(cfg.device))
        return load_zeroshot(Path(cfg.style_image), method=cfg.zeroshot_method, device=device)
    if not cfg.ckpt and (chosen_style(cfg.style) is not None or cfg.style_mix) and MULTISTYLE in pretrained_models():
        log.info("style chosen without ckpt=: using the shipped multi-style network %r", MULTISTYLE)
        return MULTISTYLE
    if not cfg.ckpt:
        raise NSTError("no model given: use ckpt=NAME_OR_PATH (a trained network) or style_image=PAINTING (zero-shot)")
    return cfg.ckpt


def _video(cfg: DictConfig, model) -> Path:
    """Stylize the video ``cfg.input`` into ``cfg.output`` (a video file) with the image options of ``cfg``."""
    from nst_lightning.inference import prepare_model, stylize
    from nst_lightning.inference.video import stylize_video

    runner = prepare_model(model, cfg.device)
    options = {k: cfg[k] for k in ("strength", "preserve_color", "max_size", "tile_size", "tile_overlap")}
    output = Path(cfg.output)
    if not is_video(output):
        output = output / Path(cfg.input).name if not output.suffix else output
    report = stylize_video(
        cfg.input, output, lambda frame: stylize(frame, runner, **options),
        consistency=cfg.consistency, temporal_weight=cfg.temporal_weight,
    )  # fmt: skip
    log.info("wrote %s: %d frames at %s fps (audio %s) in %.1f s (%.2f s/frame)", output, report.frames,
             report.rate, "copied" if report.audio else "none", report.seconds, report.seconds_per_frame)  # fmt: skip
    return output
