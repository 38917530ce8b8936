"""Write scans and label volumes, atomically, in exactly their grid's geometry.

Every writer validates before it writes anything, writes to a temporary file
beside the target and renames it into place (:mod:`orbitseg.io.atomic`), and
refuses to replace an existing file unless ``overwrite=True``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from orbitseg.constants import LABEL_COLOURS, LABEL_NAMES, STRUCTURES
from orbitseg.errors import ExistsError, GeometryMismatchError, InputError
from orbitseg.io import validate
from orbitseg.io.atomic import atomic_path
from orbitseg.io.dicom import _short, write_dicom_series
from orbitseg.io.formats import FORMATS, LABEL_WRITE_ENDINGS, SCAN_WRITE_ENDINGS, FileFormat, split_ending
from orbitseg.io.volume import Geometry, Volume

__all__ = ["write_scan", "write_label", "write_dicom_series", "SCAN_WRITE_ENDINGS", "LABEL_WRITE_ENDINGS"]
# SCAN_WRITE_ENDINGS / LABEL_WRITE_ENDINGS (what write_scan / write_label accept) come from orbitseg.io.formats


def _check_target(path: Path, endings: tuple[str, ...], overwrite: bool) -> FileFormat:
    # the longest ending of all formats, so that a scan is not written as an NRRD named .seg.nrrd
    _, ending = split_ending(path.name)
    if ending.lower() not in endings:
        raise InputError(path, f"cannot write this file type; use one of {', '.join(endings)}")
    if path.exists() and not overwrite:
        raise ExistsError(path)
    if path.is_dir():
        raise InputError(path, "is a folder")
    return FORMATS[ending.lower()]


def _check_direction(path: Path, geom: Geometry) -> None:
    d = geom.matrix
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-4):
        raise InputError(path, f"direction matrix {np.round(d, 4).tolist()} is not orthonormal; cannot write it")


def _sitk_write(image, tmp: Path, path: Path, compress: bool) -> None:
    import SimpleITK as sitk

    try:
        sitk.WriteImage(image, str(tmp), bool(compress))
    except RuntimeError as exc:
        raise InputError(path, f"could not be written ({_short(exc)})") from None


def write_scan(volume: Volume, path: str | Path, *, overwrite: bool = False, compress: bool = True) -> Path:
    """Write a scan (NIfTI, NRRD or MetaImage, chosen by the ending of ``path``).

    Values keep their type (bool -> uint8, float16 -> float32); the geometry is
    written as is (NIfTI stores it as RAS, readers give back the LPS values).

    Raises
    ------
    ExistsError : ``path`` exists and ``overwrite`` is False
    InputError : unsupported ending, not a 3D volume, non-orthonormal direction
    """
    path = Path(path)
    _check_target(path, SCAN_WRITE_ENDINGS, overwrite)
    validate.check_volume_3d(volume.array, path, min_slices=1)
    _check_direction(path, volume.geometry)
    a = np.asarray(volume.array)
    if a.dtype == bool:
        a = a.astype(np.uint8)
    elif a.dtype == np.float16:
        a = a.astype(np.float32)
    image = Volume(a, volume.geometry).to_sitk()
    with atomic_path(path, overwrite=overwrite) as tmp:
        _sitk_write(image, tmp, path, compress)
    return path


def write_label(
    labels: Volume | np.ndarray,
    path: str | Path,
    *,
    reference: Volume | Geometry | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a label volume (uint8, values 0..3) on the grid of ``reference``.

    Parameters
    ----------
    labels : a label Volume, or a bare array (then ``reference`` is required)
    path : one of :data:`~orbitseg.io.formats.LABEL_WRITE_ENDINGS`: ``.nii.gz``
        (default format of the project), ``.nii``, ``.nrrd`` (plain labelmap) or
        ``.seg.nrrd`` (3D Slicer segmentation with segment names and colours)
    reference : the scan (or grid) the labels belong to; the file gets exactly
        its geometry.  Without it the labels' own geometry is written.

    Raises
    ------
    ExistsError : ``path`` exists and ``overwrite`` is False
    InputError : bad label values, unsupported ending, array shape differs
        from the reference
    GeometryMismatchError : a label Volume whose grid differs from ``reference``
    """
    path = Path(path)
    fmt = _check_target(path, LABEL_WRITE_ENDINGS, overwrite)
    ref_geom = None
    if reference is not None:
        ref_geom = reference.geometry if isinstance(reference, Volume) else reference
    if isinstance(labels, Volume):
        array = np.asarray(labels.array)
        own = labels.geometry
    else:
        array = np.asarray(labels)
        own = None
        if ref_geom is None:
            raise InputError(path, "a bare label array needs a reference scan for its geometry")
    validate.check_volume_3d(array, path, min_slices=1)
    if ref_geom is not None:
        if tuple(array.shape) != ref_geom.shape:
            raise InputError(
                path,
                f"label array shape {tuple(array.shape)} differs from the reference scan's "
                f"{ref_geom.shape} (nz, ny, nx); refusing to write labels on a different grid",
            )
        if own is not None:
            diffs = ref_geom.differences(own)
            if diffs:
                raise GeometryMismatchError(path, "label geometry differs from the reference scan: " + "; ".join(diffs))
        geom = ref_geom
    else:
        geom = own
    validate.check_label_values(array, path)
    _check_direction(path, geom)
    vol = Volume(np.asarray(array, dtype=np.uint8), geom)
    if fmt.writer == "slicer_seg":
        with atomic_path(path, overwrite=overwrite) as tmp:
            _write_seg_nrrd(vol, tmp)
    else:  # "sitk"
        image = vol.to_sitk()
        with atomic_path(path, overwrite=overwrite) as tmp:
            _sitk_write(image, tmp, path, True)
    return path


