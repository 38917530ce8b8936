"""DICOM CT series: find, read (with exact geometry) and write.

Reading
    Headers are scanned with pydicom; files that are not images (DICOMDIR,
    structured reports, presentation states), localizers / scouts and
    secondary captures are set aside.  Slices are sorted by their
    ImagePositionPatient along the slice normal (row x column cosines), so
    index axis k always points along that normal.  A missing slice or a
    duplicated position is an error naming the folder.  A gantry-tilted series
    (slice origins shifted in-plane along the stack) or one of several slice
    blocks (uneven spacing) is resampled onto an orthogonal grid covering every
    slice, recorded in ``meta["resampled"]`` with the slices' own geometry in
    ``meta["source_geometry"]`` (:class:`SliceStack`), which DICOM outputs use
    to go back onto those slices (:func:`labels_on_source_slices`).  An
    enhanced multi-frame CT (one file) is read from its functional groups.  A
    folder holding a study reads its thinnest axial CT series of the head
    when that is unambiguous.  Pixel values are read with SimpleITK's
    ImageSeriesReader (GDCM: every compressed transfer syntax), which applies
    each file's RescaleSlope / RescaleIntercept; the geometry is computed here
    from the headers.

    Before SimpleITK reads a pixel, every slice's header is checked here: its
    tags decode (no invalid VR or value length), Rows / Columns are single
    whole numbers, one sample per pixel of 8, 16 or 32 bits, a known transfer
    syntax, pixel data present and, uncompressed, as long as Rows x Columns
    promise and inside the file (a truncated file is named), positions and
    spacings finite; the series' voxels stay under
    :data:`orbitseg.io.guard.MAX_VOXELS`.  So memory is bounded by what the
    files hold, and every problem is an InputError naming the folder and file.

Writing
    :func:`write_dicom_series` writes one CT Image Storage file per slice
    ``volume.array[k]``, atomically.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orbitseg.errors import AmbiguousSeriesError, GeometryMismatchError, InputError, NotCTError
from orbitseg.io import guard
from orbitseg.io.atomic import atomic_dir
from orbitseg.io.formats import DICOM_SERIES
from orbitseg.io.volume import Geometry, Volume

__all__ = ["is_dicom_file", "list_dicom_series", "read_dicom_series", "write_dicom_series", "CT_IMAGE_STORAGE",
           "SliceStack", "labels_on_source_slices", "acquisition_record", "acquisition_note", "MAX_SLICE_GAP_MM"]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: SOP classes that never hold a slice of a CT volume
_NON_VOLUME_SOP_PREFIXES = (
    "1.2.840.10008.1.3.10",  # Media Storage Directory (DICOMDIR)
    "1.2.840.10008.5.1.4.1.1.7",  # secondary capture (all kinds)
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, registration, segmentation...
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF / CDA
    "1.2.840.10008.5.1.4.1.1.481.",  # RT objects
)
#: the value length of an element of undefined length (encapsulated pixel data, sequences)
_UNDEFINED = 0xFFFFFFFF
#: relative tolerance on slice-to-slice spacing
_SPACING_RTOL = 0.02
#: header tags needed to sort and group slices
_HEADER_TAGS = [
    "SOPClassUID", "SeriesInstanceUID", "Modality", "SeriesDescription", "ImageType",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns",
    "NumberOfFrames", "PatientID", "InstanceNumber", "SeriesNumber", "RescaleSlope",
    "RescaleIntercept", "StudyInstanceUID", "SliceThickness", "BitsAllocated",
    "PixelPaddingValue", "PixelPaddingRangeLimit", "PixelRepresentation", "SamplesPerPixel",
    "PhotometricInterpretation", "BitsStored", "HighBit",
]


# ---------------------------------------------------------------------------
# finding series
# ---------------------------------------------------------------------------
def is_dicom_file(path: str | Path) -> bool:
    """True for a file with the DICOM Part 10 preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _candidate_files(folder: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            out.append(Path(root) / name)
    return out


def _read_header(path: Path):
    """pydicom header of ``path``, every element undecoded and large values deferred (the pixel data's
    length and place are known, its bytes not read), or None when it is not DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        if is_dicom_file(path):
            return pydicom.dcmread(path, defer_size=256)
        # files without the preamble (old exports): accept only if they parse into an image header
        if path.suffix.lower() not in ("", ".dcm", ".ima", ".dicom"):
            return None
        ds = pydicom.dcmread(path, defer_size=256, force=True)
        if "SeriesInstanceUID" not in ds or "Rows" not in ds:
            return None
        return ds
    except (InvalidDicomError, OSError, ValueError, KeyError, TypeError, EOFError, AttributeError):
        return None
    except Exception:  # noqa: BLE001 - a broken file is simply not a slice
        return None


def _undecodable(ds, path: Path) -> str | None:
    """Why a header cannot be used, or None: an element (file meta or data set) with an invalid value
    representation (pydicom reads its length in 2 bytes, GDCM in 4: the series reader then allocates what
    4 text bytes read as a number, up to 4 GB), an element whose declared length runs past the end of the
    file (a truncated file, or garbage that would make a reader allocate up to 4 GB for it), or one of the
    tags orbitseg uses that does not decode (wrong value length...).  pydicom decodes a value when it is
    first used: decode them all now, while we can say which file."""
    from pydicom.dataelem import RawDataElement
    from pydicom.datadict import keyword_for_tag
    from pydicom.uid import UID
    from pydicom.valuerep import VR

    meta = getattr(ds, "file_meta", None)
    syntax = UID(str(meta.get("TransferSyntaxUID", "") or "")) if meta is not None else UID("")
    size = path.stat().st_size
    check_ends = not (syntax.is_transfer_syntax and syntax.is_deflated)  # deflated: offsets are not the file's
    for dataset, ends in ((meta, True), (ds, check_ends)):
        for tag in list(dataset.keys()) if dataset is not None else []:
            elem = dataset.get_item(tag, keep_deferred=True)
            if not isinstance(elem, RawDataElement):
                continue
            name = keyword_for_tag(tag) or "private or unknown"
            where = f"({tag.group:04X},{tag.elem:04X}) ({name})"
            if elem.VR is not None and elem.VR not in VR.__members__:
                return f"is corrupt: its element {where} has an invalid value representation {elem.VR!r}"
            if ends and elem.length != _UNDEFINED and elem.value_tell is not None \
                    and elem.value_tell + elem.length > size:
                return (f"is truncated or corrupt: its element {where} declares {elem.length} bytes from byte "
                        f"{elem.value_tell}, past the end of the file ({size} bytes)")
    for kw in _HEADER_TAGS:
        try:
            ds.get(kw)
        except Exception as exc:  # noqa: BLE001 - pydicom's errors vary (NotImplementedError, BytesLengthException...)
            return f"its {kw} cannot be decoded ({type(exc).__name__}: {guard.first_line(exc, 120)})"
    return None


def _why_not_slice(ds) -> str | None:
    """Why a DICOM file cannot be a slice of an image volume, or None when it can."""
    sop = str(ds.get("SOPClassUID", ""))
    if any(sop.startswith(p) for p in _NON_VOLUME_SOP_PREFIXES):
        return "not an image slice"
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if "LOCALIZER" in image_type:
        return "localizer"
    if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
        if "PerFrameFunctionalGroupsSequence" in ds and "NumberOfFrames" in ds:
            return None  # a multi-frame (enhanced) image: each frame's position is in its functional groups
        return "no image position"
    return None


def _scan(folder: Path) -> dict[str, dict]:
    """Group every DICOM file under ``folder`` by SeriesInstanceUID."""
    series: dict[str, dict] = {}
    for f in _candidate_files(folder):
        ds = _read_header(f)
        try:
            if ds is None or "SeriesInstanceUID" not in ds:
                continue
            uid = str(ds.SeriesInstanceUID)
        except Exception:  # noqa: BLE001 - a series uid that cannot be decoded: the file belongs to no series
            continue
        damage = _undecodable(ds, f)
        if damage is not None:  # keep it with its series: reading that series names the file
            s = series.setdefault(uid, dict(_new_series(uid, ds), names_unknown=True))
            s["files"].append(f)
            s["damaged"].append((f, damage))
            continue
        s = series.setdefault(uid, _new_series(uid, ds))
        if s["names_unknown"]:  # the first file seen was damaged: take the names from a readable one
            s.update({k: v for k, v in _new_series(uid, ds).items() if k in _SERIES_NAMES})
        s["files"].append(f)
        why = _why_not_slice(ds)
        if why is None:
            s["slices"].append((f, ds))
        else:
            s["skipped"][why] += 1
    return series


_SERIES_NAMES = ("modality", "description", "series_number", "names_unknown")


def _new_series(uid: str, ds) -> dict:
    """A series' entry, named by the header ``ds`` of one of its files."""
    def text(kw: str) -> str:
        try:
            return str(ds.get(kw, "") or "")
        except Exception:  # noqa: BLE001 - undecodable: reading the series will name the file
            return ""

    try:
        number = ds.get("SeriesNumber")
        number = None if number is None or number == "" else int(number)
    except Exception:  # noqa: BLE001
        number = None
    return {
        "uid": uid,
        "modality": text("Modality"),
        "description": text("SeriesDescription"),
        "series_number": number,
        "names_unknown": False,
        "files": [],
        "slices": [],
        "damaged": [],
        "skipped": defaultdict(int),
    }


def _summary(s: dict) -> dict:
    return {
        "uid": s["uid"],
        "modality": s["modality"],
        "n_files": len(s["files"]),
        "description": s["description"],
        "n_images": len(s["slices"]),
        "series_number": s["series_number"],
    }


def list_dicom_series(folder: str | Path) -> list[dict]:
    """Every DICOM series under ``folder`` (searched recursively).

    Returns
    -------
    list of dict with keys ``uid``, ``modality``, ``n_files``, ``description``,
    ``n_images`` (files usable as volume slices: no localizers, reports...)
    and ``series_number``; sorted by series number then uid.
    """
    folder = Path(folder)
    with guard.reader_boundary(folder):
        if not folder.is_dir():
            raise InputError(folder, "is not a folder")
        out = [_summary(s) for s in _scan(folder).values()]
        return sorted(out, key=lambda d: (d["series_number"] is None, d["series_number"] or 0, d["uid"]))


def _choose_series(folder: Path, series: dict[str, dict], series_uid: str | None) -> tuple[dict, str | None]:
    """The series to read, and a sentence saying why when it was picked out of several CT series."""
    if not series:
        raise InputError(folder, "holds no DICOM files")
    if series_uid is not None:
        if series_uid not in series:
            listing = ", ".join(f"{u} ({s['modality']}, {len(s['files'])} files)" for u, s in series.items())
            raise InputError(folder, f"holds no series with uid {series_uid}; found: {listing}")
        chosen = series[series_uid]
        _refuse_damaged(folder, chosen)
        if not chosen["slices"]:
            raise InputError(folder, f"series {series_uid} holds no image slices ({dict(chosen['skipped'])})")
        return chosen, None
    images = [s for s in series.values() if s["slices"] or s["damaged"]]
    ct = [s for s in images if s["modality"].upper() == "CT"]
    if not ct:
        if images:
            found = ", ".join(f"{s['modality'] or '?'} series {s['uid']}" for s in images)
            raise NotCTError(folder, f"holds no CT series (found {found}); pass series_uid to read one anyway")
        raise InputError(folder, "holds DICOM files but no image series (only reports, localizers or similar)")
    why = None
    if len(ct) > 1:
        picked = _thinnest_head_series(folder, ct)
        if picked is None:
            raise AmbiguousSeriesError(folder, [_summary(s) for s in ct])
        chosen, spacing, kernel_note = picked
        name = f" ({chosen['description']})" if chosen["description"] else ""
        why = (f"read series {chosen['uid']}{name}: the thinnest axial CT series of the head ({spacing:.3g} mm) "
               f"of the {len(ct)} CT series in {folder.name}{kernel_note}")
        ct = [chosen]
    _refuse_damaged(folder, ct[0])
    return ct[0], why


#: BodyPartExamined values of a head CT (a series naming another body part is not a candidate)
_HEAD_PARTS = ("HEAD", "BRAIN", "SKULL", "ORBIT", "FACE", "SINUS", "MAXILLOFACIAL", "NEURO", "TEMPORAL")
#: a series counts as axial when its slice normal is within this angle of the body axis (gantry tilt included)
_AXIAL_MAX_DEG = 45.0
#: reconstruction kernels, from ConvolutionKernel or SeriesDescription: sharp ones (bone, lung, edge; Siemens
#: B/H/J/Q(r) 60-99) are passed over for a series of the same slices with a soft-tissue one, which the networks
#: segment better (the shipped model lost 0.016 muscle Dice on the bone kernel: README, Robustness)
_SHARP_KERNEL = re.compile(r"bone|lung|sharp|edge|\b[bhjq]r?[6-9]\d", re.IGNORECASE)


def _thinnest_head_series(folder: Path, ct: list[dict]) -> tuple[dict, float, str] | None:
    """Out of a study's CT series, the one with the thinnest slice spacing among the axial series of the
    head, when that is unambiguous: every series could be judged (none damaged), exactly one candidate
    is thinnest (the next is over 10 % thicker), or of those equally thin (within 10 %) exactly one was
    reconstructed with a soft-tissue kernel and the others with sharp ones (:data:`_SHARP_KERNEL`: a study's
    soft and bone reconstructions of the same slices).  None otherwise.  The str says why when the kernel
    decided ("" otherwise)."""
    candidates = []
    for s in ct:
        if s["damaged"]:
            return None  # a file that cannot be read might belong to the series the user meant
        if len(s["slices"]) < 3:
            continue  # no volume (a dose screen, a single image)
        f0, ds0 = s["slices"][0]
        part = str(ds0.get("BodyPartExamined", "") or "").upper()
        if part and not any(h in part for h in _HEAD_PARTS):
            continue
        try:
            if _count(ds0, "NumberOfFrames", folder, f0, default=1, low=0, high=2**31) > 1:
                planes = _frame_planes(folder, f0, ds0, _count(ds0, "Rows", folder, f0),
                                       _count(ds0, "Columns", folder, f0))
                positions = np.array([p.pos for p in planes])
                iop = planes[0].iop
            else:
                iop = _floats(ds0.ImageOrientationPatient, 6, folder, "ImageOrientationPatient", f0)
                positions = np.array([_floats(ds.ImagePositionPatient, 3, folder, "ImagePositionPatient", f)
                                      for f, ds in s["slices"]])
        except InputError:
            return None
        normal = np.cross(iop[:3], iop[3:])
        if np.linalg.norm(normal) < 0.5:
            return None
        normal = normal / np.linalg.norm(normal)
        if abs(normal[2]) < np.cos(np.radians(_AXIAL_MAX_DEG)):
            continue  # a coronal or sagittal reformat
        gaps = np.diff(np.sort(positions @ normal))
        gaps = gaps[gaps > 1e-3]
        if not gaps.size:
            continue
        candidates.append((float(np.median(gaps)), s))
    if not candidates:
        return None
    candidates.sort(key=lambda c: c[0])
    thin = [c for c in candidates if c[0] <= 1.1 * candidates[0][0]]
    if len(thin) == 1:
        return thin[0][1], thin[0][0], ""
    soft = [c for c in thin if not _sharp_kernel(c[1])]
    if len(soft) != 1:
        return None
    others = [_kernel(c[1]) for c in thin if c is not soft[0]]
    return soft[0][1], soft[0][0], (f"; its kernel is soft-tissue, the other series of the same slices "
                                    f"{'is' if len(others) == 1 else 'are'} sharp ({', '.join(others)})")


def _kernel(s: dict) -> str:
    """A series' reconstruction kernel as its headers say it: ConvolutionKernel, else its description."""
    ds0 = s["slices"][0][1]
    kernel = ds0.get("ConvolutionKernel", None)
    if kernel is not None and not isinstance(kernel, str):
        kernel = " ".join(str(k) for k in kernel)  # multi-valued (Siemens: 'Hr40f', '3')
    return str(kernel or "").strip() or s["description"] or "?"


def _sharp_kernel(s: dict) -> bool:
    return bool(_SHARP_KERNEL.search(_kernel(s)) or _SHARP_KERNEL.search(s["description"] or ""))


def _refuse_damaged(folder: Path, s: dict) -> None:
    """A series with a file whose header cannot be decoded is not read (the file could be one of its slices)."""
    if s["damaged"]:
        f, why = s["damaged"][0]
        more = f"; {len(s['damaged']) - 1} more damaged file(s)" if len(s["damaged"]) > 1 else ""
        raise InputError(folder, f"{f.name}: {why} (series {s['uid']}{more})")


# ---------------------------------------------------------------------------
# geometry from headers
# ---------------------------------------------------------------------------
def _floats(value, n: int, folder: Path, name: str, f: Path) -> np.ndarray:
    try:
        arr = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError, OverflowError):
        raise InputError(folder, f"{f.name}: unreadable {name} {_shown(value)}") from None
    if arr.shape != (n,):
        raise InputError(folder, f"{f.name}: {name} has {arr.size} values, expected {n}")
    if not np.isfinite(arr).all() or np.abs(arr).max() > guard.MAX_MM:
        raise InputError(folder, f"{f.name}: {name} {arr.tolist()} holds a non-finite or absurd value")
    return arr


