"""Seeded mutation fuzzer of orbitseg's readers: no file may hang, crash or exhaust a reader.

Usage: python bench/fuzz_readers.py [--seconds 600] [--seed 0] [--out fuzz_out] [--timeout 10] [--mem-gb 2]
                                   [--formats dicom,metaimage,nifti,nrrd]

Seeds are files the project writes (NIfTI ``.nii`` / ``.nii.gz``, NRRD ``.nrrd`` gzip and raw, ``.nhdr`` with
its data file, ``.seg.nrrd``, MetaImage ``.mha`` / ``.mhd``, a 4-slice DICOM series), scans and labels.  Each
case mutates one seed (bytes, header fields of the NIfTI header, key/value lines of NRRD and MetaImage
headers, tags / VRs / transfer syntax / truncation of one DICOM file of the series) with a random generator
seeded by ``--seed`` and the case number, and reads it with ``read_scan``, ``check_scan_header``,
``read_label`` or ``list_dicom_series`` in a forked child with a wall-clock timeout and an address-space limit
(``resource.setrlimit(RLIMIT_AS)``).  Every outcome is counted:

- ``read``: the mutated file was still a good image;
- ``refused``: an ``InputError`` (or subclass) naming the file: the clean refusal wanted;
- ``refused without naming the file``, ``foreign exception``: any other exception type (AttributeError...);
- ``hang``: no answer within ``--timeout`` (confirmed by a second try with three times the time);
- ``crash``: the child died from a signal (segfault, abort);
- ``memory``: peak RSS above ``--mem-gb`` GB, or an allocation refused by the address-space limit.

Every case of the last five kinds is saved under ``--out/<kind>/`` (the mutated files, and ``case.json`` with
the seed file, the mutations, the reader called and what it said) as a reproducer.  The children are forked
from this process after it has imported the readers but before it has called any of them (no ITK thread pool
exists yet), so a case costs milliseconds, not an interpreter start.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KINDS = ("read", "refused", "refused without naming the file", "foreign exception", "hang", "crash", "memory")
PROBLEMS = KINDS[2:]
#: reproducers kept per kind (the counts go on)
MAX_SAVED = 40


# ---------------------------------------------------------------------------
# seeds (made in a separate interpreter: the forking parent never runs ITK)
# ---------------------------------------------------------------------------
def _ct_array(shape, seed=0):
    import numpy as np

    nz, ny, nx = shape
    z, y, x = np.meshgrid(np.linspace(-1, 1, nz), np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    r = (x / 0.85) ** 2 + (y / 0.8) ** 2 + (z / 1.5) ** 2
    a = np.full(shape, -1000.0)
    a[r < 1.0] = 1000.0
    a[r < 0.75] = 40.0
    for cx in (-0.35, 0.35):
        a[((x - cx) ** 2 + (y + 0.4) ** 2) / 0.06 + z**2 / 0.8 < 1] = 10.0
    a += np.random.default_rng(seed).integers(-20, 21, size=shape)
    return a.astype(np.int16)


def make_seeds(folder: Path) -> None:
    """Write the seed files into ``folder`` (scan_* and label_*; one DICOM series folder)."""
    import numpy as np
    import SimpleITK as sitk

    from orbitseg.io.dicom import write_dicom_series
    from orbitseg.io.volume import Geometry, Volume
    from orbitseg.io.write import write_label, write_scan

    folder.mkdir(parents=True, exist_ok=True)
    shape = (6, 20, 24)
    geom = Geometry(size=shape[::-1], spacing=(0.6, 0.5, 1.5), origin=(-12.3, 40.7, -81.25), direction=np.eye(3))
    ct = Volume(_ct_array(shape), geom, None, {})
    lab = np.zeros(shape, np.uint8)
    lab[1:4, 5:9, 4:8], lab[1:4, 10:12, 4:9], lab[2:4, 13:15, 10:14] = 1, 2, 3
    labels = Volume(lab, geom, None, {})
    for ending in (".nii.gz", ".nii", ".nrrd", ".mha"):
        write_scan(ct, folder / f"scan{ending}", overwrite=True, compress=ending != ".nii")
    write_scan(ct, folder / "scan_raw.nrrd", overwrite=True, compress=False)
    write_scan(ct, folder / "scan_raw.mha", overwrite=True, compress=False)
    image = ct.to_sitk()
    sitk.WriteImage(image, str(folder / "scan_hdr.nhdr"), False)  # + scan_hdr.raw
    sitk.WriteImage(image, str(folder / "scan_gz.nhdr"), True)  # + scan_gz.raw.gz
    sitk.WriteImage(image, str(folder / "scan_hdr.mhd"), False)  # + scan_hdr.raw (shared name: rename)
    os.replace(folder / "scan_hdr.raw", folder / "scan_mhd.raw")
    text = (folder / "scan_hdr.mhd").read_text().replace("scan_hdr.raw", "scan_mhd.raw")
    (folder / "scan_hdr.mhd").write_text(text)
    sitk.WriteImage(image, str(folder / "scan_hdr.nhdr"), False)  # write the .nhdr's own data file again
    for ending in (".nii.gz", ".seg.nrrd", ".nrrd"):
        write_label(labels, folder / f"label{ending}", reference=geom, overwrite=True)
    write_scan(Volume(lab.astype(np.float32), geom, None, {}), folder / "label_float.nii", overwrite=True,
               compress=False)
    write_scan(Volume(lab.astype(np.float32), geom, None, {}), folder / "label_float.nrrd", overwrite=True,
               compress=False)
    ct4 = Volume(_ct_array((4, 20, 24), 1), Geometry(size=(24, 20, 4), spacing=(0.6, 0.5, 1.5),
                                                      origin=(-12.3, 40.7, -81.25), direction=np.eye(3)), None, {})
    write_dicom_series(ct4, folder / "scan_dicom", overwrite=True, series_uid="orbitseg-fuzz-seed")


def _seed_groups(folder: Path) -> list[dict]:
    """Each seed: its main path, the files that travel with it, scan or label, and its format family."""
    out = []
    for p in sorted(folder.iterdir()):
        name = p.name
        if p.is_dir():
            out.append({"main": name, "files": sorted(f.name for f in p.iterdir()), "kind": "scan", "family": "dicom"})
            continue
        if name.endswith((".raw", ".raw.gz")):
            continue
        family = ("nifti" if ".nii" in name else "metaimage" if name.endswith((".mha", ".mhd"))
                  else "nrrd")
        files = [name]
        if name.endswith((".nhdr", ".mhd")):
            m = re.search(r"(?:data file|ElementDataFile)\s*[:=]\s*(\S+)", p.read_text())
            files.append(m.group(1))
        out.append({"main": name, "files": files, "kind": "label" if name.startswith("label") else "scan",
                    "family": family})
    return out


# ---------------------------------------------------------------------------
# mutations
# ---------------------------------------------------------------------------
INTERESTING_INTS = [0, 1, -1, 2, 3, 4, 7, 8, 16, 255, 256, 32767, -32768, 65535, 65536, 2**31 - 1, -(2**31),
                    2**32 - 1, 348, 352, 540]
INTERESTING_FLOATS = [0.0, -0.0, 1.0, -1.0, float("inf"), float("-inf"), float("nan"), 1e38, -1e38, 3.4e38, 1e-38,
                      1e10, 1e20, 1e6, 0.5, 1e-7]
NUMBER_TOKENS = ["0", "-1", "1", "2", "4294967296", "4294967295", "2147483648", "65536", "1000000", "100000",
                 "99999999999999999999", "1e9", "nan", "inf", "-inf", "NaN", "1e400", "3.5", "", "abc", "0x10",
                 "18446744073709551616", "-4294967296", "2000"]

#: NIfTI-1 header fields: (offset, struct format)
NIFTI_FIELDS = {
    "sizeof_hdr": (0, "<i"), "dim_info": (39, "<b"), **{f"dim{i}": (40 + 2 * i, "<h") for i in range(8)},
    "intent_code": (68, "<h"), "datatype": (70, "<h"), "bitpix": (72, "<h"),
    **{f"pixdim{i}": (76 + 4 * i, "<f") for i in range(8)}, "vox_offset": (108, "<f"), "scl_slope": (112, "<f"),
    "scl_inter": (116, "<f"), "slice_end": (120, "<h"), "xyzt_units": (123, "<b"), "qform_code": (252, "<h"),
    "sform_code": (254, "<h"), **{f"quat{i}": (256 + 4 * i, "<f") for i in range(6)},
    **{f"srow{i}": (280 + 4 * i, "<f") for i in range(12)}, "magic": (344, "<4s"),
}


def _mutate_bytes(rng: random.Random, data: bytes, ops: list, header_bias: int = 512) -> bytes:
    """One byte-level mutation, biased towards the first ``header_bias`` bytes."""
    b = bytearray(data)
    if not b:
        return bytes(b)
    n = len(b)
    where = lambda: rng.randrange(min(n, header_bias)) if rng.random() < 0.7 else rng.randrange(n)  # noqa: E731
    op = rng.choice(["flip", "byte", "int", "float", "delete", "duplicate", "truncate", "append", "zero"])
    i = where()
    if op == "flip":
        for _ in range(rng.randint(1, 8)):
            j = where()
            b[j] ^= 1 << rng.randrange(8)
    elif op == "byte":
        b[i] = rng.randrange(256)
    elif op == "int":
        v = rng.choice(INTERESTING_INTS)
        fmt = rng.choice(["<h", "<i", "<H", "<I", ">h", ">i"])
        try:
            b[i:i + struct.calcsize(fmt)] = struct.pack(fmt, v)
        except struct.error:
            b[i:i + 4] = struct.pack("<I", v & 0xFFFFFFFF)
    elif op == "float":
        b[i:i + 4] = struct.pack("<f", rng.choice(INTERESTING_FLOATS))
    elif op == "delete":
        del b[i:i + rng.randint(1, 64)]
    elif op == "duplicate":
        b[i:i] = b[i:i + rng.randint(1, 64)]
    elif op == "truncate":
        b = b[: rng.randrange(n)]
    elif op == "append":
        b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 256)))
    elif op == "zero":
        b[i:i + rng.randint(1, 64)] = bytes(min(64, n - i))
    ops.append(f"bytes:{op}@{i}")
    return bytes(b)


def _mutate_nifti(rng: random.Random, data: bytes, ops: list) -> bytes:
    b = bytearray(data)
    name = rng.choice(list(NIFTI_FIELDS))
    off, fmt = NIFTI_FIELDS[name]
    if len(b) < off + struct.calcsize(fmt):
        return bytes(b)
    if fmt == "<f":
        v = rng.choice(INTERESTING_FLOATS + [rng.uniform(-1e3, 1e3)])
    elif fmt == "<4s":
        v = rng.choice([b"n+1\0", b"ni1\0", b"n+2\0", b"xxxx"])
    else:
        lo, hi = {"<h": (-32768, 32767), "<b": (-128, 127), "<i": (-(2**31), 2**31 - 1)}[fmt]
        v = rng.choice([x for x in INTERESTING_INTS if lo <= x <= hi] + [rng.randint(lo, hi)])
    b[off:off + struct.calcsize(fmt)] = struct.pack(fmt, v)
    ops.append(f"nifti:{name}={v!r}")
    if name.startswith(("quat", "srow", "pixdim")) and rng.random() < 0.5:  # make the reader use that geometry
        codes = (rng.randint(0, 4), rng.randint(0, 4))
        b[252:256] = struct.pack("<hh", *codes)
        ops.append(f"nifti:qform_code,sform_code={codes}")
    return bytes(b)


def _nifti_float_data(rng: random.Random, data: bytes, ops: list) -> bytes:
    """Put a NaN / infinity into a float32 NIfTI's voxels."""
    b = bytearray(data)
    dtype = struct.unpack_from("<h", b, 70)[0] if len(b) > 72 else 0
    off = struct.unpack_from("<f", b, 108)[0] if len(b) > 112 else 0.0
    if dtype != 16 or not 0 < off < len(b) - 4:  # also NaN / infinite vox_offset: nothing to put it in
        return bytes(b)
    off = int(off)
    if off + 4 > len(b):
        return bytes(b)
    i = off + 4 * rng.randrange((len(b) - off) // 4)
    v = rng.choice([float("nan"), float("inf"), float("-inf")])
    b[i:i + 4] = struct.pack("<f", v)
    ops.append(f"nifti-data:{v}@{i}")
    return bytes(b)


_NRRD_VALUES = {
    "sizes": ["4294967296 1 1", "2000 2000 2000", "-1 5 5", "0 0 0", "1e9 1 1", "24 20", "24 20 6 1",
              "65536 65536 65536", "24 20 6000000", "24 20 nan", "24 20 6 7 8 9"],
    "encoding": ["ascii", "text", "txt", "hex", "raw", "gzip", "gz", "bzip2", "bz2", "zrl", "xyz", ""],
    "type": ["double", "float", "uchar", "int", "ulonglong", "block", "short", "long double", "nonsense"],
    "dimension": ["0", "1", "2", "4", "16", "100", "-3", "99999999999"],
    "data file": ["/dev/zero", "/dev/urandom", "/etc/passwd", "../../etc/hostname", "LIST", "missing.raw",
                  "x%03d.raw 1 100 1", "/proc/self/mem", "."],
    "space directions": ["(nan,0,0) (0,1,0) (0,0,1)", "(inf,0,0) (0,1,0) (0,0,1)", "(0,0,0) (0,0,0) (0,0,0)",
                         "(1e38,0,0) (0,1e38,0) (0,0,1e38)", "none none none", "(1,0,0) (0,1,0)"],
    "space origin": ["(nan,nan,nan)", "(inf,0,0)", "(1e308,0,0)", "(0,0)"],
    "endian": ["big", "little", "middle"],
    "kinds": ["RGB-color domain domain", "vector domain domain domain", "list list list"],
    "byte skip": ["-1", "99999999999", "100000", "0"],
    "line skip": ["99999999999", "1000000", "-1"],
    "space": ["right-anterior-superior", "scanner-xyz", "3D-right-handed-time", "nonsense"],
    "space dimension": ["0", "2", "4", "99999"],
    "spacings": ["nan nan nan", "0 0 0", "inf 1 1"],
}
_META_VALUES = {
    "DimSize": ["4294967296 1 1", "2000 2000 2000", "-1 5 5", "0 0 0", "24 20", "65536 65536 65536",
                "24 20 6000000", "24 20 6 1"],
    "NDims": ["0", "1", "2", "4", "16", "100", "-3"],
    "ElementType": ["MET_DOUBLE", "MET_UCHAR", "MET_FLOAT", "MET_LONG_LONG", "MET_NONE", "MET_OTHER", "x"],
    "ElementDataFile": ["/dev/zero", "/dev/urandom", "/etc/passwd", "../../etc/hostname", "LIST", "missing.raw",
                        "x%03d.raw 1 100 1", "LOCAL", "."],
    "CompressedData": ["True", "False"],
    "CompressedDataSize": ["0", "-1", "4294967296", "99999999999", "10"],
    "BinaryData": ["True", "False"],
    "BinaryDataByteOrderMSB": ["True", "False"],
    "ElementSpacing": ["nan nan nan", "0 0 0", "inf 1 1", "1e38 1e38 1e38", "-1 -1 -1"],
    "Offset": ["nan nan nan", "inf 0 0", "1e308 0 0"],
    "TransformMatrix": ["nan 0 0 0 1 0 0 0 1", "0 0 0 0 0 0 0 0 0", "1e38 0 0 0 1 0 0 0 1", "1 0 0"],
    "HeaderSize": ["-1", "99999999999", "100000", "0"],
    "ElementNumberOfChannels": ["0", "3", "65536", "4294967296", "-1"],
    "ElementByteOrderMSB": ["True", "False"],
}


def _mutate_text_header(rng: random.Random, data: bytes, family: str, ops: list) -> bytes:
    """Change, drop or duplicate a line of an NRRD / MetaImage header (the rest of the bytes kept)."""
    if family == "nrrd":
        cut = data.find(b"\n\n")
        cut = len(data) if cut < 0 else cut + 1
    else:
        m = re.search(rb"ElementDataFile\s*=\s*[^\n]*\n", data)
        cut = m.end() if m else len(data)
    head, body = data[:cut].decode("latin-1"), data[cut:]
    lines = head.split("\n")
    sep, table = (":", _NRRD_VALUES) if family == "nrrd" else ("=", _META_VALUES)
    op = rng.random()
    if op < 0.75:
        key = rng.choice(list(table))
        value = rng.choice(table[key] + NUMBER_TOKENS[:6])
        idx = [i for i, ln in enumerate(lines) if ln.split(sep, 1)[0].strip() == key]
        new = f"{key}{sep} {value}" if family == "nrrd" else f"{key} = {value}"
        if idx:
            lines[idx[0]] = new
        else:  # add the field just before the last header line (data file / ElementDataFile stay last)
            last = max(i for i, ln in enumerate(lines) if ln.strip()) if any(ln.strip() for ln in lines) else 0
            lines.insert(last if family != "nrrd" else max(1, last), new)
        ops.append(f"{family}:{key}={value}")
    elif op < 0.85:
        cand = [i for i, ln in enumerate(lines) if ln.strip() and i > 0]
        if cand:
            i = rng.choice(cand)
            ops.append(f"{family}:drop {lines[i]!r}")
            del lines[i]
    else:
        cand = [i for i, ln in enumerate(lines) if ln.strip()]
        if cand:
            i = rng.choice(cand)
            lines.insert(i, lines[i])
            ops.append(f"{family}:duplicate {lines[i]!r}")
    return "\n".join(lines).encode("latin-1") + body


def _mutate_dicom(rng: random.Random, case_dir: Path, files: list[str], ops: list) -> None:
    """Mutate one (sometimes two) file(s) of the series in ``case_dir``."""
    from io import BytesIO

    import pydicom
    from pydicom.dataelem import DataElement

    for _ in range(1 if rng.random() < 0.8 else 2):
        name = rng.choice(files)
        p = case_dir / name
        data = p.read_bytes()
        op = rng.random()
        if op < 0.3:
            for _ in range(rng.randint(1, 3)):
                data = _mutate_bytes(rng, data, ops, header_bias=1400)
            p.write_bytes(data)
            continue
        if op < 0.45:  # cut the file (most of it is pixel data)
            cut = rng.randrange(len(data))
            p.write_bytes(data[:cut])
            ops.append(f"dicom:{name} truncated at {cut}/{len(data)}")
            continue
        if op < 0.55:  # invalid / changed VR of one element, in the bytes (explicit VR little endian)
            tags = {"Rows": b"\x28\x00\x10\x00", "Columns": b"\x28\x00\x11\x00", "BitsAllocated": b"\x28\x00\x00\x01",
                    "ImagePositionPatient": b"\x20\x00\x32\x00", "PixelSpacing": b"\x28\x00\x30\x00",
                    "ImageOrientationPatient": b"\x20\x00\x37\x00", "PixelData": b"\xe0\x7f\x10\x00",
                    "RescaleSlope": b"\x28\x00\x53\x10", "SeriesInstanceUID": b"\x20\x00\x0e\x00",
                    "Modality": b"\x08\x00\x60\x00", "PixelRepresentation": b"\x28\x00\x03\x01"}
            tag = rng.choice(list(tags))
            i = data.find(tags[tag])
            if i >= 0:
                vr = rng.choice([b"ZZ", b"SQ", b"UN", b"OB", b"US", b"DS", b"UT", b"\x00\x00", b"FD", b"AT"])
                data = data[:i + 4] + vr + data[i + 6:]
                ops.append(f"dicom:{name} {tag} VR={vr!r}")
            p.write_bytes(data)
            continue
        try:
            ds = pydicom.dcmread(BytesIO(data), force=True)
        except Exception:  # noqa: BLE001 - already broken by an earlier mutation
            continue
        choice = rng.choice(["delete", "delete", "multi", "value", "value", "ds", "syntax", "pixels"])
        if choice == "delete":
            kw = rng.choice(["Rows", "Columns", "PixelData", "BitsAllocated", "BitsStored", "HighBit",
                             "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SamplesPerPixel",
                             "PhotometricInterpretation", "RescaleSlope", "RescaleIntercept", "SeriesInstanceUID",
                             "Modality", "PixelRepresentation", "SOPClassUID"])
            if kw in ds:
                del ds[kw]
            ops.append(f"dicom:{name} delete {kw}")
        elif choice == "multi":
            kw = rng.choice(["Rows", "Columns", "BitsAllocated", "SamplesPerPixel", "PixelRepresentation",
                             "NumberOfFrames"])
            ds.add(DataElement(pydicom.datadict.tag_for_keyword(kw), "US" if kw != "NumberOfFrames" else "IS",
                               [20, 24] if kw != "NumberOfFrames" else ["2", "3"]))
            ops.append(f"dicom:{name} {kw} multi-valued")
        elif choice == "value":
            kw, values = rng.choice([("Rows", [0, 1, 65535, 4096, 8192]), ("Columns", [0, 1, 65535, 4096, 30000]),
                                     ("BitsAllocated", [0, 1, 8, 12, 32, 64, 255]),
                                     ("BitsStored", [0, 1, 32, 64]), ("HighBit", [0, 31, 200]),
                                     ("SamplesPerPixel", [0, 3, 4, 255]), ("PixelRepresentation", [0, 1, 2, 7]),
                                     ("NumberOfFrames", ["0", "4", "1000", "-1", "99999999"]),
                                     ("PhotometricInterpretation", ["RGB", "PALETTE COLOR", "YBR_FULL", "X"])])
            v = rng.choice(values)
            setattr(ds, kw, v)
            ops.append(f"dicom:{name} {kw}={v!r}")
        elif choice == "ds":
            kw = rng.choice(["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope",
                             "RescaleIntercept", "SliceThickness", "PixelPaddingValue"])
            v = rng.choice(["nan", "inf", "-inf", "1e999", "abc", "", "1e38", "0"])
            n = {"ImagePositionPatient": 3, "ImageOrientationPatient": 6, "PixelSpacing": 2}.get(kw, 1)
            vals = [rng.choice(["0", "1", v]) for _ in range(n)]
            vals[rng.randrange(n)] = v
            try:
                if kw == "PixelPaddingValue":
                    ds.add(DataElement(0x00280120, "US", rng.choice([0, 65535, 1024])))
                else:
                    ds.add(DataElement(pydicom.datadict.tag_for_keyword(kw), "DS", vals if n > 1 else vals[0],
                                       validation_mode=0))
            except Exception:  # noqa: BLE001
                continue
            ops.append(f"dicom:{name} {kw}={vals}")
        elif choice == "syntax":
            uid = rng.choice(["1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.50",
                              "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.90",
                              "1.2.840.10008.1.2.4.70", "1.2.3.4", "x"])
            ds.file_meta.TransferSyntaxUID = uid
            ops.append(f"dicom:{name} TransferSyntaxUID={uid} (data unchanged)")
        else:
            pix = ds.get("PixelData")
            if pix is not None:
                k = rng.choice([0, 1, len(pix) // 2, len(pix) - 1, len(pix) + 7])
                ds.PixelData = bytes(pix)[:k] if k < len(pix) else bytes(pix) + b"\x00" * 7
                ops.append(f"dicom:{name} PixelData {len(pix)} -> {len(ds.PixelData)} bytes")
        try:
            buf = BytesIO()
            ds.save_as(buf, enforce_file_format=False)
            p.write_bytes(buf.getvalue())
        except Exception as exc:  # noqa: BLE001 - pydicom refuses to write it: keep the file as it was
            ops.append(f"dicom: not written ({type(exc).__name__})")


def mutate_case(rng: random.Random, seeds: Path, group: dict, case_dir: Path) -> tuple[Path, list[str]]:
    """Copy ``group``'s files into ``case_dir``, mutate them; returns (path to read, mutations)."""
    ops: list[str] = []
    src = seeds / group["main"]
    if group["family"] == "dicom":
        dst = case_dir / group["main"]
        shutil.copytree(src, dst)
        _mutate_dicom(rng, dst, group["files"], ops)
        return dst, ops
    for f in group["files"]:
        shutil.copy(seeds / f, case_dir / f)
    target = case_dir / group["main"]
    # which file to mutate: the header file mostly, the separate data file sometimes
    victim = case_dir / group["files"][-1] if len(group["files"]) > 1 and rng.random() < 0.15 else target
    data = victim.read_bytes()
    gz = victim.name.endswith(".gz") and rng.random() < 0.8
    if gz:
        data = gzip.decompress(data)
    for _ in range(rng.choice([1, 1, 2, 2, 3, 4])):
        r = rng.random()
        if victim is not target:
            data = _mutate_bytes(rng, data, ops, header_bias=len(data))
        elif group["family"] == "nifti" and r < 0.6:
            data = _mutate_nifti(rng, data, ops)
        elif group["family"] == "nifti" and r < 0.7:
            data = _nifti_float_data(rng, data, ops)
        elif group["family"] in ("nrrd", "metaimage") and r < 0.7:
            data = _mutate_text_header(rng, data, group["family"], ops)
        else:
            data = _mutate_bytes(rng, data, ops)
    if gz:
        data = gzip.compress(data, mtime=0)
        if rng.random() < 0.1:
            data = data[: rng.randrange(len(data))]
            ops.append("gzip: truncated")
    victim.write_bytes(data)
    return target, ops


# ---------------------------------------------------------------------------
# running one read in a forked child
# ---------------------------------------------------------------------------
def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _child(path: Path, reader: str, wfd: int, as_limit: int) -> None:
    """In the forked child: limit memory, read, send one JSON line, leave at once."""
    try:
        resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        import warnings

        warnings.simplefilter("ignore")
        from orbitseg.errors import InputError
        from orbitseg.io.dicom import list_dicom_series
        from orbitseg.io.read import check_scan_header, read_label, read_scan

        fn = {"read_scan": read_scan, "check_scan_header": check_scan_header, "read_label": read_label,
              "list_dicom_series": list_dicom_series}[reader]
        try:
            fn(path)
            out = {"outcome": "read"}
        except InputError as exc:
            out = {"outcome": "refused", "type": type(exc).__name__, "message": str(exc)[:2000]}
        except BaseException as exc:  # noqa: BLE001 - exactly what is counted
            import traceback

            out = {"outcome": "foreign exception", "type": type(exc).__name__, "message": str(exc)[:2000],
                   "traceback": traceback.format_exc()[-4000:]}
        os.write(wfd, (json.dumps(out) + "\n").encode())
    finally:
        os._exit(0)


def run_read(path: Path, reader: str, timeout: float, as_limit: int) -> dict:
    """Fork, read ``path`` with ``reader`` in the child; the child's answer with ``maxrss_mb`` and ``status``."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        _child(path, reader, wfd, as_limit)
    os.close(wfd)
    buf, deadline, killed = b"", time.monotonic() + timeout, False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            os.kill(pid, signal.SIGKILL)
            killed = True
            break
        ready, _, _ = select.select([rfd], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            buf += chunk
    os.close(rfd)
    _, status, usage = os.wait4(pid, 0)
    result = {"maxrss_mb": usage.ru_maxrss / 1024}
    if killed:
        result["outcome"] = "hang"
    elif os.WIFSIGNALED(status):
        result.update(outcome="crash", signal=os.WTERMSIG(status))
    else:
        try:
            result.update(json.loads(buf.decode().strip().splitlines()[-1]))
        except (ValueError, IndexError):
            result.update(outcome="crash", signal=None, note="child exited without answering")
    return result


_MEMORY = re.compile(r"MemoryError|bad_alloc|[Ff]ailed to allocate|couldn't allocate|[Oo]ut of memory|"
                     r"[Cc]annot allocate|[Uu]nable to allocate", re.S)


def classify(result: dict, path: Path, mem_mb: float) -> str:
    """The kind (one of KINDS) of one read's result."""
    text = f"{result.get('type', '')} {result.get('message', '')} {result.get('traceback', '')}"
    if result["outcome"] in ("hang", "crash"):
        return "memory" if result["maxrss_mb"] > mem_mb else result["outcome"]
    if result["maxrss_mb"] > mem_mb or (result["outcome"] != "read" and _MEMORY.search(text)):
        return "memory"
    if result["outcome"] == "refused":
        msg = result.get("message", "")
        return "refused" if (str(path) in msg or path.name in msg) else "refused without naming the file"
    return result["outcome"]


def _readers(group: dict, rng: random.Random) -> str:
    if group["family"] == "dicom":
        return rng.choice(["read_scan", "read_scan", "list_dicom_series"])
    if group["kind"] == "label":
        return "read_label"
    return rng.choice(["read_scan", "read_scan", "check_scan_header", "read_label"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600, help="time budget (default 600)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="fuzz_out", help="folder for the reproducers (default fuzz_out)")
    ap.add_argument("--timeout", type=float, default=10, help="seconds one read may take (default 10)")
    ap.add_argument("--mem-gb", type=float, default=2.0, help="peak memory counted as a blow-up (default 2)")
    ap.add_argument("--formats", default="dicom,metaimage,nifti,nrrd",
                    help="format families to fuzz, comma-separated (default: all four)")
    ap.add_argument("--make-seeds", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make_seeds:
        make_seeds(Path(args.make_seeds))
        return

    import warnings

    warnings.simplefilter("ignore")  # pydicom warns about the values the mutations write
    # a kill (timeout, Ctrl-C) still removes the work folder and prints nothing half-done
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = Path(args.out)
    work = Path(tempfile.mkdtemp(prefix="orbitseg-fuzz-"))
    try:
        seeds = work / "seeds"
        subprocess.run([sys.executable, __file__, "--make-seeds", str(seeds)], check=True)
        groups = _seed_groups(seeds)
        families = sorted({g["family"] for g in groups} & set(args.formats.split(",")))
        if not families:
            ap.error(f"--formats: none of {args.formats!r} is a family of the seeds")
        # import the readers and the libraries they import lazily here, once; the forked children inherit
        # them (no ITK call happens in this process, so no ITK thread pool exists to be forked)
        import nibabel  # noqa: F401
        import nrrd  # noqa: F401
        import pydicom  # noqa: F401
        import SimpleITK  # noqa: F401

        import orbitseg.io.dicom  # noqa: F401
        import orbitseg.io.read  # noqa: F401

        mem_mb = args.mem_gb * 1024
        as_limit = _vm_size() + int((args.mem_gb + 0.5) * 2**30)
        counts = {k: 0 for k in KINDS}
        by_family: dict[str, dict[str, int]] = {}
        foreign_types: dict[str, int] = {}
        caught: dict[str, int] = {}  # refusals that the boundary's catch-all made from a library's own exception
        peak, peak_case, n_high = 0.0, None, 0
        print(f"fuzzing orbitseg readers: seed {args.seed}, {args.seconds:.0f} s, timeout {args.timeout:g} s, "
              f"memory {args.mem_gb:g} GB; seeds: {', '.join(g['main'] for g in groups)}", flush=True)
        t0, n, last_print = time.monotonic(), 0, time.monotonic()
        while time.monotonic() - t0 < args.seconds:
            rng = random.Random(f"{args.seed}:{n}")
            family = rng.choice(families)  # each format family as often, whatever its number of seeds
            group = rng.choice([g for g in groups if g["family"] == family])
            case_dir = work / f"case_{n}"
            case_dir.mkdir()
            path, ops = mutate_case(rng, seeds, group, case_dir)
            reader = _readers(group, rng)
            result = run_read(path, reader, args.timeout, as_limit)
            if result["outcome"] == "hang":  # confirm: a loaded machine can be slow
                result = run_read(path, reader, 3 * args.timeout, as_limit)
            kind = classify(result, path, mem_mb)
            counts[kind] += 1
            fam = by_family.setdefault(group["family"], {k: 0 for k in KINDS})
            fam[kind] += 1
            if result["maxrss_mb"] > peak:
                peak, peak_case = result["maxrss_mb"], f"case {n}: {group['main']} {reader} {ops}"
            m = re.search(r"cannot be read \((\w+): ", result.get("message", ""))
            by_catch_all = kind == "refused" and m is not None
            if by_catch_all:
                caught[m.group(1)] = caught.get(m.group(1), 0) + 1
            if kind == "foreign exception":
                foreign_types[result.get("type", "?")] = foreign_types.get(result.get("type", "?"), 0) + 1
            high = kind not in PROBLEMS and result["maxrss_mb"] > mem_mb / 2
            n_high += high
            if (kind in PROBLEMS and counts[kind] <= MAX_SAVED) or (high and n_high <= MAX_SAVED) or (
                    by_catch_all and sum(caught.values()) <= MAX_SAVED):
                sub = ("over_half_the_memory_limit" if high else "refused_by_the_catch_all" if by_catch_all
                       else kind.replace(" ", "_"))
                dest = out / sub / f"case_{args.seed}_{n}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(case_dir, dest, dirs_exist_ok=True)
                (dest / "case.json").write_text(json.dumps(
                    {"seed": args.seed, "case": n, "seed_file": group["main"], "mutations": ops, "reader": reader,
                     "path": path.relative_to(case_dir).as_posix(), "result": result}, indent=1) + "\n")
            shutil.rmtree(case_dir, ignore_errors=True)
            n += 1
            if time.monotonic() - last_print > 60:
                last_print = time.monotonic()
                print(f"  {time.monotonic() - t0:5.0f} s  {n} cases  " +
                      ", ".join(f"{k} {v}" for k, v in counts.items() if v), flush=True)
        elapsed = time.monotonic() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{n} mutated files read in {elapsed:.0f} s ({n / max(elapsed, 1e-9):.1f}/s), seed {args.seed}")
    print(f"  clean refusals (InputError naming the file): {counts['refused']}")
    if caught:
        print(f"    of which turned into InputError by the reader boundary's catch-all: "
              + ", ".join(f"{t} {c}" for t, c in sorted(caught.items())))
    print(f"  read as good images:                         {counts['read']}")
    print(f"  refusals not naming the file:                {counts['refused without naming the file']}")
    print(f"  foreign exception types:                     {counts['foreign exception']}"
          + (f"  ({', '.join(f'{t} {c}' for t, c in sorted(foreign_types.items()))})" if foreign_types else ""))
    print(f"  hangs (> {args.timeout:g} s, confirmed at {3 * args.timeout:g} s):          {counts['hang']}")
    print(f"  crashes (killed by a signal):                {counts['crash']}")
    print(f"  memory over {args.mem_gb:g} GB (or allocation refused):    {counts['memory']}")
    print(f"  peak RSS of any read: {peak:.0f} MB ({peak_case}); reads over {args.mem_gb / 2:g} GB: {n_high}")
    for fam, c in sorted(by_family.items()):
        print(f"  {fam:9s}: " + ", ".join(f"{k} {v}" for k, v in c.items() if v))
    bad = sum(counts[k] for k in PROBLEMS)
    if bad:
        print(f"reproducers: {out}/ (case.json in each says the seed file, mutations, reader and result)")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
