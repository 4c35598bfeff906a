"""Temporal consistency and flicker for video: optical flow, warping, the blender and the flicker metric.

Temporal consistency (``consistency="flow"``): each stylized frame is blended with the previous *output*
warped to the current frame by dense optical flow (OpenCV Farneback on the input frames). Where the warp is
unreliable — occluded or newly visible pixels, whose warped previous input differs from the current input —
the blend falls back to the fresh stylized frame. With ``consistency="none"`` frames are stylized one by one.

Flicker is measured as the warped difference between consecutive stylized frames (:func:`warp_error`): on
clips made by panning and zooming a still photo (:func:`pan_zoom_clip`) the true motion is known exactly; on
other clips it comes from Farneback flow with the same occlusion mask.

Frames here are H×W×3 uint8 arrays (what the codec gives); flows are H×W×2 float32 arrays,
``flow[y, x] = (dx, dy)`` pointing from a pixel of the current frame to where it was in the previous one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from nst_lightning.errors import BadValue

TEMPORAL_WEIGHT = 0.7  # share of the warped previous output in each consistent frame (where the warp holds)
OCCLUSION_THRESHOLD = 0.06  # mean |warped previous input − current input| (0..1) above which a pixel is occluded

# --- optical flow, warping, consistency ---------------------------------------------------------------------


def _gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def farneback_flow(current: np.ndarray, previous: np.ndarray, size: int | None = None) -> np.ndarray:
    """Dense flow H×W×2 from the H×W×3 uint8 ``current`` frame back to ``previous`` (OpenCV Farneback).

    With ``size`` smaller than the frames' longest side the flow is computed on frames shrunk to it (area
    averaging) and resized back, its vectors scaled by the same factors: a quarter of the pixels at half size.
    """
    import cv2

    h, w = current.shape[:2]
    gray_now, gray_before = _gray(current), _gray(previous)
    scale = 1.0 if size is None or max(h, w) <= size else size / max(h, w)
    if scale < 1.0:
        small = (max(8, round(w * scale)), max(8, round(h * scale)))
        gray_now = cv2.resize(gray_now, small, interpolation=cv2.INTER_AREA)
        gray_before = cv2.resize(gray_before, small, interpolation=cv2.INTER_AREA)
    flow = cv2.calcOpticalFlowFarneback(
        gray_now, gray_before, None, pyr_scale=0.5, levels=4, winsize=21, iterations=3, poly_n=7, poly_sigma=1.5,
        flags=0,
    )  # fmt: skip
    if scale < 1.0:
        fh, fw = flow.shape[:2]
        flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
        flow[..., 0] *= w / fw
        flow[..., 1] *= h / fh
    return flow


def warp(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample H×W×C ``image`` (a previous frame) at ``x + flow(x)``: returns the warped image and the H×W mask
    of pixels whose source lies inside the image."""
    import cv2

    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x, map_y = grid_x + flow[..., 0], grid_y + flow[..., 1]
    warped = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    return warped, inside


def reliable_mask(current: np.ndarray, previous: np.ndarray, flow: np.ndarray, threshold: float) -> np.ndarray:
    """H×W float mask in [0, 1]: 1 where the flow explains the current input (colour-difference check), 0 at
    occlusions, disocclusions and where the source falls outside the previous frame."""
    import cv2

    warped, inside = warp(previous, flow)
    diff = np.abs(warped.astype(np.float32) - current.astype(np.float32)).mean(axis=2) / 255
    mask = ((diff < threshold) & inside).astype(np.float32)
    return cv2.GaussianBlur(cv2.erode(mask, np.ones((3, 3), np.uint8)), (5, 5), 0)


