"""Read CT scans and label volumes with their geometry.

Formats: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``),
MetaImage (``.mha``, ``.mhd``), a DICOM series folder (or one file of it),
and for labels also 3D Slicer segmentations (``.seg.nrrd``).

Every problem with a file is raised as :class:`~orbitseg.errors.InputError`
(or a subclass) naming the file: each header is checked by :mod:`orbitseg.io.guard`
before SimpleITK sees the file (finite geometry, sane sizes against the file's
length, allowed encodings, data files only beside the header), and any other
exception a library raises becomes an InputError at this boundary.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from orbitseg.constants import (
    BACKGROUND,
    EYEBALL,
    LABEL_NAMES,
    LABEL_TITLES,
    MUSCLES,
    NERVE,
    STRUCTURES,
)
from orbitseg.errors import InputError
from orbitseg.io import guard, validate
from orbitseg.io.dicom import _short, is_dicom_file, read_dicom_series
from orbitseg.io.dicomseg import frames_geometry, is_dicom_seg, read_dicom_seg
from orbitseg.io.formats import FORMATS, LABEL_READ_ENDINGS, SCAN_ENDINGS, split_ending
from orbitseg.io.volume import Geometry, Volume, geometry_of

__all__ = ["read_scan", "read_label", "check_scan_header", "label_for_segment_name", "file_sha256", "FORMATS"]

#: the segmentation format: a labelmap whose segments are read by name (3D Slicer's .seg.nrrd)
_SEGMENTS_FORMAT = next(f.name for f in FORMATS.values() if f.segments)


# ---------------------------------------------------------------------------
# scans
# ---------------------------------------------------------------------------
def read_scan(path: str | Path, *, series_uid: str | None = None, check: bool = True) -> Volume:
    """Read a CT scan in Hounsfield units.

    Parameters
    ----------
    path : an image file, a DICOM series folder (searched recursively), or one
        DICOM file of a series
    series_uid : which DICOM series to read when a folder holds several CT series
    check : refuse volumes that are not CT (:func:`orbitseg.io.validate.check_ct`)

    Returns
    -------
    Volume
        int16 array when every value is an integer in the int16 range, else
        float32.  ``meta["format"]`` is ``nifti``, ``nrrd``, ``metaimage`` or
        ``dicom``; DICOM adds ``series_uid``, ``patient_id`` and ``files`` (the
        slice files sorted along the slice normal).

    Raises
    ------
    InputError : missing path, unknown ending, corrupt / truncated file, not an
        image, 2D image or a single slice
    NotCTError : values are not Hounsfield units (only when ``check``)
    AmbiguousSeriesError : several CT series and no ``series_uid``
    """
    path = Path(path)
    with guard.reader_boundary(path):
        if not path.exists():
            raise InputError(path, "does not exist")
        if path.is_dir() or is_dicom_file(path):
            vol = read_dicom_series(path, series_uid=series_uid)
        else:
            ending = _ending(path, SCAN_ENDINGS)
            image = _read_image_file(path, ending)
            if image.GetNumberOfComponentsPerPixel() != 1:
                raise InputError(
                    path, f"has {image.GetNumberOfComponentsPerPixel()} values per voxel (colour or vector image); a CT has one"
                )
            vol = Volume.from_sitk(image, path, format=FORMATS[ending].name)
        validate.check_volume_3d(vol, path)
        vol.array = hu_array(vol.array)
        if check:
            validate.check_ct(vol, path)
    return vol


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB pieces (a model's or a label file's identity)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def hu_array(array: np.ndarray) -> np.ndarray:
    """``array`` as int16 when all values are integers that fit, else float32."""
    a = np.asarray(array)
    if a.dtype == np.int16:
        return a
    if a.size == 0:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
        if a.dtype == bool or (int(a.min()) >= -32768 and int(a.max()) <= 32767):
            return a.astype(np.int16)
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.floating):
        if np.isfinite(a).all() and float(a.min()) >= -32768 and float(a.max()) <= 32767 and np.array_equal(a, np.round(a)):
            return a.astype(np.int16)
        return a.astype(np.float32)
    raise TypeError(f"unsupported array type {a.dtype}")


def _ending(path: Path, allowed: tuple[str, ...]) -> str:
    _, ending = split_ending(path.name, allowed)
    ending = ending.lower()
    if not ending:
        raise InputError(
            path, f"unknown file type; expected a DICOM folder or one of {', '.join(allowed)}"
        )
    return ending


def check_scan_header(path: str | Path) -> None:
    """Check a scan file without reading its voxels: a known ending, a readable 3D header
    and, for NIfTI, no truncation.  Cheap enough to run over a whole case list.

    Raises
    ------
    InputError
        naming the file and the problem.
    """
    path = Path(path)
    with guard.reader_boundary(path):
        _image_reader(path, _ending(path, SCAN_ENDINGS))


def _read_image_file(path: Path, ending: str):
    """SimpleITK image of ``path``, read by the ImageIO its ending calls for."""
    reader, promise = _image_reader(path, ending)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(path, f"is corrupt or truncated ({_short(exc)})") from None
    if promise.floating and FORMATS[ending].header == "nifti" and guard.nifti_nonfinite(path, promise):
        # ITK reads NaN and infinity in a NIfTI as 0: a label would pass as background, a scan as water
        raise InputError(path, "holds NaN or infinite voxel values")
    return image


def _image_reader(path: Path, ending: str):
    """A SimpleITK reader of ``path`` whose header was checked by :mod:`orbitseg.io.guard` and then read
    by ITK (3D; NIfTI complete), and what the header promises."""
    import SimpleITK as sitk

    if not path.is_file():
        raise InputError(path, "is not a file")
    if path.stat().st_size == 0:
        raise InputError(path, "is empty (0 bytes)")
    promise = guard.check_header(path, FORMATS[ending], ending)
    fmt, io_name = FORMATS[ending].name, FORMATS[ending].itk_io
    nifti = _load_nifti(path) if fmt == "nifti" else None  # one header read for the checks below
    # the sform before ITK, which refuses a sheared one obscurely
    sform = None if nifti is None or isinstance(nifti, Exception) else _nifti_sform(path, nifti)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO(io_name)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(path, f"is not a readable {fmt} image ({_short(exc)})") from None
    if reader.GetDimension() != 3:
        size = reader.GetSize()
        raise InputError(path, f"is a {reader.GetDimension()}D image (size {size}); a 3D volume is needed")
    if fmt == "nifti":
        _check_nifti_complete(path, ending, nifti)
        if sform is not None:
            _check_itk_follows_sform(path, reader, sform)
    return reader, promise


#: the farthest (mm) a corner voxel may lie between a NIfTI's sform and the geometry read, before it is refused
SFORM_DISAGREEMENT_MM = 0.5
_SHEARED_ADVICE = ("resample it onto an orthogonal grid (dcm2niix corrects a gantry tilt unless told not to) or give "
                   "orbitseg the DICOM series, whose tilt it corrects itself")


def _load_nifti(path: Path):
    """The file as nibabel opens it (header only: no voxel is read), or the exception nibabel raised, which
    :func:`_check_nifti_complete` reports once ITK has had its say."""
    import nibabel as nib

    try:
        return nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - nibabel's errors vary by problem
        return exc


def _nifti_sform(path: Path, nifti) -> np.ndarray | None:
    """The sform affine of a NIfTI (LPS, voxel index -> mm) when its code says it is set, else None; a sheared
    one (a CT with gantry tilt converted without correcting it) is refused: orbitseg's grids are orthogonal."""
    try:
        affine, code = nifti.header.get_sform(coded=True)
    except Exception:  # noqa: BLE001 - an unreadable sform is reported by the ITK read that follows
        return None
    if not code or affine is None:
        return None
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    cols = lps[:3, :3] / np.maximum(np.linalg.norm(lps[:3, :3], axis=0), 1e-12)
    cosines = [abs(float(cols[:, a] @ cols[:, b])) for a, b in ((0, 1), (0, 2), (1, 2))]
    shear = float(np.degrees(np.arcsin(min(1.0, max(cosines)))))
    if shear > 0.1:
        raise InputError(path, f"has a sheared sform affine (its axes {shear:.1f} degrees from orthogonal: a CT with "
                               f"gantry tilt converted without correcting it?); orbitseg reads orthogonal grids only, "
                               f"and tools disagree on where such voxels lie: {_SHEARED_ADVICE}")
    return lps


