"""Style presets (``conf/style/<name>.yaml``) and the loss description, as the commands read them from a config.

The library takes plain paths and a :class:`~nst_lightning.losses.config.LossConfig`; finding a preset's
image (downloading it if needed), or the image a checkpoint was trained on, happens here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nst_lightning.cli.config import config_dir, group_options
from nst_lightning.data.sample import sample_file
from nst_lightning.errors import NSTError
from nst_lightning.image import IMAGE_SUFFIXES
from nst_lightning.losses.config import TERM_WEIGHTS, LossConfig, loss_config
from nst_lightning.losses.styles import StyleSource, resolve_style_image

log = logging.getLogger(__name__)


def load_option(group: str, name: str) -> DictConfig:
    """``conf/<group>/<name>.yaml`` merged over the options its defaults list names (``_base``, ...), as Hydra
    composes it, without Hydra (interpolations left unresolved)."""
    raw = OmegaConf.load(Path(config_dir()) / group / f"{name}.yaml")
    assert isinstance(raw, DictConfig)
    parents = [str(p) for p in raw.pop("defaults", []) if p != "_self_"]
    merged = OmegaConf.merge(*(load_option(group, p) for p in parents), raw)
    assert isinstance(merged, DictConfig)
    return merged


def preset_names() -> list[str]:
    """Names of the style presets in ``conf/style/``."""
    return group_options("style")


def preset_style(name: str, data_dir: str) -> Any:
    """The style preset ``name`` as a config node (``image`` resolved under ``data_dir``), or None."""
    if name not in preset_names():
        return None
    return OmegaConf.create({"paths": {"data_dir": data_dir}, "style": load_option("style", name)}).style


def style_image_path(style: Any) -> Path:
    """Resolve a style config node (``image``, ``file``, ``url``, ``sha256``) to an existing file.

    Only a preset's own file is downloaded: a user's ``style.image=PATH`` must exist as given. A preset whose file
    is neither in the data folder nor downloadable (offline) falls back to the embedded sample's copy, if it has one.
    """
    image, preset_file = style.get("image"), style.get("file")
    if preset_file is None and (image is None or Path(str(image)).name in ("None", "null", "???")):
        raise NSTError(f"style={style.get('name')} needs its painting: add style.image=PATH/TO/painting.jpg")
    is_preset = preset_file is not None and image is not None and Path(image).name == preset_file
    if not is_preset:
        return resolve_style_image(image)
    try:
        return resolve_style_image(image, style.url, style.sha256)
    except NSTError:
        sample = sample_file(f"styles/{preset_file}")
        if sample is None:
            raise
        log.warning("style %s: %s is missing and could not be downloaded; using the embedded sample's copy %s",
                    style.get("name"), image, sample)  # fmt: skip
        return sample


def style_source(entry: str, data_dir: str, default_size: int | None) -> StyleSource:
    """A preset name or an image path → (image file, Gram size)."""
    looks_like_path = Path(entry).suffix.lower() in IMAGE_SUFFIXES or "/" in entry or Path(entry).exists()
    preset = None if looks_like_path else preset_style(entry, data_dir)
    if preset is not None:
        return style_image_path(preset), preset.size
    if looks_like_path:
        return resolve_style_image(entry), default_size
    raise NSTError(f"{entry!r} is neither a style preset ({', '.join(preset_names())}) nor an image file")


def checkpoint_style_image(meta: dict[str, Any], override: str | None, data_dir: str) -> Path:
    """The style image a checkpoint was trained on: ``override`` if given, else the recorded path if it exists
    here, else the style preset named in the checkpoint (found under ``data_dir`` or downloaded)."""
    if override:
        return resolve_style_image(override)
    recorded = meta.get("style_image")
    if recorded and Path(recorded).exists():
        return Path(recorded)
    name = meta.get("style_name")
    preset = preset_style(name, data_dir) if name else None
    if preset is not None:
        return style_image_path(preset)
    raise NSTError(
        f"cannot find the style image of this checkpoint (recorded: {recorded}, style: {name}); pass style_image=PATH"
    )


def config_loss(cfg: DictConfig) -> LossConfig:
    """The :class:`LossConfig` of a training or baseline config: layers from ``loss``, weights from ``style``."""
    structure = OmegaConf.to_container(cfg.loss, resolve=True)
    assert isinstance(structure, dict)
    weights = {k: cfg.style[k] for k in TERM_WEIGHTS if k in cfg.style}
    return loss_config(structure, weights, "loss config (conf/loss + the style's weights)")
