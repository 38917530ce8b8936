"""DICOM RT Structure Sets (RTSTRUCT): the labels as planar contours on the source CT slices.

One ROI per structure (eyeball, extraocular muscles, optic nerve), named and coloured as in
:mod:`orbitseg.constants`, with the same SNOMED CT codes as the DICOM-SEG
(:data:`orbitseg.io.dicomseg.STRUCTURE_CODES`).  A structure absent from the labels is an ROI
without contours, as in the DICOM-SEG.

Contours run along the outer edges of the labelled pixels of each source slice (not through
their centres), so a planning system that fills a contour with the pixels whose centres lie
inside it gets exactly the labelled pixels back, and the polygons' area is the pixels' area.
A hole (a pixel region inside a structure that is not that structure) is a separate contour
inside the outer one; as most planning systems do, nested contours combine by XOR (even-odd).
Pixels touching only at a corner get separate contours that share that corner.

Why not rt-utils: its release on PyPI (1.2.7) traces contours through the centres of the
boundary pixels, so a reader that fills pixel centres inside the contour loses the outer ring
(measured on a synthetic orbit: Dice 0.95 eyeball, 0.82 muscles, 0.77 optic nerve; the fix, a
voxel-edge mode, is merged upstream but unreleased), it swaps row and column spacing for
non-square pixels (qurit/rt-utils issue 92, open), and it pulls opencv-python (the GUI build,
which needs libGL on the host) and the obsolete ``dataclasses`` backport.  highdicom writes no
RTSTRUCT, so the dataset is built here with pydicom, module by module (PS3.3 A.19).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from orbitseg import __version__
from orbitseg.constants import LABEL_COLOURS, LABEL_NAMES, LABEL_TITLES, STRUCTURES
from orbitseg.io.atomic import atomic_path
from orbitseg.io.dicom import _ds_str
from orbitseg.io.dicomseg import STRUCTURE_CODES, prepare_frames, slice_plane
from orbitseg.io.volume import Volume

__all__ = ["write_rtstruct", "mask_contours", "RT_STRUCTURE_SET_STORAGE"]

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
#: (3006,0050) Contour Data
_CONTOUR_DATA = 0x30060050
#: referenced in RT Referenced Study Sequence by convention (PS3.3 C.8.8.5: "Detached Study
#: Management SOP Class", retired but what the standard's examples and planning systems use)
_STUDY_COMPONENT_CLASS = "1.2.840.10008.3.1.2.3.1"
#: attributes copied from the source slices into the structure set (Patient, General Study modules)
_COPIED = (
    "SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription",
)
_TYPE2_DEFAULTS = {
    "PatientName": "", "PatientID": "", "PatientBirthDate": "", "PatientSex": "", "StudyDate": "", "StudyTime": "",
    "ReferringPhysicianName": "", "StudyID": "", "AccessionNumber": "",
}


# ---------------------------------------------------------------------------
# contours of a mask
# ---------------------------------------------------------------------------
def mask_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed polygons along the outer pixel edges of a 2D mask.

    Parameters
    ----------
    mask : bool array, shape (rows, columns)

    Returns
    -------
    list of float arrays, shape (n_vertices, 2): (row, column) of each corner in pixel units, pixel
    (r, c) centred on (r, c), so every vertex is at half-integer coordinates.  The polygon closes
    from its last vertex back to its first; only corners where the boundary turns are kept.
    Each polygon is simple (it passes each corner once).  Filling all polygons with the even-odd
    rule gives back ``mask`` exactly, and their signed areas add up to its pixel count.
    """
    mask = np.asarray(mask, bool)
    if not mask.any():
        return []
    m = np.pad(mask, 1)
    fg = m[1:-1, 1:-1]
    y, x = np.nonzero(fg)
    y, x = y + 1, x + 1  # padded coordinates; corner (y, x) is the top-left corner of padded pixel (y, x)
    # boundary edges with the structure on their right (on screen, rows downwards): outer boundaries
    # run clockwise, holes anticlockwise
    edges = []
    for sel, a, b in (
        (~m[y - 1, x], (y, x), (y, x + 1)),  # top: eastwards
        (~m[y, x + 1], (y, x + 1), (y + 1, x + 1)),  # right: southwards
        (~m[y + 1, x], (y + 1, x + 1), (y + 1, x)),  # bottom: westwards
        (~m[y, x - 1], (y + 1, x), (y, x)),  # left: northwards
    ):
        edges += zip(zip(a[0][sel].tolist(), a[1][sel].tolist()), zip(b[0][sel].tolist(), b[1][sel].tolist()))
    out: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for a, b in edges:
        out.setdefault(a, []).append(b)
    used: set = set()
    loops = []
    for start in sorted(edges):
        if start in used:
            continue
        pts = [start[0]]
        e = start
        while True:
            used.add(e)
            (y0, x0), (y1, x1) = e
            ends = out[(y1, x1)]
            if len(ends) == 1:
                nxt = ends[0]
            else:  # two pixels meet at this corner only: turn right, keeping each pixel region apart
                dy, dx = y1 - y0, x1 - x0
                nxt = (y1 + dx, x1 - dy)
            e = ((y1, x1), nxt)
            if e == start:
                break
            pts.append((y1, x1))
            if len(pts) > len(edges):  # cannot happen while each edge has one successor; never hang
                raise RuntimeError("contour tracing did not close")
        for loop in _split_at_repeats(pts):
            p = np.asarray(loop, float)
            d_in = p - np.roll(p, 1, axis=0)
            d_out = np.roll(p, -1, axis=0) - p
            keep = np.any(d_in != d_out, axis=1)  # drop corners on a straight run
            loops.append(p[keep] - 1.5)  # padded corner (y, x) -> pixel coordinates (y - 1.5, x - 1.5)
    return loops


