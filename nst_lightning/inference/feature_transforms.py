"""The feature transforms of zero-shot style transfer (pure functions on C×H×W features, float64 statistics).

* ``adain`` (Huang & Belongie 2017): per channel, the content's mean and standard deviation become the style's.
* ``wct`` (Li et al. 2017, whitening–colouring): the content is whitened (covariance → identity) and coloured with
  the style's covariance, so channel correlations are matched too.

Both are affine per pixel once the content statistics are fixed (``A f + b``, :func:`affine_map`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nst_lightning.errors import NSTError

METHODS = ("wct", "adain")
EIGEN_FLOOR = 1e-5  # eigenvalues below this fraction of the largest are treated as this (rank-deficient covariances)


@dataclass(frozen=True)
class FeatureStats:
    """First and second order statistics of one image's C×H×W features (float64).

    Attributes:
        mean: C channel means.
        std: C channel standard deviations (biased).
        whiten: C×C matrix ``E D^-1/2 E^T`` of the covariance ``E D E^T`` (maps centred features to identity
            covariance).
        colour: C×C matrix ``E D^1/2 E^T`` (maps identity covariance to this covariance).
    """

    mean: torch.Tensor
    std: torch.Tensor
    whiten: torch.Tensor
    colour: torch.Tensor

    @property
    def covariance(self) -> torch.Tensor:
        """C×C covariance (``colour @ colour``)."""
        return self.colour @ self.colour


def feature_stats(features: torch.Tensor) -> FeatureStats:
    """Statistics of C×H×W (or 1×C×H×W) features; see :class:`FeatureStats`."""
    f = features.reshape(features.shape[-3], -1).double()  # C×N
    mean = f.mean(dim=1)
    centred = f - mean[:, None]
    cov = centred @ centred.T / max(f.shape[1], 1)
    evals, evecs = torch.linalg.eigh(cov)
    evals = evals.clamp_min(max(evals.max().item(), 1e-12) * EIGEN_FLOOR)
    whiten = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
    colour = evecs @ torch.diag(evals.sqrt()) @ evecs.T
    return FeatureStats(mean=mean, std=cov.diagonal().clamp_min(0).sqrt(), whiten=whiten, colour=colour)


def affine_map(method: str, content: FeatureStats, style: FeatureStats) -> tuple[torch.Tensor, torch.Tensor]:
    """The transform as ``f ↦ A f + b``: returns A (C×C) and b (C), float64.

    Args:
        method: ``wct`` (match mean and covariance) or ``adain`` (match per-channel mean and std).
        content: statistics of the features being transformed.
        style: statistics to impose.
    """
    if method == "wct":
        a = style.colour @ content.whiten
    elif method == "adain":
        a = torch.diag(style.std / content.std.clamp_min(1e-5))
    else:
        raise NSTError(f"unknown zero-shot method {method!r}; use one of {', '.join(METHODS)}")
    return a, style.mean - a @ content.mean


def transform(features: torch.Tensor, method: str, style: FeatureStats, content: FeatureStats | None = None):
    """Give 1×C×H×W (or C×H×W) ``features`` the ``style`` statistics by ``method`` (``wct`` / ``adain``).

    ``content``: the statistics to treat the features as having (default: their own). Passing statistics of a
    larger picture makes tiles of it, or frames of a video, transform alike.
    """
    a, b = affine_map(method, content or feature_stats(features), style)
    shape = features.shape
    f = features.reshape(shape[-3], -1)
    out = a.to(f.dtype) @ f + b.to(f.dtype)[:, None]
    return out.reshape(shape)


def adain(features: torch.Tensor, style: FeatureStats) -> torch.Tensor:
    """AdaIN: C×H×W features with the per-channel mean and std of ``style``."""
    return transform(features, "adain", style)


def wct(features: torch.Tensor, style: FeatureStats) -> torch.Tensor:
    """Whitening–colouring transform: C×H×W features with the mean and covariance of ``style``."""
    return transform(features, "wct", style)
