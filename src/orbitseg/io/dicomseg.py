"""DICOM Segmentation objects (DICOM-SEG): write a label volume as one, read one back.

Writing
    :func:`write_dicom_seg` makes a BINARY Segmentation with highdicom that
    references the CT series the labels were computed on.  Each frame lies on
    a source slice's plane (its ImagePositionPatient, the series'
    ImageOrientationPatient and PixelSpacing) and names that slice's
    SOPInstanceUID, also for a tilted or flipped series.  Label slices are
    matched to source slices by their position in space, not by their order,
    so labels on the scan's own grid (as :func:`orbitseg.io.read.read_scan`
    returns it) or on any grid that differs from the series' only by flipped
    or swapped axes are placed exactly; labels on any other grid are refused.

Segments
    Always three, numbered as orbitseg's labels: 1 eyeball, 2 extraocular
    muscles, 3 optic nerve (:data:`STRUCTURE_CODES`).  A structure absent from
    the labels stays as an empty segment (a segment description without
    frames): the segment numbers then mean the same in every file, and a
    reader can tell "looked for, none found" from "not segmented".

Reading
    :func:`read_dicom_seg` reads a SEG (from orbitseg or another tool) with
    highdicom and places each frame by its plane position on the grid of a
    reference scan (the scan volume, or the folder of the referenced series).
    Segments are recognised by their segmented property type code (or, failing
    that, their label); several segments of one structure (left / right) are
    merged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from orbitseg import __version__
from orbitseg.constants import EYEBALL, LABEL_COLOURS, LABEL_NAMES, LABEL_TITLES, MUSCLES, NERVE, STRUCTURES
from orbitseg.errors import ExistsError, GeometryMismatchError, InputError
from orbitseg.io.atomic import atomic_path
from orbitseg.io.dicom import SliceStack
from orbitseg.io.guard import MAX_VOXELS, reader_boundary
from orbitseg.io.volume import Geometry, Volume

__all__ = [
    "write_dicom_seg",
    "read_dicom_seg",
    "source_slices",
    "label_frames",
    "slice_plane",
    "checked_labels",
    "segment_descriptions",
    "STRUCTURE_CODES",
    "CATEGORY_CODE",
    "SEGMENTATION_STORAGE",
    "is_dicom_seg",
    "frames_geometry",
]

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
#: Segmentation Storage and Label Map Segmentation Storage (the SOP classes read)
_SEG_SOP_CLASSES = frozenset({SEGMENTATION_STORAGE, "1.2.840.10008.5.1.4.1.1.66.7"})

#: (code value, coding scheme, code meaning) of each structure's Segmented Property Type.
STRUCTURE_CODES: dict[int, tuple[str, str, str]] = {
    # pydicom.sr.codedict codes.SCT.Eyeball; listed in DICOM PS3.16 CID 7151 "Segmentation Property Types"
    # (pydicom's CID tables); SNOMED-RT T-AA770.
    EYEBALL: ("79652003", "SCT", "Eyeball"),
    # SNOMED CT 32725001 |Extraocular muscle structure (body structure)|.  No DICOM CID lists an
    # extraocular muscle (pydicom's dictionary of the standard's codes has none), and CID 7151 is
    # extensible, so the SNOMED CT concept itself is used.  Not re-checked against a SNOMED browser in
    # the session that wrote this: verify before relying on the number.
    MUSCLES: ("32725001", "SCT", "Extraocular muscle"),
    # pydicom.sr.codedict codes.SCT.OpticNerve (DICOM PS3.16 CIDs 7706, 7710, 8134); SNOMED-RT T-A8040.
    NERVE: ("18234004", "SCT", "Optic nerve"),
}
#: Segmented Property Category of every segment: pydicom codes.SCT.AnatomicalStructure, DICOM PS3.16 CID 7150
#: "Segmentation Property Categories" (91723000 replaces the older 123037004 some tools still write).
CATEGORY_CODE: tuple[str, str, str] = ("91723000", "SCT", "Anatomical Structure")
#: other type codes read as a structure: SCT 81745001 "Eye" (codes.SCT.Eye, CID 4209/7151) for the eyeball
_TYPE_ALIASES: dict[tuple[str, str], int] = {("81745001", "SCT"): EYEBALL}
#: "Artificial Intelligence", DICOM PS3.16 CID 7162 "Algorithm Family" (pydicom codes.DCM.ArtificialIntelligence)
_AI_FAMILY = ("123110", "DCM", "Artificial Intelligence")
#: how far (in voxels) a frame's position may sit off the grid and still count as on it (DS rounding)
_GRID_TOL = 0.05


# ---------------------------------------------------------------------------
# source series
# ---------------------------------------------------------------------------
def _read_headers(folder: Path) -> list:
    """Headers (no pixels) of every DICOM image slice under ``folder``; SEG, RT and other non-image
    objects are left out."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    from orbitseg.io.dicom import _candidate_files

    out = []
    for path in _candidate_files(folder):  # the files the series reader looks at, in its order
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, TypeError, KeyError, AttributeError, EOFError):
            continue
        if "ImagePositionPatient" not in ds or "Rows" not in ds or "SOPInstanceUID" not in ds:
            continue
        if str(ds.get("SOPClassUID", "")) in _SEG_SOP_CLASSES or int(ds.get("NumberOfFrames", 1) or 1) > 1:
            continue
        if "LOCALIZER" in [str(v).upper() for v in (ds.get("ImageType") or [])]:
            continue  # a scout in the scan's series is no slice of the volume
        ds.filename = str(path)
        out.append(ds)
    return out