def _split_at_repeats(pts: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """A closed walk that passes a corner twice (a region touching itself at a corner, around a
    pocket of background) cut there into closed walks that pass each corner once: simple polygons,
    with the same edges, so the even-odd fill is unchanged."""
    out, stack, where = [], [], {}
    for v in pts:
        if v in where:
            i = where[v]
            out.append(stack[i:])
            for u in stack[i + 1:]:
                del where[u]
            del stack[i + 1:]
        else:
            where[v] = len(stack)
            stack.append(v)
    out.append(stack)
    return out


# ---------------------------------------------------------------------------
# the structure set
# ---------------------------------------------------------------------------
def _raw_ds(tag, values: np.ndarray):
    """A DS element kept as its encoded bytes: pydicom's per-value DS objects and checks cost seconds
    for the ~10^5 coordinates of a scan's contours, and these strings are valid by construction."""
    from pydicom.dataelem import RawDataElement

    data = "\\".join(_ds_str(float(v)) for v in values).encode("ascii")
    if len(data) % 2:
        data += b" "  # DICOM values have even length, DS padded with a space
    return RawDataElement(tag, "DS", len(data), data, 0, False, True)


def _code_item(code: tuple[str, str, str]):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def _image_ref(ds):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    return item


def write_rtstruct(
    labels: Volume,
    source_series_dir: str | Path | Volume | Sequence,
    out_path: str | Path,
    *,
    overwrite: bool = False,
    series_uid: str | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = 301,
    series_description: str = "orbitseg structures",
    algorithm_type: str = "AUTOMATIC",
) -> Path:
    """Write ``labels`` as an RT Structure Set of contours on its source CT slices.

    Parameters
    ----------
    labels : label volume (values 0..3) on the scan's own grid, array shape (nz, ny, nx)
    source_series_dir : the scan's DICOM series: its folder, the scan :class:`Volume` read from it, or
        its slice datasets (see :func:`orbitseg.io.dicomseg.source_slices`)
    out_path : the ``.dcm`` file to write, atomically
    overwrite : replace an existing ``out_path``
    series_uid : which series of a folder holding several
    series_instance_uid, sop_instance_uid : UIDs of the new object (fresh ones when None)
    algorithm_type : ROI Generation Algorithm: ``AUTOMATIC``, ``SEMIAUTOMATIC`` or ``MANUAL``

    Returns
    -------
    Path : ``out_path``

    Raises
    ------
    ExistsError : ``out_path`` exists and ``overwrite`` is False
    InputError : labels with other values, a source that is not a DICOM series
    GeometryMismatchError : the labels are not on the series' grid
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

    out_path = Path(out_path)
    datasets, frames = prepare_frames(labels, source_series_dir, out_path, overwrite=overwrite, series_uid=series_uid)
    first = datasets[0]
    frame_of_reference = str(first.FrameOfReferenceUID)
    now = _dt.datetime.now()
    sop_uid = sop_instance_uid or str(generate_uid())

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    for key in _COPIED:  # Patient and General Study modules: the same patient and study as the scan
        if key in first:
            ds[key] = first[key]
        elif key in _TYPE2_DEFAULTS:
            setattr(ds, key, _TYPE2_DEFAULTS[key])
    # SOP Common
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    # RT Series
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = series_instance_uid or str(generate_uid())
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.OperatorsName = ""
    # General Equipment
    ds.Manufacturer = "orbitseg"
    ds.ManufacturerModelName = "orbitseg"
    ds.SoftwareVersions = __version__
    # Frame of Reference: the scan's
    ds.FrameOfReferenceUID = frame_of_reference
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "")
    # Structure Set
    ds.StructureSetLabel = "ORBITSEG"
    ds.StructureSetName = "orbitseg"
    ds.StructureSetDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = now.strftime("%H%M%S")
    series_item = Dataset()
    series_item.SeriesInstanceUID = first.SeriesInstanceUID
    series_item.ContourImageSequence = DicomSequence([_image_ref(d) for d in datasets])
    study_item = Dataset()
    study_item.ReferencedSOPClassUID = _STUDY_COMPONENT_CLASS
    study_item.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study_item.RTReferencedSeriesSequence = DicomSequence([series_item])
    for_item = Dataset()
    for_item.FrameOfReferenceUID = frame_of_reference
    for_item.RTReferencedStudySequence = DicomSequence([study_item])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([for_item])

    roi_items, contour_items, observation_items = [], [], []
    algorithm_type = algorithm_type.upper()
    for label in STRUCTURES:
        roi = Dataset()
        roi.ROINumber = label
        roi.ReferencedFrameOfReferenceUID = frame_of_reference
        roi.ROIName = LABEL_TITLES[label]
        roi.ROIDescription = LABEL_NAMES[label]
        roi.ROIGenerationAlgorithm = algorithm_type
        roi.ROIGenerationDescription = f"orbitseg {__version__}"
        roi_items.append(roi)

        contours = []
        for m, src in enumerate(datasets):
            origin, row_step, col_step = slice_plane(src, out_path)
            for poly in mask_contours(frames[m] == label):
                xyz = origin + poly[:, :1] * row_step + poly[:, 1:] * col_step  # (row, column) -> LPS mm
                c = Dataset()
                c.ContourImageSequence = DicomSequence([_image_ref(src)])
                c.ContourGeometricType = "CLOSED_PLANAR"
                c.NumberOfContourPoints = len(xyz)
                c.ContourNumber = len(contours) + 1
                c[_CONTOUR_DATA] = _raw_ds(_CONTOUR_DATA, xyz.ravel())
                contours.append(c)
        item = Dataset()
        item.ROIDisplayColor = list(LABEL_COLOURS[label])
        item.ReferencedROINumber = label
        if contours:  # Contour Sequence is type 3: an absent structure is an ROI without contours
            item.ContourSequence = DicomSequence(contours)
        contour_items.append(item)

        obs = Dataset()
        obs.ObservationNumber = label
        obs.ReferencedROINumber = label
        obs.RTROIInterpretedType = "ORGAN"
        obs.ROIInterpreter = ""
        obs.RTROIIdentificationCodeSequence = DicomSequence([_code_item(STRUCTURE_CODES[label])])
        observation_items.append(obs)
    ds.StructureSetROISequence = DicomSequence(roi_items)
    ds.ROIContourSequence = DicomSequence(contour_items)
    ds.RTROIObservationsSequence = DicomSequence(observation_items)

    with atomic_path(out_path, overwrite=overwrite) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return out_path