def _shown(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _get(ds, kw: str, folder: Path, f: Path):
    """The value of tag ``kw`` (None when absent); a value pydicom cannot decode is an InputError naming the file."""
    try:
        return ds.get(kw, None)
    except Exception as exc:  # noqa: BLE001 - pydicom's errors vary by problem
        raise InputError(folder, f"{f.name}: its {kw} cannot be decoded ({type(exc).__name__}: "
                                 f"{guard.first_line(exc, 120)})") from None


def _is_multi(value) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"


def _count(ds, kw: str, folder: Path, f: Path, *, default: int | None = None, low: int = 1, high: int = 65535) -> int:
    """A tag holding one whole number in [low, high] (Rows, Columns, BitsAllocated...)."""
    value = _get(ds, kw, folder, f)
    if value is None or value == "":
        if default is not None:
            return default
        raise InputError(folder, f"{f.name}: has no {kw}")
    if _is_multi(value):
        raise InputError(folder, f"{f.name}: {kw} holds several values {_shown(list(value))}; one is needed")
    try:
        number = int(value)
        if number != float(value):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise InputError(folder, f"{f.name}: unreadable {kw} {_shown(value)}") from None
    if not low <= number <= high:
        raise InputError(folder, f"{f.name}: {kw} is {number}, not in {low}..{high}")
    return number


def _check_pixels(folder: Path, f: Path, ds, rows: int, cols: int, frames: int = 1) -> None:
    """Refuse a slice whose pixel data cannot be what Rows x Columns (x NumberOfFrames) promise: no PixelData,
    colour, an unknown transfer syntax, encapsulated data stored plain, or uncompressed data shorter than
    promised.  Nothing of the pixel data is read."""
    from pydicom.uid import UID, ImplicitVRLittleEndian

    samples = _count(ds, "SamplesPerPixel", folder, f, default=1, high=4)
    if samples != 1:
        raise InputError(folder, f"{f.name}: {samples} samples per pixel (a colour image); a CT slice has one")
    bits = _count(ds, "BitsAllocated", folder, f, low=1, high=64)
    if bits not in (8, 16, 32):
        raise InputError(folder, f"{f.name}: BitsAllocated {bits}; CT pixels have 8, 16 or 32 bits")
    _count(ds, "PixelRepresentation", folder, f, default=0, low=0, high=1)
    meta = getattr(ds, "file_meta", None)
    syntax = UID(str(meta.get("TransferSyntaxUID", ImplicitVRLittleEndian) if meta is not None
                     else ImplicitVRLittleEndian))
    if not syntax.is_transfer_syntax:
        raise InputError(folder, f"{f.name}: unknown transfer syntax {_shown(str(syntax))}")
    elem = ds.get_item(0x7FE00010, keep_deferred=True) if 0x7FE00010 in ds else None
    if elem is None:
        raise InputError(folder, f"{f.name}: has no pixel data")
    length = getattr(elem, "length", None)  # a RawDataElement: the value is not read
    undefined = length == _UNDEFINED or bool(getattr(elem, "is_undefined_length", False))
    if length is None:  # a DataElement: a small value, read already
        value = elem.value
        length = len(value) if isinstance(value, (bytes, bytearray)) else 0
    if syntax.is_encapsulated:
        if not undefined:
            raise InputError(folder, f"{f.name}: transfer syntax {syntax.name} needs encapsulated (compressed) pixel "
                                     "data, but its pixel data is stored plain")
        return
    needed = rows * cols * bits // 8 * frames
    if undefined or length < needed:
        got = "undefined-length" if undefined else f"{length} bytes of"
        what = f"Rows x Columns ({rows} x {cols}, {bits} bits)" if frames == 1 else \
            f"{frames} frames of Rows x Columns ({rows} x {cols}, {bits} bits)"
        raise InputError(folder, f"{f.name}: {got} pixel data where {what} need {needed}")
    # pixel data running past the end of the file was refused with the file's header (_undecodable)


# ---------------------------------------------------------------------------
# where the slices lie: regular grid, gantry tilt, slice blocks
# ---------------------------------------------------------------------------
#: widest gap between neighbouring slices that is interpolated (head CT is reconstructed at <= 10 mm)
MAX_SLICE_GAP_MM = 10.0
#: HU below this is no tissue value (air reads -1000, its noise stays above about -1200): scanners mark
#: pixels outside the field of view with -2000, -2048, -3024, ... without a PixelPaddingValue
OUT_OF_FIELD_HU = -1900.0


@dataclass
class _Plane:
    """One slice of a series: a one-slice file, or one frame of a multi-frame (enhanced) file."""

    pos: np.ndarray  # ImagePositionPatient (3,)
    iop: np.ndarray  # ImageOrientationPatient (6,)
    ps: np.ndarray  # PixelSpacing (between rows, between columns)
    file: Path
    ds: object  # the file's header
    frame: int | None = None  # 0-based frame of a multi-frame file
    rescale: tuple[float, float] | None = None  # a frame's own (slope, intercept); None: the file's

    @property
    def name(self) -> str:
        return self.file.name if self.frame is None else f"{self.file.name} frame {self.frame + 1}"


@dataclass(frozen=True)
class SliceStack:
    """Where a series' slices really lie, when they are no regular orthogonal grid (gantry tilt: each
    slice shifted in-plane along the stack; slice blocks: uneven spacing along the normal).

    Attributes
    ----------
    positions : (n, 3) ImagePositionPatient of each slice (LPS mm), in the order of the series' sorted
        files (``Volume.meta["files"]``), increasing along the slice normal
    orientation : (6,) ImageOrientationPatient shared by the slices (along a row, down a column)
    pixel_spacing : (between rows, between columns) in mm
    rows, cols : pixels per slice

    The read volume's grid has the same row / column directions and pixel spacing with the slice
    normal as its third axis; :meth:`to_grid` and :meth:`from_grid` move arrays between the two.
    """

    positions: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    rows: int
    cols: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_slices, rows, cols): an array on the source slices."""
        return len(self.positions), self.rows, self.cols

    def to_meta(self) -> dict:
        """JSON-able form, kept as ``Volume.meta["source_geometry"]``."""
        return {"positions": np.round(self.positions, 6).tolist(), "orientation": [float(v) for v in self.orientation],
                "pixel_spacing": [float(v) for v in self.pixel_spacing], "rows": int(self.rows), "cols": int(self.cols)}

    @classmethod
    def from_meta(cls, meta: dict | None) -> SliceStack | None:
        """The stack recorded in a read scan's meta, or None when the scan is its series' own grid."""
        g = (meta or {}).get("source_geometry")
        if not g:
            return None
        return cls(np.asarray(g["positions"], float).reshape(-1, 3), np.asarray(g["orientation"], float),
                   (float(g["pixel_spacing"][0]), float(g["pixel_spacing"][1])), int(g["rows"]), int(g["cols"]))

    def _along(self, geometry: Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per slice: its origin's column and row offsets on ``geometry`` (in voxels) and its distance along
        the normal from the grid's origin (mm).  ``geometry`` must share rows, columns and pixel spacing."""
        m = geometry.matrix
        sc, sr = geometry.spacing[0], geometry.spacing[1]
        if not (np.allclose(m[:, 0], self.orientation[:3], atol=1e-4) and np.allclose(m[:, 1], self.orientation[3:],
                atol=1e-4) and np.allclose((sr, sc), self.pixel_spacing, rtol=1e-4)):
            raise GeometryMismatchError(None, "the grid does not share the source slices' rows, columns and pixel "
                                              "spacing; it is not the grid the series was read onto")
        rel = self.positions - np.asarray(geometry.origin)
        return rel @ m[:, 0] / sc, rel @ m[:, 1] / sr, rel @ m[:, 2]

    def to_grid(self, array: np.ndarray, geometry: Geometry, *, order: int = 1, cval: float = 0.0) -> np.ndarray:
        """``array`` (n_slices, rows, cols) on the source slices resampled onto ``geometry`` (nz, ny, nx).

        ``order=1``: linear between the two source slices around each grid slice (each sampled bilinearly
        at the grid voxel's position on its plane), i.e. trilinear in the sheared stack, as dcm2niix
        corrects gantry tilt; ``order=0``: nearest in physical space (the nearest source plane, then its
        nearest pixel).  Grid voxels no source slice covers get ``cval``.
        """
        a, b, s = self._along(geometry)
        n = len(s)
        nz, ny, nx = geometry.shape
        step = geometry.spacing[2]
        out = np.full(geometry.shape, cval, dtype=np.float32 if order else array.dtype)

        def shifted(img, db, da):  # grid voxel (j, i) is source pixel (j - db, i - da)
            return _translated(img, db, da, (ny, nx), order, cval)

        tol = 1e-3 + 1e-3 * step
        for z in range(nz):
            t = z * step
            if t < s[0] - tol or t > s[-1] + tol:
                continue
            kf = float(np.interp(t, s, np.arange(n)))
            k0 = min(int(np.floor(kf)), n - 2)
            w = kf - k0
            if order == 0:
                k = k0 + int(w >= 0.5)
                out[z] = shifted(array[k], b[k], a[k])
                continue
            da, db = (1 - w) * a[k0] + w * a[k0 + 1], (1 - w) * b[k0] + w * b[k0 + 1]
            plane = shifted(array[k0].astype(np.float32, copy=False), db, da)
            if w > 1e-6:
                plane = (1 - w) * plane + w * shifted(array[k0 + 1].astype(np.float32, copy=False), db, da)
            out[z] = plane
        return out

    def from_grid(self, array: np.ndarray, geometry: Geometry, *, cval: int = 0) -> np.ndarray:
        """``array`` (nz, ny, nx) on ``geometry`` taken, nearest in physical space, onto every source slice's
        pixels: (n_slices, rows, cols); pixels no grid voxel is near get ``cval``."""
        a, b, s = self._along(geometry)
        nz = geometry.shape[0]
        step = geometry.spacing[2]
        out = np.full(self.shape, cval, dtype=array.dtype)
        for k in range(len(s)):
            z = int(np.clip(np.round(s[k] / step), 0, nz - 1))
            if abs(s[k] - z * step) > step:
                continue
            out[k] = _translated(array[z], -b[k], -a[k], self.shape[1:], 0, cval)  # pixel (r, c): voxel (r + b, c + a)
        return out

    def slice_of(self, origin: np.ndarray, row_step: np.ndarray, col_step: np.ndarray, shape: tuple[int, int]) -> int | str:
        """The index of the source slice a frame at ``origin`` (pixel (r, c) at ``origin + r * row_step +
        c * col_step``) of ``shape`` lies on exactly, or why it lies on none (a string)."""
        sr, sc = self.pixel_spacing
        if tuple(shape) != (self.rows, self.cols) or not (
                np.allclose(row_step, self.orientation[3:] * sr, atol=1e-3)
                and np.allclose(col_step, self.orientation[:3] * sc, atol=1e-3)):
            return "its size, orientation or pixel spacing is not the source slices'"
        d = np.linalg.norm(self.positions - np.asarray(origin, float), axis=1)
        k = int(np.argmin(d))
        if d[k] > 0.05 * min(sr, sc) + 1e-3:
            return f"no source slice lies there (nearest {d[k]:.2f} mm away)"
        return k