def _read_headers_of(path: Path) -> list:
    """The header of one file as a list (empty when it is no DICOM image slice)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - not DICOM: no header
        return []
    return [ds] if "SeriesInstanceUID" in ds and "ImagePositionPatient" in ds else []


def _headers_of_files(files: Sequence[str | Path], what: Path | None) -> list:
    import pydicom

    out = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable slice: say which
            raise InputError(Path(f), f"cannot read the source slice: {exc}") from None
        out.append(ds)
    if not out:
        raise InputError(what, "the scan lists no DICOM slice files")
    return out


def source_slices(
    source: str | Path | Volume | Sequence,
    geometry: Geometry | None = None,
    *,
    series_uid: str | None = None,
) -> list:
    """The pydicom headers of the CT slices a label volume is to reference.

    Parameters
    ----------
    source : a DICOM series folder (searched recursively; one file of it also works), the scan
        :class:`Volume` read from that folder by :func:`orbitseg.io.read.read_scan` (its
        ``meta["files"]``), or the slice datasets themselves
    geometry : when a folder holds several image series and ``series_uid`` is None, the one
        series whose slices lie on this grid is taken
    series_uid : which series of a folder to take

    Returns
    -------
    list of pydicom Dataset (headers, no pixel data), one per slice

    Raises
    ------
    InputError : no DICOM series there (e.g. a NIfTI scan), several candidates, unreadable slices
    """
    if isinstance(source, Volume):
        files = source.meta.get("files")
        if not files:
            fmt = source.meta.get("format", "unknown")
            raise InputError(
                source.path,
                f"the scan was not read from a DICOM series (format {fmt}); DICOM-SEG and RTSTRUCT need "
                "the source DICOM series they refer to",
            )
        return _headers_of_files(files, source.path)
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if folder.is_file():  # one file of the series: its folder, and its series unless told otherwise
            if series_uid is None:
                series_uid = next((str(d.SeriesInstanceUID) for d in _read_headers_of(folder)), None)
            folder = folder.parent
        if not folder.is_dir():
            raise InputError(Path(source), "does not exist; expected the folder of the scan's DICOM series")
        headers = _read_headers(folder)
        if not headers:
            raise InputError(folder, "holds no DICOM image slices; DICOM-SEG and RTSTRUCT need the source DICOM series")
        series: dict[str, list] = {}
        for ds in headers:
            series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
        if series_uid is not None:
            if series_uid not in series:
                raise InputError(folder, f"holds no image series {series_uid} (found {', '.join(sorted(series))})")
            return series[series_uid]
        if len(series) == 1:
            return next(iter(series.values()))
        if geometry is not None:
            fits = [uid for uid, dss in series.items() if _fits(dss, geometry)]
            if len(fits) == 1:
                return series[fits[0]]
        raise InputError(
            folder,
            "holds several image series (" + ", ".join(sorted(series)) + "); pass series_uid to choose the scan's",
        )
    datasets = list(source)
    if not datasets:
        raise InputError(None, "no source slices given")
    uids = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(uids) != 1:
        raise InputError(None, f"the source slices come from {len(uids)} series; give the slices of one")
    return datasets


def _fits(datasets: list, geometry: Geometry) -> bool:
    try:
        _coverage(datasets, geometry, None)
    except InputError:
        return False
    return True


# ---------------------------------------------------------------------------
# frames on the grid
# ---------------------------------------------------------------------------
def slice_plane(ds, what: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(origin, row step, column step) in LPS mm of a slice: pixel (r, c) lies at
    ``origin + r * row_step + c * col_step``."""
    try:
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient], float)
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient], float)
        ps = np.asarray([float(v) for v in ds.PixelSpacing], float)
    except (AttributeError, TypeError, ValueError):
        name = Path(str(getattr(ds, "filename", "") or "")).name or str(ds.get("SOPInstanceUID", "?"))
        raise InputError(what, f"slice {name} lacks a usable ImagePositionPatient / ImageOrientationPatient / PixelSpacing") from None
    # PixelSpacing is (between rows, between columns); IOP is (along a row, along a column)
    return ipp, iop[3:] * ps[0], iop[:3] * ps[1]


