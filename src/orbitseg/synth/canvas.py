"""Painting signed-distance shapes onto a CT grid with partial-volume edges.

The canvas is the scan's voxel grid with every slice split into ``n_sub``
sub-slices (slice-sensitivity profile).  A shape is a signed distance ``d``
(mm, negative inside) evaluated only inside its bounding box in index space;
its occupancy is ``clip(0.5 - d / edge, 0, 1)`` (the fraction of a voxel of
width ``edge`` inside a locally flat surface).  Shapes are painted in order,
each replacing what lies beneath it in proportion to its occupancy, and the
canvas tracks for the labelled structures how much of each voxel they still
occupy after everything painted later.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32


def _upsample_axis(c: np.ndarray, axis: int, n: int, f: int) -> np.ndarray:
    """Linear interpolation of samples taken every ``f`` voxels onto ``n`` voxels."""
    m = c.shape[axis]
    if f == 1:
        return c if m == n else c[(slice(None),) * axis + (slice(0, n),)]
    if m == 1:
        return np.repeat(c, n, axis=axis)
    lo = (slice(None),) * axis + (slice(0, m - 1),)
    hi = (slice(None),) * axis + (slice(1, m),)
    a = c[lo]
    diff = c[hi] - a
    ex = (slice(None),) * (axis + 1) + (None,)
    shape = [1] * (c.ndim + 1)
    shape[axis + 1] = f
    w = (np.arange(f, dtype=F32) / F32(f)).reshape(shape)
    out = diff[ex] * w
    out += a[ex]
    new_shape = list(c.shape)
    new_shape[axis] = (m - 1) * f
    out = out.reshape(new_shape)
    return out[(slice(None),) * axis + (slice(0, n),)]


class Canvas:
    """A render grid with an affine map from index (i, j, k_sub) to head-frame mm."""

    def __init__(self, A: np.ndarray, b: np.ndarray, shape: tuple[int, int, int], edge: float,
                 coarse: tuple[int, int, int], background: float):
        self.A = np.asarray(A, dtype=float)  # head = A @ (i, j, k) + b
        self.b = np.asarray(b, dtype=float)
        self.Ainv = np.linalg.inv(self.A)
        self.shape = tuple(int(v) for v in shape)  # (nz, ny, nx)
        self.edge = float(edge)
        self.coarse = tuple(int(v) for v in coarse)  # (fz, fy, fx)
        self.hu = np.full(self.shape, background, dtype=F32)
        self.lab_sl: tuple[slice, ...] | None = None
        self.weights: list[np.ndarray] = []
        self.labels_active = False

    # ---- geometry --------------------------------------------------------------
    def bbox(self, lo, hi, margin: float = 0.0) -> tuple[slice, ...] | None:
        """Index-space slices (k, j, i) covering the head-frame box [lo, hi] (+margin mm)."""
        lo = np.asarray(lo, float) - margin - 2 * self.edge
        hi = np.asarray(hi, float) + margin + 2 * self.edge
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        ijk = (corners - self.b) @ self.Ainv.T
        mn = np.floor(ijk.min(0)).astype(int)
        mx = np.ceil(ijk.max(0)).astype(int) + 1
        nz, ny, nx = self.shape
        size = (nx, ny, nz)
        mn = np.maximum(mn, 0)
        mx = np.minimum(mx, size)
        if np.any(mx <= mn):
            return None
        return (slice(mn[2], mx[2]), slice(mn[1], mx[1]), slice(mn[0], mx[0]))

    def full(self) -> tuple[slice, ...]:
        return tuple(slice(0, n) for n in self.shape)

    def coords(self, sl, frame=None, step=(1, 1, 1), counts=None):
        """Coordinates of the voxels in ``sl`` (broadcast to full arrays).

        ``frame = (centre, R)`` gives local coordinates ``R @ (p - centre)``
        (rows of R are the local axes) instead of head-frame ones.
        """
        A, b = self.A, self.b
        if frame is not None:
            c, R = frame
            R = np.asarray(R, float)
            A = R @ A
            b = R @ (b - np.asarray(c, float))
        fz, fy, fx = step
        if counts is None:
            counts = tuple(len(range(s.start, s.stop)) for s in sl)
        k = (sl[0].start + fz * np.arange(counts[0])).astype(F32)
        j = (sl[1].start + fy * np.arange(counts[1])).astype(F32)
        i = (sl[2].start + fx * np.arange(counts[2])).astype(F32)
        out = []
        for r in range(3):
            t = (A[r, 2] * k + b[r]).astype(F32)[:, None, None] + (A[r, 1] * j).astype(F32)[None, :, None]
            out.append(t + (A[r, 0] * i).astype(F32)[None, None, :])
        return out

    def sdf(self, fn, sl, coarse: bool = False, frame=None) -> np.ndarray:
        """Evaluate ``fn(x, y, z)`` on ``sl``; with ``coarse``, on a coarser grid, then upsample.

        The distance is smooth, so linear interpolation of it is accurate and
        edges stay sharp (occupancy is computed afterwards at full resolution).
        """
        if not coarse or self.coarse == (1, 1, 1):
            return np.asarray(fn(*self.coords(sl, frame)), dtype=F32)
        n = [s.stop - s.start for s in sl]
        m = [(nn - 1) // f + 2 if nn > 1 else 1 for nn, f in zip(n, self.coarse)]
        c = np.asarray(fn(*self.coords(sl, frame, step=self.coarse, counts=m)), dtype=F32)
        for axis in (2, 1, 0):
            c = _upsample_axis(c, axis, n[axis], self.coarse[axis])
        return c

    def occ(self, d: np.ndarray) -> np.ndarray:
        o = d * F32(-1.0 / self.edge)
        o += F32(0.5)
        np.clip(o, 0.0, 1.0, out=o)
        return o

    # ---- labels ----------------------------------------------------------------
    def set_label_region(self, sl, n_labels: int = 3) -> None:
        self.lab_sl = sl
        shape = tuple(s.stop - s.start for s in sl)
        self.weights = [np.zeros(shape, dtype=F32) for _ in range(n_labels)]

    def _label_overlap(self, sl):
        if self.lab_sl is None:
            return None
        a, b = [], []
        for s, r in zip(sl, self.lab_sl):
            lo, hi = max(s.start, r.start), min(s.stop, r.stop)
            if hi <= lo:
                return None
            a.append(slice(lo - s.start, hi - s.start))
            b.append(slice(lo - r.start, hi - r.start))
        return tuple(a), tuple(b)

    # ---- painting --------------------------------------------------------------
    def paint(self, sl, d: np.ndarray, value, label: int | None = None, occ: np.ndarray | None = None) -> None:
        """Paint tissue of HU ``value`` (scalar or array) where ``d < 0``, soft-edged."""
        if sl is None:
            return
        o = self.occ(d) if occ is None else occ
        h = self.hu[sl]
        # h += o * (value - h)
        tmp = np.subtract(value, h, dtype=F32)
        tmp *= o
        h += tmp
        if label is not None or self.labels_active:
            ov = self._label_overlap(sl)
            if ov is not None:
                a, b = ov
                oa = o[a]
                keep = 1.0 - oa
                for idx, w in enumerate(self.weights):
                    wb = w[b]
                    wb *= keep
                    if label is not None and idx == label - 1:
                        wb += oa
                if label is not None:
                    self.labels_active = True

    def texture(self, sl, scale_mm: float, spacing: tuple[float, float, float], rng: np.random.Generator,
                amplitude: float) -> np.ndarray:
        """Smooth random field (std ~ amplitude) with correlation length ~ ``scale_mm``, on ``sl``."""
        n = [s.stop - s.start for s in sl]
        f = [max(1, int(round(scale_mm / sp))) for sp in spacing]
        m = [(nn - 1) // ff + 2 for nn, ff in zip(n, f)]
        c = rng.standard_normal(m, dtype=F32)
        c *= F32(amplitude)
        for axis in (2, 1, 0):
            c = _upsample_axis(c, axis, n[axis], f[axis])
        return c