def _shifted_int(img: np.ndarray, dj: int, di: int, shape: tuple[int, int], cval) -> np.ndarray:
    """``out[j, i] = img[j - dj, i - di]`` for ``out`` of ``shape``; ``cval`` where that is outside ``img``."""
    out = np.full(shape, cval, dtype=img.dtype)
    j0, j1 = max(0, dj), min(shape[0], img.shape[0] + dj)
    i0, i1 = max(0, di), min(shape[1], img.shape[1] + di)
    if j0 < j1 and i0 < i1:
        out[j0:j1, i0:i1] = img[j0 - dj:j1 - dj, i0 - di:i1 - di]
    return out


def _translated(img: np.ndarray, dj: float, di: float, shape: tuple[int, int], order: int, cval) -> np.ndarray:
    """``img`` (rows, cols) moved by (dj, di) pixels onto an array of ``shape``: ``out[j, i]`` is ``img`` at
    (j - dj, i - di), bilinear (``order=1``, float32) or nearest (``order=0``, ``img``'s dtype), ``cval`` outside
    (a pure translation: four shifted copies instead of a general resampling, about 20 times faster)."""
    if order == 0:
        return _shifted_int(img, int(np.floor(dj + 0.5)), int(np.floor(di + 0.5)), shape, cval)
    fj, fi = int(np.floor(dj)), int(np.floor(di))
    wj, wi = dj - fj, di - fi
    out = np.zeros(shape, np.float32)
    for sj, w_j in ((0, 1 - wj), (1, wj)):
        for si, w_i in ((0, 1 - wi), (1, wi)):
            if w_j * w_i > 1e-9:
                out += np.float32(w_j * w_i) * _shifted_int(img.astype(np.float32, copy=False), fj + sj, fi + si,
                                                            shape, cval)
    return out


