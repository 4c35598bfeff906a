"""``train.py experiment=multistyle styles=[...]`` and ``experiment=add_style init_from=... style=...``: the
styles of a multi-style network from the config (presets, image files, a trained network's own list)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from nst_lightning import transfer
from nst_lightning.errors import NSTError
from nst_lightning.losses.config import TERM_WEIGHTS
from nst_lightning.training.multistyle import MultiStyleModule


def is_multistyle(cfg: DictConfig) -> bool:
    """Does ``cfg`` train a multi-style network (``styles`` listed, or ``add_style``)?"""
    return bool(cfg.styles) or bool(cfg.add_style)


def style_entry(style: Any) -> dict[str, Any]:
    """A style config node (``conf/style/*.yaml``, or ``custom`` with ``image``) → the module's style record."""
    from nst_lightning.cli.presets import style_image_path

    image = style_image_path(style)
    name = Path(image).stem if style.get("name") in (None, "custom") else str(style.name)
    return {"name": name, "image": str(image), "size": style.get("size"),
            **{k: float(style[k]) for k in TERM_WEIGHTS}}  # fmt: skip


def _listed_style(entry: str, cfg: DictConfig) -> dict[str, Any]:
    """One item of ``styles=[...]``: a preset name, or an image path (with ``cfg.style``'s size and weights)."""
    from nst_lightning.cli.presets import preset_names, preset_style

    preset = preset_style(str(entry), cfg.paths.data_dir)
    if preset is not None:
        return style_entry(preset)
    if Path(str(entry)).is_file():
        with open_dict(cfg):
            custom = cfg.style.copy()
            custom.name, custom.image, custom.file = None, str(entry), None
        return style_entry(custom)
    raise NSTError(f"styles: {entry!r} is neither a style preset ({', '.join(preset_names())}) nor an image file")


def _refined(cfg: DictConfig, styles: list[dict[str, Any]]) -> dict[str, Any]:
    """``refine_styles=[NAME, ...]``: the module arguments that train only those styles of ``init_from``'s
    network; none without it."""
    if not cfg.refine_styles:
        return {}
    names = [s["name"] for s in styles]
    unknown = [str(n) for n in cfg.refine_styles if str(n) not in names]
    if unknown:
        raise NSTError(f"refine_styles: {', '.join(unknown)} not among styles={names}")
    if not cfg.init_from:
        raise NSTError("refine_styles retouches a trained network: set init_from=MULTISTYLE_CKPT (it holds the styles)")
    return {"train_styles": [names.index(str(n)) for n in cfg.refine_styles], "refine": True}


def build_multistyle_module(cfg: DictConfig, build_module: Any) -> MultiStyleModule:
    """The :class:`MultiStyleModule` for ``cfg`` (``build_module``: the single-style builder, which supplies the
    model, loss layers, optimiser and transfer settings). Adding a style: the network of ``init_from`` is read
    here for its styles; its weights are loaded when training starts."""
    if cfg.add_style:
        source = cfg.init_from
        if not source:
            raise NSTError("add_style needs the trained network to extend: init_from=CHECKPOINT_OR_NAME")
        from nst_lightning.inference import load_model

        old = transfer.source_styles(load_model(source).meta)
        new = style_entry(cfg.style)
        if new["name"] in [s["name"] for s in old]:
            raise NSTError(f"{source} already has a style named {new['name']!r}; pick another style or name")
        cls = partial(MultiStyleModule, styles=[*old, new], train_styles=[len(old)])
    else:
        styles = [_listed_style(e, cfg) for e in cfg.styles]
        cls = partial(MultiStyleModule, styles=styles, balance=cfg.style_balance, **_refined(cfg, styles))
    return build_module(cfg, None, module_class=cls)
