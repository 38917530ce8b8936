"""The reader boundary: what a file's header promises, checked before any library reads it.

ITK's readers trust their headers.  A NIfTI whose sform holds infinities, a NRRD whose ``encoding: ascii``
lies over binary data, a MetaImage whose ``NDims`` is -1, a 74 KB NRRD declaring 4294967296 voxels: each
can make SimpleITK hang, crash the interpreter or allocate gigabytes before it says anything.  So every file
is looked at here first, in Python, with bounded reads:

- the header is parsed by a maintained library where one reads headers without data (nibabel for NIfTI,
  pynrrd for NRRD) or by hand where none does (MetaImage key = value lines), from at most
  :data:`MAX_HEADER_BYTES`;
- its geometry must be finite and of sane magnitude (:data:`MAX_MM`);
- its encoding must be one ITK reads safely (NRRD: raw, gzip, and text / hex whose characters are checked);
- a separate data file must be a regular file beside the header (never an absolute path, a subfolder or a
  device such as ``/dev/zero``);
- the voxels it declares must fit in the bytes the file holds (uncompressed: at least the declared bytes;
  deflate-compressed: at most :data:`MAX_DEFLATE_RATIO` times the compressed bytes) and under
  :data:`MAX_VOXELS`, so memory is bounded by the file's own length before anything is allocated.

:func:`check_header` returns what the header promises (:class:`Promise`); :func:`reader_boundary` turns
any other failure of a library into :class:`~orbitseg.errors.InputError` naming the file.  Each format of
:data:`orbitseg.io.formats.FORMATS` names its header layout, and :data:`GUARDS` holds the check of each.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orbitseg.errors import InputError, OrbitsegError
from orbitseg.io.formats import FileFormat

__all__ = [
    "MAX_VOXELS", "MAX_HEADER_BYTES", "MAX_DEFLATE_RATIO", "MAX_MM", "Promise", "GUARDS", "check_header",
    "check_nifti", "check_nrrd", "check_metaimage", "check_data_file", "reader_boundary", "nifti_nonfinite",
    "first_line",
]

#: most voxels a volume may declare (1 Gi: 1024 x 1024 x 1024; an orbital CT has ~80 M)
MAX_VOXELS = 2**30
#: most bytes of a text header (NRRD, MetaImage) read to find its end
MAX_HEADER_BYTES = 1 << 20
#: deflate (gzip, zlib) never expands data more than 1032-fold; a header declaring more lies
MAX_DEFLATE_RATIO = 1032
#: bound on coordinates, spacings and direction entries (mm): one kilometre
MAX_MM = 1e6
#: longest token of a text-encoded NRRD (teem's parser overflows a fixed buffer beyond ~1 KB)
MAX_TEXT_TOKEN = 256


@dataclass(frozen=True)
class Promise:
    """What a header says the file holds."""

    #: voxels (times components) declared
    voxels: int
    #: bytes of voxel data declared (uncompressed)
    nbytes: int
    #: the voxels are floating point (NIfTI: ITK reads NaN and infinity as 0, so they are checked afterwards)
    floating: bool = False
    #: where the voxels start (uncompressed) and their NumPy type with byte order, when known
    offset: int = 0
    dtype: str | None = None


# ---------------------------------------------------------------------------
# the boundary
# ---------------------------------------------------------------------------
@contextmanager
def reader_boundary(path: str | Path) -> Iterator[None]:
    """Let only :class:`~orbitseg.errors.OrbitsegError` (and warnings) out of a read of ``path``.

    Any other exception a library raises (RuntimeError from ITK, AttributeError / TypeError /
    NotImplementedError from pydicom, MemoryError, OSError...) becomes an :class:`InputError`
    naming ``path`` and the exception's type and first line.
    """
    try:
        yield
    except (OrbitsegError, Warning, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except MemoryError:
        raise InputError(path, "cannot be read: it needs more memory than is available (MemoryError)") from None
    except Exception as exc:  # noqa: BLE001 - the point: nothing foreign crosses the boundary
        raise InputError(path, f"cannot be read ({type(exc).__name__}: {first_line(exc)})") from None


def first_line(exc: BaseException, limit: int = 200) -> str:
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "") or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------
# shared checks
# ---------------------------------------------------------------------------
def _refuse(path: Path, fmt: str, problem: str) -> InputError:
    return InputError(path, f"is not a readable {fmt} image ({problem})")


def _check_numbers(path: Path, fmt: str, what: str, values, *, limit: float = MAX_MM, allow_nan: bool = False) -> None:
    """Refuse non-finite (NaN allowed when ``allow_nan``) or absurd values of a geometry field."""
    for v in values:
        v = float(v)
        if math.isnan(v):
            if allow_nan:
                continue
            raise _refuse(path, fmt, f"{what} holds NaN")
        if not math.isfinite(v):
            raise _refuse(path, fmt, f"{what} holds an infinite value")
        if abs(v) > limit:
            raise _refuse(path, fmt, f"{what} holds {v:g}, beyond +-{limit:g}")


def _check_sizes(path: Path, fmt: str, sizes: list[int], components: int = 1) -> int:
    """Number of values the sizes declare; refuses sizes < 1 and more than :data:`MAX_VOXELS`."""
    if not sizes:
        raise _refuse(path, fmt, "no sizes")
    if any(s < 1 for s in sizes):
        raise _refuse(path, fmt, f"sizes {sizes} hold an axis of less than one voxel")
    n = math.prod(sizes) * max(components, 1)
    if n > MAX_VOXELS:
        raise InputError(path, f"declares {n} voxels (sizes {sizes}), more than orbitseg reads ({MAX_VOXELS}); "
                               "refused before reading its voxels")
    return n


def _check_fits(path: Path, needed: int, available: int, *, compressed: bool, where: str = "") -> None:
    """Refuse a header whose voxel bytes cannot be in the ``available`` bytes of data."""
    where = f" in {where}" if where else ""
    if compressed:
        if needed > available * MAX_DEFLATE_RATIO + 65536:
            raise InputError(path, f"declares {needed} bytes of voxels, more than its {available} compressed "
                                   f"bytes{where} can hold (deflate expands at most {MAX_DEFLATE_RATIO}-fold): "
                                   "corrupt header or truncated file")
    elif needed > available:
        raise InputError(path, f"is truncated: {available} bytes of voxel data{where} where its header needs {needed}")


#: top-level folders of devices and kernel files (a link beside the header may point there)
_SYSTEM_FOLDERS = ("dev", "proc", "sys")


def check_data_file(header: Path, name: str, fmt: str) -> Path:
    """The data file a detached header names: only a regular file in the header's own folder.

    Refuses lists and file-name patterns, absolute paths, paths into other folders (``../``), devices
    (``/dev/zero`` hangs a reader), missing files and folders.
    """
    name = name.strip()
    if not name:
        raise _refuse(header, fmt, "empty data file name")
    if name.upper().startswith("LIST") or "%" in name or len(name.split()) > 1:
        raise InputError(header, f"names its data as a list or pattern of files ({name!r}); orbitseg reads one "
                                 "data file beside the header")
    if name.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:[\\/]", name) or "/" in name or "\\" in name \
            or name in (".", ".."):
        raise InputError(header, f"names data file {name!r}; only a file beside the header (a bare name) is read")
    data = header.parent / name
    try:
        resolved = data.resolve()
    except (OSError, RuntimeError):
        raise InputError(header, f"its data file {name!r} cannot be resolved") from None
    if len(resolved.parts) > 1 and resolved.parts[1] in _SYSTEM_FOLDERS:
        raise InputError(header, f"its data file {name!r} is a device or system file ({resolved})")
    if not data.is_file():
        what = "does not exist" if not data.exists() else "is not a regular file"
        raise InputError(header, f"its data file {name!r} {what}")
    return data


# ---------------------------------------------------------------------------
# NIfTI
# ---------------------------------------------------------------------------
def _nifti_head(path: Path, gz: bool) -> bytes:
    try:
        if gz:
            with gzip.open(path, "rb") as fh:
                return fh.read(540)
        with open(path, "rb") as fh:
            return fh.read(540)
    except (OSError, EOFError, zlib.error) as exc:
        raise _refuse(path, "NIfTI", f"its gzip data cannot be read: {first_line(exc)}") from None


def check_nifti(path: Path, ending: str) -> Promise:
    """Parse a NIfTI-1 / NIfTI-2 header with nibabel, without its data, and check it.

    Geometry: pixdim of the used axes, quaternion and offsets, sform rows must be finite and within
    :data:`MAX_MM` (a qform's quaternion must be a rotation), scl_slope / scl_inter finite or unset;
    dim[0] in 1..7 and every used dim >= 1; the declared voxel bytes must fit in the file (.nii) or in
    what its compressed bytes can hold (.nii.gz).
    """
    import numpy as np
    import nibabel as nib
    from io import BytesIO

    gz = ending.endswith(".gz")
    head = _nifti_head(path, gz)
    if len(head) < 348:
        raise _refuse(path, "NIfTI", f"only {len(head)} bytes, shorter than a NIfTI header (348)")
    size = struct.unpack("<i", head[:4])[0]
    swapped = struct.unpack(">i", head[:4])[0]
    if 348 in (size, swapped):
        cls, hsize = nib.Nifti1Header, 348
    elif 540 in (size, swapped):
        cls, hsize = nib.Nifti2Header, 540
    else:
        raise _refuse(path, "NIfTI", f"its first 4 bytes give header size {size}, not 348 or 540")
    if len(head) < hsize:
        raise _refuse(path, "NIfTI", f"only {len(head)} bytes, shorter than its {hsize}-byte header")
    try:
        hdr = cls.from_fileobj(BytesIO(head[:hsize]), check=False)
        magic = bytes(hdr["magic"])[:3]
        dims = [int(v) for v in hdr["dim"]]
        pixdim = [float(v) for v in hdr["pixdim"]]
        qform, sform = int(hdr["qform_code"]), int(hdr["sform_code"])
        quat = [float(hdr[k]) for k in ("quatern_b", "quatern_c", "quatern_d")]
        qoff = [float(hdr[k]) for k in ("qoffset_x", "qoffset_y", "qoffset_z")]
        srow = [float(v) for k in ("srow_x", "srow_y", "srow_z") for v in hdr[k]]
        slope, inter = float(hdr["scl_slope"]), float(hdr["scl_inter"])
        vox_offset = float(hdr["vox_offset"])
    except Exception as exc:  # noqa: BLE001 - nibabel's errors vary by problem
        raise _refuse(path, "NIfTI", first_line(exc)) from None
    if magic not in (b"n+1", b"n+2"):
        raise _refuse(path, "NIfTI", f"magic {magic!r}: not a single-file NIfTI (.nii)")
    if not 1 <= dims[0] <= 7:
        raise _refuse(path, "NIfTI", f"dim[0] is {dims[0]}, not 1..7")
    used = dims[1: dims[0] + 1]
    try:
        dtype = hdr.get_data_dtype()
    except Exception as exc:  # noqa: BLE001
        raise _refuse(path, "NIfTI", f"unknown datatype ({first_line(exc)})") from None
    n = _check_sizes(path, "NIfTI", used)
    _check_numbers(path, "NIfTI", "pixdim", pixdim[: dims[0] + 1])
    _check_numbers(path, "NIfTI", "the quaternion (quatern_b/c/d)", quat)
    _check_numbers(path, "NIfTI", "the qform offset (qoffset_x/y/z)", qoff)
    _check_numbers(path, "NIfTI", "the sform (srow_x/y/z)", srow)
    if qform > 0 and sum(q * q for q in quat) > 1.001:
        raise _refuse(path, "NIfTI", f"quaternion {quat} is not a rotation (b^2 + c^2 + d^2 > 1)")
    for name, v in (("scl_slope", slope), ("scl_inter", inter)):
        if math.isinf(v):
            raise _refuse(path, "NIfTI", f"{name} is infinite")
    if not math.isfinite(vox_offset) or vox_offset < 0 or vox_offset > 2**40:
        raise _refuse(path, "NIfTI", f"vox_offset {vox_offset:g}")
    itemsize = dtype.itemsize
    needed = int(vox_offset) + n * itemsize
    file_size = path.stat().st_size
    if gz:
        _check_fits(path, needed, file_size, compressed=True)
    elif file_size < needed:
        raise InputError(path, f"is truncated: {file_size} bytes where its header needs {needed}")
    floating = bool(np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.complexfloating))
    return Promise(n, n * itemsize, floating=floating, offset=int(vox_offset), dtype=dtype.str)


def nifti_nonfinite(path: Path, promise: Promise) -> bool:
    """True when the floating-point voxels of a NIfTI (as :func:`check_nifti` found them) hold NaN or
    infinity, which ITK reads as 0.  One streaming pass over the file (decompressed on the fly), 16 MB at
    a time, so memory stays one piece."""
    import numpy as np

    if not promise.floating or promise.dtype is None:
        return False
    dtype = np.dtype(promise.dtype)
    step = (16 << 20) // dtype.itemsize * dtype.itemsize
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as fh:
        fh.seek(promise.offset)
        left, carry = promise.nbytes, b""
        while left > 0:
            chunk = fh.read(min(step, left))
            if not chunk:
                break
            left -= len(chunk)
            buf = carry + chunk
            whole = len(buf) // dtype.itemsize * dtype.itemsize
            if not np.isfinite(np.frombuffer(buf[:whole], dtype)).all():
                return True
            carry = buf[whole:]
    return False


# ---------------------------------------------------------------------------
# NRRD
# ---------------------------------------------------------------------------
#: NRRD type names (normalised: lower case, single spaces) -> bytes per value
_NRRD_TYPES = {
    **dict.fromkeys(["signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"], 1),
    **dict.fromkeys(["short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
                     "unsigned short", "unsigned short int", "uint16", "uint16_t"], 2),
    **dict.fromkeys(["int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t"], 4),
    **dict.fromkeys(["longlong", "long long", "long long int", "signed long long", "signed long long int", "int64",
                     "int64_t", "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"], 8),
    "float": 4, "double": 8,
}
#: NRRD encodings ITK reads (bzip2 is not built into ITK's NrrdIO)
_NRRD_ENCODINGS = {"raw": "raw", "gzip": "gzip", "gz": "gzip", "ascii": "text", "text": "text", "txt": "text",
                   "hex": "hex"}
_TEXT_ALLOWED = frozenset(b"0123456789+-.,eEnNaAiIfFtTyYxXpP \t\r\n\v\f")
_HEX_ALLOWED = frozenset(b"0123456789abcdefABCDEF \t\r\n\v\f")


def _text_header(path: Path, fmt: str) -> tuple[list[bytes], int]:
    """The header lines of a NRRD (up to the blank line or the end of the file) and the header's length."""
    with open(path, "rb") as fh:
        head = fh.read(MAX_HEADER_BYTES + 1)
    end = head.find(b"\n\n")
    crlf = head.find(b"\r\n\r\n")
    if crlf >= 0 and (end < 0 or crlf < end):
        length = crlf + 4
    elif end >= 0:
        length = end + 2
    elif len(head) <= MAX_HEADER_BYTES:
        length = len(head)  # a detached header may end with the file
    else:
        raise _refuse(path, fmt, f"no end of its header in the first {MAX_HEADER_BYTES} bytes")
    lines = head[:length].splitlines(keepends=True)
    return lines, length


def check_nrrd(path: Path, ending: str) -> Promise:
    """Parse a NRRD header with pynrrd (no data read) and check it.

    ``dimension`` 1..16 with as many ``sizes`` (each >= 1, product under :data:`MAX_VOXELS`); a known
    ``type``; ``encoding`` raw, gzip, or ascii / text / hex whose data holds only such characters (and no
    token over :data:`MAX_TEXT_TOKEN` characters); ``space directions`` / ``space origin`` / ``spacings``
    finite and sane; ``data file`` only a file beside the header; the declared bytes must fit in the data.
    """
    import warnings

    import nrrd

    lines, hlen = _text_header(path, "nrrd")
    if not lines or not lines[0].startswith(b"NRRD000"):
        raise _refuse(path, "nrrd", "no NRRD magic line")
    if any(b"\0" in ln for ln in lines):
        raise _refuse(path, "nrrd", "NUL bytes in its header")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = nrrd.read_header([ln.decode("latin-1") for ln in lines])
    except Exception as exc:  # noqa: BLE001 - pynrrd's errors vary by problem
        raise _refuse(path, "nrrd", f"header: {first_line(exc)}") from None
    for key in ("dimension", "type", "sizes", "encoding"):
        if key not in header:
            raise _refuse(path, "nrrd", f"no {key!r} field")
    try:
        dim = int(header["dimension"])
        sizes = [int(s) for s in header["sizes"]]
    except (TypeError, ValueError) as exc:
        raise _refuse(path, "nrrd", f"sizes: {first_line(exc)}") from None
    if not 1 <= dim <= 16:
        raise _refuse(path, "nrrd", f"dimension {dim}, not 1..16")
    if len(sizes) != dim:
        raise _refuse(path, "nrrd", f"{len(sizes)} sizes for dimension {dim}")
    n = _check_sizes(path, "nrrd", sizes)
    type_name = " ".join(str(header["type"]).lower().split())
    if type_name not in _NRRD_TYPES:
        raise _refuse(path, "nrrd", f"type {header['type']!r} is not a number type orbitseg reads")
    itemsize = _NRRD_TYPES[type_name]
    enc_name = str(header["encoding"]).lower().strip()
    encoding = _NRRD_ENCODINGS.get(enc_name)
    if encoding is None:
        raise InputError(path, f"NRRD encoding {header['encoding']!r} is not read by orbitseg "
                               "(raw, gzip, ascii/text or hex)")
    if itemsize > 1 and encoding in ("raw", "gzip", "hex") and str(header.get("endian", "")).lower() not in (
            "little", "big"):
        raise _refuse(path, "nrrd", f"endian {header.get('endian')!r}: little or big is needed")
    for key in ("space directions", "space origin", "spacings", "axis mins", "axis maxs", "thicknesses"):
        if key in header and header[key] is not None:
            try:
                import numpy as np

                values = np.asarray(header[key], dtype=float).ravel()
            except (TypeError, ValueError) as exc:
                raise _refuse(path, "nrrd", f"{key}: {first_line(exc)}") from None
            # 'none' axes of space directions, and unknown spacings, are NaN by the NRRD definition
            if key == "space directions":
                rows = np.asarray(header[key], dtype=float).reshape(len(sizes), -1) if values.size else values
                rows = [r for r in rows if not np.isnan(r).all()] if values.size else []
                _check_numbers(path, "nrrd", key, [v for r in rows for v in r])
            else:
                _check_numbers(path, "nrrd", key, values, allow_nan=key != "space origin")
    for key in ("line skip", "byte skip"):
        if key in header:
            v = int(header[key])
            if v < (-1 if key == "byte skip" else 0) or v > 2**40:
                raise _refuse(path, "nrrd", f"{key} {v}")
            if key == "byte skip" and v == -1 and encoding != "raw":
                raise _refuse(path, "nrrd", "byte skip -1 with a compressed or text encoding")
    line_skip, byte_skip = int(header.get("line skip", 0)), int(header.get("byte skip", 0))
    data_name = header.get("data file", header.get("datafile"))
    if data_name is not None:
        data_path, start = check_data_file(path, str(data_name), "nrrd"), 0
    elif ending == ".nhdr":
        raise InputError(path, "is a detached NRRD header (.nhdr) without a 'data file' field")
    else:
        data_path, start = path, hlen
    available = data_path.stat().st_size - start
    if byte_skip > 0:
        available -= byte_skip
    if line_skip > 0:
        available -= line_skip  # at least one byte (the newline) per skipped line
    available = max(available, 0)
    needed = n * itemsize
    where = "" if data_path == path else data_path.name
    if encoding in ("raw", "gzip"):
        _check_fits(path, needed, available, compressed=encoding == "gzip", where=where)
    else:
        per_value = 2 if encoding == "text" else 2 * itemsize
        if encoding == "text" and n * 2 - 1 > available or encoding == "hex" and needed * 2 > available:
            raise InputError(path, f"is truncated: {available} bytes of {enc_name} data{' in ' + where if where else ''} "
                                   f"cannot hold {n} values (at least {per_value} characters each)")
        _check_text_data(path, data_path, data_path.stat().st_size - available, encoding)
    return Promise(n, needed, floating=type_name in ("float", "double"))


def _check_text_data(path: Path, data_path: Path, start: int, encoding: str) -> None:
    """Refuse text- or hex-encoded data holding other characters, or over-long tokens (ITK overflows on them)."""
    allowed = _TEXT_ALLOWED if encoding == "text" else _HEX_ALLOWED
    long_token = re.compile(rb"[^\s,]{%d,}" % (MAX_TEXT_TOKEN + 1))
    carry = b""
    with open(data_path, "rb") as fh:
        fh.seek(start)
        while chunk := fh.read(1 << 20):
            if chunk.translate(None, bytes(allowed)):
                bad = next(b for b in chunk if b not in allowed)
                raise InputError(path, f"its {encoding} data holds byte {bad:#04x}, which is no part of a number: "
                                       "binary data under a text encoding")
            if encoding == "text":
                text = carry + chunk
                if long_token.search(text):
                    raise InputError(path, f"its text data holds a token longer than {MAX_TEXT_TOKEN} characters")
                m = re.search(rb"[^\s,]*$", text)
                carry = m.group(0) if m else b""


# ---------------------------------------------------------------------------
# MetaImage
# ---------------------------------------------------------------------------
#: MetaImage element types -> bytes per value
_MET_TYPES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4, "MET_LONG": 4,
    "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}
_META_NUMERIC = {
    "ElementSpacing": 1, "ElementSize": 1, "Offset": 1, "Position": 1, "Origin": 1, "TransformMatrix": 2,
    "Rotation": 2, "Orientation": 2, "CenterOfRotation": 1,
}
_META_INTS = ("NDims", "DimSize", "ElementNumberOfChannels", "HeaderSize", "CompressedDataSize")


def check_metaimage(path: Path, ending: str) -> Promise:
    """Parse a MetaImage header (``Key = Value`` lines up to ``ElementDataFile``) and check it.

    ``NDims`` 1..10 with as many ``DimSize`` values; a known ``ElementType``; 1..16 channels; geometry
    finite and sane; ``ElementDataFile`` LOCAL or a file beside the header; ``HeaderSize`` and
    ``CompressedDataSize`` within the data; the declared bytes must fit in the data.
    """
    with open(path, "rb") as fh:
        head = fh.read(MAX_HEADER_BYTES + 1)
    m = re.search(rb"(?m)^[ \t]*ElementDataFile[ \t]*=[^\n]*(\n|$)", head[:MAX_HEADER_BYTES])
    if m is None:
        raise _refuse(path, "metaimage", "no ElementDataFile line" + (
            f" in its first {MAX_HEADER_BYTES} bytes" if len(head) > MAX_HEADER_BYTES else ""))
    hlen = m.end()
    fields: dict[str, str] = {}
    for raw in head[:hlen].splitlines():
        if b"\0" in raw:
            raise _refuse(path, "metaimage", "NUL bytes in its header")
        line = raw.decode("latin-1").strip()
        if not line or "=" not in line:
            continue
        key, value = (s.strip() for s in line.split("=", 1))
        if key in fields:
            raise _refuse(path, "metaimage", f"field {key} given twice")
        fields[key] = value

    def ints(key: str, default: str | None = None) -> list[int]:
        text = fields.get(key, default)
        if text is None:
            raise _refuse(path, "metaimage", f"no {key} field")
        try:
            return [int(v) for v in text.split()]
        except ValueError:
            raise _refuse(path, "metaimage", f"{key} {text!r} is not whole numbers") from None

    ndims = ints("NDims")
    if len(ndims) != 1 or not 1 <= ndims[0] <= 10:
        raise _refuse(path, "metaimage", f"NDims {fields['NDims']!r}, not 1..10")
    nd = ndims[0]
    sizes = ints("DimSize")
    if len(sizes) != nd:
        raise _refuse(path, "metaimage", f"{len(sizes)} DimSize values for NDims {nd}")
    channels = ints("ElementNumberOfChannels", "1")
    if len(channels) != 1 or not 1 <= channels[0] <= 16:
        raise _refuse(path, "metaimage", f"ElementNumberOfChannels {fields.get('ElementNumberOfChannels')!r}")
    n = _check_sizes(path, "metaimage", sizes, channels[0])
    etype = fields.get("ElementType", "").strip()
    itemsize = _MET_TYPES.get(etype.removesuffix("_ARRAY"))
    if itemsize is None:
        raise _refuse(path, "metaimage", f"ElementType {etype!r} is not a number type orbitseg reads")
    for key, rank in _META_NUMERIC.items():
        if key in fields:
            try:
                values = [float(v) for v in fields[key].split()]
            except ValueError:
                raise _refuse(path, "metaimage", f"{key} {fields[key]!r} is not numbers") from None
            if len(values) != nd**rank:
                raise _refuse(path, "metaimage", f"{key} has {len(values)} values, {nd**rank} expected")
            _check_numbers(path, "metaimage", key, values)
    flags = {}
    for key in ("CompressedData", "BinaryData"):
        v = fields.get(key, "False" if key == "CompressedData" else "True").strip().lower()
        if v not in ("true", "false", "1", "0"):
            raise _refuse(path, "metaimage", f"{key} {fields[key]!r}, not True or False")
        flags[key] = v in ("true", "1")
    data_name = fields["ElementDataFile"].strip()
    if data_name.upper() == "LOCAL":
        data_path, start = path, hlen
    else:
        data_path, start = check_data_file(path, data_name, "metaimage"), 0
    total = data_path.stat().st_size
    if "HeaderSize" in fields:
        hs = ints("HeaderSize")
        if len(hs) != 1 or hs[0] < -1 or hs[0] > total:
            raise _refuse(path, "metaimage", f"HeaderSize {fields['HeaderSize']!r} for {total} bytes of data")
        if hs[0] > 0:
            start += hs[0]
    available = max(total - start, 0)
    if "CompressedDataSize" in fields:
        cs = ints("CompressedDataSize")
        if len(cs) != 1 or cs[0] < 0 or (cs[0] > available and flags["CompressedData"]):
            raise InputError(path, f"CompressedDataSize {fields['CompressedDataSize']!r}, more than the "
                                   f"{available} bytes of data it has: truncated or corrupt")
    needed = n * itemsize
    where = "" if data_path == path else data_path.name
    if "BinaryData" not in fields and not flags["CompressedData"]:  # binary or text: whichever needs fewer bytes
        _check_fits(path, min(needed, 2 * n - 1), available, compressed=False, where=where)
    elif not flags["BinaryData"]:  # text values, one or more characters and a separator each
        if n * 2 - 1 > available:
            raise InputError(path, f"is truncated: {available} bytes of text data cannot hold {n} values")
    else:
        _check_fits(path, needed, available, compressed=flags["CompressedData"], where=where)
    return Promise(n, needed, floating=etype.startswith(("MET_FLOAT", "MET_DOUBLE")))


# ---------------------------------------------------------------------------
# the registry of checks
# ---------------------------------------------------------------------------
#: header layout (FileFormat.header) -> its check, for every format read through a SimpleITK ImageIO
GUARDS = {"nifti": check_nifti, "nrrd": check_nrrd, "metaimage": check_metaimage}


def check_header(path: Path, fmt: FileFormat, ending: str) -> Promise:
    """Check the header of ``path`` (of format ``fmt``, read under ``ending``) before any library reads it.

    Raises
    ------
    InputError
        naming the file and what is wrong with its header.
    """
    guard = GUARDS.get(fmt.header or "")
    if guard is None:  # the registry refuses such a format; never read one unchecked
        raise InputError(path, f"format {fmt.name!r} has no header check; refusing to read it")
    try:
        return guard(path, ending)
    except OrbitsegError:
        raise
    except (OSError, ValueError, OverflowError, struct.error, MemoryError) as exc:
        raise _refuse(path, fmt.name, f"header: {type(exc).__name__}: {first_line(exc)}") from None