def labels_on_source_slices(labels: Volume, scan: Volume, datasets: list, what: Path | None = None) -> np.ndarray:
    """Labels on a scan that was resampled when read (gantry tilt, slice blocks), or read from an enhanced
    multi-frame file, put back on the series' own slices (nearest in physical space) or frames.

    Parameters
    ----------
    labels : on ``scan``'s grid
    scan : read by :func:`read_dicom_series` with ``meta["source_geometry"]`` and / or ``meta["enhanced"]``
    datasets : the scan's slice headers, in the order of ``scan.meta["files"]`` (one for a multi-frame file)

    Returns
    -------
    ndarray (n_slices, rows, cols): frame ``m`` on ``datasets[m]``; for a multi-frame file, frame ``m`` on its
    frame ``m + 1`` (in the file's order, not the grid's)

    Raises
    ------
    GeometryMismatchError : labels on another grid, or slices that are not the scan's
    """
    stack = SliceStack.from_meta(scan.meta)
    if stack is None and not scan.meta.get("enhanced"):
        raise InputError(what, "the scan was not resampled when read; its labels lie on its own slices")
    diff = labels.geometry.differences(scan.geometry)
    if diff:
        raise GeometryMismatchError(what, f"the labels are not on the scan's grid ({'; '.join(diff)})")
    arr = np.asarray(labels.array)
    on_slices = arr if stack is None else stack.from_grid(arr, labels.geometry, cval=0)  # in the grid's order
    if scan.meta.get("enhanced"):
        order = list(scan.meta.get("frames") or [])
        try:
            n_frames = int(datasets[0].NumberOfFrames) if len(datasets) == 1 else -1
        except (AttributeError, TypeError, ValueError):
            n_frames = -1
        if n_frames != len(order) or sorted(order) != list(range(n_frames)) or len(on_slices) != n_frames:
            raise GeometryMismatchError(what, "the source file's frames are not those the scan was read from")
        out = np.zeros((n_frames, *on_slices.shape[1:]), on_slices.dtype)
        out[order] = on_slices
        return out
    if len(datasets) != len(stack.positions):
        raise GeometryMismatchError(what, f"{len(datasets)} source slices for a scan read from {len(stack.positions)}")
    for ds, p in zip(datasets, stack.positions):
        try:
            ipp = np.asarray([float(v) for v in ds.ImagePositionPatient], float)
        except (AttributeError, TypeError, ValueError):
            ipp = np.full(3, np.nan)
        if not np.allclose(ipp, p, atol=1e-3):
            raise GeometryMismatchError(what, f"source slice at {ipp.round(3).tolist()} mm is not where the scan's "
                                              f"slice was read ({p.round(3).tolist()} mm)")
    return on_slices