class TemporalBlender:
    """Blend each stylized frame with the previous output warped to it (state: the previous input and output).

    Args:
        weight: share of the warped previous output where the warp is reliable (0: frame by frame).
        threshold: occlusion threshold on the mean absolute colour difference (0..1).
        flow_size: compute the flow on frames shrunk to this longest side (None: full size; see
            :func:`farneback_flow`).

    ``seconds`` adds up the time spent in the flow and in the rest of the blend (``{"flow": s, "blend": s}``).
    """

    def __init__(
        self, weight: float = TEMPORAL_WEIGHT, threshold: float = OCCLUSION_THRESHOLD, flow_size: int | None = None
    ) -> None:
        if not 0.0 <= weight < 1.0:
            raise BadValue(f"temporal_weight must be in [0, 1), got {weight!r}")
        self.weight, self.threshold, self.flow_size = weight, threshold, flow_size
        self.previous_input: np.ndarray | None = None
        self.previous_output: np.ndarray | None = None
        self.seconds = {"flow": 0.0, "blend": 0.0}

    def __call__(self, content: np.ndarray, styled: np.ndarray) -> np.ndarray:
        """H×W×3 uint8 input frame and its H×W×3 uint8 stylization → the consistent H×W×3 uint8 output."""
        out = styled
        if self.previous_input is not None and self.weight > 0 and self.previous_input.shape == content.shape:
            start = time.perf_counter()
            flow = farneback_flow(content, self.previous_input, self.flow_size)
            flowed = time.perf_counter()
            mask = reliable_mask(content, self.previous_input, flow, self.threshold)[..., None] * self.weight
            warped, _ = warp(self.previous_output, flow)
            blended = mask * warped.astype(np.float32) + (1 - mask) * styled.astype(np.float32)
            out = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
            self.seconds["flow"] += flowed - start
            self.seconds["blend"] += time.perf_counter() - flowed
        self.previous_input, self.previous_output = content, out
        return out


# --- the flicker metric ---------------------------------------------------------------------------------------


def warp_error(current: np.ndarray, previous: np.ndarray, flow: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute difference (0..255) between ``current`` and ``previous`` warped to it, over ``mask``."""
    warped, _ = warp(previous.astype(np.float32), flow)
    diff = np.abs(current.astype(np.float32) - warped).mean(axis=2)
    weight = mask.astype(np.float32)
    return float((diff * weight).sum() / max(weight.sum(), 1.0))


def flicker(frames: list[np.ndarray], flows: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """Mean :func:`warp_error` over consecutive pairs: ``flows[i]``/``masks[i]`` map frame i+1 back to frame i."""
    errors = [warp_error(frames[i + 1], frames[i], flows[i], masks[i]) for i in range(len(frames) - 1)]
    return float(np.mean(errors)) if errors else 0.0


def estimated_motion(content: list[np.ndarray], threshold: float = OCCLUSION_THRESHOLD):
    """Farneback flows and occlusion masks between consecutive H×W×3 uint8 input frames (for :func:`flicker`)."""
    flows, masks = [], []
    for prev, cur in zip(content[:-1], content[1:], strict=True):
        flow = farneback_flow(cur, prev)
        flows.append(flow)
        masks.append(reliable_mask(cur, prev, flow, threshold) > 0.5)
    return flows, masks


@dataclass
class PanZoomClip:
    """A clip cut from a still photo by a moving, zooming window, with its exact motion.

    Attributes:
        frames: H×W×3 uint8 frames.
        flows: exact flow from frame i+1 back to frame i (H×W×2), one per consecutive pair.
        masks: pixels of frame i+1 whose source lies inside frame i.
    """

    frames: list[np.ndarray]
    flows: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)


def pan_zoom_clip(
    photo: np.ndarray, num_frames: int, size: tuple[int, int], pan: tuple[float, float] = (3.0, 1.0), zoom: float = 1.0
) -> PanZoomClip:
    """Cut ``num_frames`` frames of ``size`` (h, w) from an H×W×3 uint8 ``photo``.

    Frame i shows the window of ``size / zoom**i`` photo pixels whose top-left corner is ``i * pan`` (dx, dy)
    pixels from the start, resampled bilinearly. A pixel x of frame i+1 maps back to frame i at
    ``x / zoom + ((c_{i+1} − c_i) / s_i)`` where ``c`` are corners and ``s_i = 1 / zoom**i``: an exact, affine flow.
    """
    import cv2

    h, w = size
    frames, flows, masks = [], [], []
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    for i in range(num_frames):
        scale = zoom ** (-i)  # photo pixels per frame pixel
        cx, cy = i * pan[0], i * pan[1]
        mat = np.array([[scale, 0, cx], [0, scale, cy]], dtype=np.float32)  # frame → photo
        if cx + scale * w > photo.shape[1] or cy + scale * h > photo.shape[0]:
            raise BadValue("the photo is too small for this pan: use a larger photo or fewer frames")
        frames.append(cv2.warpAffine(photo, mat, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP))
        if i > 0:
            prev_scale, (px, py) = zoom ** (-(i - 1)), ((i - 1) * pan[0], (i - 1) * pan[1])
            src_x = (cx + scale * grid_x - px) / prev_scale
            src_y = (cy + scale * grid_y - py) / prev_scale
            flows.append(np.stack([src_x - grid_x, src_y - grid_y], axis=2))
            masks.append((src_x >= 0) & (src_x <= w - 1) & (src_y >= 0) & (src_y <= h - 1))
    return PanZoomClip(frames, flows, masks)
