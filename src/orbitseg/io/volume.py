"""A voxel array that carries its geometry.

Conventions (those of ITK / SimpleITK / DICOM, which every module follows):

* ``Volume.array`` has shape ``(nz, ny, nx)``: ``array[k, j, i]`` is voxel
  index ``(i, j, k)``; axial slices of a canonically oriented scan are
  ``array[k]``.
* ``spacing``, ``origin`` and the columns of ``direction`` are given along the
  index axes ``(i, j, k)``, in millimetres, in the LPS patient frame
  (+x towards the patient's Left, +y Posterior, +z Superior).
* physical point of index ``(i, j, k)``:
  ``origin + direction @ (spacing * (i, j, k))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

#: geometry tolerances: spacing/origin in mm (relative to spacing), direction cosines
_SPACING_RTOL = 1e-4
_ORIGIN_ATOL_FRACTION = 1e-3  # of the smallest spacing
_DIRECTION_ATOL = 1e-4


@dataclass(frozen=True)
class Geometry:
    """Where a voxel grid sits in patient space.

    Attributes
    ----------
    size : (nx, ny, nz) number of voxels along index axes i, j, k
    spacing : (si, sj, sk) mm between voxel centres along i, j, k
    origin : (x, y, z) LPS mm of the centre of voxel (0, 0, 0)
    direction : 3x3 tuple of rows; column c is the LPS unit vector of index axis c
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[tuple[float, float, float], ...] = ((1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0))

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        object.__setattr__(self, "spacing", tuple(float(v) for v in self.spacing))
        object.__setattr__(self, "origin", tuple(float(v) for v in self.origin))
        d = np.asarray(self.direction, dtype=float).reshape(3, 3)
        object.__setattr__(self, "direction", tuple(tuple(float(v) for v in row) for row in d))
        if len(self.size) != 3 or len(self.spacing) != 3 or len(self.origin) != 3:
            raise ValueError("size, spacing and origin must each have 3 values")
        if min(self.spacing) <= 0:
            raise ValueError(f"spacing must be positive, got {self.spacing}")

    # ---- derived -------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """NumPy shape ``(nz, ny, nx)`` of an array on this grid."""
        return self.size[2], self.size[1], self.size[0]

    @property
    def matrix(self) -> np.ndarray:
        """(3, 3) direction matrix as an array."""
        return np.asarray(self.direction, dtype=float)

    @property
    def affine_lps(self) -> np.ndarray:
        """(4, 4) index (i, j, k, 1) -> LPS mm."""
        a = np.eye(4)
        a[:3, :3] = self.matrix * np.asarray(self.spacing)[None, :]
        a[:3, 3] = self.origin
        return a

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (1 mL = 1000 mm^3)."""
        return float(np.prod(self.spacing)) / 1000.0

    def index_to_physical(self, ijk: np.ndarray) -> np.ndarray:
        """Map index coordinates ``(..., 3)`` in (i, j, k) order to LPS mm ``(..., 3)``."""
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ (self.matrix * np.asarray(self.spacing)[None, :]).T + np.asarray(self.origin)

    def physical_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """Map LPS mm ``(..., 3)`` to continuous index coordinates (i, j, k)."""
        xyz = np.asarray(xyz, dtype=float)
        inv = np.linalg.inv(self.matrix * np.asarray(self.spacing)[None, :])
        return (xyz - np.asarray(self.origin)) @ inv.T

    def differences(self, other: Geometry) -> list[str]:
        """Human-readable list of how ``other`` differs from this grid (empty if it matches)."""
        out = []
        if self.size != other.size:
            out.append(f"size {other.size} != {self.size}")
        if not np.allclose(self.spacing, other.spacing, rtol=_SPACING_RTOL, atol=1e-6):
            out.append(f"spacing {_fmt(other.spacing)} != {_fmt(self.spacing)}")
        tol = _ORIGIN_ATOL_FRACTION * min(self.spacing)
        if not np.allclose(self.origin, other.origin, rtol=0, atol=max(tol, 1e-4)):
            out.append(f"origin {_fmt(other.origin)} != {_fmt(self.origin)}")
        if not np.allclose(self.matrix, other.matrix, atol=_DIRECTION_ATOL):
            out.append(f"direction {_fmt(other.matrix.ravel())} != {_fmt(self.matrix.ravel())}")
        return out

    def with_(self, **changes) -> Geometry:
        """Copy with some fields replaced."""
        return replace(self, **changes)


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in np.ravel(values)) + ")"


@dataclass
class Volume:
    """A 3D array on a :class:`Geometry`, optionally remembering where it came from.

    Attributes
    ----------
    array : ndarray, shape (nz, ny, nx)
    geometry : where the grid sits in patient space
    path : file or folder it was read from (for error messages)
    meta : free-form metadata (e.g. DICOM series UID, patient id)
    """

    array: np.ndarray
    geometry: Geometry
    path: Path | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"array must be 3D (nz, ny, nx), got shape {self.array.shape}")
        if tuple(self.array.shape) != self.geometry.shape:
            raise ValueError(
                f"array shape {self.array.shape} does not match geometry size "
                f"{self.geometry.size} (expected array shape {self.geometry.shape})"
            )

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.geometry.spacing

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    def like(self, array: np.ndarray, **meta) -> Volume:
        """A new volume with ``array`` on this volume's grid (e.g. a label map)."""
        return Volume(np.asarray(array), self.geometry, None, dict(meta))

    def crop(self, slices: tuple[slice, slice, slice]) -> Volume:
        """The part ``array[slices]`` (``(k, j, i)`` slices, step 1) as a volume that keeps its place in
        patient space (its origin moves to the first voxel kept); path and meta are kept."""
        if len(slices) != 3:
            raise ValueError(f"slices must be 3 slices (k, j, i), got {len(slices)}")
        bounds = [s.indices(n) for s, n in zip(slices, self.array.shape)]
        if any(step != 1 or stop <= start for start, stop, step in bounds):
            raise ValueError(f"slices must be non-empty with step 1, got {slices}")
        first = np.array([b[0] for b in bounds[::-1]], dtype=float)  # (i, j, k)
        size = tuple(int(stop - start) for start, stop, _ in bounds[::-1])
        geom = self.geometry.with_(size=size, origin=tuple(float(v) for v in self.geometry.index_to_physical(first)))
        array = np.ascontiguousarray(self.array[tuple(slice(a, b) for a, b, _ in bounds)])
        return Volume(array, geom, self.path, dict(self.meta))

    # ---- SimpleITK bridge ----------------------------------------------------
    def to_sitk(self):
        """This volume as a ``SimpleITK.Image`` with the same geometry."""
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        img.SetSpacing(self.geometry.spacing)
        img.SetOrigin(self.geometry.origin)
        img.SetDirection(tuple(self.geometry.matrix.ravel()))
        return img

    @classmethod
    def from_sitk(cls, image, path: str | Path | None = None, **meta) -> Volume:
        """Wrap a 3D ``SimpleITK.Image`` (array copied, geometry kept)."""
        import SimpleITK as sitk

        geom = geometry_of(image)
        return cls(sitk.GetArrayFromImage(image), geom, None if path is None else Path(path), meta)


def geometry_of(image) -> Geometry:
    """The :class:`Geometry` of a 3D ``SimpleITK.Image``."""
    return Geometry(
        size=image.GetSize(),
        spacing=image.GetSpacing(),
        origin=image.GetOrigin(),
        direction=np.asarray(image.GetDirection(), dtype=float).reshape(3, 3),
    )