def _file_plane(folder: Path, f: Path, ds, iop: np.ndarray, ps: np.ndarray, rows: int, cols: int) -> _Plane:
    """A one-slice file's plane, after checking it matches the series' first slice."""
    if _count(ds, "NumberOfFrames", folder, f, default=1, low=0, high=2**31) > 1:
        raise InputError(folder, f"{f.name} is a multi-frame image in a series of several files; a series is read "
                                 "as one slice per file or as one multi-frame file")
    o = _floats(ds.ImageOrientationPatient, 6, folder, "ImageOrientationPatient", f)
    if not np.allclose(o, iop, atol=1e-3):
        raise InputError(folder, f"slices have different orientations ({f.name}: {o.tolist()} vs {iop.tolist()})")
    size = (_count(ds, "Rows", folder, f), _count(ds, "Columns", folder, f))
    if size != (rows, cols):
        raise InputError(folder, f"slices have different sizes ({f.name}: {size[0]}x{size[1]} vs {rows}x{cols})")
    _check_pixels(folder, f, ds, rows, cols)
    p = _floats(ds.get("PixelSpacing", [1.0, 1.0]), 2, folder, "PixelSpacing", f)
    if not np.allclose(p, ps, rtol=1e-3):
        raise InputError(folder, f"slices have different pixel spacings ({f.name}: {p.tolist()} vs {ps.tolist()})")
    pos = _floats(ds.ImagePositionPatient, 3, folder, "ImagePositionPatient", f)
    return _Plane(pos, o, p, f, ds)


def _frame_planes(folder: Path, f: Path, ds, rows: int, cols: int) -> list[_Plane]:
    """The frames of a multi-frame (enhanced) CT file as planes: position, orientation and pixel spacing from
    the per-frame functional groups (else the shared ones), rescale from PixelValueTransformationSequence."""
    n = _count(ds, "NumberOfFrames", folder, f, low=1, high=2**31)
    if n * rows * cols > guard.MAX_VOXELS:
        raise InputError(folder, f"{f.name}: {n} frames of {rows} x {cols} pixels hold more voxels than orbitseg "
                                 f"reads ({guard.MAX_VOXELS})")
    _check_pixels(folder, f, ds, rows, cols, frames=n)
    try:
        per = ds.get("PerFrameFunctionalGroupsSequence")
        shared_seq = ds.get("SharedFunctionalGroupsSequence")
        shared = shared_seq[0] if shared_seq else None
        n_per = 0 if per is None else len(per)
    except Exception as exc:  # noqa: BLE001 - pydicom's errors vary
        raise InputError(folder, f"{f.name}: its functional groups cannot be decoded ({guard.first_line(exc, 120)})") from None
    if n_per != n:
        raise InputError(folder, f"{f.name}: {n} frames but {n_per} per-frame functional groups; "
                                 "the frames' positions are unknown")

    def pick(group, seq: str):
        for g in (group, shared):
            if g is not None and seq in g and g[seq].value:
                return g[seq].value[0]
        return None

    out = []
    for m in range(n):
        fm = Path(f"{f.name} frame {m + 1}")
        try:
            pos_item = pick(per[m], "PlanePositionSequence")
            ori_item = pick(per[m], "PlaneOrientationSequence")
            pix_item = pick(per[m], "PixelMeasuresSequence")
            val_item = pick(per[m], "PixelValueTransformationSequence")
        except Exception as exc:  # noqa: BLE001
            raise InputError(folder, f"{fm}: its functional groups cannot be decoded ({guard.first_line(exc, 120)})") from None
        if pos_item is None or ori_item is None or "ImagePositionPatient" not in pos_item \
                or "ImageOrientationPatient" not in ori_item:
            raise InputError(folder, f"{fm}: no plane position or orientation in its functional groups")
        pos = _floats(pos_item.ImagePositionPatient, 3, folder, "ImagePositionPatient", fm)
        iop = _floats(ori_item.ImageOrientationPatient, 6, folder, "ImageOrientationPatient", fm)
        ps_value = pix_item.get("PixelSpacing") if pix_item is not None else None
        ps = _floats(ps_value if ps_value is not None else [1.0, 1.0], 2, folder, "PixelSpacing", fm)
        rescale = _rescale(folder, fm, val_item if val_item is not None else ds)
        out.append(_Plane(pos, iop, ps, f, ds, m, rescale))
    return out


def _runs(gaps: np.ndarray) -> list[tuple[int, int, float]]:
    """Maximal runs of equal gaps: (first gap, last gap + 1, spacing) each."""
    runs, i = [], 0
    while i < len(gaps):
        j = i + 1
        while j < len(gaps) and abs(gaps[j] - gaps[i]) <= _SPACING_RTOL * gaps[i] + 1e-3:
            j += 1
        runs.append((i, j, float(np.mean(gaps[i:j]))))
        i = j
    return runs


def _missing(gap: float, spacing: float) -> int:
    """How many slices a ``gap`` lacks in a run of ``spacing`` (0: it is no whole multiple)."""
    q = gap / spacing - 1
    return int(round(q)) if round(q) >= 1 and abs(q - round(q)) < 0.1 else 0


