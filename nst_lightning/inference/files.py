"""Files and folders: stylize an image file, a video file or a folder tree of images, with one set of options."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nst_lightning.errors import NotFound, NSTError, TooLarge, UnsupportedFormat
from nst_lightning.image import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    check_output_suffix,
    list_images,
    open_image,
    save_pil,
)
from nst_lightning.inference.options import StylizeOptions
from nst_lightning.inference.stylize import ModelLike, build_options, stylize, stylize_runner
from nst_lightning.inference.video import is_video, plan_video_output, stylize_video

log = logging.getLogger(__name__)


def stylize_file(
    model: ModelLike,
    src: str | Path,
    dst: str | Path,
    options: StylizeOptions | None = None,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    device: str | torch.device | None = None,
    **option_kwargs: Any,
) -> Path:
    """Stylize one image file into ``dst`` (format from its suffix; alpha kept where the format can hold it).

    Images above ``max_pixels`` are refused before they are decoded. Output size = input size (after the
    optional ``max_size``). ``option_kwargs``: any :class:`StylizeOptions` field, on top of ``options``.
    """
    options = build_options(options, **option_kwargs)
    dst = Path(dst)
    check_output_suffix(dst)
    img = open_image(src, max_pixels, options.max_size)  # reduced-size decoding when the output is much smaller
    return save_pil(stylize(img, model, options, device=device), dst)


def plan_outputs(src: Path, output: Path, suffix: str | None = None) -> list[tuple[Path, Path]]:
    """(input, output) file pairs: a file maps to a file (or into a folder), a folder to a folder tree.

    For one input file, ``output`` is a file when it has an image suffix, a folder when it is an existing folder
    or has no suffix, and an error otherwise (``x.txt`` is never turned into a folder).
    """
    src, output = Path(src), Path(output)
    if not src.exists():
        raise NotFound(f"input not found: {src}")
    if suffix:
        suffix = suffix if suffix.startswith(".") else f".{suffix}"
        if suffix.lower() not in IMAGE_SUFFIXES:
            raise UnsupportedFormat(f"unsupported suffix={suffix}; use one of {', '.join(IMAGE_SUFFIXES)}")
    if src.is_file():
        if output.is_dir() or not output.suffix:
            dst = output / src.name
        elif output.suffix.lower() in IMAGE_SUFFIXES:
            dst = output
        else:
            raise UnsupportedFormat(
                f"unsupported output suffix {output.suffix!r} in output={output}; name an image file "
                f"({', '.join(IMAGE_SUFFIXES)}) or a folder (no suffix)"
            )
        return [(src, dst.with_suffix(suffix) if suffix else dst)]
    files = list_images(src, recursive=True)
    if not files:
        raise NotFound(f"no images found in folder {src}")
    if output.suffix.lower() in IMAGE_SUFFIXES or (output.exists() and not output.is_dir()):
        raise UnsupportedFormat(f"input {src} is a folder, so output must be a folder, not {output}")
    pairs = []
    for f in files:
        dst = output / f.relative_to(src)
        pairs.append((f, dst.with_suffix(suffix) if suffix else dst))
    return pairs


@dataclass
class StylizeReport:
    """What :func:`stylize_paths` did: the files written and, per failed input, why it was skipped."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        total = len(self.written) + len(self.failed)
        text = f"stylized {len(self.written)} of {total} image(s)"
        if self.failed:
            text += f"; {len(self.failed)} failed: " + "; ".join(f"{path}: {why}" for path, why in self.failed)
        return text


def stylize_paths(
    model: ModelLike,
    src: str | Path,
    dst: str | Path,
    options: StylizeOptions | None = None,
    *,
    suffix: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    device: str | torch.device | None = None,
    progress: bool = False,
    **option_kwargs: Any,
) -> StylizeReport:
    """Stylize an image file, a video file (by its suffix) or a folder tree of images with one set of options.

    See :func:`plan_outputs` for where outputs go. The model is loaded once. For one input file any error is
    raised; in a folder, a file that cannot be read, is too large (``max_pixels``) or runs out of memory is
    reported, skipped, and the others are processed. A video is stylized frame by frame with every option
    (``max_size`` sets the output video's size; ``consistency`` and ``temporal_weight`` apply only to videos).

    Raises:
        NSTError: bad options, a missing input, an unusable model, or (one input file) that file's problem.
    """
    options = build_options(options, **option_kwargs)  # a bad value fails before any file is read
    if is_video(src):
        out = plan_video_output(Path(src), Path(dst))
        video = stylize_video(src, out, model, options, device=device, progress=progress)
        log.info("wrote %s: %d frames at %s fps (audio %s) in %.1f s (%.2f s/frame, %.1f frames/s; runtime %s; per "
                 "frame: %s)", out, video.frames, video.rate, "copied" if video.audio else "none", video.seconds,
                 video.seconds_per_frame, video.fps, video.runtime, video.stage_summary())  # fmt: skip
        return StylizeReport(written=[out])
    pairs = plan_outputs(Path(src), Path(dst), suffix)
    runner = stylize_runner(model, options, device)
    single = Path(src).is_file()
    report = StylizeReport()
    for path, out in _progress(pairs, progress and len(pairs) > 1):
        try:
            try:
                report.written.append(stylize_file(runner, path, out, options, max_pixels=max_pixels))
            except (MemoryError, torch.OutOfMemoryError) as exc:
                raise TooLarge(f"out of memory on {path}; set a smaller tile_size or max_size") from exc
        except NSTError as exc:
            if single:
                raise
            report.failed.append((path, str(exc)))
            log.warning("skipped %s: %s", path, exc)
    log.info(report.summary())
    return report


def _progress(items: list, enabled: bool) -> Iterable:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc="stylize", unit="img")
