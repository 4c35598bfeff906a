"""Video as a file kind of the library: streamed decode → stylize → encode, with the options of a photo.

Frames are decoded, stylized and encoded one at a time (PyAV, which bundles FFmpeg), so memory does not grow
with the clip's length; the frame rate is kept and audio packets are copied unchanged. The encoder runs in a
thread of its own behind a short queue, so it works while the network stylizes the next frame. Every frame goes
through :func:`~nst_lightning.inference.stylize.stylize` with the same :class:`StylizeOptions` as a photo (its
``runtime`` and ``quality`` included: the network is converted once, before the first frame); ``max_size``
shrinks the decoded frames before anything else (so the temporal blend, the network and the encoder all see
the output's size), and ``consistency`` / ``temporal_weight`` / ``flow_size`` choose the blend of
:mod:`.temporal`. :class:`VideoReport` says how long each stage took.

Frames here are float tensors 1×3×H×W in [0, 1] (what stylize callables take) or H×W×3 uint8 arrays (what the
codec gives).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from nst_lightning.errors import BadValue, NotFound, Unreadable, UnsupportedFormat
from nst_lightning.image import fit_size
from nst_lightning.inference.options import CONSISTENCY, StylizeOptions
from nst_lightning.inference.stylize import ModelLike, build_options, stylize, stylize_runner
from nst_lightning.inference.temporal import TEMPORAL_WEIGHT, TemporalBlender

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
VIDEO_CODEC = "libx264"
VIDEO_CRF = "18"
ENCODE_QUEUE = 4  # stylized frames waiting for the encoder thread at most

FrameFn = Callable[[torch.Tensor], torch.Tensor]


def is_video(path: str | Path) -> bool:
    """Whether ``path`` names a video by its suffix."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def plan_video_output(src: Path, output: Path) -> Path:
    """Where the stylized ``src`` video goes: ``output`` if it names a video file, else ``output/<src name>``.

    Raises:
        UnsupportedFormat: ``output`` has a suffix that is not a video's (an image name for a video input).
    """
    if is_video(output):
        return output
    if output.suffix and not output.is_dir():
        raise UnsupportedFormat(
            f"the output of a video must be a video file ({', '.join(VIDEO_SUFFIXES)}) or a folder, got {output}"
        )
    return output / src.name


STAGES = ("decode", "network", "flow", "blend", "encode")


@dataclass
class VideoReport:
    """What :func:`stylize_video` did: frames written, their rate, whether audio was copied, and the time
    (``stages``: seconds spent in each of :data:`STAGES`, the encoder's in its own thread, overlapping the
    others; ``runtime``: what ran the network)."""

    frames: int
    rate: Fraction
    audio: bool
    seconds: float
    width: int = 0
    height: int = 0
    stages: dict[str, float] = field(default_factory=dict)
    runtime: str = "eager"

    @property
    def seconds_per_frame(self) -> float:
        return self.seconds / max(self.frames, 1)

    @property
    def fps(self) -> float:
        return self.frames / max(self.seconds, 1e-9)

    def stage_summary(self) -> str:
        """``decode 3 ms, network 250 ms, ...`` per frame."""
        n = max(self.frames, 1)
        return ", ".join(f"{k} {1000 * v / n:.0f} ms" for k, v in self.stages.items())