def _series_geometry(folder: Path, slices: list) -> tuple[list[_Plane], Geometry, SliceStack | None, dict | None]:
    """Sort ``slices`` along the normal and compute the grid.

    Returns (planes in grid order, the grid, the source stack and a record of the resampling, both None when
    the slices are the grid).  A regular orthogonal series is its own grid.  Two cases are resampled onto an
    orthogonal grid of the same rows, columns and pixel spacing with the slice normal as third axis, covering
    every slice: gantry tilt (slice origins shifted in-plane along the stack) and uneven spacing (several
    slice blocks, e.g. 4 mm then 7 mm), at the finest block's spacing.  Duplicated positions, missing slices
    (a gap that is a whole multiple of the spacing around it) and gaps over :data:`MAX_SLICE_GAP_MM` are errors.
    """
    f0, ds0 = slices[0]
    iop = _floats(ds0.ImageOrientationPatient, 6, folder, "ImageOrientationPatient", f0) \
        if "ImageOrientationPatient" in ds0 else None
    rows, cols = _count(ds0, "Rows", folder, f0), _count(ds0, "Columns", folder, f0)
    if _count(ds0, "NumberOfFrames", folder, f0, default=1, low=0, high=2**31) > 1:
        if len(slices) > 1:
            raise InputError(folder, f"{f0.name} is a multi-frame image in a series of several files; a series is "
                                     "read as one slice per file or as one multi-frame file")
        planes = _frame_planes(folder, f0, ds0, rows, cols)
        iop = planes[0].iop
        for pl in planes[1:]:
            if not np.allclose(pl.iop, iop, atol=1e-3):
                raise InputError(folder, f"frames have different orientations ({pl.name}: {pl.iop.tolist()} vs "
                                         f"{iop.tolist()})")
            if not np.allclose(pl.ps, planes[0].ps, rtol=1e-3):
                raise InputError(folder, f"frames have different pixel spacings ({pl.name}: {pl.ps.tolist()} vs "
                                         f"{planes[0].ps.tolist()})")
    else:
        planes = None
    row, col = iop[:3], iop[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise InputError(folder, f"{f0.name}: ImageOrientationPatient {iop.tolist()} is not two orthonormal vectors")
    # DS strings carry limited digits: make the cosines exactly orthonormal
    row = row / np.linalg.norm(row)
    col = col - (col @ row) * row
    col = col / np.linalg.norm(col)
    normal = np.cross(row, col)
    ps = planes[0].ps if planes else _floats(ds0.get("PixelSpacing", [1.0, 1.0]), 2, folder, "PixelSpacing", f0)
    if (ps <= 0).any():
        raise InputError(folder, f"{f0.name}: PixelSpacing {ps.tolist()} is not positive")
    if planes is None:
        if rows * cols * len(slices) > guard.MAX_VOXELS:
            raise InputError(folder, f"series of {len(slices)} slices of {rows} x {cols} pixels holds more voxels "
                                     f"than orbitseg reads ({guard.MAX_VOXELS})")
        planes = [_file_plane(folder, f, ds, iop, ps, rows, cols) for f, ds in slices]
    planes.sort(key=lambda p: (float(p.pos @ normal), p.name))
    n = len(planes)
    if n < 2:
        raise InputError(folder, f"series holds a single slice ({planes[0].name}); a 3D volume is needed")
    s = np.array([float(p.pos @ normal) for p in planes])
    gaps = np.diff(s)
    if np.any(gaps < 1e-3):
        i = int(np.argmin(gaps))
        raise InputError(
            folder,
            f"two slices share position {s[i]:.3f} mm along the slice normal ({planes[i].name}, "
            f"{planes[i + 1].name}); duplicated files or several acquisitions in one series",
        )

    def gap_error(i: int, what: str, spacing: float) -> InputError:
        return InputError(
            folder,
            f"{what}: gap of {gaps[i]:.3f} mm between {planes[i].name} and {planes[i + 1].name} "
            f"(positions {s[i]:.3f} and {s[i + 1]:.3f} mm) where the series' spacing is {spacing:.3f} mm",
        )

    step = float(np.median(gaps))
    regular = not np.any(np.abs(gaps - step) > _SPACING_RTOL * step + 1e-3)
    blocks = None
    if not regular:
        runs = _runs(gaps)
        for r, (i, j, g) in enumerate(runs):
            if j - i != 1:
                continue
            around = [runs[q][2] for q in (r - 1, r + 1) if 0 <= q < len(runs) and runs[q][1] - runs[q][0] > 1]
            if around and max(around) - min(around) <= _SPACING_RTOL * min(around) + 1e-3 and _missing(g, around[0]):
                raise gap_error(i, f"{_missing(g, around[0])} missing slice(s)", around[0])
        if gaps.max() > MAX_SLICE_GAP_MM * (1 + _SPACING_RTOL):
            i = int(np.argmax(gaps))
            raise gap_error(i, f"slices too far apart to interpolate (over {MAX_SLICE_GAP_MM:g} mm)", step)
        long_runs = [g for i, j, g in runs if j - i > 1]
        step = min(long_runs) if long_runs else step
        blocks = [{"slices": [i + 1, j + 1], "spacing_mm": round(g, 4)} for i, j, g in runs]
    # gantry tilt: the slice origins move in-plane along the stack
    rel = np.array([p.pos - planes[0].pos for p in planes])
    a, b = rel @ row, rel @ col
    inplane = np.hypot(a, b)
    tilted = bool(np.any(inplane > 0.01 * min(ps.min(), step) + 1e-3))
    direction = np.stack([row, col, normal], axis=1)
    if regular and not tilted:
        geom = Geometry(size=(cols, rows, n), spacing=(float(ps[1]), float(ps[0]), step),
                        origin=tuple(planes[0].pos), direction=direction)
        return planes, geom, None, None
    sr, sc = float(ps[0]), float(ps[1])
    extra_c = int(np.ceil((a.max() - a.min()) / sc - 0.01)) if tilted else 0
    extra_r = int(np.ceil((b.max() - b.min()) / sr - 0.01)) if tilted else 0
    nz = int(np.floor((s[-1] - s[0]) / step + 0.01)) + 1
    size = (cols + extra_c, rows + extra_r, nz)
    if size[0] * size[1] * size[2] > guard.MAX_VOXELS:
        raise InputError(folder, f"resampling the series onto a regular grid would make {size[0]} x {size[1]} x "
                                 f"{size[2]} voxels, more than orbitseg reads ({guard.MAX_VOXELS})")
    origin = planes[0].pos + (a.min() if tilted else 0.0) * row + (b.min() if tilted else 0.0) * col
    geom = Geometry(size=size, spacing=(sc, sr, step), origin=tuple(origin), direction=direction)
    stack = SliceStack(np.array([p.pos for p in planes]), np.concatenate([row, col]), (sr, sc), rows, cols)
    n_blocks = sum(1 for blk in blocks or [] if blk["slices"][1] - blk["slices"][0] > 1)
    reasons = (["gantry tilt"] if tilted else []) + (["slice blocks"] if n_blocks > 1 else
                                                      [] if regular else ["uneven slice spacing"])
    span = s[-1] - s[0]
    tilt = float(np.degrees(np.arctan2(np.hypot(a[-1], b[-1]), span))) if tilted else 0.0
    record = {
        "reason": " and ".join(reasons),
        "tilt_deg": round(tilt, 2),
        "source_slices": n,
        "source_spacing_mm": round(float(np.median(gaps)), 4),
        "spacing_mm": [round(sc, 4), round(sr, 4), round(step, 4)],
        "size": list(size),
        "interpolation": "linear",
        "outside": "air",
    }
    if blocks:
        record["blocks"] = blocks
    return planes, geom, stack, record


def _check_rescale(folder: Path, planes: list[_Plane], array: np.ndarray) -> None:
    """Compare one slice's values with pydicom's stored values x slope + intercept."""
    import pydicom

    k = len(planes) // 2
    try:
        ds = pydicom.dcmread(planes[k].file)
        stored = ds.pixel_array.astype(np.float64)
    except Exception:  # noqa: BLE001 - compressed data pydicom cannot decode: nothing to compare
        return
    slope, inter = _rescale(folder, planes[k].file, ds)
    expected = stored * slope + inter
    if expected.shape != array[k].shape or not np.allclose(expected, array[k], atol=max(1e-3, abs(slope) * 1e-3)):
        raise InputError(folder, f"{planes[k].name}: pixel values read by SimpleITK disagree with the stored values x RescaleSlope + RescaleIntercept")


def _rescale(folder: Path, f: Path, ds) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept) of a slice (1, 0 when absent or empty, as before; a zero slope is 1);
    refuses several, unreadable or non-finite values."""
    out = []
    for kw, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
        value = _get(ds, kw, folder, f)
        if value is None or value == "":
            out.append(default)
            continue
        if _is_multi(value):
            raise InputError(folder, f"{f.name}: {kw} holds several values {_shown(list(value))}; one is needed")
        try:
            v = float(value)
        except (TypeError, ValueError, OverflowError):
            raise InputError(folder, f"{f.name}: unreadable {kw} {_shown(value)}") from None
        if not np.isfinite(v) or abs(v) > 1e9:
            raise InputError(folder, f"{f.name}: {kw} {v:g} is not a usable number")
        out.append(v or default)
    return out[0], out[1]


def _replace_padding(array: np.ndarray, planes: list[_Plane], folder: Path) -> tuple[int, int]:
    """Set padding pixels to air, in place: those PixelPaddingValue marks (up to PixelPaddingRangeLimit when
    given; the area outside the reconstruction circle), and, tag or not, values below
    :data:`OUT_OF_FIELD_HU` (-2000, -3024... that scanners write outside the field of view).  Scanners pad
    with values such as -32768 or 63536 that are no Hounsfield units.  Returns the number of voxels replaced
    (marked by the tag, below the out-of-field bound)."""
    from orbitseg.constants import HU_AIR

    n = 0
    for k, pl in enumerate(planes):
        ds = pl.ds
        pad = ds.get("PixelPaddingValue", None)
        if pad is None or isinstance(pad, (bytes, bytearray)):
            continue
        limit = ds.get("PixelPaddingRangeLimit", None)
        slope, inter = pl.rescale or _rescale(folder, pl.file, ds)
        try:
            ends = [float(pad), float(pad if limit is None or isinstance(limit, (bytes, bytearray)) else limit)]
        except (TypeError, ValueError, OverflowError):
            continue  # several or unreadable padding values: nothing is marked as padding
        lo, hi = sorted(v * slope + inter for v in ends)
        tol = max(1e-3, abs(slope) * 1e-3)
        mask = (array[k] >= lo - tol) & (array[k] <= hi + tol)
        array[k][mask] = HU_AIR
        n += int(mask.sum())
    low = array < OUT_OF_FIELD_HU
    out_of_field = int(np.count_nonzero(low))
    if out_of_field:
        array[low] = HU_AIR
    return n, out_of_field


def read_dicom_series(folder: str | Path, *, series_uid: str | None = None) -> Volume:
    """Read the CT series of a DICOM folder (searched recursively) as HU.

    The array is float32 here; :func:`orbitseg.io.read.read_scan` narrows it
    to int16 when the values allow.  ``meta`` holds ``format="dicom"``,
    ``series_uid``, ``patient_id``, ``modality``, ``description``,
    ``files`` (the sorted slice files, as strings; one file for a multi-frame
    series, whose frames ``meta["frames"]`` lists in grid order),
    ``padding_voxels_set_to_air`` (pixels marked by PixelPaddingValue - outside
    the reconstruction circle - are set to -1000 HU) and
    ``out_of_field_voxels_set_to_air`` (values below -1900 HU, which scanners
    write outside the field of view without a padding tag).

    A series that is no regular orthogonal grid is resampled (linear, air
    outside) onto one that covers all its slices, with the same rows, columns
    and pixel spacing and the slice normal as third axis:

    * gantry tilt (each slice shifted in-plane along the stack): every slice
      stays at its true physical place, as dcm2niix corrects tilt;
    * uneven spacing (several slice blocks in one series, e.g. slices 1-14 at
      4 mm and 15-28 at 7 mm): at the finest block's spacing.  The whole series
      is kept rather than one block, because a radiologist reads the series as
      one volume (the orbits may straddle the blocks' boundary) and the
      finest spacing keeps the thin block's detail; the thick block is
      interpolated as a viewer's MPR would.

    Then ``meta["resampled"]`` says why and how (reason, tilt in degrees,
    blocks, spacing, size) and ``meta["source_geometry"]`` keeps every slice's
    position, the orientation and pixel spacing (:class:`SliceStack`), so
    labels can be put back on the series' own slices
    (:func:`labels_on_source_slices`).  Duplicated positions, missing slices
    and gaps over :data:`MAX_SLICE_GAP_MM` stay errors.

    Raises
    ------
    InputError, NotCTError, AmbiguousSeriesError
    """
    folder = Path(folder)
    with guard.reader_boundary(folder):
        return _read_dicom_series(folder, series_uid)


def _read_pixels(folder: Path, uid: str, planes: list[_Plane], rows: int, cols: int) -> np.ndarray:
    """(n, rows, cols) float32 HU of ``planes`` in their order: one-slice files through SimpleITK (GDCM decodes
    every compressed transfer syntax; it applies each file's rescale), the frames of a multi-frame file through
    pydicom with each frame's own rescale."""
    import SimpleITK as sitk

    if planes[0].frame is None:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(p.file) for p in planes])
        reader.SetOutputPixelType(sitk.sitkFloat32)
        warn = sitk.ProcessObject.GetGlobalWarningDisplay()
        sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK warns of tilt and uneven spacing, handled here
        try:
            img = reader.Execute()
        except RuntimeError as exc:
            raise InputError(folder, f"cannot read the pixel data of series {uid}: {_short(exc)}") from None
        finally:
            sitk.ProcessObject.SetGlobalWarningDisplay(warn)
        array = sitk.GetArrayFromImage(img)
        if array.shape != (len(planes), rows, cols):
            raise InputError(folder, f"pixel data shape {array.shape} does not match the headers "
                                     f"({(len(planes), rows, cols)})")
        _check_rescale(folder, planes, array)
        return array
    import pydicom

    f = planes[0].file
    try:
        stored = pydicom.dcmread(f).pixel_array
    except Exception as exc:  # noqa: BLE001 - a decoder missing or failing
        raise InputError(folder, f"{f.name}: cannot decode its frames ({type(exc).__name__}: "
                                 f"{guard.first_line(exc, 160)})") from None
    stored = stored.reshape(-1, *stored.shape[-2:])
    n = max(p.frame for p in planes) + 1
    if stored.shape != (n, rows, cols):
        raise InputError(folder, f"{f.name}: pixel data shape {stored.shape} does not match the headers "
                                 f"({(n, rows, cols)})")
    array = np.empty((len(planes), rows, cols), np.float32)
    for k, p in enumerate(planes):
        slope, inter = p.rescale
        array[k] = stored[p.frame] * slope + inter
    return array


