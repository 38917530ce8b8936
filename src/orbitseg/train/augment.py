"""Batch-wise augmentation for orbital CT sequences, on torch tensors.

``augment(x, target, g, params)`` with ``x: (B, T, 1, S, S)`` windowed slices and
``target: (B, C, S, S)`` soft fractions.  Per sequence, one draw is applied
identically to all ``T`` slices and to the target:

* small rotation (``±rotate`` degrees) and isotropic scaling (``scale`` range)
  through ``affine_grid`` / ``grid_sample`` - bilinear for the image AND the soft
  target, border padding, so fractions stay a partition of unity and image and
  target stay aligned (they are resampled on one grid with one interpolation);
* left-right flip (last axis) with probability ``flip``: a mirrored right orbit is
  a plausible left orbit, and the labels keep their anatomy (eyeball stays
  eyeball), so the target is just flipped with the image;
* image only: intensity scale and shift (in windowed [0, 1] units) and Gaussian
  noise with a random standard deviation up to ``noise``.

All randomness comes from the ``torch.Generator`` passed in (on the CPU; the
drawn parameters are moved to the data's device), so a batch's augmentation is a
pure function of the generator's state.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

__all__ = ["AugmentParams", "augment", "affine_matrices"]


@dataclass(frozen=True)
class AugmentParams:
    rotate: float = 10.0  # degrees, uniform in [-rotate, rotate]
    scale: tuple[float, float] = (0.9, 1.1)
    flip: float = 0.5  # probability of a left-right flip
    intensity_scale: tuple[float, float] = (0.9, 1.1)
    intensity_shift: float = 0.05  # uniform in [-shift, shift], windowed units
    noise: float = 0.03  # Gaussian noise sd uniform in [0, noise]
    p_affine: float = 1.0  # probability that a sequence is rotated/scaled at all

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def none(cls) -> AugmentParams:
        return cls(rotate=0.0, scale=(1.0, 1.0), flip=0.0, intensity_scale=(1.0, 1.0), intensity_shift=0.0,
                   noise=0.0, p_affine=0.0)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def affine_matrices(n: int, params: AugmentParams, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, 2, 3)`` float32 sampling matrices (output -> input coordinates) and an ``(n,)``
    bool mask of the sequences that are transformed at all."""
    angle = _uniform(n, -params.rotate, params.rotate, g) * (math.pi / 180.0)
    zoom = _uniform(n, params.scale[0], params.scale[1], g)
    use = torch.rand(n, generator=g, dtype=torch.float64) < params.p_affine
    angle = torch.where(use, angle, torch.zeros_like(angle))
    zoom = torch.where(use, zoom, torch.ones_like(zoom))
    # zoom > 1 enlarges the content: sample the input at coordinates / zoom
    c, s = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = c, -s, s, c
    return theta.float(), use & ((angle != 0) | (zoom != 1))


def augment(x: torch.Tensor, target: torch.Tensor, g: torch.Generator,
            params: AugmentParams = AugmentParams()) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch (see module docstring); returns new tensors."""
    if x.dim() != 5 or target.dim() != 4 or x.shape[0] != target.shape[0] or x.shape[-2:] != target.shape[-2:]:
        raise ValueError(f"expected x (B, T, C, H, W) and target (B, K, H, W), got {tuple(x.shape)}, "
                         f"{tuple(target.shape)}")
    b, t, c, h, w = x.shape
    dev = x.device
    theta, moved = affine_matrices(b, params, g)
    flip = torch.rand(b, generator=g) < params.flip
    iscale = _uniform(b, *params.intensity_scale, g).float()
    ishift = _uniform(b, -params.intensity_shift, params.intensity_shift, g).float()
    sd = _uniform(b, 0.0, params.noise, g).float()
    noise = torch.randn(x.shape, generator=g) if params.noise > 0 else None

    x = x.reshape(b, t * c, h, w)
    if bool(moved.any()):
        grid = F.affine_grid(theta.to(dev), [b, 1, h, w], align_corners=False)
        both = torch.cat([x, target], dim=1)
        warped = F.grid_sample(both, grid, mode="bilinear", padding_mode="border", align_corners=False)
        m = moved.to(dev)[:, None, None, None]
        both = torch.where(m, warped, both)
        x, target = both[:, :t * c], both[:, t * c:]
    if bool(flip.any()):
        f = flip.to(dev)[:, None, None, None]
        x = torch.where(f, x.flip(-1), x)
        target = torch.where(f, target.flip(-1), target)
    x = x * iscale.to(dev)[:, None, None, None] + ishift.to(dev)[:, None, None, None]
    if noise is not None:
        x = x + noise.to(dev).reshape(b, t * c, h, w) * sd.to(dev)[:, None, None, None]
    return x.reshape(b, t, c, h, w), target
