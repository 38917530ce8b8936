"""Input checks, windowing and grid neighbourhoods shared by the labeling aids."""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from ..constants import N_CLASSES, STRUCTURES, VALID_LABELS, WINDOW_LEVEL, WINDOW_WIDTH
from ..preprocess.window import apply_window

#: stroke value that marks background ("not any structure") pixels
BACKGROUND_STROKE: int = 255


def check_image(image, *, name: str = "image", ndims: Sequence[int] = (2,)) -> np.ndarray:
    """``image`` as a float array; ValueError naming ``name`` if it is not a real ``ndims``-D array."""
    arr = np.asarray(image)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must be a real-valued (integer or float) array, got dtype {arr.dtype}")
    if arr.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be {want}, got {arr.ndim}-D array of shape {arr.shape}")
    if min(arr.shape) < 1:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return arr


def check_spacing(spacing, ndim: int, *, name: str = "spacing") -> np.ndarray:
    """Spacing ``(sy, sx)`` or ``(sz, sy, sx)`` in mm as a float array."""
    try:
        sp = np.asarray(spacing, dtype=float).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be {ndim} positive numbers in mm, got {spacing!r}") from exc
    if sp.size != ndim or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"{name} must be {ndim} positive numbers in mm (one per array axis), got {spacing!r}")
    return sp


def check_label(label, *, name: str = "label", allowed=STRUCTURES) -> int:
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)) or int(label) not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {label!r}")
    return int(label)


def check_labels(labels, *, name: str = "labels") -> tuple[int, ...]:
    try:
        labs = tuple(labels)
    except TypeError as exc:
        raise ValueError(f"{name} must be a sequence of structure labels {list(STRUCTURES)}") from exc
    if not labs:
        raise ValueError(f"{name} must not be empty")
    for lab in labs:
        check_label(lab, name=name)
    if len(set(labs)) != len(labs):
        raise ValueError(f"{name} has duplicates: {labs}")
    return tuple(int(v) for v in labs)


def check_mask(mask, shape: tuple[int, ...], *, name: str = "mask") -> np.ndarray:
    """Label mask of ``shape`` with integer values in ``VALID_LABELS``."""
    arr = np.asarray(mask)
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise ValueError(f"{name} must be an integer label array, got dtype {arr.dtype}")
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} shape {arr.shape} does not match image shape {tuple(shape)}")
    bad = np.setdiff1d(np.unique(arr), sorted(VALID_LABELS))
    if bad.size:
        raise ValueError(f"{name} holds unknown label(s) {bad.tolist()}; allowed {sorted(VALID_LABELS)}")
    return arr


def check_bool(arr, shape: tuple[int, ...], *, name: str) -> np.ndarray | None:
    if arr is None:
        return None
    a = np.asarray(arr)
    if a.shape != tuple(shape):
        raise ValueError(f"{name} shape {a.shape} does not match image shape {tuple(shape)}")
    if not (a.dtype == bool or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must be a boolean array, got dtype {a.dtype}")
    return a.astype(bool, copy=False)


def check_probabilities(probabilities, shape: tuple[int, ...], *, name: str = "probabilities") -> np.ndarray | None:
    """Class probabilities ``(N_CLASSES, *shape)`` of a trained network as float64 (None stays None)."""
    if probabilities is None:
        return None
    prob = np.asarray(probabilities, dtype=np.float64)
    if prob.shape != (N_CLASSES,) + tuple(shape):
        raise ValueError(f"{name} must have shape {(N_CLASSES,) + tuple(shape)} (background + {len(STRUCTURES)} "
                         f"structures, then the image shape), got {prob.shape}")
    if not np.all(np.isfinite(prob)) or prob.min() < 0 or prob.max() > 1 + 1e-6:
        raise ValueError(f"{name} must be finite values in [0, 1]")
    return prob


def window01(image: np.ndarray, window: tuple[float, float] = (WINDOW_LEVEL, WINDOW_WIDTH)) -> np.ndarray:
    """HU -> [0, 1] float32 through the (level, width) window (:func:`orbitseg.preprocess.window.apply_window`)."""
    try:
        level, width = (float(v) for v in window)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"window must be (level, width) in HU, got {window!r}") from exc
    if not width > 0:
        raise ValueError(f"window width must be positive, got {width}")
    return apply_window(image, level=level, width=width)


def half_offsets(ndim: int, connectivity: int | None = None) -> list[tuple[int, ...]]:
    """One offset of each neighbour pair: 4 of 8 in 2-D (or 2 of 4), 13 of 26 or 3 of 6 in 3-D."""
    full = 3**ndim - 1
    if connectivity is None:
        connectivity = full
    if connectivity not in (2 * ndim, full):
        raise ValueError(f"connectivity must be {2 * ndim} or {full} for {ndim}-D images, got {connectivity}")
    offs = []
    for o in itertools.product((-1, 0, 1), repeat=ndim):
        if o <= (0,) * ndim:  # keep the lexicographically positive half
            continue
        if connectivity == 2 * ndim and sum(map(abs, o)) != 1:
            continue
        offs.append(o)
    return offs


def neighbour_pairs(shape: tuple[int, ...], offsets, spacing: np.ndarray):
    """For every offset: flat node indices ``p``, ``q = p + offset`` (inside the grid), the mm distance
    and the offset's index in ``offsets`` (offsets with no pair inside the grid are left out)."""
    idx = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    out = []
    for k, o in enumerate(offsets):
        src = tuple(slice(max(0, -d), n - max(0, d)) for d, n in zip(o, shape))
        dst = tuple(slice(max(0, d), n - max(0, -d)) for d, n in zip(o, shape))
        p = idx[src].ravel()
        if p.size == 0:
            continue
        q = idx[dst].ravel()
        out.append((p, q, float(np.linalg.norm(np.asarray(o) * spacing)), k))
    return out