def to_tensor(frame: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 → float 1×3×H×W in [0, 1]."""
    frame = frame if frame.flags.writeable else frame.copy()  # a decoder's buffer may be read-only
    return torch.from_numpy(frame).permute(2, 0, 1).unsqueeze(0).float().div_(255)


def to_array(image: torch.Tensor) -> np.ndarray:
    """float 1×3×H×W (or 3×H×W) in [0, 1] → H×W×3 uint8."""
    return image.reshape(3, *image.shape[-2:]).clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def stylize_frames(
    frames: Iterator[np.ndarray],
    stylize_frame: FrameFn,
    consistency: str = "flow",
    weight: float | None = None,
    flow_size: int | None = None,
    seconds: dict[str, float] | None = None,
) -> Iterator[np.ndarray]:
    """Stylize a stream of H×W×3 uint8 frames (lazily, one at a time) with ``stylize_frame`` and ``consistency``
    (``flow``: blended by :class:`~.temporal.TemporalBlender` with ``weight``, default ``TEMPORAL_WEIGHT``, its
    flow computed at ``flow_size``). ``seconds``, if given, accumulates ``network``, ``flow`` and ``blend``."""
    if consistency not in CONSISTENCY:
        raise BadValue(f"unknown consistency {consistency!r}; use one of {', '.join(CONSISTENCY)}")
    blender = None
    if consistency == "flow":
        blender = TemporalBlender(TEMPORAL_WEIGHT if weight is None else weight, flow_size=flow_size)
    seconds = seconds if seconds is not None else {}
    for frame in frames:
        start = time.perf_counter()
        styled = to_array(stylize_frame(to_tensor(frame)))
        seconds["network"] = seconds.get("network", 0.0) + time.perf_counter() - start
        if blender is None:
            yield styled
            continue
        out = blender(frame, styled)
        seconds.update(blender.seconds)
        yield out


def _open(path: Path):
    import av

    if not path.is_file():
        raise NotFound(f"video not found: {path}")
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise Unreadable(
            f"cannot read {path} as a video ({exc}); use a file FFmpeg can decode (.mp4, .mov, ...)"
        ) from exc
    if not container.streams.video:
        container.close()
        raise Unreadable(f"{path} has no video stream")
    return container


def output_size(width: int, height: int, max_size: int | None) -> tuple[int, int]:
    """The (width, height) of the stylized video: the frame shrunk by ``max_size`` (as a photo), then cropped to
    even sides (H.264 needs them)."""
    width, height = fit_size(width, height, max_size)
    return max(2, width // 2 * 2), max(2, height // 2 * 2)


@torch.inference_mode()
def stylize_video(
    src: str | Path,
    dst: str | Path,
    model: ModelLike,
    options: StylizeOptions | None = None,
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
    **option_kwargs: Any,
) -> VideoReport:
    """Stylize the video ``src`` into ``dst`` frame by frame, streamed, keeping its frame rate and audio.

    Args:
        src: any video FFmpeg decodes.
        dst: output file; its suffix picks the container (``.mp4``, ``.mkv``, ``.mov``).
        model: anything :func:`~nst_lightning.inference.stylize.stylize` takes (a checkpoint, a shipped name, a
            network, a zero-shot model, a callable 1×3×H×W → 1×3×H×W).
        options: every :class:`StylizeOptions` field applies as for a photo; the output's size is
            :func:`output_size` (``max_size``, then even sides). ``option_kwargs``: fields on top of it.
        device: where to load a model given by name or path.
        progress: show a progress bar.

    Raises:
        NSTError: a bad option (:class:`BadValue`), a missing or unreadable video, an output that is no video.
    """
    import av
    from tqdm import tqdm

    options = build_options(options, **option_kwargs)
    src, dst = Path(src), Path(dst)
    if not is_video(dst):
        raise UnsupportedFormat(f"the output of a video must be a video file ({', '.join(VIDEO_SUFFIXES)}), got {dst}")
    runner = stylize_runner(model, options, device)
    # frames are shrunk once, when decoded; the runner has the style bound
    per_frame = options.replace(max_size=None, style=None, style_mix=None)
    stages = dict.fromkeys(STAGES, 0.0)
    start = time.perf_counter()
    dst.parent.mkdir(parents=True, exist_ok=True)
    inp = _open(src)
    try:
        v_in = inp.streams.video[0]
        a_in = inp.streams.audio[0] if inp.streams.audio else None
        rate = v_in.average_rate or v_in.guessed_rate or Fraction(25)
        width, height = output_size(v_in.codec_context.width, v_in.codec_context.height, options.max_size)
        with av.open(str(dst), "w") as out:
            v_out = out.add_stream(VIDEO_CODEC, rate=rate, options={"crf": VIDEO_CRF})
            v_out.width, v_out.height, v_out.pix_fmt = width, height, "yuv420p"
            a_out = out.add_stream_from_template(a_in) if a_in is not None else None
            streams = [v_in] + ([a_in] if a_in is not None else [])
            lock = threading.Lock()  # the encoder thread and the audio copy share the output container
            frames = _timed(_decoded_frames(inp, streams, a_in, a_out, out, options.max_size, (width, height), lock),
                            stages, "decode")  # fmt: skip
            styled_frames = stylize_frames(frames, lambda x: stylize(x, runner, per_frame), options.consistency,
                                           options.temporal_weight, options.flow_size, stages)  # fmt: skip
            with tqdm(total=v_in.frames or None, unit="frame", disable=not progress, desc=src.name) as bar:
                count = _encode(styled_frames, out, v_out, rate, bar.update, stages, lock)
    finally:
        inp.close()
    seconds = time.perf_counter() - start
    return VideoReport(count, Fraction(rate), a_in is not None, seconds, width, height, stages, runner.runtime)


def _timed(items: Iterator[np.ndarray], seconds: dict[str, float], stage: str) -> Iterator[np.ndarray]:
    """``items`` as they come, the time spent producing them added to ``seconds[stage]``."""
    while True:
        start = time.perf_counter()
        try:
            item = next(items)
        except StopIteration:
            return
        finally:
            seconds[stage] += time.perf_counter() - start
        yield item


def _encode(
    frames: Iterator[np.ndarray], out, v_out, rate: Fraction, tick, seconds: dict[str, float], lock: threading.Lock
) -> int:  # fmt: skip
    """Encode H×W×3 uint8 ``frames`` into the stream ``v_out`` of ``out`` (then flush it); returns the count and
    adds the encoder's time to ``seconds["encode"]``.

    The encoder runs in a thread of its own, fed through a short queue, so that it works while the network
    stylizes the next frame (PyAV releases the GIL while it encodes); ``lock`` guards ``out``, into which the
    decoding side copies audio packets."""
    pending: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=ENCODE_QUEUE)
    failures: list[BaseException] = []
    worker = threading.Thread(target=_encoder, args=(pending, out, v_out, rate, seconds, lock, failures),
                              name="video-encoder", daemon=True)  # fmt: skip
    worker.start()
    count = 0
    try:
        for styled in frames:
            if failures:
                break
            pending.put(styled)
            count += 1
            tick(1)
    finally:
        pending.put(None)
        worker.join()
    if failures:
        raise failures[0]
    return count


def _encoder(pending: queue.Queue, out, v_out, rate: Fraction, seconds: dict[str, float], lock: threading.Lock,
             failures: list[BaseException]) -> None:  # fmt: skip
    """The encoding thread of :func:`_encode`: frames from ``pending`` until ``None``, then the flush. After a
    failure (kept in ``failures``) it only drains the queue, so that the producer never blocks."""
    import av

    index = 0
    while (styled := pending.get()) is not None:
        if failures:
            continue
        try:
            start = time.perf_counter()
            frame = av.VideoFrame.from_ndarray(styled, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1) / rate
            packets = v_out.encode(frame)
            with lock:
                out.mux(packets)
            seconds["encode"] += time.perf_counter() - start
            index += 1
        except Exception as exc:
            failures.append(exc)
    if failures:
        return
    try:
        start = time.perf_counter()
        packets = v_out.encode(None)
        with lock:
            out.mux(packets)
        seconds["encode"] += time.perf_counter() - start
    except Exception as exc:
        failures.append(exc)


def _decoded_frames(
    inp, streams, a_in, a_out, out, max_size: int | None, size: tuple[int, int], lock: threading.Lock
) -> Iterator[np.ndarray]:
    """Demux ``inp``: audio packets are copied to ``out`` (under ``lock``) as they come; video frames are yielded
    as H×W×3 uint8, shrunk by ``max_size`` (Lanczos, as a photo) and cropped to ``size`` (w, h)."""
    width, height = size
    for packet in inp.demux(*streams):
        if a_in is not None and packet.stream is a_in:
            if packet.dts is not None:
                packet.stream = a_out
                with lock:
                    out.mux(packet)
            continue
        for frame in packet.decode():
            pixels = frame.to_ndarray(format="rgb24")
            shrunk = fit_size(pixels.shape[1], pixels.shape[0], max_size)
            if shrunk != (pixels.shape[1], pixels.shape[0]):
                pixels = np.asarray(Image.fromarray(pixels).resize(shrunk, Image.Resampling.LANCZOS))
            yield np.ascontiguousarray(pixels[:height, :width])


def write_video(path: str | Path, frames: list[np.ndarray], rate: int = 10, audio_seconds: float = 0.0) -> Path:
    """Write H×W×3 uint8 ``frames`` as an H.264 video at ``rate`` fps, with a sine tone (AAC) of ``audio_seconds``.

    Used to build test and benchmark clips.
    """
    import av

    path = Path(path)
    with av.open(str(path), "w") as out:
        v = out.add_stream(VIDEO_CODEC, rate=rate, options={"crf": VIDEO_CRF})
        v.height, v.width = frames[0].shape[:2]
        v.pix_fmt = "yuv420p"
        a = out.add_stream("aac", rate=44100) if audio_seconds > 0 else None
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, rate)
            out.mux(v.encode(vf))
        out.mux(v.encode(None))
        if a is not None:
            n = int(audio_seconds * 44100)
            tone = (0.2 * np.sin(2 * math.pi * 440 * np.arange(n) / 44100)).astype(np.float32)[None, :]
            af = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            af.sample_rate, af.pts = 44100, 0
            out.mux(a.encode(af))
            out.mux(a.encode(None))
    return path


def probe(path: str | Path) -> dict:
    """Frame count, rate, size and whether there is audio: ``{"frames", "rate", "width", "height", "audio"}``."""
    with _open(Path(path)) as container:
        v = container.streams.video[0]
        frames = sum(1 for _ in container.decode(v))
        return {
            "frames": frames, "rate": v.average_rate, "width": v.codec_context.width,
            "height": v.codec_context.height, "audio": bool(container.streams.audio),
        }  # fmt: skip
