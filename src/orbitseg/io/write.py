"""Write scans and label volumes, atomically, in exactly their grid's geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from orbitseg.io.atomic import atomic_path
from orbitseg.io.volume import Geometry, Volume


def write_scan(volume: Volume, path: str | Path, *, overwrite: bool = False, compress: bool = True) -> Path:
    """Write a scan (NIfTI, NRRD or MetaImage, chosen by the ending of ``path``).

    Raises
    ------
    ExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    import SimpleITK as sitk

    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        sitk.WriteImage(volume.to_sitk(), str(tmp), compress)
    return path


def write_label(
    labels: Volume | np.ndarray,
    path: str | Path,
    *,
    reference: Volume | Geometry | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a label volume (uint8) on the grid of ``reference``."""
    import SimpleITK as sitk

    path = Path(path)
    if isinstance(labels, np.ndarray):
        if reference is None:
            raise ValueError("reference is required when labels is a bare array")
        geom = reference.geometry if isinstance(reference, Volume) else reference
        labels = Volume(labels, geom)
    vol = Volume(np.asarray(labels.array, dtype=np.uint8), labels.geometry)
    with atomic_path(path, overwrite=overwrite) as tmp:
        sitk.WriteImage(vol.to_sitk(), str(tmp), True)
    return path
