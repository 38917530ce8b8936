"""DICOM CT series: find, read (with exact geometry) and write.

Reading
    Headers are scanned with pydicom; files that are not images (DICOMDIR,
    structured reports, presentation states), localizers / scouts and
    secondary captures are set aside.  Slices are sorted by their
    ImagePositionPatient along the slice normal (row x column cosines), so
    index axis k always points along that normal.  Spacing along k is checked
    to be regular (a missing slice or duplicated position is an error naming
    the folder).  Pixel values are read with SimpleITK's ImageSeriesReader,
    which applies each file's RescaleSlope / RescaleIntercept; the geometry is
    computed here from the headers.

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
from pathlib import Path

import numpy as np

from orbitseg.errors import AmbiguousSeriesError, InputError, NotCTError
from orbitseg.io import guard
from orbitseg.io.atomic import atomic_dir
from orbitseg.io.formats import DICOM_SERIES
from orbitseg.io.volume import Geometry, Volume

__all__ = ["is_dicom_file", "list_dicom_series", "read_dicom_series", "write_dicom_series", "CT_IMAGE_STORAGE"]

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


def _choose_series(folder: Path, series: dict[str, dict], series_uid: str | None) -> dict:
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
        return chosen
    images = [s for s in series.values() if s["slices"] or s["damaged"]]
    ct = [s for s in images if s["modality"].upper() == "CT"]
    if not ct:
        if images:
            found = ", ".join(f"{s['modality'] or '?'} series {s['uid']}" for s in images)
            raise NotCTError(folder, f"holds no CT series (found {found}); pass series_uid to read one anyway")
        raise InputError(folder, "holds DICOM files but no image series (only reports, localizers or similar)")
    if len(ct) > 1:
        raise AmbiguousSeriesError(folder, [_summary(s) for s in ct])
    _refuse_damaged(folder, ct[0])
    return ct[0]


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


def _check_pixels(folder: Path, f: Path, ds, rows: int, cols: int) -> None:
    """Refuse a slice whose pixel data cannot be what Rows x Columns promise: no PixelData, colour,
    an unknown transfer syntax, encapsulated data stored plain, or uncompressed data shorter than promised.
    Nothing of the pixel data is read."""
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
    needed = rows * cols * bits // 8
    if undefined or length < needed:
        got = "undefined-length" if undefined else f"{length} bytes of"
        raise InputError(folder, f"{f.name}: {got} pixel data where Rows x Columns ({rows} x {cols}, {bits} bits) "
                                 f"need {needed}")
    # pixel data running past the end of the file was refused with the file's header (_undecodable)


def _series_geometry(folder: Path, slices: list) -> tuple[list[Path], Geometry, list]:
    """Sort ``slices`` along the normal and compute the grid; checks regular spacing."""
    f0, ds0 = slices[0]
    if _count(ds0, "NumberOfFrames", folder, f0, default=1, low=0, high=2**31) > 1:
        raise InputError(folder, f"{f0.name} is a multi-frame (enhanced) image; only one-slice-per-file series are supported")
    iop = _floats(ds0.ImageOrientationPatient, 6, folder, "ImageOrientationPatient", f0)
    row, col = iop[:3], iop[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise InputError(folder, f"{f0.name}: ImageOrientationPatient {iop.tolist()} is not two orthonormal vectors")
    # DS strings carry limited digits: make the cosines exactly orthonormal
    row = row / np.linalg.norm(row)
    col = col - (col @ row) * row
    col = col / np.linalg.norm(col)
    normal = np.cross(row, col)
    ps = _floats(ds0.get("PixelSpacing", [1.0, 1.0]), 2, folder, "PixelSpacing", f0)
    if (ps <= 0).any():
        raise InputError(folder, f"{f0.name}: PixelSpacing {ps.tolist()} is not positive")
    rows, cols = _count(ds0, "Rows", folder, f0), _count(ds0, "Columns", folder, f0)
    if rows * cols * len(slices) > guard.MAX_VOXELS:
        raise InputError(folder, f"series of {len(slices)} slices of {rows} x {cols} pixels holds more voxels than "
                                 f"orbitseg reads ({guard.MAX_VOXELS})")

    entries = []
    for f, ds in slices:
        if _count(ds, "NumberOfFrames", folder, f, default=1, low=0, high=2**31) > 1:
            raise InputError(folder, f"{f.name} is a multi-frame image; only one-slice-per-file series are supported")
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
        entries.append((float(pos @ normal), pos, f, ds))
    entries.sort(key=lambda e: (e[0], str(e[2])))
    n = len(entries)
    if n < 2:
        raise InputError(folder, f"series holds a single slice ({entries[0][2].name}); a 3D volume is needed")
    s = np.array([e[0] for e in entries])
    gaps = np.diff(s)
    if np.any(gaps < 1e-3):
        i = int(np.argmin(gaps))
        raise InputError(
            folder,
            f"two slices share position {s[i]:.3f} mm along the slice normal ({entries[i][2].name}, "
            f"{entries[i + 1][2].name}); duplicated files or several acquisitions in one series",
        )
    step = float(np.median(gaps))
    off = np.abs(gaps - step) > _SPACING_RTOL * step + 1e-3
    if off.any():
        i = int(np.argmax(off))
        n_missing = gaps[i] / step - 1
        if abs(n_missing - round(n_missing)) < 0.1 and round(n_missing) >= 1:
            what = f"{int(round(n_missing))} missing slice(s)"
        else:
            what = "irregular slice spacing"
        raise InputError(
            folder,
            f"{what}: gap of {gaps[i]:.3f} mm between {entries[i][2].name} and {entries[i + 1][2].name} "
            f"(positions {s[i]:.3f} and {s[i + 1]:.3f} mm) where the series' spacing is {step:.3f} mm",
        )
    # gantry tilt: the slice positions must move along the normal only
    p0 = entries[0][1]
    for _, p, f, _ in entries[1:]:
        d = p - p0
        inplane = d - (d @ normal) * normal
        if np.linalg.norm(inplane) > 0.01 * min(ps.min(), step) + 1e-3:
            raise InputError(
                folder,
                f"slice positions are not stacked along the slice normal ({f.name} is shifted "
                f"{np.linalg.norm(inplane):.2f} mm in-plane): gantry tilt or sheared series is not supported",
            )
    direction = np.stack([row, col, normal], axis=1)
    geom = Geometry(size=(cols, rows, n), spacing=(float(ps[1]), float(ps[0]), step), origin=tuple(p0), direction=direction)
    return [e[2] for e in entries], geom, [e[3] for e in entries]


def _check_rescale(folder: Path, files: list[Path], array: np.ndarray) -> None:
    """Compare one slice's values with pydicom's stored values x slope + intercept."""
    import pydicom

    k = len(files) // 2
    try:
        ds = pydicom.dcmread(files[k])
        stored = ds.pixel_array.astype(np.float64)
    except Exception:  # noqa: BLE001 - compressed data pydicom cannot decode: nothing to compare
        return
    slope, inter = _rescale(folder, files[k], ds)
    expected = stored * slope + inter
    if expected.shape != array[k].shape or not np.allclose(expected, array[k], atol=max(1e-3, abs(slope) * 1e-3)):
        raise InputError(folder, f"{files[k].name}: pixel values read by SimpleITK disagree with the stored values x RescaleSlope + RescaleIntercept")


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


def _replace_padding(array: np.ndarray, headers: list, folder: Path, files: list[Path]) -> int:
    """Set padding pixels (PixelPaddingValue, up to PixelPaddingRangeLimit when given; the
    area outside the reconstruction circle) to air, in place.  Scanners pad with values such
    as -32768 or 63536 that are no Hounsfield units.  Returns the number of voxels replaced."""
    from orbitseg.constants import HU_AIR

    n = 0
    for k, ds in enumerate(headers):
        pad = ds.get("PixelPaddingValue", None)
        if pad is None or isinstance(pad, (bytes, bytearray)):
            continue
        limit = ds.get("PixelPaddingRangeLimit", None)
        slope, inter = _rescale(folder, files[k], ds)
        try:
            ends = [float(pad), float(pad if limit is None or isinstance(limit, (bytes, bytearray)) else limit)]
        except (TypeError, ValueError, OverflowError):
            continue  # several or unreadable padding values: nothing is marked as padding
        lo, hi = sorted(v * slope + inter for v in ends)
        tol = max(1e-3, abs(slope) * 1e-3)
        mask = (array[k] >= lo - tol) & (array[k] <= hi + tol)
        array[k][mask] = HU_AIR
        n += int(mask.sum())
    return n


def read_dicom_series(folder: str | Path, *, series_uid: str | None = None) -> Volume:
    """Read the CT series of a DICOM folder (searched recursively) as HU.

    The array is float32 here; :func:`orbitseg.io.read.read_scan` narrows it
    to int16 when the values allow.  ``meta`` holds ``format="dicom"``,
    ``series_uid``, ``patient_id``, ``modality``, ``description``,
    ``files`` (the sorted slice files, as strings) and
    ``padding_voxels_set_to_air`` (pixels marked by PixelPaddingValue - outside
    the reconstruction circle - are set to -1000 HU).

    Raises
    ------
    InputError, NotCTError, AmbiguousSeriesError
    """
    folder = Path(folder)
    with guard.reader_boundary(folder):
        return _read_dicom_series(folder, series_uid)


def _read_dicom_series(folder: Path, series_uid: str | None) -> Volume:
    import SimpleITK as sitk

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
    chosen = _choose_series(folder, series, series_uid)
    files, geom, headers = _series_geometry(folder, chosen["slices"])

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in files])
    reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise InputError(folder, f"cannot read the pixel data of series {chosen['uid']}: {_short(exc)}") from None
    array = sitk.GetArrayFromImage(img)
    if array.shape != geom.shape:
        raise InputError(folder, f"pixel data shape {array.shape} does not match the headers ({geom.shape})")
    _check_rescale(folder, files, array)
    padded = _replace_padding(array, headers, folder, files)
    ds0 = headers[0]
    meta = {
        "format": DICOM_SERIES.name,
        "series_uid": chosen["uid"],
        "patient_id": str(ds0.get("PatientID", "") or ""),
        "study_uid": str(ds0.get("StudyInstanceUID", "") or ""),
        "modality": chosen["modality"],
        "description": chosen["description"],
        "files": [str(f) for f in files],
        "padding_voxels_set_to_air": padded,
    }
    return Volume(array, geom, folder, meta)


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

    with atomic_dir(folder, overwrite=overwrite) as tmp:
        for k in range(nz):
            pos = np.asarray(g.origin) + k * step
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
