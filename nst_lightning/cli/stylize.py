"""``python stylize.py ckpt=NAME_OR_PATH input=FILE_OR_FOLDER output=PATH``: stylize files with a trained network.

``style_image=PAINTING`` instead of ``ckpt=`` stylizes with any painting (zero-shot); a video ``input``
(``clip.mp4``) is stylized frame by frame into a video ``output``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nst_lightning.cli.config import plain_values
from nst_lightning.errors import BadValue, NSTError
from nst_lightning.inference import StylizeOptions, pretrained_models, stylize_paths

log = logging.getLogger(__name__)
MULTISTYLE = "multistyle"  # the shipped network that style=NAME without ckpt= picks


def chosen_style(value: object) -> str | int | None:
    """``style=NAME`` on the command line: Hydra loads the preset of that name (``conf/style/NAME.yaml``), whose
    ``name`` is the style; a plain value (tests, the library) is taken as it is."""
    if OmegaConf.is_config(value):
        return value.get("name")  # type: ignore[union-attr]
    return value  # type: ignore[return-value]


CALLER_KEYS = ("ckpt", "style_image", "adapt", "adapt_base", "adapt_save", "zeroshot_method", "zeroshot_refine_steps",
               "input", "output", "suffix", "max_pixels", "device")  # fmt: skip
"""Keys of ``conf/stylize.yaml`` that say what to stylize and where; every other key is a StylizeOptions field."""
MAX_ADAPT_MINUTES = 24 * 60


def options_from_config(cfg: DictConfig) -> StylizeOptions:
    """The :class:`StylizeOptions` of a ``conf/stylize.yaml`` config (``style=NAME`` read as the preset's name)."""
    values = plain_values(cfg, [k for k in cfg if k not in ("style", "hydra")])  # a preset resolves only its name
    from nst_lightning.inference.refine import check_refine_steps
    from nst_lightning.inference.zeroshot import METHODS

    if values["zeroshot_method"] not in METHODS:
        raise BadValue(f"zeroshot_method must be one of {', '.join(METHODS)}, got {values['zeroshot_method']!r}")
    check_refine_steps(values["zeroshot_refine_steps"], "zeroshot_refine_steps")
    adapt = values["adapt"]
    if adapt is not None:
        if isinstance(adapt, bool) or not isinstance(adapt, (int, float)) or not 0 < adapt <= MAX_ADAPT_MINUTES:
            raise BadValue(f"adapt must be a number of minutes in (0, {MAX_ADAPT_MINUTES}] or null, got {adapt!r}")
        if not values["style_image"]:
            raise BadValue("adapt= learns a painting: give it with style_image=PAINTING")
        if values["ckpt"]:
            raise BadValue("adapt= starts from adapt_base=, not ckpt=: use adapt_base=NAME_OR_PATH")
        if chosen_style(cfg.style) is not None or values.get("style_mix") is not None:
            raise BadValue("with adapt= the style is the learned painting: leave out style= and style_mix=")
    elif values["adapt_save"]:
        raise BadValue("adapt_save= writes a learned style: give adapt=MINUTES and style_image=PAINTING")
    pixels = values["max_pixels"]
    if pixels is not None and (isinstance(pixels, bool) or not isinstance(pixels, int) or pixels < 1):
        raise BadValue(f"max_pixels must be a whole number of pixels ≥ 1 or null, got {pixels!r}")
    values["style"] = chosen_style(cfg.style)
    mix = values.get("style_mix")
    if mix is not None and not isinstance(mix, dict):
        raise BadValue(f"style_mix must be a mapping {{NAME: WEIGHT, ...}}, got {mix!r}")
    return StylizeOptions.from_mapping(values, ignore=CALLER_KEYS)


def run(cfg: DictConfig) -> list[Path]:
    """Stylize ``cfg.input`` (an image, a folder of images or a video) with ``cfg.ckpt`` into ``cfg.output``;
    returns the written files.

    Images that cannot be read (or are too large) in a folder are reported and skipped; the others are still
    written, and the command then fails with the list of skipped files.
    """
    options = options_from_config(cfg)  # every bad value fails here, before a model is loaded
    if options.runtime != "eager":
        import nst_lightning.export  # noqa: F401  (registers the runtimes that runtime= converts to)
    if not cfg.input:
        raise BadValue("no input given: use input=FILE_OR_FOLDER")
    model = _model(cfg)
    if cfg.adapt is not None:
        model = _adapted(cfg)
        options = options.replace(style=model.net.style_names[-1])
    report = stylize_paths(model, cfg.input, cfg.output, options, suffix=cfg.suffix,
                           max_pixels=cfg.max_pixels, device=cfg.device, progress=True)  # fmt: skip
    if not report.ok:
        raise NSTError(report.summary())
    return report.written


def _adapted(cfg: DictConfig):
    """``adapt_base`` with the painting ``style_image`` learned for ``adapt`` minutes (or from the cache), written
    to ``adapt_save`` when given."""
    from nst_lightning.inference.checkpoint import write_model
    from nst_lightning.transfer.adapt import adapt_style

    def report(p: dict) -> None:
        if p["step"] == 1 or int(p["fraction"] * 10) > int(report.last * 10):  # type: ignore[attr-defined]
            log.info("adapt: step %d, %.0f s, objective %.3g", p["step"], p["seconds"], p["objective"])
        report.last = p["fraction"]  # type: ignore[attr-defined]

    report.last = 0.0  # type: ignore[attr-defined]
    log.info("adapt: learning %s as a new style of %s for %g minutes", Path(cfg.style_image).name, cfg.adapt_base,
             cfg.adapt)  # fmt: skip
    loaded = adapt_style(Path(cfg.style_image), float(cfg.adapt), cfg.adapt_base, progress=report)
    info = loaded.meta["adapted"]
    log.info("adapt: style %r, %d steps in %.0f s%s", info["style"], info["steps"], info["seconds"],
             " (from the cache)" if info["cached"] else "")  # fmt: skip
    if cfg.adapt_save:
        log.info("adapt: wrote %s (styles: %s)", write_model(loaded, cfg.adapt_save, half=True),
                 ", ".join(loaded.net.style_names))  # fmt: skip
    return loaded


def _model(cfg: DictConfig):
    """The checkpoint (``ckpt=``) or the zero-shot model with the painting ``style_image=`` (``None`` with
    ``adapt=``: :func:`_adapted` makes the model)."""
    if cfg.adapt is not None:
        return None
    if cfg.style_image:
        if cfg.ckpt:
            raise NSTError("give either ckpt= (a trained network) or style_image= (zero-shot), not both")
        from nst_lightning.inference import resolve_device
        from nst_lightning.inference.zeroshot import load_zeroshot

        device = str(resolve_device(cfg.device))
        return load_zeroshot(
            Path(cfg.style_image), method=cfg.zeroshot_method, device=device, refine_steps=cfg.zeroshot_refine_steps
        )
    if not cfg.ckpt and (chosen_style(cfg.style) is not None or cfg.style_mix) and MULTISTYLE in pretrained_models():
        log.info("style chosen without ckpt=: using the shipped multi-style network %r", MULTISTYLE)
        return MULTISTYLE
    if not cfg.ckpt:
        raise NSTError("no model given: use ckpt=NAME_OR_PATH (a trained network) or style_image=PAINTING (zero-shot)")
    return _trained(str(cfg.ckpt), str(cfg.device))


def _trained(ckpt: str, device: str):
    """A shipped name or a checkpoint as given (``stylize_paths`` loads it, and says what is wrong with a file
    that is none); an exported graph file (``.onnx``, ``.pt2``, ``.ts``, an OpenVINO ``.xml``) loaded in its own
    runtime, which ``stylize_paths`` runs like a network."""
    path = Path(ckpt).expanduser()
    if not path.is_file():
        return ckpt
    from nst_lightning.export.runtime import detect_format, load_runtime
    from nst_lightning.inference import resolve_device

    try:
        fmt = detect_format(path)
    except NSTError:
        return ckpt
    if fmt == "checkpoint" or (fmt == "onnx" and path.suffix.lower() != ".onnx"):  # a protobuf by its first byte
        return ckpt
    return load_runtime(path, device=resolve_device(device))
