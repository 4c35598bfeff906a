"""Per-image optimisation (Gatys et al. 2016) over the same :class:`PerceptualLoss` that training uses.

No Lightning and no second copy of the loss: the image is the only parameter, the loss module supplies the
VGG network, the style's target Grams, the layer weights and the pure loss functions. One thing differs from
``PerceptualLoss.forward``: the content image's features are computed once per scale (they never change),
so each iteration is exactly one VGG forward + backward of the generated image, with no content pass.
:func:`objective_terms` is checked against ``PerceptualLoss.forward`` in the tests.

Shapes: images are 1×3×H×W fp32 RGB in [0, 1]; features are 1×C×h×w; Grams are 1×C×C.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from nst_lightning.errors import BadValue, NSTError
from nst_lightning.image import resize_tensor
from nst_lightning.losses.perceptual import PerceptualLoss
from nst_lightning.training.allocator import use_allocator
from nst_lightning.training.precision import AUTO, resolve_precision, warn_if_emulated

OPTIMIZERS = ("lbfgs", "adam")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LINE_SEARCHES = (None, "strong_wolfe")
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.05}

Terms = dict[str, torch.Tensor]
ImageCallback = Callable[[int, torch.Tensor], None]


@dataclass(frozen=True)
class OptimizeSettings:
    """How one image is optimised.

    Attributes:
        optimizer: ``lbfgs`` (default) or ``adam``.
        lr: step size; None = 1.0 for L-BFGS (its usual unit step) and 0.05 for Adam (pixels in [0, 1]).
        history_size: L-BFGS memory (curvature pairs kept).
        line_search: None (fixed unit step, one loss evaluation per iteration) or ``strong_wolfe``.
        precision: ``auto`` (bf16 autocast where the hardware has bf16 arithmetic, fp32 elsewhere: the machine
            rule of training, see :func:`machine_choice`), ``fp32``, ``bf16`` or ``fp16``. Only the VGG
            convolutions run in reduced precision; the image, the loss terms and the optimizer stay fp32.
        channels_last: run VGG in channels-last memory format (the image parameter itself stays NCHW).
            None = the machine rule's choice (with bf16, not in fp32).
        log_every: refresh the loss terms shown in the progress bar every this many iterations (each refresh
            is a host-device sync).
        seed: seed of the noise initialisation.
    """

    optimizer: str = "lbfgs"
    lr: float | None = None
    history_size: int = 100
    line_search: str | None = None
    precision: str = "auto"
    channels_last: bool | None = None
    log_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise BadValue(f"unknown optimizer {self.optimizer!r}; use one of {list(OPTIMIZERS)}")
        if self.precision not in PRECISIONS:
            raise BadValue(f"unknown precision {self.precision!r}; use one of {list(PRECISIONS)}")
        if self.line_search not in LINE_SEARCHES:
            raise BadValue(f"unknown line_search {self.line_search!r}; use null or strong_wolfe")
        if self.log_every < 1 or self.history_size < 1:
            raise BadValue("log_every and history_size must be at least 1")

    @property
    def step_size(self) -> float:
        return float(self.lr) if self.lr is not None else DEFAULT_LR[self.optimizer]


_LIGHTNING_NAMES = {"auto": AUTO, "fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}


def machine_choice(precision: str, channels_last: bool | None, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """The VGG pass's reduced-precision dtype (None: fp32) and memory format, by the machine rule training uses
    (:func:`~nst_lightning.training.precision.resolve_precision`): ``auto`` is bf16 where the hardware has bf16
    arithmetic (CUDA with bf16, CPUs with AMX or AVX-512 BF16), fp32 elsewhere; channels-last goes with bf16."""
    choice = resolve_precision(
        _LIGHTNING_NAMES[precision], device.type, AUTO if channels_last is None else channels_last
    )
    warn_if_emulated(choice)
    use_allocator(choice.allocator)  # L-BFGS re-allocates the same VGG activations every iteration too
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(choice.precision)
    return dtype, choice.channels_last


@contextlib.contextmanager
def _maybe_autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield


def prepare_loss(loss: PerceptualLoss, channels_last: bool) -> PerceptualLoss:
    """Freeze the loss network and set its weights' memory format (in place; returns ``loss``)."""
    loss.eval().requires_grad_(False)
    loss.vgg.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return loss