def _check_itk_follows_sform(path: Path, reader, sform: np.ndarray) -> None:
    """Refuse a NIfTI whose sform and the geometry ITK read (its qform, where it prefers that) put the voxels
    in different places: outputs written on ITK's grid would misalign with the scan in tools that follow
    the sform."""
    size = np.array(reader.GetSize(), dtype=float)
    m = np.array(reader.GetDirection(), dtype=float).reshape(3, 3) * np.array(reader.GetSpacing())[None, :]
    corners = np.array([[i, j, k] for i in (0, size[0] - 1) for j in (0, size[1] - 1) for k in (0, size[2] - 1)])
    itk = corners @ m.T + np.array(reader.GetOrigin())
    nif = corners @ sform[:3, :3].T + sform[:3, 3]
    far = float(np.abs(itk - nif).max())
    if far > SFORM_DISAGREEMENT_MM:
        raise InputError(path, f"has a qform and an sform that disagree by up to {far:.1f} mm at its corners (ITK and "
                               f"3D Slicer read one, other tools the other): {_SHEARED_ADVICE}, or write one "
                               "geometry into both")


def _gzip_trailer_size(path: Path) -> int | None:
    """ISIZE of a gzip file (uncompressed size mod 2**32, its last 4 bytes), or None if too short."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        if fh.tell() < 18:
            return None
        fh.seek(-4, 2)
        return int.from_bytes(fh.read(4), "little")


def _check_nifti_complete(path: Path, ending: str, nifti) -> None:
    """Refuse a truncated NIfTI (ITK would read it and fill the missing voxels with zeros).  ``nifti``: the file
    as :func:`_load_nifti` opened it."""
    import zlib

    try:
        if isinstance(nifti, Exception):
            raise nifti
        header = nifti.header
        offset = int(getattr(nifti.dataobj, "offset", header["vox_offset"]))
        expected = offset + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
    except Exception as exc:  # noqa: BLE001 - nibabel's errors vary by problem
        raise InputError(path, f"is not a readable NIfTI image ({exc})") from None
    if ending == ".nii":
        actual = path.stat().st_size
    elif _gzip_trailer_size(path) == expected % (1 << 32):
        return  # complete: a cut file's last 4 bytes would have to match by chance (2**-32)
    else:
        actual = 0
        d = zlib.decompressobj(wbits=31)
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    actual += len(d.decompress(chunk))
                    while d.eof and d.unused_data:  # concatenated gzip members
                        rest = d.unused_data
                        d = zlib.decompressobj(wbits=31)
                        actual += len(d.decompress(rest))
            actual += len(d.flush())
        except zlib.error as exc:
            raise InputError(path, f"is corrupt: its gzip data cannot be decompressed ({exc})") from None
        if not d.eof:
            raise InputError(path, f"is truncated: its gzip data ends early (after {actual} of {expected} bytes)")
    if actual < expected:
        raise InputError(path, f"is truncated: {actual} bytes where its header needs {expected}")


# ---------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------
def read_label(path: str | Path, *, reference: Volume | Geometry | None = None, purpose: str = "view") -> Volume:
    """Read a label volume (uint8, values in {0, 1, 2, 3}).

    Parameters
    ----------
    path : NIfTI / NRRD / MetaImage labelmap, a 3D Slicer ``.seg.nrrd``
        (segments are mapped to orbitseg's ids by name - "eyeball",
        "extraocular muscles", "optic nerve" and common synonyms - or, for an
        unknown name, by their label value), or a DICOM Segmentation (recognised
        by its content, any file name; segments mapped by their SNOMED CT type
        code, :func:`orbitseg.io.dicomseg.read_dicom_seg`).  A ``.seg.nrrd``
        cropped to its segments' extent is placed back on the reference grid.
    reference : the scan (or its grid) the label must sit on.  A DICOM-SEG's
        frames are placed on it by their plane positions (and a DICOM scan must
        be the series the SEG refers to); without one, a DICOM-SEG is read on
        the grid of its own frames (:func:`orbitseg.io.dicomseg.frames_geometry`:
        the source series' grid cropped to the slices that hold a structure,
        since a SEG stores no frame for the others)
    purpose : ``"view"`` warns (:class:`~orbitseg.io.validate.EmptyLabelWarning`)
        about an empty label; ``"train"`` refuses it

    Raises
    ------
    InputError : unreadable file, values outside {0..3}, non-integer values,
        empty label when ``purpose == "train"``; a DICOM-SEG of another series
        than a DICOM ``reference``, or whose frames are not on its slices
    GeometryMismatchError : the label's grid differs from ``reference``'s
    """
    if purpose not in ("view", "train"):
        raise ValueError(f"purpose must be 'view' or 'train', got {purpose!r}")
    path = Path(path)
    with guard.reader_boundary(path):
        return _read_label(path, reference, purpose)


def _read_label(path: Path, reference: Volume | Geometry | None, purpose: str) -> Volume:
    if not path.exists():
        raise InputError(path, "does not exist")
    if path.is_dir():
        raise InputError(path, "is a folder; a label volume is a single file (" + ", ".join(LABEL_READ_ENDINGS)
                         + " or a DICOM-SEG)")
    if is_dicom_seg(path):
        labels = read_dicom_seg(path, reference if reference is not None else frames_geometry(path))
        validate.check_label_not_empty(labels, path, purpose=purpose)
        return labels
    ending = _ending(path, LABEL_READ_ENDINGS)
    image = _read_image_file(path, ending)
    meta: dict = {"format": FORMATS[ending].name}
    if _has_segments(image):  # whatever its ending: a labelmap NRRD with Slicer segment fields
        array = _segments_to_labels(path, image, meta)
        meta["format"] = _SEGMENTS_FORMAT
    else:
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(path, f"has {image.GetNumberOfComponentsPerPixel()} values per voxel; a label map has one")
        import SimpleITK as sitk

        array = sitk.GetArrayFromImage(image)
    validate.check_volume_3d(array, path)
    validate.check_label_values(array, path)
    labels = Volume(array.astype(np.uint8), geometry_of(image), path, meta)
    if reference is not None:
        ref = reference.geometry if isinstance(reference, Volume) else reference
        if meta["format"] == _SEGMENTS_FORMAT and ref.differences(labels.geometry):
            labels = _embed(labels, ref)
        validate.check_same_geometry(labels, reference, path)
        # the label now sits on the reference grid: take its exact numbers
        labels = Volume(labels.array, ref, path, labels.meta)
    validate.check_label_not_empty(labels, path, purpose=purpose)
    return labels


def label_for_segment_name(name: str) -> int | None:
    """orbitseg label id of a segment called ``name`` (None when unknown).

    >>> label_for_segment_name("Optic Nerve"), label_for_segment_name("extraocular_muscles")
    (3, 2)
    """
    n = re.sub(r"[^a-z]+", " ", name.lower()).strip()
    for lab in (BACKGROUND,) + STRUCTURES:
        if n in (LABEL_NAMES[lab].replace("_", " "), LABEL_TITLES[lab].lower()):
            return lab
    words = set(n.split())
    if "nerve" in n or words & {"on", "cn2", "cnii"}:
        return NERVE
    if "muscle" in n or "rectus" in n or "oblique" in n or words & {"eom", "eoms"}:
        return MUSCLES
    if "eye" in n or "globe" in n or "bulb" in n:
        return EYEBALL
    return None


def _has_segments(image) -> bool:
    return any(re.match(r"Segment\d+_(ID|Name|LabelValue)$", k) for k in image.GetMetaDataKeys())


def _segments_to_labels(path: Path, image, meta: dict) -> np.ndarray:
    """Map the segments of a Slicer segmentation to orbitseg label ids."""
    import SimpleITK as sitk

    keys = image.GetMetaDataKeys()
    fields: dict[int, dict[str, str]] = {}
    for k in keys:
        m = re.match(r"Segment(\d+)_(\w+)$", k)
        if m:
            fields.setdefault(int(m.group(1)), {})[m.group(2)] = image.GetMetaData(k).strip()
    data = sitk.GetArrayFromImage(image)  # (z, y, x) or (z, y, x, layers)
    if data.ndim == 3:
        data = data[..., None]
    n_layers = data.shape[-1]
    out = np.zeros(data.shape[:3], dtype=np.uint8)
    claimed = np.zeros(data.shape[:3], dtype=bool)
    mapping = {}
    known: dict[int, set[int]] = {layer: set() for layer in range(n_layers)}
    for idx in sorted(fields):
        f = fields[idx]
        name = f.get("Name", f.get("ID", f"Segment{idx}"))
        try:
            layer = int(f["Layer"]) if "Layer" in f else (idx if n_layers > 1 else 0)
            value = int(float(f["LabelValue"])) if "LabelValue" in f else (1 if n_layers > 1 else idx + 1)
        except ValueError:
            raise InputError(path, f"segment {name!r} has an unreadable Layer/LabelValue") from None
        if not 0 <= layer < n_layers:
            raise InputError(path, f"segment {name!r} refers to layer {layer}, the file has {n_layers}")
        known[layer].add(value)
        lab = label_for_segment_name(name)
        if lab is None:
            if value in STRUCTURES:
                lab = value
            else:
                raise InputError(
                    path,
                    f"segment {name!r} (label value {value}) matches none of orbitseg's structures "
                    f"({', '.join(LABEL_NAMES[s] for s in STRUCTURES)}); rename it in Slicer",
                )
        if value == 0:
            continue
        mask = data[..., layer] == value
        mapping[name] = lab
        overlap = mask & claimed
        if overlap.any():
            warnings.warn(f"{path}: segment {name!r} overlaps another segment in {int(overlap.sum())} voxels; "
                          "the later segment wins", stacklevel=3)
        out[mask] = lab
        claimed |= mask
    # a voxel value that belongs to no segment is an invalid label
    for layer in range(n_layers):
        present = set(np.unique(data[..., layer]).tolist()) - {0}
        stray = sorted(present - known[layer])
        if stray:
            raise InputError(path, f"layer {layer} holds values {stray} that belong to no segment")
    meta["segments"] = mapping
    return out


def _embed(labels: Volume, ref: Geometry) -> Volume:
    """Place a label cropped to a sub-block of ``ref``'s grid back on the full grid (else unchanged)."""
    g = labels.geometry
    if not (np.allclose(g.spacing, ref.spacing, rtol=1e-4) and np.allclose(g.matrix, ref.matrix, atol=1e-4)):
        return labels
    offset = ref.physical_to_index(np.asarray(g.origin))
    start = np.round(offset).astype(int)
    if np.abs(offset - start).max() > 1e-3:
        return labels
    stop = start + np.asarray(g.size)
    if (start < 0).any() or (stop > np.asarray(ref.size)).any():
        return labels
    full = np.zeros(ref.shape, dtype=np.uint8)
    full[start[2]:stop[2], start[1]:stop[1], start[0]:stop[0]] = labels.array
    meta = dict(labels.meta, embedded_at=tuple(int(v) for v in start))
    return Volume(full, ref, labels.path, meta)
