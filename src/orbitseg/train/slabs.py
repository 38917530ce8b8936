"""Thick slices made from thin ones: a training item seen as a 3-5.5 mm scan would show it.

Clinical head CTs are often reconstructed in 4-5 mm slices, while the scans users label (and most of a
synthetic cohort) are thin.  A thick slice is, to a good approximation, a weighted mean of the thin slices it
covers: its *slice profile*, a box as wide as the slice whose edges a real reconstruction softens into tails
(helical interpolation, or a 4-5 mm slab averaged from 2-2.5 mm reconstructions).  :func:`thick_item` turns one
training item of a thin VOI into the item a thick scan of the same anatomy would give:

* the image: ``seq_len`` consecutive thick slices, each the mean of the thin slices under a box of ``k`` of them
  convolved with a Gaussian (the tails), the centre slab holding the item's own slice at a random phase;
* the target: the centre slab's label fractions averaged over its ``k`` thin slices (a box: what of the slab's
  volume each structure fills, whose arg-max is the thin slices' majority, the truth the robustness bench
  scores thick slices against).

It works on the stored windowed slices: exact where the window does not clip (fat, muscle, nerve, globe: the
tissues the network labels), softer than a real thick slice at bone and air edges, where a real slab's mean of
clipped values would clip too.  Like the nnU-Net low-resolution augmentation, it is a simulation, not a render.

All randomness comes from the ``numpy.random.Generator`` passed in (the loop seeds one per item from
``(seed, epoch)``), so a resumed epoch makes the same slabs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["SlabParams", "profile_weights", "thick_item"]

#: a Gaussian's full width at half maximum over its standard deviation
_FWHM_PER_SD = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True)
class SlabParams:
    """How the training loop thickens items (``train --thick-slabs P``).

    Attributes
    ----------
    p : probability that an item of a thin enough VOI is made thick (0: never, the default)
    mm : range of the simulated slice thickness (mm), uniform
    tail : range of the tails' FWHM as a fraction of the simulated thickness, uniform (0: a plain box)
    """

    p: float = 0.0
    mm: tuple[float, float] = (3.0, 5.5)
    tail: tuple[float, float] = (0.0, 0.6)

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {self.p}")
        if not 0.0 < self.mm[0] <= self.mm[1]:
            raise ValueError(f"mm must be an increasing pair of positive thicknesses, got {self.mm}")
        if not 0.0 <= self.tail[0] <= self.tail[1]:
            raise ValueError(f"tail must be an increasing pair of fractions >= 0, got {self.tail}")

    def to_dict(self) -> dict:
        return asdict(self)


def profile_weights(k: int, tail_sd: float) -> tuple[np.ndarray, int]:
    """Weights of the thin slices a thick slice of ``k`` thin ones takes in: a box of ``k`` convolved with a
    Gaussian of standard deviation ``tail_sd`` (thin slices).

    Returns
    -------
    weights : ``(k + 2 r,)`` float64 summing to 1, ``r = ceil(3 tail_sd)`` (``(k,)`` equal weights when
        ``tail_sd`` is 0)
    first : offset of ``weights[0]`` from the box's first slice (``-r``)
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if tail_sd < 0:
        raise ValueError(f"tail_sd must be >= 0, got {tail_sd}")
    box = np.ones(k, dtype=np.float64)
    r = int(math.ceil(3.0 * tail_sd))
    if r == 0:
        return box / k, 0
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / tail_sd) ** 2)
    w = np.convolve(box, g / g.sum())
    return w / w.sum(), -r


def thick_item(image: np.ndarray, fractions: np.ndarray, centre: int, seq_len: int, slice_mm: float,
               rng: np.random.Generator, params: SlabParams) -> tuple[np.ndarray, np.ndarray] | None:
    """The item centred on thin slice ``centre`` as a thick-slice scan would give it, or None when the VOI's
    slices are too thick for the drawn thickness to hold two of them.

    Parameters
    ----------
    image : ``(n, S, S)`` windowed thin slices (any float or memory-mapped array)
    fractions : ``(n, 3, S, S)`` uint8 label fractions of labels 1..3 in 1/255 steps
    centre : the item's thin slice, ``0 <= centre < n``
    seq_len : odd number of thick slices in the sequence (the centre one is the target)
    slice_mm : the thin slices' spacing along z (mm)
    rng : draws the thickness, the tails and the phase
    params : the ranges (:class:`SlabParams`)

    Returns
    -------
    x : ``(seq_len, S, S)`` float32 thick slices, edges replicated as :func:`sequence_indices` does
    target : ``(3, S, S)`` float32 fractions (0-1) of labels 1..3 in the centre slab
    """
    n = image.shape[0]
    if not 0 <= centre < n:
        raise ValueError(f"centre must lie in [0, {n}), got {centre}")
    thickness = rng.uniform(*params.mm)
    tail = rng.uniform(*params.tail)
    k = int(round(thickness / slice_mm))
    if k < 2:
        return None
    weights, first = profile_weights(k, tail * k / _FWHM_PER_SD)
    start = centre - int(rng.integers(k))  # the centre slice's place in its slab
    half = seq_len // 2
    starts = start + k * np.arange(-half, half + 1)
    x = np.empty((seq_len, *image.shape[1:]), dtype=np.float32)
    for j, s in enumerate(starts):
        idx = np.clip(s + first + np.arange(len(weights)), 0, n - 1)
        x[j] = np.tensordot(weights, np.asarray(image[idx], dtype=np.float64), axes=1)
    box = np.clip(start + np.arange(k), 0, n - 1)
    target = np.asarray(fractions[box], dtype=np.float32).mean(axis=0) / np.float32(255.0)
    return x, target