def _grid_indices(
    origin: np.ndarray, steps: Sequence[np.ndarray], shape: tuple[int, ...], geometry: Geometry
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
    """Voxel indices (k, j, i) on ``geometry`` of every element of an array of ``shape`` whose element
    ``n`` lies at ``origin + sum(n[a] * steps[a])`` (LPS mm), or why there are none (a string).

    The array must sit on the grid: its origin on a voxel centre and each of its axes along one
    index axis (either way) with the grid's spacing.  The three index arrays broadcast to ``shape``
    (open grids, as ``np.ix_`` makes), so ``volume_array[k, j, i]`` has ``shape``.
    """
    q0 = geometry.physical_to_index(origin)
    r0 = np.round(q0)
    if np.abs(q0 - r0).max() > _GRID_TOL:
        return f"lies {np.abs(q0 - r0).max():.2f} voxel off the grid's voxel centres"
    inv = np.linalg.inv(geometry.matrix * np.asarray(geometry.spacing)[None, :])
    ijk = [np.full((1,) * len(shape), int(r0[c]), dtype=np.int64) for c in range(3)]
    for a, step in enumerate(steps):
        d = inv @ np.asarray(step, float)
        rd = np.round(d)
        if np.abs(rd).sum() != 1 or np.abs(d - rd).max() * max(shape[a] - 1, 1) > _GRID_TOL:
            return "its axes are not along the grid's axes with the grid's spacing"
        c = int(np.argmax(np.abs(rd)))
        along = [1] * len(shape)
        along[a] = shape[a]
        ijk[c] = ijk[c] + int(rd[c]) * np.arange(shape[a]).reshape(along)
    size = geometry.size
    for c in range(3):
        if ijk[c].min() < 0 or ijk[c].max() >= size[c]:
            return "it reaches outside the grid"
    return ijk[2], ijk[1], ijk[0]


def _slice_name(ds) -> str:
    name = Path(str(getattr(ds, "filename", "") or "")).name
    return name or f"SOPInstanceUID {ds.get('SOPInstanceUID', '?')}"


def _coverage(datasets: list, geometry: Geometry, what: Path | None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Indices of each source slice's pixels on ``geometry``; every voxel of the grid must be some
    slice's pixel exactly once (the labels lose nothing and the slices hold nothing else)."""
    count = np.zeros(geometry.shape, np.uint16)
    out = []
    for ds in datasets:
        origin, row_step, col_step = slice_plane(ds, what)
        idx = _grid_indices(origin, (row_step, col_step), (int(ds.Rows), int(ds.Columns)), geometry)
        if isinstance(idx, str):
            raise GeometryMismatchError(
                what, f"source slice {_slice_name(ds)} is not a plane of the labels' grid: {idx}; "
                "the labels must be on the scan's own grid"
            )
        count[idx] += 1  # a slice's pixels are distinct voxels, so plain fancy indexing counts right
        out.append(idx)
    if count.max() > 1:
        raise GeometryMismatchError(what, "two source slices share a plane of the labels' grid (duplicated slices?)")
    if count.min() == 0:
        missing = int(np.count_nonzero(count.reshape(count.shape[0], -1).max(axis=1) == 0))
        raise GeometryMismatchError(
            what, f"the source series covers only part of the labels' grid ({missing} of {count.shape[0]} "
            "label slices have no source slice); the labels must be on the scan's own grid"
        )
    return out


def label_frames(labels: Volume, datasets: list, what: Path | None = None) -> np.ndarray:
    """The labels resampled, without interpolation, onto each source slice's pixel grid.

    Parameters
    ----------
    labels : label volume on the series' grid (or that grid with flipped / swapped axes)
    datasets : the source slices (:func:`source_slices`)

    Returns
    -------
    ndarray, shape (n_slices, rows, columns), labels.dtype: frame ``m`` holds the labels on
    ``datasets[m]``'s pixels, ``frame[r, c]`` at that slice's pixel (row r, column c)

    Raises
    ------
    GeometryMismatchError : a slice is not a plane of the labels' grid, or slices and grid do not
        cover each other exactly
    """
    rows = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(rows) != 1:
        raise InputError(what, f"the source slices have different sizes {sorted(rows)}")
    arr = np.asarray(labels.array)
    return np.stack([arr[idx] for idx in _coverage(datasets, labels.geometry, what)])


def prepare_frames(labels: Volume, source, out_path: Path, *, overwrite: bool,
                   series_uid: str | None, multi_frame: bool = False) -> tuple[list, np.ndarray]:
    """What a DICOM object of ``labels`` on ``source``'s slices starts from: the source slice
    datasets and the label frames ``(n_slices, rows, cols)`` in their order (for an enhanced multi-frame
    scan, when the caller takes one (``multi_frame``): its one dataset and a label frame per source frame),
    refused (before the series is read) when ``out_path`` exists and ``overwrite`` is False."""
    if Path(out_path).exists() and not overwrite:
        raise ExistsError(Path(out_path))
    arr = checked_labels(labels, Path(out_path))
    if isinstance(source, Volume) and source.meta.get("enhanced") and not multi_frame:
        raise InputError(Path(out_path), "the scan is an enhanced multi-frame CT (one file); an RTSTRUCT is written "
                                         "only for one-slice-per-file series so far (a DICOM-SEG is written)")
    datasets = source_slices(source, labels.geometry, series_uid=series_uid)
    if isinstance(source, Volume) and (source.meta.get("source_geometry") or source.meta.get("enhanced")):
        from orbitseg.io.dicom import labels_on_source_slices  # resampled when read (gantry tilt, slice blocks)
        # or frames of one file: back onto the series' own slices / frames

        return datasets, labels_on_source_slices(labels.like(arr), source, datasets, Path(out_path))
    return datasets, label_frames(labels.like(arr), datasets, Path(out_path))


def checked_labels(labels: Volume, out_path: Path) -> np.ndarray:
    """``labels.array`` as uint8 after checking it is 3D and holds only orbitseg's label ids."""
    arr = np.asarray(labels.array)
    if arr.ndim != 3:
        raise InputError(out_path, f"labels must be 3D, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(arr == np.round(arr)):
            raise InputError(out_path, f"labels must hold integer label ids, got {arr.dtype} values")
    if arr.dtype == np.uint8:  # the usual case: a histogram is much faster than np.unique
        present = set(np.flatnonzero(np.bincount(arr.ravel(), minlength=256)).tolist())
    else:
        present = set(np.unique(arr).astype(int).tolist())
    bad = sorted(present - set(LABEL_NAMES))
    if bad:
        raise InputError(out_path, f"labels hold values {bad}; only {sorted(LABEL_NAMES)} ({', '.join(LABEL_NAMES.values())}) can be written")
    return arr.astype(np.uint8)


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------
def _coded(code: tuple[str, str, str]):
    import highdicom as hd

    value, scheme, meaning = code
    return hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def segment_descriptions(algorithm_type: str = "AUTOMATIC", algorithm_version: str = __version__,
                         algorithm_parameters: dict[str, str] | None = None) -> list:
    """highdicom SegmentDescriptions of the three structures, numbered as the labels (1, 2, 3)."""
    import highdicom as hd

    algorithm_type = algorithm_type.upper()
    algorithm = None
    if algorithm_type != "MANUAL":  # a manual segment names no algorithm (PS3.3 C.8.20.4)
        algorithm = hd.AlgorithmIdentificationSequence(
            name="orbitseg", family=_coded(_AI_FAMILY), version=algorithm_version, parameters=algorithm_parameters
        )
    out = []
    for label in STRUCTURES:
        out.append(
            hd.seg.SegmentDescription(
                segment_number=label,
                segment_label=LABEL_TITLES[label],
                segmented_property_category=_coded(CATEGORY_CODE),
                segmented_property_type=_coded(STRUCTURE_CODES[label]),
                algorithm_type=algorithm_type,
                algorithm_identification=algorithm,
                display_color=hd.color.CIELabColor.from_rgb(*LABEL_COLOURS[label]),
            )
        )
    return out


def write_dicom_seg(
    labels: Volume,
    source: str | Path | Volume | Sequence,
    out_path: str | Path,
    *,
    overwrite: bool = False,
    series_uid: str | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = 300,
    series_description: str = "orbitseg segmentation",
    algorithm_type: str = "AUTOMATIC",
    algorithm_parameters: dict[str, str] | None = None,
) -> Path:
    """Write ``labels`` as a DICOM Segmentation object referencing its source CT series.

    Parameters
    ----------
    labels : label volume (values 0..3) on the scan's own grid, array shape (nz, ny, nx)
    source : the scan's DICOM series: its folder, the scan :class:`Volume` read from it, or its slice
        datasets (see :func:`source_slices`)
    out_path : the ``.dcm`` file to write, atomically
    overwrite : replace an existing ``out_path``
    series_uid : which series of a ``source`` folder holding several
    series_instance_uid, sop_instance_uid : UIDs of the new object (fresh ones when None; pass fixed
        ones to make a rerun write the same object)
    algorithm_type : ``AUTOMATIC`` (a prediction), ``SEMIAUTOMATIC`` or ``MANUAL`` (drawn labels)
    algorithm_parameters : recorded in the algorithm identification (e.g. the model's checksum)

    Returns
    -------
    Path : ``out_path``

    Raises
    ------
    ExistsError : ``out_path`` exists and ``overwrite`` is False
    InputError : labels with other values, a source that is not a DICOM series
    GeometryMismatchError : the labels are not on the series' grid
    """
    import highdicom as hd

    out_path = Path(out_path)
    datasets, frames = prepare_frames(labels, source, out_path, overwrite=overwrite, series_uid=series_uid,
                                      multi_frame=True)
    try:
        seg = hd.seg.Segmentation(
            source_images=datasets,
            pixel_array=frames,  # integer frames: the values are the segment numbers
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segment_descriptions(algorithm_type, __version__, algorithm_parameters),
            series_instance_uid=series_instance_uid or hd.UID(),
            series_number=series_number,
            sop_instance_uid=sop_instance_uid or hd.UID(),
            instance_number=1,
            manufacturer="orbitseg",
            manufacturer_model_name="orbitseg",
            software_versions=__version__,
            device_serial_number="0",
            content_label="ORBITSEG",
            content_description="Eyeball, extraocular muscles and optic nerve",
        )
        seg.SeriesDescription = series_description
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise InputError(out_path, f"cannot make a DICOM Segmentation from these slices: {exc}") from None
    with atomic_path(out_path, overwrite=overwrite) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return out_path


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------
def _structure_of(desc) -> int | None:
    """The orbitseg label of a segment description: by its property type code, else by its label."""
    for item in desc.get("SegmentedPropertyTypeCodeSequence", []) or []:
        key = (str(item.get("CodeValue", "")), str(item.get("CodingSchemeDesignator", "")))
        for label, (value, scheme, _) in STRUCTURE_CODES.items():
            if key == (value, scheme):
                return label
        if key in _TYPE_ALIASES:
            return _TYPE_ALIASES[key]
    text = str(desc.get("SegmentLabel", "")).strip().lower().replace("_", " ")
    for label in STRUCTURES:
        names = {LABEL_NAMES[label].replace("_", " "), LABEL_TITLES[label].lower(), STRUCTURE_CODES[label][2].lower()}
        if text in names:
            return label
    return None


def _reference_geometry(path: Path, reference, seg) -> tuple[Geometry, str | None, SliceStack | None]:
    """The grid to place the frames on, the reference's series UID when known, and the series' own slices
    when the reference was resampled as it was read (gantry tilt, slice blocks: the frames lie on those)."""
    refs = [str(it.SeriesInstanceUID) for it in seg.get("ReferencedSeriesSequence", []) or []]
    if reference is None:
        raise InputError(
            path,
            "reading a DICOM-SEG needs its reference scan (the scan volume or the folder of series "
            f"{refs[0] if refs else '?'}): a SEG holds frames only where there are labels, not the scan's grid",
        )
    if isinstance(reference, (str, Path)):
        from orbitseg.io.dicom import read_dicom_series

        uid = refs[0] if len(refs) == 1 else None
        reference = read_dicom_series(reference, series_uid=uid)
    if isinstance(reference, Volume):
        ref_uid = reference.meta.get("series_uid")
        if ref_uid and refs and ref_uid not in refs:
            raise InputError(
                path, f"refers to series {', '.join(refs)}, but the reference scan is series {ref_uid}"
            )
        return reference.geometry, ref_uid, SliceStack.from_meta(reference.meta)
    if isinstance(reference, Geometry):
        return reference, None, None
    raise TypeError(f"reference must be a Volume, a Geometry or a series folder, not {type(reference).__name__}")


def _frame_plane(seg, n: int, shared) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(origin, row step, column step) in LPS mm of frame ``n`` (0-based)."""
    per = seg.PerFrameFunctionalGroupsSequence[n]

    def pick(name):
        for group in (per, shared):
            if group is not None and name in group:
                return group[name].value[0]
        raise KeyError(name)

    ipp = np.asarray([float(v) for v in pick("PlanePositionSequence").ImagePositionPatient], float)
    iop = np.asarray([float(v) for v in pick("PlaneOrientationSequence").ImageOrientationPatient], float)
    ps = np.asarray([float(v) for v in pick("PixelMeasuresSequence").PixelSpacing], float)
    return ipp, iop[3:] * ps[0], iop[:3] * ps[1]


def read_dicom_seg(path: str | Path, reference: Volume | Geometry | str | Path | None = None) -> Volume:
    """Read a DICOM Segmentation as an orbitseg label volume on its reference scan's grid (any
    library failure becomes an :class:`InputError` naming the file: :func:`orbitseg.io.guard.reader_boundary`).

    Parameters
    ----------
    path : the SEG file
    reference : the scan the SEG refers to: its :class:`Volume` (as read by ``read_scan``), its
        :class:`Geometry`, or the folder of its DICOM series.  Needed because a SEG stores frames only
        where a structure is, not the scan's extent.

    Returns
    -------
    Volume
        uint8 labels 0..3, array shape (nz, ny, nx) of the reference grid; ``meta`` holds
        ``format="dicom-seg"``, ``series_uid`` (the referenced series) and ``segments``
        (segment number -> label).

    Raises
    ------
    InputError : not DICOM, not a Segmentation, a FRACTIONAL one, segments that are no orbitseg
        structure, overlapping segments of different structures, no reference, a reference of
        another series, frames that are not on the reference's slices
    """
    with reader_boundary(path):
        return _read_dicom_seg(Path(path), reference)


def _read_dicom_seg(path: Path, reference) -> Volume:
    """:func:`read_dicom_seg` inside the reader boundary."""
    import highdicom as hd
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "does not exist")
    try:
        head = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError):
        raise InputError(path, "is not a DICOM file") from None
    sop = str(head.get("SOPClassUID", ""))
    if sop not in _SEG_SOP_CLASSES:
        what = getattr(pydicom.uid.UID(sop), "name", sop) if sop else "no SOP class"
        raise InputError(path, f"is a {what} (modality {head.get('Modality', '?')}), not a DICOM Segmentation")
    with reader_boundary(path):  # what the header promises bounds memory before highdicom reads the frames
        frames, rows, cols = (int(head.get(k, 1) or 1) for k in ("NumberOfFrames", "Rows", "Columns"))
    if frames * rows * cols > MAX_VOXELS or min(frames, rows, cols) < 1:
        raise InputError(path, f"declares {frames} frames of {rows} x {cols} pixels: not a segmentation orbitseg "
                               f"reads (at most {MAX_VOXELS} voxels)")
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # noqa: BLE001 - highdicom raises many kinds for a broken SEG
        raise InputError(path, f"is not a usable DICOM Segmentation: {exc}") from None
    seg_type = str(seg.SegmentationType)
    if seg_type not in ("BINARY", "LABELMAP"):
        raise InputError(path, f"is a {seg_type} segmentation; only BINARY (or LABELMAP) ones map onto labels")

    to_label: dict[int, int] = {}
    unknown = []
    for desc in seg.SegmentSequence:
        number = int(desc.SegmentNumber)
        label = _structure_of(desc)
        if label is None:
            codes = [f"{it.CodingSchemeDesignator} {it.CodeValue} '{it.CodeMeaning}'"
                     for it in desc.get("SegmentedPropertyTypeCodeSequence", []) or []]
            unknown.append(f"segment {number} '{desc.get('SegmentLabel', '')}' ({', '.join(codes) or 'no type code'})")
        else:
            to_label[number] = label
    if unknown:
        raise InputError(
            path, "holds segments that are none of eyeball, extraocular muscles, optic nerve: " + "; ".join(unknown)
        )

    geometry, ref_uid, stack = _reference_geometry(path, reference, seg)
    out = np.zeros(stack.shape if stack else geometry.shape, np.uint8)
    shared = seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg else None
    n_frames = int(seg.get("NumberOfFrames", 0) or 0)
    lut = np.zeros(max([0, *to_label]) + 1, np.uint8)
    for number, label in to_label.items():
        lut[number] = label
    for n in range(n_frames):
        try:
            origin, row_step, col_step = _frame_plane(seg, n, shared)
        except (KeyError, AttributeError, IndexError, TypeError, ValueError):
            raise InputError(path, f"frame {n + 1} has no plane position / orientation / pixel spacing") from None
        if stack:  # a frame on source slice k: its pixels are out[k]
            idx = stack.slice_of(origin, row_step, col_step, (int(seg.Rows), int(seg.Columns)))
            idx = idx if isinstance(idx, str) else (idx,)
        else:
            idx = _grid_indices(origin, (row_step, col_step), (int(seg.Rows), int(seg.Columns)), geometry)
        if isinstance(idx, str):
            raise InputError(path, f"frame {n + 1} at {np.round(origin, 2).tolist()} mm is not on a slice of the reference scan: {idx}")
        frame = np.asarray(seg.get_stored_frame(n, as_index=True))
        if seg_type == "LABELMAP":
            if frame.max(initial=0) >= lut.size:
                raise InputError(path, f"frame {n + 1} holds segment numbers the SEG does not describe")
            values = lut[frame]
            fg = values > 0
        else:
            number = int(seg.PerFrameFunctionalGroupsSequence[n].SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            if number not in to_label:
                raise InputError(path, f"frame {n + 1} refers to segment {number}, which the SEG does not describe")
            fg = frame > 0
            values = np.where(fg, to_label[number], 0).astype(np.uint8)
        target = out[idx]
        clash = fg & (target > 0) & (target != values)
        if clash.any():
            raise InputError(
                path, f"segments of different structures overlap ({int(clash.sum())} voxels in frame {n + 1}); "
                "a label volume holds one structure per voxel"
            )
        target[fg] = values[fg]
        out[idx] = target
    if stack:  # from the series' slices onto the grid the scan was read on, nearest in physical space
        out = stack.to_grid(out, geometry, order=0, cval=0)
    refs = [str(it.SeriesInstanceUID) for it in seg.get("ReferencedSeriesSequence", []) or []]
    meta = {"format": "dicom-seg", "series_uid": refs[0] if refs else ref_uid, "segments": dict(to_label)}
    return Volume(out, geometry, path, meta)


# ---------------------------------------------------------------------------
# a SEG without its scan (read_label, evaluate)
# ---------------------------------------------------------------------------
def is_dicom_seg(path: str | Path) -> bool:
    """True for a DICOM Part 10 file whose SOP class is a Segmentation (whatever its name)."""
    import pydicom

    from orbitseg.io.dicom import is_dicom_file

    path = Path(path)
    if not path.is_file() or not is_dicom_file(path):
        return False
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        return str(ds.get("SOPClassUID", "")) in _SEG_SOP_CLASSES
    except Exception:  # noqa: BLE001 - unreadable: not a SEG orbitseg can use
        return False


def frames_geometry(path: str | Path, *more: str | Path) -> Geometry:
    """The grid a SEG's own frames lie on, when its scan is not at hand.

    A SEG stores frames only on the source slices that hold a structure; their planes (orientation,
    pixel spacing, rows x columns) and the slice spacing (``SpacingBetweenSlices``, else the smallest
    gap between frames) give the source series' grid cropped, along the slice normal, to the first
    and last frame: the way :func:`orbitseg.io.read.read_label` reads a cropped 3D Slicer
    ``.seg.nrrd``.  With ``more`` SEGs (e.g. a prediction and its reference in ``orbitseg evaluate``)
    the grid spans the frames of all of them, which must refer to the same series and lie on one stack.

    Returns
    -------
    Geometry : size (columns, rows, planes); axis i along a row, j down a column, k the slice normal

    Raises
    ------
    InputError : not a SEG, no frames, frames off one stack of planes, SEGs of different series,
        naming the file
    """
    paths = [Path(path), *map(Path, more)]
    planes: list[tuple[Path, np.ndarray]] = []
    first = None  # (rows, columns, row step, column step, slice spacing, series, path)
    for p in paths:
        with reader_boundary(p):
            seg, n_frames = _seg_header(p)
            shared = seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg else None
            refs = sorted(str(it.SeriesInstanceUID) for it in seg.get("ReferencedSeriesSequence", []) or [])
            if first is not None and refs and first[5] and refs != first[5]:
                raise InputError(p, f"refers to series {', '.join(refs)}, while {first[6]} refers to series "
                                    f"{', '.join(first[5])}: they segment different scans")
            if n_frames == 0:
                raise InputError(p, "holds no frames (no structure segmented): without its scan its grid is unknown")
            for n in range(n_frames):
                try:
                    origin, row_step, col_step = _frame_plane(seg, n, shared)
                except (KeyError, AttributeError, IndexError, TypeError, ValueError):
                    raise InputError(p, f"frame {n + 1} has no plane position / orientation / pixel spacing") from None
                if first is None:
                    first = (int(seg.Rows), int(seg.Columns), row_step, col_step, _slice_spacing(seg, shared), refs, p)
                elif (int(seg.Rows), int(seg.Columns)) != first[:2] or not (
                        np.allclose(row_step, first[2], atol=1e-4) and np.allclose(col_step, first[3], atol=1e-4)):
                    other = "its first frame" if first[6] == p else f"the frames of {first[6]}"
                    raise InputError(p, f"frame {n + 1} lies on other planes (size, orientation or pixel "
                                        f"spacing) than {other}")
                planes.append((p, origin))
    rows, cols, row_step, col_step, spacing, _, _ = first
    u, v = col_step / np.linalg.norm(col_step), row_step / np.linalg.norm(row_step)
    normal = np.cross(u, v)
    depth = np.array([float(o @ normal) for _, o in planes])
    if spacing is None:
        gaps = np.diff(np.unique(np.round(depth, 4)))
        spacing = float(gaps.min()) if gaps.size else 1.0
    k0 = int(np.argmin(depth))
    origin0 = planes[k0][1]
    for p, o in planes:
        d = o - origin0
        steps = float(d @ normal) / spacing
        in_plane = d - (d @ normal) * normal
        if abs(steps - round(steps)) > _GRID_TOL or np.linalg.norm(in_plane) > _GRID_TOL * min(
                np.linalg.norm(row_step), np.linalg.norm(col_step)):
            raise InputError(p, f"a frame at {np.round(o, 2).tolist()} mm is not on the stack of planes "
                                f"{spacing:g} mm apart that the other frames lie on")
    n_planes = int(round((depth.max() - depth.min()) / spacing)) + 1
    return Geometry(size=(cols, rows, n_planes),
                    spacing=(float(np.linalg.norm(col_step)), float(np.linalg.norm(row_step)), spacing),
                    origin=tuple(float(x) for x in origin0), direction=np.stack([u, v, normal], axis=1))


def _seg_header(path: Path):
    """(header without pixels, number of frames) of a SEG, refused by name when it is none."""
    import pydicom

    if not path.is_file():
        raise InputError(path, "does not exist")
    try:
        seg = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - any parse failure: not DICOM
        raise InputError(path, "is not a DICOM file") from None
    if str(seg.get("SOPClassUID", "")) not in _SEG_SOP_CLASSES:
        raise InputError(path, f"is not a DICOM Segmentation (modality {seg.get('Modality', '?')})")
    return seg, int(seg.get("NumberOfFrames", 0) or 0)


def _slice_spacing(seg, shared) -> float | None:
    """SpacingBetweenSlices of the SEG's pixel measures (shared, else the first frame's), when positive."""
    for group in (shared, seg.PerFrameFunctionalGroupsSequence[0]):
        if group is not None and "PixelMeasuresSequence" in group:
            value = group.PixelMeasuresSequence[0].get("SpacingBetweenSlices")
            try:
                if value is not None and float(value) > 0:
                    return float(value)
            except (TypeError, ValueError):
                return None
    return None
