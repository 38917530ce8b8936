"""SmartFill and AutoCorrection on a slab of axial slices, as the labeling page asks for them.

The page sends a slab of ``nz`` consecutive canonical slices (``nz == 1``: the slice on
screen; more: a 3-D slab).  These functions take the slab as ``(nz, ny, nx)`` arrays and
decide what the tool runs on: a 2-D cut of the one slice, or a 3-D cut of the slab.
They hold the rules of the page's tools that :func:`~orbitseg.labeling.smart_fill` and
:func:`~orbitseg.labeling.auto_correct` leave to their caller (one fill per group of
strokes, growing from labels already drawn, working on the labels' bounding box).

Spacing is ``(sz, sy, sx)`` in mm, as everywhere in :mod:`orbitseg.labeling`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from ._common import check_labels, check_spacing
from .autocorrect import auto_correct
from .smartfill import smart_fill

__all__ = ["NoStrokesError", "NO_STROKES_MESSAGE", "MAX_STROKE_GROUPS", "AUTOCORRECT_MARGIN_MM",
           "smart_fill_slab", "auto_correct_slab"]

#: more separate groups of strokes than this are filled by one cut (a scribble, not a click per orbit)
MAX_STROKE_GROUPS: int = 8
#: AutoCorrection works on the labels' bounding box grown by this (mm, in y and x)
AUTOCORRECT_MARGIN_MM: float = 10.0
NO_STROKES_MESSAGE = ("SmartFill needs strokes or a few labelled pixels of the chosen structure on these slices: "
                      "draw a stroke (or a SmartPencil click) inside it first")


class NoStrokesError(ValueError):
    """SmartFill was given nothing to grow from (no stroke and no pixel of the chosen labels)."""


def _check_image(image) -> np.ndarray:
    """The slab as an array of 3 dimensions (its values are checked by the tool that uses them)."""
    img = np.asarray(image)
    if img.ndim != 3 or min(img.shape) < 1:
        raise ValueError(f"image must be a non-empty 3-D slab (nz, ny, nx), got shape {img.shape}")
    return img


def _check_slab(name: str, arr, shape: tuple[int, ...]) -> np.ndarray:
    a = np.asarray(arr)
    if a.shape != shape:
        raise ValueError(f"{name} shape {a.shape} does not match the image slab's shape {shape}")
    return a


def _check_prior(probabilities, shape: tuple[int, ...]) -> np.ndarray | None:
    if probabilities is None:
        return None
    p = np.asarray(probabilities)
    if p.ndim != 4 or p.shape[1:] != shape:
        raise ValueError(f"probabilities must have shape (4, {', '.join(map(str, shape))}), got {p.shape}")
    return p


def _check_inputs(image, mask, labels, spacing, probabilities):
    """The checked (image, mask, labels, spacing, prior) every slab tool starts from."""
    img = _check_image(image)
    return (img, _check_slab("mask", mask, img.shape), check_labels(labels), check_spacing(spacing, 3),
            _check_prior(probabilities, img.shape))


def smart_fill_slab(image, mask, strokes, *, spacing: Sequence[float], labels: Sequence[int],
                    probabilities=None) -> np.ndarray:
    """SmartFill of the page: fill ``labels`` on a slab from its strokes, one cut per group of strokes.

    * Strokes all zero: the pixels of ``labels`` already in ``mask`` are the strokes (the
      fill grows from what is drawn).
    * Separate groups of strokes (the connected parts of the marked pixels dilated twice by
      the 4-neighbour cross: two dots in one row 6 or more columns apart are two groups, 5 or
      fewer one; e.g. a click in each globe) are filled one after the other, each by a cut on
      its own ROI (``focus``), so each models its own orbit's intensities; more than
      ``MAX_STROKE_GROUPS`` groups are filled by one cut.  A group of background strokes alone
      far from any labelled pixel makes that cut fail (ValueError).
    * ``nz == 1``: a 2-D fill of the slice; else a 3-D fill of the slab.

    Parameters
    ----------
    image : (nz, ny, nx) array
        CT slab in HU (integer or float).
    mask : (nz, ny, nx) integer array
        Current labels 0..3; other structures than ``labels`` are kept.
    strokes : (nz, ny, nx) integer array
        0 unmarked, 1..3 label strokes, ``BACKGROUND_STROKE`` (255) background strokes.
    spacing : (sz, sy, sx)
        Voxel size in mm (``sz`` is not used when ``nz == 1``).
    labels : sequence of int
        Structures to fill (a subset of 1, 2, 3).
    probabilities : (4, nz, ny, nx) float array in [0, 1], optional
        A network's class probabilities (background, eyeball, muscles, nerve), used as prior.

    Returns
    -------
    (nz, ny, nx) uint8 array
        The new mask of the slab.

    Raises
    ------
    NoStrokesError
        (a ValueError) when there is no stroke of ``labels``, and not both a (background)
        stroke and a pixel of ``labels`` in ``mask`` to correct; its message says what to do.
    ValueError
        On inputs :func:`smart_fill` refuses (shapes, values, spacing).
    """
    img, mask, labs, sp, prior = _check_inputs(image, mask, labels, spacing, probabilities)
    strokes = _check_slab("strokes", strokes, img.shape)
    if not strokes.any():  # no strokes: grow from the labels already drawn
        strokes = np.where(np.isin(mask, labs), mask, strokes).astype(np.uint8)
    # background strokes alone correct the labels already drawn (SmartFill's keep_weight)
    if not np.isin(strokes, labs).any() and not (strokes.any() and np.isin(mask, labs).any()):
        raise NoStrokesError(NO_STROKES_MESSAGE)

    two_d = img.shape[0] == 1
    im, st, cur = (img[0], strokes[0], mask[0]) if two_d else (img, strokes, mask)
    pr = None if prior is None else (prior[:, 0] if two_d else prior)
    sp_ = (sp[1], sp[2]) if two_d else (sp[0], sp[1], sp[2])
    # one fill per separate group of strokes (e.g. both globes): each cut then models its own
    # orbit's intensities in a local ROI (globe Dice from a click per globe, 6 small synthetic
    # patients: 0.70-0.91 with one cut over both orbits, 0.81-0.91 with a cut per group)
    marked = st != 0
    groups, n_groups = ndi.label(ndi.binary_dilation(marked, iterations=2))
    if n_groups > MAX_STROKE_GROUPS:
        n_groups = 1
    for g in range(1, n_groups + 1):
        cur = smart_fill(im, st, spacing=sp_, labels=labs, mask=cur, probabilities=pr,
                         focus=((groups == g) & marked) if n_groups > 1 else None)
    return (cur[None] if two_d else cur).astype(np.uint8, copy=False)


def auto_correct_slab(image, mask, *, spacing: Sequence[float], labels: Sequence[int],
                      probabilities=None) -> np.ndarray:
    """AutoCorrection of the page on a slab, run on the labels' bounding box plus a margin.

    The result only changes near the mask's borders, so the correction runs on the bounding
    box of every labelled pixel of ``mask`` (any structure) grown by ``AUTOCORRECT_MARGIN_MM``
    in y and x (all slices of the slab); outside it the mask is returned as it is.
    ``nz == 1``: a 2-D correction of the slice; else a 3-D correction of the slab.

    Parameters
    ----------
    image : (nz, ny, nx) array
        CT slab in HU (integer or float).
    mask : (nz, ny, nx) integer array
        Labels 0..3 to correct.
    spacing : (sz, sy, sx)
        Voxel size in mm (``sz`` is not used when ``nz == 1``).
    labels : sequence of int
        Structures to correct (a subset of 1, 2, 3); the others stay as they are.
    probabilities : (4, nz, ny, nx) float array in [0, 1], optional
        A network's class probabilities, used as data term.

    Returns
    -------
    (nz, ny, nx) uint8 array
        The corrected mask; a copy of ``mask`` when it holds none of ``labels``.

    Raises
    ------
    ValueError
        On inputs :func:`auto_correct` refuses (shapes, values, spacing).
    """
    img, mask, labs, sp, prior = _check_inputs(image, mask, labels, spacing, probabilities)
    out = mask.astype(np.uint8)  # a copy
    if not np.isin(mask, labs).any():
        return out
    nz, ny, nx = mask.shape
    idx = np.nonzero(mask)
    my, mx = int(np.ceil(AUTOCORRECT_MARGIN_MM / sp[1])), int(np.ceil(AUTOCORRECT_MARGIN_MM / sp[2]))
    y0, y1 = max(0, idx[1].min() - my), min(ny, idx[1].max() + 1 + my)
    x0, x1 = max(0, idx[2].min() - mx), min(nx, idx[2].max() + 1 + mx)
    pr = None if prior is None else prior[:, :, y0:y1, x0:x1]
    if nz == 1:
        out[0, y0:y1, x0:x1] = auto_correct(img[0, y0:y1, x0:x1], mask[0, y0:y1, x0:x1], spacing=(sp[1], sp[2]),
                                            labels=labs, probabilities=None if pr is None else pr[:, 0])
    else:
        out[:, y0:y1, x0:x1] = auto_correct(img[:, y0:y1, x0:x1], mask[:, y0:y1, x0:x1],
                                            spacing=(sp[0], sp[1], sp[2]), labels=labs, probabilities=pr)
    return out