def _read_dicom_series(folder: Path, series_uid: str | None) -> Volume:
    from orbitseg.constants import HU_AIR

    if folder.is_file() and folder.name.upper() == "DICOMDIR":
        folder = folder.parent
    if folder.is_file():
        ds = _read_header(folder)
        if ds is None or "SeriesInstanceUID" not in ds:
            raise InputError(folder, "is not a DICOM file")
        series_uid = series_uid or str(ds.SeriesInstanceUID)
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(folder, "does not exist")
    series = _scan(folder)
    chosen, why = _choose_series(folder, series, series_uid)
    planes, geom, stack, resampled = _series_geometry(folder, chosen["slices"])
    rows, cols = int(planes[0].ds.Rows), int(planes[0].ds.Columns)
    array = _read_pixels(folder, chosen["uid"], planes, rows, cols)
    padded, out_of_field = _replace_padding(array, planes, folder)
    if stack is not None:
        array = np.rint(stack.to_grid(array, geom, order=1, cval=HU_AIR)).astype(np.float32)
    ds0 = planes[0].ds
    meta = {
        "format": DICOM_SERIES.name,
        "series_uid": chosen["uid"],
        "patient_id": str(ds0.get("PatientID", "") or ""),
        "study_uid": str(ds0.get("StudyInstanceUID", "") or ""),
        "modality": chosen["modality"],
        "description": chosen["description"],
        "files": list(dict.fromkeys(str(p.file) for p in planes)),
        "padding_voxels_set_to_air": padded,
        "out_of_field_voxels_set_to_air": out_of_field,
    }
    if planes[0].frame is not None:
        meta["enhanced"] = True
        meta["frames"] = [p.frame for p in planes]
    if why:
        meta["series_choice"] = why
    if resampled is not None:
        meta["resampled"] = resampled
        meta["source_geometry"] = stack.to_meta()
    return Volume(array, geom, folder, meta)


def acquisition_record(meta: dict) -> dict:
    """What a user should know about how a DICOM series was read, for ``prediction.json``: ``resampled``
    (gantry tilt corrected, slice blocks joined) and ``series_choice`` (which series of a study), when any."""
    return {k: meta[k] for k in ("resampled", "series_choice") if meta.get(k)}


def acquisition_note(meta: dict) -> str | None:
    """One line for the terminal when a series was resampled or picked out of a study, else None, e.g.
    ``resampled onto a regular 0.946 x 0.946 x 3.79 mm grid (12 slices -> 15): gantry tilt of 18.5 degrees
    corrected, slice blocks 1-7 at 3.79 mm and 7-12 at 6.64 mm joined``."""
    parts = []
    r = meta.get("resampled")
    if r:
        what = []
        if r.get("tilt_deg"):
            what.append(f"gantry tilt of {r['tilt_deg']:g} degrees corrected")
        blocks = [b for b in r.get("blocks") or [] if b["slices"][1] - b["slices"][0] > 1]
        if len(blocks) > 1:
            what.append("slice blocks " + " and ".join(f"{b['slices'][0]}-{b['slices'][1]} at {b['spacing_mm']:.3g} mm"
                                                      for b in blocks) + " joined")
        elif "uneven" in r["reason"]:
            what.append("uneven slice spacing made regular")
        sx, sy, sz = r["spacing_mm"]
        parts.append(f"resampled onto a regular {sx:.3g} x {sy:.3g} x {sz:.3g} mm grid ({r['source_slices']} slices "
                     f"-> {r['size'][2]}): " + ", ".join(what))
    if meta.get("series_choice"):
        parts.append(meta["series_choice"])
    return "; ".join(parts) or None


