"""Reorientation to one canonical anatomical orientation (a pure, exactly invertible geometry change)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import numpy as np

from orbitseg.io.volume import Geometry, Volume


@dataclass(frozen=True)
class OrientPlan:
    """How to bring a grid to canonical LPS axes by permuting and flipping index axes.

    ``axes[p]`` is the original index axis (0=i, 1=j, 2=k) that becomes
    canonical axis ``p`` (pointing to patient Left, Posterior, Superior for
    p = 0, 1, 2); ``flip[p]`` says whether it is reversed.
    """

    axes: tuple[int, int, int]
    flip: tuple[bool, bool, bool]

    @property
    def is_identity(self) -> bool:
        return self.axes == (0, 1, 2) and not any(self.flip)


def plan_canonical(geometry: Geometry) -> OrientPlan:
    """The permutation/flip that maps each index axis to its closest LPS axis.

    The assignment maximises the summed alignment, so even a 45-degree
    oblique grid gets a one-to-one mapping.
    """
    d = np.abs(geometry.matrix)  # d[p, c]: alignment of index axis c with physical axis p
    axes = max(permutations(range(3)), key=lambda perm: sum(d[p, perm[p]] for p in range(3)))
    flip = tuple(bool(geometry.matrix[p, axes[p]] < 0) for p in range(3))
    return OrientPlan(tuple(axes), flip)  # type: ignore[arg-type]


def canonical_geometry(geometry: Geometry, plan: OrientPlan | None = None) -> Geometry:
    """The geometry of the canonical grid (same voxels, same physical points)."""
    plan = plan or plan_canonical(geometry)
    m = geometry.matrix
    size = tuple(geometry.size[c] for c in plan.axes)
    spacing = tuple(geometry.spacing[c] for c in plan.axes)
    cols = [m[:, c] * (-1.0 if f else 1.0) for c, f in zip(plan.axes, plan.flip)]
    corner = np.zeros(3)  # original index of the new voxel (0, 0, 0)
    for c, f in zip(plan.axes, plan.flip):
        if f:
            corner[c] = geometry.size[c] - 1
    origin = geometry.index_to_physical(corner)
    return Geometry(size, spacing, tuple(origin), np.stack(cols, axis=1))


def array_to_canonical(array: np.ndarray, plan: OrientPlan) -> np.ndarray:
    """Reorder an array ``(nz, ny, nx)`` (or with leading channels ``(..., nz, ny, nx)``) to canonical."""
    lead = array.ndim - 3
    # array axis of index axis c is lead + 2 - c; canonical array axis of canonical axis p is lead + 2 - p
    order = list(range(lead)) + [lead + 2 - plan.axes[p] for p in (2, 1, 0)]
    out = np.transpose(array, order)
    for p, f in enumerate(plan.flip):
        if f:
            out = np.flip(out, axis=lead + 2 - p)
    return out


def array_from_canonical(array: np.ndarray, plan: OrientPlan) -> np.ndarray:
    """Exact inverse of :func:`array_to_canonical`."""
    lead = array.ndim - 3
    out = array
    for p, f in enumerate(plan.flip):
        if f:
            out = np.flip(out, axis=lead + 2 - p)
    forward = [lead + 2 - plan.axes[p] for p in (2, 1, 0)]
    inverse = np.argsort(forward)
    return np.transpose(out, list(range(lead)) + [lead + int(a) for a in inverse])


def to_canonical(volume: Volume) -> Volume:
    """Permute/flip the voxel axes so index axes i, j, k point to patient Left, Posterior, Superior.

    No interpolation happens, so every voxel keeps its value and its physical
    position; an oblique grid keeps its small rotation.  After this,
    ``array[k]`` is an axial slice seen from the feet with the patient's right
    on the left of the image (radiological convention) and anterior at the top.
    """
    plan = plan_canonical(volume.geometry)
    geom = canonical_geometry(volume.geometry, plan)
    arr = np.ascontiguousarray(array_to_canonical(volume.array, plan))
    return Volume(arr, geom, volume.path, dict(volume.meta))


def from_canonical(array: np.ndarray, original: Geometry) -> np.ndarray:
    """Bring an array computed on the canonical grid of ``original`` back onto ``original``'s grid."""
    plan = plan_canonical(original)
    expected = canonical_geometry(original, plan).shape
    if tuple(array.shape[-3:]) != expected:
        raise ValueError(f"array must end with the canonical shape {expected}, got {array.shape}")
    return np.ascontiguousarray(array_from_canonical(array, plan))


def reverse_index_axis(volume: Volume, axis: int) -> Volume:
    """The same anatomy stored with index axis ``axis`` (0=i, 1=j, 2=k) reversed.

    Array and geometry change together, so every voxel keeps its physical
    position: what a different exporter (RAS vs LPS, head-first vs feet-first
    slice order) would have written.
    """
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    g = volume.geometry
    d = g.matrix.copy()
    origin = g.index_to_physical(np.eye(3)[axis] * (g.size[axis] - 1))
    d[:, axis] *= -1
    arr = np.ascontiguousarray(np.flip(volume.array, axis=2 - axis))
    return Volume(arr, Geometry(g.size, g.spacing, tuple(origin), d), volume.path, dict(volume.meta))
