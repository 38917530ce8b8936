"""Checks that a scan is a 3D CT and that a label volume fits it.

Every check raises an :class:`~orbitseg.errors.InputError` (or a subclass)
that names the file and says what is wrong; none of them modifies its input.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from orbitseg.constants import HU_AIR, HU_AIR_MAX, HU_MAX, HU_MIN, MIN_AIR_FRACTION, RAW_CT_OFFSET, VALID_LABELS
from orbitseg.errors import GeometryMismatchError, InputError, NotCTError
from orbitseg.io.volume import Geometry, Volume

__all__ = [
    "EmptyLabelWarning",
    "check_ct",
    "check_label_values",
    "check_label_not_empty",
    "check_same_geometry",
    "check_volume_3d",
]

#: fewest voxels along each axis of something we call a volume
MIN_SLICES = 2


class EmptyLabelWarning(UserWarning):
    """A label volume holds no foreground voxel."""


def _path(volume: Volume | None, path) -> Path | None:
    if path is not None:
        return Path(path)
    return None if volume is None else volume.path


def _array_and_path(labels: Volume | np.ndarray, path):
    """The voxel array of ``labels`` and the path to name in errors (a Volume knows its own)."""
    if isinstance(labels, Volume):
        return labels.array, _path(labels, path)
    return np.asarray(labels), path


def check_volume_3d(volume_or_array, path=None, *, min_slices: int = MIN_SLICES) -> None:
    """Refuse a 2D image, or a "volume" with a single slice along any axis.

    Accepts a :class:`Volume`, a NumPy array or a ``SimpleITK.Image``.

    Raises
    ------
    InputError
        fewer than 3 dimensions, or fewer than ``min_slices`` voxels along an axis.
    """
    if isinstance(volume_or_array, Volume):
        shape = volume_or_array.array.shape
        path = _path(volume_or_array, path)
    elif isinstance(volume_or_array, np.ndarray):
        shape = volume_or_array.shape
    else:  # SimpleITK image: size is (nx, ny[, nz])
        shape = tuple(reversed(volume_or_array.GetSize()))
    if len(shape) < 3:
        raise InputError(path, f"is a {len(shape)}D image (shape {tuple(shape)}); a 3D volume is needed")
    if len(shape) > 3:
        raise InputError(path, f"is a {len(shape)}D image (shape {tuple(shape)}); a 3D volume is needed")
    if min(shape) < min_slices:
        raise InputError(
            path,
            f"has only {min(shape)} slice(s) along one axis (array shape {tuple(shape)}); a 3D volume is needed",
        )


def check_ct(volume: Volume, path=None) -> None:
    """Refuse a volume whose values are not Hounsfield units of a CT.

    A CT holds some air (at least ``MIN_AIR_FRACTION`` of voxels darker than
    ``HU_AIR_MAX``) and no value outside ``[HU_MIN, HU_MAX]``.  An MR volume
    (values 0..4000) or a normalised image (values in [0, 1]) fails.

    Raises
    ------
    NotCTError
    """
    path = _path(volume, path)
    a = volume.array
    if a.size == 0:
        raise NotCTError(path, "is empty (no voxels)")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise NotCTError(path, "holds NaN or infinite values; not a CT in Hounsfield units")
    lo, hi = float(a.min()), float(a.max())
    if lo < HU_MIN or hi > HU_MAX:
        raise NotCTError(
            path,
            f"values range {lo:g}..{hi:g}, outside the Hounsfield range [{HU_MIN:g}, {HU_MAX:g}]; "
            "not a CT in Hounsfield units",
        )
    air = float(np.count_nonzero(a < HU_AIR_MAX)) / a.size
    if air < MIN_AIR_FRACTION:
        # stored CT numbers without their rescale (HU + 1024, as some exports write them): the air sits near
        # +24 instead of -1000; say so, since subtracting 1024 is then all that is missing
        raw_air = float(np.count_nonzero(a < HU_AIR_MAX + RAW_CT_OFFSET)) / a.size
        # and a soft-tissue peak where water + offset lies (brain, muscle: 0-100 HU)
        soft = float(np.count_nonzero((a >= RAW_CT_OFFSET) & (a <= RAW_CT_OFFSET + 100))) / a.size
        if lo >= 0 and raw_air >= MIN_AIR_FRACTION and soft >= 0.05:
            raise NotCTError(
                path,
                f"values range {lo:g}..{hi:g}, {raw_air:.1%} of voxels below {HU_AIR_MAX + RAW_CT_OFFSET:g} and "
                f"{soft:.1%} within {RAW_CT_OFFSET}..{RAW_CT_OFFSET + 100}: if this is a CT, its values are CT "
                f"numbers stored without the rescale to Hounsfield units (air at about {HU_AIR + RAW_CT_OFFSET:+g} "
                f"instead of {HU_AIR:g}); write it in HU (subtract {RAW_CT_OFFSET}, or keep the DICOM's "
                "RescaleIntercept) and try again; orbitseg needs a CT in Hounsfield units",
            )
        raise NotCTError(
            path,
            f"values range {lo:g}..{hi:g} with {air:.2%} of voxels below {HU_AIR_MAX:g} HU (air); "
            "a CT in Hounsfield units has air around the head - is this an MR or a normalised image?",
        )


def check_label_values(labels: Volume | np.ndarray, path=None) -> None:
    """Refuse label values outside {0, 1, 2, 3} and non-integer floats.

    Raises
    ------
    InputError
        naming the file and the offending values.
    """
    a, path = _array_and_path(labels, path)
    if a.dtype == bool:
        return
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise InputError(path, f"label values have type {a.dtype}; integer labels 0..3 are needed")
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise InputError(path, "label volume holds NaN or infinite values")
        frac = a != np.round(a)
        if frac.any():
            bad = np.unique(a[frac])
            raise InputError(
                path,
                f"label volume holds non-integer values {_list(bad)}; labels must be integers in "
                f"{sorted(VALID_LABELS)}",
            )
    values = np.unique(a)
    bad = [v for v in values.tolist() if v not in VALID_LABELS]
    if bad:
        raise InputError(
            path,
            f"label volume holds values {_list(bad)} not in {sorted(VALID_LABELS)} "
            "(0 background, 1 eyeball, 2 extraocular muscles, 3 optic nerve)",
        )


def check_label_not_empty(labels: Volume | np.ndarray, path=None, *, purpose: str = "view") -> bool:
    """Warn (``purpose="view"``) or raise (``purpose="train"``) when no voxel is labelled.

    Returns True when the label holds foreground.
    """
    a, path = _array_and_path(labels, path)
    if np.any(a):
        return True
    problem = "label volume is empty (no eyeball, muscle or nerve voxel)"
    if purpose == "train":
        raise InputError(path, problem + "; it cannot be used for training")
    warnings.warn(f"{path}: {problem}" if path is not None else problem, EmptyLabelWarning, stacklevel=3)
    return False


def check_same_geometry(label: Volume | Geometry, scan: Volume | Geometry, path=None) -> None:
    """Refuse a label volume that does not sit on the scan's grid.

    Raises
    ------
    GeometryMismatchError
        listing which of size / spacing / origin / direction differ.
    """
    if path is None and isinstance(label, Volume):
        path = label.path
    lg = label.geometry if isinstance(label, Volume) else label
    sg = scan.geometry if isinstance(scan, Volume) else scan
    diffs = sg.differences(lg)
    if diffs:
        where = ""
        if isinstance(scan, Volume) and scan.path is not None:
            where = f" of {scan.path}"
        raise GeometryMismatchError(
            path, "label geometry differs from the scan" + where + " (label != scan): " + "; ".join(diffs)
        )


def _list(values, limit: int = 10) -> str:
    vals = [f"{v:g}" if isinstance(v, float) else str(v) for v in list(values)[:limit]]
    more = "" if len(values) <= limit else f", ... ({len(values)} in all)"
    return "[" + ", ".join(vals) + more + "]"