def _vgg_input(image: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """The 1×3×H×W image in the layout VGG runs in (a copy for channels-last; autograd maps it back)."""
    return image.contiguous(memory_format=torch.channels_last) if channels_last else image


def content_features(
    loss: PerceptualLoss, content: torch.Tensor, channels_last: bool = False, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Features ``{layer: 1×C×h×w}`` of the 1×3×H×W content image at the loss's content layers."""
    with _maybe_autocast(content.device, dtype):
        return loss.content_targets(_vgg_input(content, channels_last))


def objective_terms(
    loss: PerceptualLoss,
    image: torch.Tensor,
    content_feats: dict[str, torch.Tensor],
    channels_last: bool = False,
    dtype: torch.dtype | None = None,
) -> Terms:
    """The loss's weighted terms ``{"content", "style", "tv", "objective"}`` for a 1×3×H×W image against
    precomputed content features: one VGG pass over the generated image only."""
    with _maybe_autocast(image.device, dtype):
        return loss(_vgg_input(image, channels_last), content_targets=content_feats)


def initial_image(init: str, content: torch.Tensor, seed: int = 0, image: torch.Tensor | None = None) -> torch.Tensor:
    """Starting point (1×3×H×W, fp32, on the content's device) of the optimisation.

    Args:
        init: ``content`` (copy of the content image), ``noise`` (uniform noise in [0, 1]) or ``image``.
        content: 1×3×H×W content image.
        seed: seed of the noise.
        image: 1×3×h×w image for ``init="image"``, resized to the content's size.
    """
    if init == "content":
        return content.detach().clone().float()
    if init == "noise":
        gen = torch.Generator().manual_seed(seed)
        return torch.rand(content.shape, generator=gen).to(content.device)
    if init == "image":
        if image is None:
            raise NSTError("init=image needs an initial image")
        return resize_tensor(image.float().to(content.device), tuple(content.shape[-2:]))
    raise NSTError(f"unknown init {init!r}; use content, noise or the path of an image")


@dataclass
class ImageOptimization:
    """Optimisation state of one image at one size: the image parameter, the optimizer and counters.

    ``run(n)`` performs ``n`` more loss evaluations (one evaluation = one VGG forward and backward; for
    L-BFGS without line search that is one iteration: one evaluation and one update). L-BFGS runs them
    inside a single ``step()`` call (``max_iter = n``), so Python round trips per iteration are minimal; its
    state carries over between ``run`` calls, so ``run(10)`` ten times follows the same path as ``run(100)``.

    Attributes:
        image: 1×3×H×W fp32 parameter (NCHW-contiguous: L-BFGS flattens its gradient with ``view``).
        evaluations: loss evaluations done so far.
        terms: detached loss terms of the latest evaluation (device tensors, read them sparingly).
        converged: L-BFGS stopped before using its evaluations (gradient or loss change below tolerance).
    """

    loss: PerceptualLoss
    content: torch.Tensor
    init: torch.Tensor
    settings: OptimizeSettings = field(default_factory=OptimizeSettings)
    on_evaluation: Callable[[int], None] | None = None
    evaluations: int = 0
    converged: bool = False

    def __post_init__(self) -> None:
        device = self.content.device
        self.dtype, self.channels_last = machine_choice(self.settings.precision, self.settings.channels_last, device)
        prepare_loss(self.loss, self.channels_last)
        self.content_feats = content_features(self.loss, self.content, self.channels_last, self.dtype)
        self.image = self.init.detach().float().contiguous().clone().requires_grad_(True)
        s = self.settings
        if s.optimizer == "lbfgs":
            self.optimizer: torch.optim.Optimizer = torch.optim.LBFGS(
                [self.image], lr=s.step_size, max_iter=1, history_size=s.history_size, line_search_fn=s.line_search
            )
        else:
            self.optimizer = torch.optim.Adam([self.image], lr=s.step_size)
        self.terms: Terms = {}

    def _terms(self) -> Terms:
        # The loss sees the pixels that will be saved, clamped to [0, 1]: L-BFGS knows no bounds, and without
        # the clamp it lowers the objective with out-of-range values that the saved image then loses.
        pixels = self.image.clamp(0, 1)
        return objective_terms(self.loss, pixels, self.content_feats, self.channels_last, self.dtype)

    def evaluate(self) -> Terms:
        """Loss terms at the current (clamped) image, without gradient."""
        with torch.no_grad():
            return self._terms()

    def _closure(self) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        terms = self._terms()
        terms["objective"].backward()
        self.terms = {k: v.detach() for k, v in terms.items()}
        self.evaluations += 1
        if self.on_evaluation is not None:
            self.on_evaluation(self.evaluations)
        return terms["objective"]

    def run(self, n: int) -> int:
        """Do up to ``n`` more loss evaluations; returns how many were done (fewer once L-BFGS converged)."""
        start = self.evaluations
        if n <= 0 or self.converged:
            return 0
        if isinstance(self.optimizer, torch.optim.LBFGS):
            group = self.optimizer.param_groups[0]
            group["max_iter"] = n
            # Without line search, n iterations take n evaluations, but torch stops once the count reaches
            # max_eval, before the n-th update: allow one more so that every evaluation is followed by a step.
            group["max_eval"] = n if self.settings.line_search else n + 1
            self.optimizer.step(self._closure)
            self.converged = self.evaluations - start < n
        else:
            for _ in range(n):
                self.optimizer.step(self._closure)
                with torch.no_grad():
                    self.image.clamp_(0, 1)  # projected gradient: keep pixels valid
        return self.evaluations - start

    def result(self) -> torch.Tensor:
        """The current image, detached and clamped to [0, 1] (1×3×H×W)."""
        return self.image.detach().clamp(0, 1)


def format_terms(terms: Terms) -> dict[str, str]:
    """Loss terms as short strings for a progress bar (one host-device sync)."""
    values = torch.stack([terms[k].float() for k in ("content", "style", "tv", "objective")]).tolist()
    return {k: f"{v:.4g}" for k, v in zip(("content", "style", "tv", "objective"), values, strict=True)}


@dataclass
class ScaleResult:
    """Outcome of one scale: the clamped 1×3×H×W image, evaluations done, seconds and final loss terms."""

    image: torch.Tensor
    evaluations: int
    seconds: float
    terms: dict[str, float]


def optimize_image(
    loss: PerceptualLoss,
    content: torch.Tensor,
    init: torch.Tensor,
    iterations: int,
    settings: OptimizeSettings | None = None,
    save_every: int = 0,
    on_image: ImageCallback | None = None,
    progress: bool = True,
    desc: str = "optimize",
) -> ScaleResult:
    """Optimise one image at the content's size for ``iterations`` loss evaluations.

    Args:
        loss: perceptual loss with style targets set (its VGG is switched to the chosen memory format).
        content: 1×3×H×W content image on the device to run on.
        init: 1×3×H×W starting image (see :func:`initial_image`).
        iterations: loss evaluations (L-BFGS iterations without line search, or Adam steps).
        settings: optimizer, precision, memory format, progress refresh.
        save_every: call ``on_image(iteration, image)`` every this many iterations (0 = never).
        on_image: receives the iteration count and a clamped 1×3×H×W copy of the image.
        progress: show a tqdm bar with the loss terms (refreshed every ``settings.log_every`` iterations).
    """
    from tqdm.auto import tqdm

    settings = settings or OptimizeSettings()
    if iterations < 1:
        raise NSTError(f"iterations must be at least 1, got {iterations}")
    bar = tqdm(total=iterations, desc=desc, unit="it", disable=not progress, dynamic_ncols=True)
    opt = ImageOptimization(loss, content, init, settings, on_evaluation=lambda _: bar.update(1))
    every = [e for e in (settings.log_every if progress else 0, save_every) if e > 0]
    start = time.perf_counter()
    while opt.evaluations < iterations and not opt.converged:
        chunk = min([iterations - opt.evaluations] + [e - opt.evaluations % e for e in every])
        opt.run(chunk)
        if progress and opt.terms:
            bar.set_postfix(format_terms(opt.terms), refresh=False)
        if save_every and on_image is not None and opt.evaluations % save_every == 0:
            on_image(opt.evaluations, opt.result())
    if content.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    bar.close()
    final = {k: float(v) for k, v in opt.evaluate().items()}
    return ScaleResult(opt.result(), opt.evaluations, seconds, final)


def optimize_multiscale(
    loss: PerceptualLoss,
    contents: Sequence[torch.Tensor],
    init: torch.Tensor,
    iterations: Sequence[int],
    settings: OptimizeSettings | None = None,
    save_every: int = 0,
    on_image: Callable[[int, int, torch.Tensor], None] | None = None,
    progress: bool = True,
) -> list[ScaleResult]:
    """Coarse-to-fine optimisation: optimise at each size in turn, starting from the previous result upsampled.

    Args:
        contents: the content image at each scale, 1×3×H_i×W_i, smallest first, on the device to run on.
        init: 1×3×H×W starting image for the first scale (resized to it).
        iterations: loss evaluations per scale (same length as ``contents``).
        on_image: receives (scale index, iteration, clamped 1×3×H_i×W_i image) every ``save_every`` iterations.

    Returns:
        One :class:`ScaleResult` per scale; the last one holds the final image.
    """
    if len(iterations) != len(contents):
        raise NSTError(f"got {len(iterations)} iteration counts for {len(contents)} sizes")
    results: list[ScaleResult] = []
    image = init
    for i, (content, n) in enumerate(zip(contents, iterations, strict=True)):
        h, w = content.shape[-2:]
        start = resize_tensor(image, (h, w)) if image.shape[-2:] != (h, w) else image
        callback = None if on_image is None else (lambda it, img, i=i: on_image(i, it, img))
        result = optimize_image(
            loss, content, start, n, settings, save_every, callback, progress, desc=f"{max(h, w)}px"
        )
        results.append(result)
        image = result.image
    return results