# ---------------------------------------------------------------------------
# 3D Slicer segmentation
# ---------------------------------------------------------------------------
def segment_fields(array: np.ndarray) -> dict[str, str]:
    """Slicer ``Segment{N}_*`` / ``Segmentation_*`` key-value fields for a labelmap (z, y, x)."""
    fields: dict[str, str] = {
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
        "Segmentation_ConversionParameters": "",
    }
    for n, lab in enumerate(STRUCTURES):
        idx = np.nonzero(array == lab)
        if idx[0].size:
            (k0, k1), (j0, j1), (i0, i1) = ((int(v.min()), int(v.max())) for v in idx)
            extent = f"{i0} {i1} {j0} {j1} {k0} {k1}"
        else:
            extent = "0 -1 0 -1 0 -1"
        r, g, b = LABEL_COLOURS[lab]
        fields.update(
            {
                f"Segment{n}_ID": f"Segment_{lab}",
                f"Segment{n}_Name": LABEL_NAMES[lab],
                f"Segment{n}_NameAutoGenerated": "0",
                f"Segment{n}_Color": f"{r / 255:.6g} {g / 255:.6g} {b / 255:.6g}",
                f"Segment{n}_ColorAutoGenerated": "0",
                f"Segment{n}_LabelValue": str(lab),
                f"Segment{n}_Layer": "0",
                f"Segment{n}_Extent": extent,
                f"Segment{n}_Tags": "Segmentation.Status:inprogress|",
            }
        )
    return fields


def _write_seg_nrrd(vol: Volume, tmp: Path) -> None:
    """A labelmap NRRD (LPS, gzip) with Slicer segment fields, loadable in 3D Slicer."""
    import nrrd

    g = vol.geometry
    header = {
        "type": "unsigned char",
        "dimension": 3,
        "space": "left-posterior-superior",
        "sizes": list(g.size),
        # one row per index axis: the LPS vector between neighbouring voxels along it
        "space directions": (g.matrix * np.asarray(g.spacing)[None, :]).T,
        "kinds": ["domain", "domain", "domain"],
        "endian": "little",
        "encoding": "gzip",
        "space origin": np.asarray(g.origin, dtype=float),
    }
    header.update(segment_fields(vol.array))
    nrrd.write(str(tmp), np.ascontiguousarray(vol.array, dtype=np.uint8), header, index_order="C")