def _short(exc: BaseException, limit: int = 200) -> str:
    """The useful line of a SimpleITK / ITK exception message (no C++ file names)."""
    out = []
    for ln in str(exc).splitlines():
        ln = ln.strip()
        if not ln or ln.startswith("Exception thrown in SimpleITK") or ln == "Reason: Success":
            continue
        ln = re.sub(r"^(?:itk|sitk)::ERROR:\s*|^ITK ERROR:\s*", "", ln)
        ln = re.sub(r"^\w+\(0x[0-9a-fA-F]+\):\s*", "", ln)
        ln = re.sub(r"^\[\w+\]\s*", "", ln)
        ln = re.sub(r"^/\S+\.(?:cxx|hxx|h|cpp):\d+:\s*", "", ln)
        if ln:
            out.append(ln)
    text = out[-1] if out else type(exc).__name__
    if text.startswith("Reason:") and len(out) > 1:
        text = f"{out[-2]} {text[len('Reason:'):].strip().lower()}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


def _uid_factory(seed: str | None):
    from pydicom.uid import generate_uid

    if seed is None:
        return lambda *parts: str(generate_uid())
    return lambda *parts: str(generate_uid(entropy_srcs=[seed, *map(str, parts)]))


def _stored_values(array: np.ndarray) -> tuple[np.ndarray, float, float, int]:
    """Stored pixel values, slope, intercept and PixelRepresentation for HU ``array``."""
    a = np.asarray(array)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    integral = np.issubdtype(a.dtype, np.integer) or bool(np.all(a == np.round(a)))
    if integral and lo >= -1024 and hi + 1024 <= 65535:
        return (np.round(a).astype(np.int64) + 1024).astype(np.uint16), 1.0, -1024.0, 0
    if integral and lo >= -32768 and hi <= 32767:
        return np.round(a).astype(np.int16), 1.0, 0.0, 1
    # non-integral (e.g. resampled) values: spread them over the int16 range
    slope = max((hi - lo) / 65000.0, 1e-6)
    inter = lo + 32500.0 * slope
    stored = np.clip(np.round((a - inter) / slope), -32768, 32767).astype(np.int16)
    return stored, float(f"{slope:.10g}"), float(f"{inter:.10g}"), 1


def _ds_str(v: float) -> str:
    """A number as a DICOM Decimal String (at most 16 characters)."""
    for digits in range(12, 3, -1):
        s = f"{v:.{digits}g}"
        if len(s) <= 16:
            return s
    return f"{v:.4g}"


def write_dicom_series(
    volume: Volume,
    folder: str | Path,
    *,
    overwrite: bool = False,
    patient_id: str = "anon",
    series_description: str = "",
    series_uid: str | None = None,
    positions: np.ndarray | None = None,
) -> Path:
    """Write a CT volume as a DICOM CT series, one file per slice ``array[k]``.

    Parameters
    ----------
    volume : HU values on any orthonormal grid; slices are taken along index axis k
    folder : created atomically; files are named ``IM{k+1:05d}.dcm``
    series_uid : the SeriesInstanceUID when it is a valid UID; any other string
        seeds deterministic UIDs.  Given either way, every UID written
        (study, series, frame of reference, instances) is derived from it
        deterministically, so a rerun writes identical files.  When None,
        fresh random UIDs are made.
    positions : (nz, 3) ImagePositionPatient of each slice (LPS mm) instead of the grid's
        ``origin + k * spacing[2] * direction[:, 2]``: slices stay in the grid's row / column
        directions and pixel spacing but lie where given, e.g. a gantry-tilted series (positions
        moving along the table, not along the slice normal) or slice blocks of different spacing.
        SpacingBetweenSlices is then left out.

    Stored values are ``HU + 1024`` as unsigned 16 bit with RescaleSlope 1 and
    RescaleIntercept -1024 when the values allow, else signed 16 bit.

    Raises
    ------
    ExistsError : ``folder`` exists and ``overwrite`` is False
    InputError : not a 3D volume, or a non-orthonormal direction matrix
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    folder = Path(folder)
    a = np.asarray(volume.array)
    if a.ndim != 3:
        raise InputError(folder, f"cannot write a {a.ndim}D array as a DICOM series")
    g = volume.geometry
    d = g.matrix
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-4):
        raise InputError(folder, f"direction matrix {d.tolist()} is not orthonormal; cannot write DICOM")
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)) or (
        np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all()
    ):
        raise InputError(folder, "volume values must be finite numbers to write DICOM")

    seeded = series_uid is not None
    if seeded and _UID_RE.match(series_uid) and len(series_uid) <= 64:
        series = series_uid
    else:
        series = None
    uid = _uid_factory(series_uid if seeded else None)
    series = series or uid("series")
    study, frame = uid("study"), uid("frame")
    stored, slope, inter, pixel_rep = _stored_values(a)
    row, col, step = d[:, 0], d[:, 1], d[:, 2] * g.spacing[2]
    normal = np.cross(row, col)
    now = _dt.datetime(2000, 1, 1) if seeded else _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    nz, ny, nx = a.shape
    if positions is not None:
        positions = np.asarray(positions, dtype=float)
        if positions.shape != (nz, 3) or not np.isfinite(positions).all():
            raise InputError(folder, f"positions must be finite, one (x, y, z) per slice: shape {(nz, 3)}, "
                                     f"got {positions.shape}")

    with atomic_dir(folder, overwrite=overwrite) as tmp:
        for k in range(nz):
            pos = np.asarray(g.origin) + k * step if positions is None else positions[k]
            sop = uid("instance", k)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
            meta.MediaStorageSOPInstanceUID = sop
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds = Dataset()
            ds.file_meta = meta
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.SOPClassUID = CT_IMAGE_STORAGE
            ds.SOPInstanceUID = sop
            ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
            ds.StudyTime = ds.SeriesTime = ds.ContentTime = time
            ds.AccessionNumber = ""
            ds.Modality = "CT"
            ds.Manufacturer = "orbitseg"
            ds.ReferringPhysicianName = ""
            ds.StudyDescription = ""
            ds.SeriesDescription = series_description
            ds.PatientName = patient_id
            ds.PatientID = patient_id
            ds.PatientBirthDate = ""
            ds.PatientSex = ""
            ds.SliceThickness = _ds_str(g.spacing[2])
            if positions is None:
                ds.SpacingBetweenSlices = _ds_str(g.spacing[2])
            ds.KVP = "120"
            ds.StudyInstanceUID = study
            ds.SeriesInstanceUID = series
            ds.StudyID = "1"
            ds.SeriesNumber = 1
            ds.AcquisitionNumber = 1
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [_ds_str(v) for v in pos]
            ds.ImageOrientationPatient = [_ds_str(v) for v in (*row, *col)]
            ds.FrameOfReferenceUID = frame
            ds.PositionReferenceIndicator = ""
            ds.SliceLocation = _ds_str(float(pos @ normal))
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows, ds.Columns = ny, nx
            ds.PixelSpacing = [_ds_str(g.spacing[1]), _ds_str(g.spacing[0])]
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = pixel_rep
            ds.WindowCenter = "40"
            ds.WindowWidth = "400"
            ds.RescaleIntercept = _ds_str(inter)
            ds.RescaleSlope = _ds_str(slope)
            ds.RescaleType = "HU"
            sl = np.ascontiguousarray(stored[k]).astype("<u2" if pixel_rep == 0 else "<i2")
            ds.SmallestImagePixelValue = int(sl.min())
            ds.LargestImagePixelValue = int(sl.max())
            ds["SmallestImagePixelValue"].VR = "US" if pixel_rep == 0 else "SS"
            ds["LargestImagePixelValue"].VR = "US" if pixel_rep == 0 else "SS"
            ds.PixelData = sl.tobytes()
            ds["PixelData"].VR = "OW"
            ds.save_as(tmp / f"IM{k + 1:05d}.dcm", enforce_file_format=True)
    return folder
