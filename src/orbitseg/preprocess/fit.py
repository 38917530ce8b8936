"""Fit a VOI's axial slices into the network's square input — and back.

``aspect="pad"``: the VOI's in-plane extent (``ny * sy`` by ``nx * sx`` mm) is
scaled so its longer side fills ``size`` pixels and the shorter side is padded
equally on both sides (square pixels).  ``aspect="stretch"``: each axis fills
``size`` pixels on its own (rectangular pixels, no padding): an orbit's VOI is
about 79 mm front to back and 54 mm across, so stretching gives the
left-right axis, across which the medial and lateral recti and the optic
nerve are thinnest, 1.45x finer pixels for the same network cost.
:class:`SliceFit` records the affine map so that :func:`unfit_probabilities`
is the exact inverse map of coordinates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from orbitseg.constants import FIT_ASPECT, FIT_ASPECTS, LABEL_NAMES


@dataclass(frozen=True)
class SliceFit:
    """Affine map between VOI pixels (row r, col c) and fitted pixels (u, v).

    ``r = a_row * u + b_row`` and ``c = a_col * v + b_col``.

    Attributes
    ----------
    in_shape : (ny, nx) VOI slice shape
    spacing : (sy, sx) VOI pixel size in mm
    size : side of the square output in pixels
    a_row, b_row, a_col, b_col : the map above
    """

    in_shape: tuple[int, int]
    spacing: tuple[float, float]
    size: int
    a_row: float
    b_row: float
    a_col: float
    b_col: float

    @property
    def pixel_spacing(self) -> tuple[float, float]:
        """(row, column) size of one fitted pixel in mm (equal with ``aspect="pad"``)."""
        return (self.a_row * self.spacing[0], self.a_col * self.spacing[1])

    def to_dict(self) -> dict:
        return asdict(self)


def plan_fit(in_shape: tuple[int, int], spacing: tuple[float, float], size: int, *,
             aspect: str = FIT_ASPECT) -> SliceFit:
    """Plan the fit of ``in_shape`` slices with pixel ``spacing`` (sy, sx) mm into ``size x size``.

    ``aspect="pad"`` keeps the aspect ratio (longer side fills, shorter side
    padded); ``aspect="stretch"`` fills ``size`` along both axes.
    """
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    if aspect not in FIT_ASPECTS:
        raise ValueError(f"aspect must be one of {FIT_ASPECTS}, got {aspect!r}")
    ny, nx = in_shape
    sy, sx = spacing
    if aspect == "pad":
        extent_y = extent_x = max(ny * sy, nx * sx)
    else:
        extent_y, extent_x = ny * sy, nx * sx
    py, px = extent_y / size, extent_x / size  # mm per output pixel
    pad_y, pad_x = (extent_y - ny * sy) / 2, (extent_x - nx * sx) / 2
    a_row, a_col = py / sy, px / sx
    b_row = (0.5 * py - pad_y) / sy - 0.5
    b_col = (0.5 * px - pad_x) / sx - 0.5
    return SliceFit((int(ny), int(nx)), (float(sy), float(sx)), int(size), a_row, b_row, a_col, b_col)


def _antialias(stack: np.ndarray, fit: SliceFit) -> np.ndarray:
    """Gaussian prefilter before shrinking (as skimage.transform.resize does) to avoid aliasing."""
    sig = (0.0, max(0.0, (fit.a_row - 1) / 2), max(0.0, (fit.a_col - 1) / 2))
    return ndimage.gaussian_filter(stack, sig, mode="nearest") if max(sig) > 0 else stack


def fit_image(stack: np.ndarray, fit: SliceFit, *, pad_value: float = 0.0) -> np.ndarray:
    """Resample an image stack ``(nz, ny, nx)`` to ``(nz, size, size)``, linear interpolation."""
    _check_stack(stack, fit)
    src = _antialias(np.asarray(stack, dtype=np.float32), fit)
    # one replicated pixel around the slice: output pixels whose centre falls in the outer half of
    # an edge pixel take its value; only those beyond it get pad_value
    src = np.pad(src, ((0, 0), (1, 1), (1, 1)), mode="edge")
    return ndimage.affine_transform(
        src, np.array([1.0, fit.a_row, fit.a_col]), offset=(0.0, fit.b_row + 1, fit.b_col + 1),
        output_shape=(stack.shape[0], fit.size, fit.size), order=1, mode="constant", cval=pad_value,
    ).astype(np.float32)


def one_hot(labels: np.ndarray, n_classes: int = len(LABEL_NAMES)) -> np.ndarray:
    """``(nz, ny, nx)`` ints -> ``(nz, C, ny, nx)`` float32 one-hot."""
    out = np.zeros((labels.shape[0], n_classes) + labels.shape[1:], dtype=np.float32)
    for c in range(n_classes):
        out[:, c] = labels == c
    return out


def fit_label_fractions(labels: np.ndarray, fit: SliceFit, n_classes: int = len(LABEL_NAMES)) -> np.ndarray:
    """Label-preserving resampling: per-class fractions ``(nz, C, size, size)`` summing to 1.

    Each class's indicator is resampled like an image (anti-aliased, linear),
    so a thin structure keeps its partial-volume fraction instead of vanishing
    under nearest-neighbour; padding is background.  ``argmax`` over C gives
    hard labels.
    """
    _check_stack(labels, fit)
    oh = one_hot(labels, n_classes)
    out = np.empty((labels.shape[0], n_classes, fit.size, fit.size), dtype=np.float32)
    for c in range(n_classes):
        out[:, c] = fit_image(oh[:, c], fit, pad_value=1.0 if c == 0 else 0.0)
    out /= np.maximum(out.sum(axis=1, keepdims=True), 1e-6)
    return out


#: weights of :func:`interpolation_matrix` below this are dropped (far from any sample; subnormal in float32)
INTERPOLATION_WEIGHT_FLOOR = 1e-12


def interpolation_matrix(n_out: int, n_in: int, scale: float, shift: float, *, order: int = 3) -> np.ndarray:
    """``(n_out, n_in)`` linear operator of scipy's spline interpolation (``order``, edges
    ``mode="nearest"``) sampling a 1D signal of ``n_in`` samples at ``x = scale * i + shift``.

    Interpolation is linear in the samples, so interpolating each unit impulse
    gives the operator's columns.  Resampling a stack along an axis-aligned
    scale and shift is then two small matrix products per slice, exactly what
    ``scipy.ndimage.affine_transform`` computes, in a fraction of its time.
    """
    x = scale * np.arange(n_out, dtype=np.float64) + shift
    eye = np.eye(n_in)
    cols = [ndimage.map_coordinates(eye[j], [x], order=order, mode="nearest") for j in range(n_in)]
    out = np.stack(cols, axis=1)
    # a cubic spline's weights decay geometrically away from a sample: most entries are below 1e-12, and in
    # float32 many are subnormal, which made the products ~8x slower (0.15 s instead of 0.02 s per VOI);
    # weights that small change no output by more than n_in * 1e-12
    out[np.abs(out) < INTERPOLATION_WEIGHT_FLOOR] = 0.0
    return out.astype(np.float32)


def unfit_probabilities(probs: np.ndarray, fit: SliceFit) -> np.ndarray:
    """Inverse of the fit: ``(nz, C, size, size)`` -> ``(nz, C, ny, nx)`` on the VOI grid.

    Works on probabilities or soft label fractions; take ``argmax`` over C for
    labels.  Cubic interpolation follows a thin structure's boundary between the
    coarse pixels better than linear: on the synthetic cohort at 64x64 it lifts
    the round-trip Dice of the muscles from ~0.963 to ~0.973 and of the optic
    nerve from ~0.975 to ~0.982.  It runs as two matrix products per slice
    (:func:`interpolation_matrix`).  Values are clipped to [0, 1] and
    renormalised to sum to 1 over C.
    """
    if probs.ndim != 4 or probs.shape[2:] != (fit.size, fit.size):
        raise ValueError(f"probs must have shape (nz, C, {fit.size}, {fit.size}), got {probs.shape}")
    ny, nx = fit.in_shape
    rows = interpolation_matrix(ny, fit.size, 1.0 / fit.a_row, -fit.b_row / fit.a_row)  # VOI row -> fitted row
    cols = interpolation_matrix(nx, fit.size, 1.0 / fit.a_col, -fit.b_col / fit.a_col)
    nz, c, size = probs.shape[0], probs.shape[1], fit.size
    # columns first as one large product, then rows as a stack of (ny, size) @ (size, nx) (the same result as
    # ``rows @ probs @ cols.T``; measured 0.03-0.04 s against 0.05 s for 73 x 4 slices, and the buffers reused)
    along_x = np.asarray(probs, dtype=np.float32).reshape(-1, size) @ cols.T  # (nz*C*size, nx)
    out = np.matmul(rows, along_x.reshape(nz * c, size, nx)).reshape(nz, c, ny, nx)
    np.clip(out, 0.0, 1.0, out=out)
    total = out.sum(axis=1, keepdims=True)
    out /= np.maximum(total, 1e-6, out=total)
    return out


def sequence_indices(n_slices: int, seq_len: int) -> np.ndarray:
    """Slice indices of every sequence ``(n_slices, seq_len)``; row k is centred on slice k.

    Edge slices are padded by replication (index clipped to [0, n_slices - 1]).
    """
    if seq_len < 1 or seq_len % 2 == 0:
        raise ValueError(f"seq_len must be a positive odd number, got {seq_len}")
    if n_slices < 1:
        raise ValueError(f"n_slices must be positive, got {n_slices}")
    half = seq_len // 2
    return np.clip(np.arange(n_slices)[:, None] + np.arange(-half, half + 1)[None, :], 0, n_slices - 1)


def _check_stack(stack: np.ndarray, fit: SliceFit) -> None:
    if stack.ndim != 3 or tuple(stack.shape[1:]) != fit.in_shape:
        raise ValueError(f"stack must have shape (nz, {fit.in_shape[0]}, {fit.in_shape[1]}), got {stack.shape}")
