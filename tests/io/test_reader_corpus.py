"""The reader fuzzer's reproducers (bench/fuzz_readers.py, issue 18), kept as regression tests.

Each case is made deterministically from files the project writes, damaged the way the fuzzer found
harmful: before the reader boundary (:mod:`orbitseg.io.guard`, the DICOM header checks of
:mod:`orbitseg.io.dicom`) each of them hung SimpleITK, crashed the interpreter, allocated gigabytes or
raised a foreign exception type.  Now every read must end, within a time limit, in an
:class:`~orbitseg.errors.InputError` naming the file and the problem.

A case that could hang, crash or exhaust memory is read in a child interpreter with a timeout and an
address-space limit (``RLIMIT_AS``), so that a regression fails this test instead of the test run.
"""

from __future__ import annotations

import gzip
import json
import re
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import DataElement

from orbitseg.errors import InputError
from orbitseg.io.dicom import list_dicom_series, read_dicom_series, write_dicom_series
from orbitseg.io.read import check_scan_header, read_label, read_scan
from orbitseg.io.volume import Volume
from orbitseg.io.write import write_scan

#: seconds a child read may take (a good read of these tiny files takes well under a second)
CHILD_TIMEOUT = 45
#: seconds the read itself may take, measured in the child / in this process
READ_LIMIT = 10.0
#: address space a child may use beyond the interpreter's own (GB)
CHILD_MEMORY_GB = 2

_CHILD = r"""
import json, sys, time
from orbitseg.io.dicom import list_dicom_series
from orbitseg.io.read import check_scan_header, read_label, read_scan
import SimpleITK, nibabel, nrrd, pydicom  # imported before the clock starts
fn = {"read_scan": read_scan, "read_label": read_label, "check_scan_header": check_scan_header,
      "list_dicom_series": list_dicom_series}[sys.argv[1]]
t = time.perf_counter()
try:
    fn(sys.argv[2])
    out = {"outcome": "read"}
except BaseException as exc:
    out = {"outcome": "raised", "type": type(exc).__name__, "mro": [c.__name__ for c in type(exc).__mro__],
           "message": str(exc)}
out["seconds"] = time.perf_counter() - t
print(json.dumps(out))
"""


def _limit_memory() -> None:
    limit = int((1.5 + CHILD_MEMORY_GB) * 2**30)  # the interpreter and its libraries take ~0.5-1 GB of address space
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def read_in_child(reader: str, path: Path) -> dict:
    """Run ``reader(path)`` in a fresh interpreter with a timeout and a memory limit; what it raised."""
    try:
        proc = subprocess.run([sys.executable, "-c", _CHILD, reader, str(path)], capture_output=True, text=True,
                              timeout=CHILD_TIMEOUT, preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{reader}({path.name}) hung: no answer in {CHILD_TIMEOUT} s")
    if proc.returncode != 0:
        pytest.fail(f"{reader}({path.name}) crashed the interpreter (return code {proc.returncode}): "
                    f"{proc.stderr[-800:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def read_here(reader: str, path: Path) -> dict:
    fn = {"read_scan": read_scan, "read_label": read_label, "check_scan_header": check_scan_header,
          "list_dicom_series": list_dicom_series}[reader]
    t = time.perf_counter()
    try:
        fn(path)
        out = {"outcome": "read"}
    except BaseException as exc:  # noqa: BLE001 - the type is what is checked
        out = {"outcome": "raised", "type": type(exc).__name__, "mro": [c.__name__ for c in type(exc).__mro__],
               "message": str(exc)}
    out["seconds"] = time.perf_counter() - t
    return out


def assert_refused(result: dict, reader: str, path: Path, problem: str) -> None:
    assert result["outcome"] == "raised", f"{reader}({path.name}) read a damaged file without complaint"
    assert "InputError" in result["mro"], f"{reader}({path.name}) raised {result['type']}: {result['message']}"
    assert str(path) in result["message"], f"the error does not name the file: {result['message']}"
    assert re.search(problem, result["message"]), f"{problem!r} not in {result['message']!r}"
    assert result["seconds"] < READ_LIMIT, f"{reader}({path.name}) took {result['seconds']:.1f} s to refuse"


# ---------------------------------------------------------------------------
# the reproducers, each made from a file the project writes
# ---------------------------------------------------------------------------
def _ct(make_ct, shape=(6, 20, 24)) -> Volume:
    return make_ct(shape=shape)


def _nifti(tmp_path: Path, make_ct, name: str, fields: dict, gz: bool = False) -> Path:
    """A NIfTI the project writes, with header fields (offset -> (struct format, value)) overwritten."""
    plain = write_scan(_ct(make_ct), tmp_path / "seed.nii")
    data = bytearray(plain.read_bytes())
    for offset, (fmt, value) in fields.items():
        struct.pack_into(fmt, data, offset, value)
    out = tmp_path / name
    out.write_bytes(gzip.compress(bytes(data), mtime=0) if gz else bytes(data))
    return out


QFORM_SFORM = 252  # qform_code, sform_code: int16 each
QOFFSET_X = 268
SROW_Z = 312  # srow_z[0..3]: float32 each
DIM = 40  # dim[0..7]: int16 each


def nifti_sform_inf(tmp_path, make_ct):
    """SimpleITK's header read never returns on this sform (-1e38 and -inf in srow_z): hang."""
    return _nifti(tmp_path, make_ct, "sform_inf.nii", {QFORM_SFORM: ("<h", 1), QFORM_SFORM + 2: ("<h", 1),
                                                       SROW_Z: ("<f", -1e38), SROW_Z + 8: ("<f", float("-inf"))})


def nifti_qoffset_inf(tmp_path, make_ct):
    """An infinite origin in the qform the reader uses (no sform): was read as a scan at infinity."""
    return _nifti(tmp_path, make_ct, "qoffset_inf.nii.gz", {QFORM_SFORM: ("<h", 1), QFORM_SFORM + 2: ("<h", 0),
                                                            QOFFSET_X: ("<f", float("inf"))}, gz=True)


def nifti_huge_dims(tmp_path, make_ct):
    """A 2 KB .nii.gz declaring 32767^3 voxels."""
    return _nifti(tmp_path, make_ct, "huge_dims.nii.gz", {DIM + 2: ("<h", 32767), DIM + 4: ("<h", 32767),
                                                          DIM + 6: ("<h", 32767)}, gz=True)


def nifti_dims_beyond_gzip(tmp_path, make_ct):
    """Under the voxel cap, but 1 GB of voxels cannot come out of a few KB of deflate data."""
    return _nifti(tmp_path, make_ct, "dims_beyond_gzip.nii.gz", {DIM + 2: ("<h", 1000), DIM + 4: ("<h", 1000),
                                                                 DIM + 6: ("<h", 500)}, gz=True)


def _nrrd(tmp_path: Path, make_ct, name: str, replace: dict[bytes, bytes], compress: bool = True) -> Path:
    seed = write_scan(_ct(make_ct), tmp_path / ("seed.nrrd" if compress else "seed_raw.nrrd"), compress=compress)
    data = seed.read_bytes()
    for old, new in replace.items():
        assert old in data, old
        data = data.replace(old, new, 1)
    out = tmp_path / name
    out.write_bytes(data)
    return out


def nrrd_ascii_over_binary(tmp_path, make_ct):
    """encoding: ascii over the raw float32 voxels of a label (no whitespace byte in them): ITK's text parser
    overflows a fixed buffer (segfault, return code -11)."""
    ct = _ct(make_ct)
    lab = np.zeros(ct.shape, np.float32)
    lab[1:4, 5:9, 4:8] = 1
    seed = write_scan(Volume(lab, ct.geometry), tmp_path / "seed_label.nrrd", compress=False).read_bytes()
    out = tmp_path / "ascii_over_binary.nrrd"
    out.write_bytes(seed.replace(b"encoding: raw", b"encoding: ascii", 1))
    return out


def nrrd_text_long_token(tmp_path, make_ct):
    """A text NRRD whose first number is 5000 digits long: the same overflow with printable data."""
    head = b"NRRD0004\ntype: float\ndimension: 3\nsizes: 24 20 6\nencoding: text\n\n"
    out = tmp_path / "long_token.nrrd"
    out.write_bytes(head + b"1" * 5000 + b" " + b" ".join([b"0"] * (24 * 20 * 6)))
    return out


def nrrd_sizes_2_pow_32(tmp_path, make_ct):
    """A few KB NRRD declaring sizes 4294967296 1 1 (the issue's reached 8.5 GB before its error)."""
    return _nrrd(tmp_path, make_ct, "sizes_2_pow_32.nrrd", {b"sizes: 24 20 6": b"sizes: 4294967296 1 1"})


def nrrd_sizes_beyond_gzip(tmp_path, make_ct):
    return _nrrd(tmp_path, make_ct, "sizes_beyond_gzip.nrrd", {b"sizes: 24 20 6": b"sizes: 1000 1000 500"})


def nrrd_raw_truncated(tmp_path, make_ct):
    return _nrrd(tmp_path, make_ct, "raw_truncated.nrrd", {b"sizes: 24 20 6": b"sizes: 24 20 600"}, compress=False)


def _nhdr(tmp_path: Path, make_ct, name: str, data_file: str) -> Path:
    """A detached NRRD header (.nhdr) made from the project's raw NRRD, naming ``data_file``."""
    seed = write_scan(_ct(make_ct), tmp_path / "seed_raw.nrrd", compress=False).read_bytes()
    head, body = seed.split(b"\n\n", 1)
    (tmp_path / "voxels.raw").write_bytes(body)
    out = tmp_path / name
    out.write_bytes(head + b"\ndata file: " + data_file.encode() + b"\n")
    return out


def nhdr_dev_zero(tmp_path, make_ct):
    """data file: /dev/zero (a reader of it never ends)."""
    return _nhdr(tmp_path, make_ct, "dev_zero.nhdr", "/dev/zero")


def nhdr_symlink_to_dev_zero(tmp_path, make_ct):
    """A data file beside the header that is a link to /dev/zero."""
    out = _nhdr(tmp_path, make_ct, "link.nhdr", "zero.raw")
    (tmp_path / "zero.raw").symlink_to("/dev/zero")
    return out


def mhd_data_is_a_folder(tmp_path, make_ct):
    """ElementDataFile names a folder beside the header."""
    seed = write_scan(_ct(make_ct), tmp_path / "seed_raw.mha", compress=False).read_bytes()
    cut = seed.index(b"ElementDataFile = LOCAL\n")
    (tmp_path / "voxels").mkdir()
    out = tmp_path / "folder.mhd"
    out.write_bytes(seed[:cut] + b"ElementDataFile = voxels\n")
    return out


def nhdr_absolute_path(tmp_path, make_ct):
    """An absolute data file path, even to a real file: only a file beside the header is read."""
    return _nhdr(tmp_path, make_ct, "absolute.nhdr", str(tmp_path / "voxels.raw"))


def nhdr_parent_folder(tmp_path, make_ct):
    return _nhdr(tmp_path, make_ct, "parent.nhdr", "../voxels.raw")


def _mha(tmp_path: Path, make_ct, name: str, replace: dict[bytes, bytes], compress: bool = True) -> Path:
    seed = write_scan(_ct(make_ct), tmp_path / ("seed.mha" if compress else "seed_raw.mha"), compress=compress)
    data = seed.read_bytes()
    for old, new in replace.items():
        m = re.search(old, data)
        assert m, old
        data = data[: m.start()] + new + data[m.end():]
    out = tmp_path / name
    out.write_bytes(data)
    return out


def mha_ndims_negative(tmp_path, make_ct):
    """NDims = -1: MetaIO's fixed-size arrays are indexed with it (segfault)."""
    return _mha(tmp_path, make_ct, "ndims_negative.mha", {rb"NDims = 3": b"NDims = -1"})


def mha_dimsize_beyond_file(tmp_path, make_ct):
    return _mha(tmp_path, make_ct, "dimsize_beyond_file.mha", {rb"DimSize = 24 20 6": b"DimSize = 24 20 600"},
                compress=False)


def mha_dimsize_huge(tmp_path, make_ct):
    return _mha(tmp_path, make_ct, "dimsize_huge.mha", {rb"DimSize = 24 20 6": b"DimSize = 2000 2000 2000"})


def mha_compressed_size_huge(tmp_path, make_ct):
    """CompressedDataSize of 4 GB: MetaIO allocates the compressed buffer it promises."""
    return _mha(tmp_path, make_ct, "compressed_size_huge.mha",
                {rb"CompressedDataSize = \d+": b"CompressedDataSize = 4294967296"})


def mhd_dev_zero(tmp_path, make_ct):
    seed = write_scan(_ct(make_ct), tmp_path / "seed_raw.mha", compress=False).read_bytes()
    cut = seed.index(b"ElementDataFile = LOCAL\n")
    (tmp_path / "voxels.raw").write_bytes(seed[cut + len(b"ElementDataFile = LOCAL\n"):])
    out = tmp_path / "dev_zero.mhd"
    out.write_bytes(seed[:cut] + b"ElementDataFile = /dev/zero\n")
    return out


def _series(tmp_path: Path, make_ct) -> Path:
    """The 4-slice DICOM series of the issue, as the project writes it."""
    return write_dicom_series(_ct(make_ct, shape=(4, 20, 24)), tmp_path / "series", series_uid="orbitseg-corpus")


def _edit(path: Path, change) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)


def dicom_missing_columns(tmp_path, make_ct):
    folder = _series(tmp_path, make_ct)
    _edit(folder / "IM00002.dcm", lambda ds: delattr(ds, "Columns"))
    return folder


def dicom_multivalued_columns(tmp_path, make_ct):
    folder = _series(tmp_path, make_ct)
    _edit(folder / "IM00002.dcm", lambda ds: ds.add(DataElement(0x00280011, "US", [20, 24])))
    return folder


def _revr(folder, name: str, element: bytes, vr: bytes):
    """``folder`` with the two VR bytes of the explicit-VR ``element`` (tag + old VR) of file ``name`` replaced."""
    f = folder / name
    data = f.read_bytes()
    i = data.index(element)
    f.write_bytes(data[: i + 4] + vr + data[i + 6:])
    return folder


def dicom_invalid_vr(tmp_path, make_ct):
    """ImageOrientationPatient's VR bytes changed to 'ZZ' (pydicom: NotImplementedError)."""
    return _revr(_series(tmp_path, make_ct), "IM00003.dcm", b"\x20\x00\x37\x00DS", b"ZZ")


def dicom_wrong_value_length(tmp_path, make_ct):
    """ImagePositionPatient's VR bytes changed to FD: 18 bytes are no whole number of doubles
    (pydicom: BytesLengthException)."""
    return _revr(_series(tmp_path, make_ct), "IM00002.dcm", b"\x20\x00\x32\x00DS", b"FD")


def dicom_invalid_vr_in_file_meta(tmp_path, make_ct):
    """One byte of the file meta's ImplementationVersionName VR changed ('SH' -> 'S/'): pydicom reads a 2-byte
    length, GDCM a 4-byte one ('PYDI' = 1.2 GB), which the series reader allocated."""
    folder = _series(tmp_path, make_ct)
    f = folder / "IM00003.dcm"
    data = f.read_bytes()
    i = data.index(b"\x02\x00\x13\x00SH")
    f.write_bytes(data[: i + 4] + b"S/" + data[i + 6:])
    return folder


def dicom_truncated_pixels(tmp_path, make_ct):
    """The last file cut in the middle of its pixel data (the issue's reached 12.7 GB, then 'RuntimeError')."""
    folder = _series(tmp_path, make_ct)
    f = folder / "IM00004.dcm"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 300])
    return folder


def dicom_garbage_after_pixels(tmp_path, make_ct):
    """An element after the pixel data declaring 4 GB: the series reader allocated 1.7 GB for it."""
    folder = _series(tmp_path, make_ct)
    f = folder / "IM00004.dcm"
    f.write_bytes(f.read_bytes() + b"\x3a\x9e\x74\xb1OB\x00\x00" + struct.pack("<I", 0xF0000000) + b"\x01" * 150)
    return folder


def dicom_huge_rows(tmp_path, make_ct):
    """Every slice says 8192 x 8192 pixels over 960 bytes of pixel data."""
    folder = _series(tmp_path, make_ct)
    for f in sorted(folder.iterdir()):
        _edit(f, lambda ds: (setattr(ds, "Rows", 8192), setattr(ds, "Columns", 8192)))
    return folder


def dicom_rows_over_voxel_cap(tmp_path, make_ct):
    """Every slice says 65535 x 65535 pixels: 17 G voxels, refused before any file's pixel data is looked at."""
    folder = _series(tmp_path, make_ct)
    for f in sorted(folder.iterdir()):
        _edit(f, lambda ds: (setattr(ds, "Rows", 65535), setattr(ds, "Columns", 65535)))
    return folder


def dicom_unknown_transfer_syntax(tmp_path, make_ct):
    folder = _series(tmp_path, make_ct)
    f = folder / "IM00002.dcm"
    ds = pydicom.dcmread(f)
    ds.file_meta.TransferSyntaxUID = "1.2.3.4"
    ds.save_as(f, enforce_file_format=False)
    return folder


#: name -> (builder, readers, problem pattern, read in a child)
CORPUS = {
    "nifti-sform-inf-hang": (nifti_sform_inf, ("read_scan", "check_scan_header", "read_label"), r"sform", True),
    "nifti-qoffset-inf": (nifti_qoffset_inf, ("read_scan", "check_scan_header"), r"qform offset", True),
    "nifti-huge-dims": (nifti_huge_dims, ("read_scan", "check_scan_header"), r"declares \d+ voxels", True),
    "nifti-dims-beyond-gzip": (nifti_dims_beyond_gzip, ("read_scan",), r"compressed bytes can hold", True),
    "nrrd-ascii-over-binary-crash": (nrrd_ascii_over_binary, ("read_scan", "read_label", "check_scan_header"),
                                     r"binary data under a text encoding", True),
    "nrrd-text-long-token-crash": (nrrd_text_long_token, ("read_label",), r"token longer than", True),
    "nrrd-sizes-2^32": (nrrd_sizes_2_pow_32, ("read_scan", "check_scan_header"), r"declares 4294967296 voxels", True),
    "nrrd-sizes-beyond-gzip": (nrrd_sizes_beyond_gzip, ("read_scan",), r"compressed bytes can hold", True),
    "nrrd-raw-truncated": (nrrd_raw_truncated, ("read_scan", "check_scan_header"), r"is truncated", True),
    "nhdr-dev-zero-hang": (nhdr_dev_zero, ("read_scan", "check_scan_header"), r"only a file beside the header", True),
    "nhdr-symlink-to-dev-zero": (nhdr_symlink_to_dev_zero, ("read_scan", "check_scan_header"),
                                 r"data file 'zero\.raw' is a device or system file", True),
    "mhd-data-is-a-folder": (mhd_data_is_a_folder, ("read_scan",), r"data file 'voxels' is not a regular file", True),
    "nhdr-absolute-path": (nhdr_absolute_path, ("read_scan",), r"only a file beside the header", True),
    "nhdr-parent-folder": (nhdr_parent_folder, ("read_label",), r"only a file beside the header", True),
    "mha-ndims-negative-crash": (mha_ndims_negative, ("read_scan", "check_scan_header"), r"NDims '-1', not 1\.\.10",
                                 True),
    "mha-dimsize-beyond-file": (mha_dimsize_beyond_file, ("read_scan",), r"is truncated", True),
    "mha-dimsize-huge": (mha_dimsize_huge, ("read_scan",), r"declares 8000000000 voxels", True),
    "mha-compressed-size-huge": (mha_compressed_size_huge, ("read_scan",), r"CompressedDataSize", True),
    "mhd-dev-zero": (mhd_dev_zero, ("read_scan",), r"only a file beside the header", True),
    "dicom-missing-columns": (dicom_missing_columns, ("read_scan",), r"IM00002\.dcm: has no Columns", False),
    "dicom-multivalued-columns": (dicom_multivalued_columns, ("read_scan",),
                                  r"IM00002\.dcm: Columns holds several values", False),
    "dicom-invalid-vr": (dicom_invalid_vr, ("read_scan",), r"IM00003\.dcm: is corrupt: its element \(0020,0037\) "
                         r"\(ImageOrientationPatient\) has an invalid value representation 'ZZ'", False),
    "dicom-invalid-vr-in-file-meta-memory": (dicom_invalid_vr_in_file_meta, ("read_scan",),
                                             r"IM00003\.dcm: is corrupt: its element \(0002,0013\) "
                                             r"\(ImplementationVersionName\) has an invalid value representation", True),
    "dicom-wrong-value-length": (dicom_wrong_value_length, ("read_scan",),
                                 r"IM00002\.dcm: its ImagePositionPatient cannot be decoded \(BytesLengthException", False),
    "dicom-truncated-pixels-memory": (dicom_truncated_pixels, ("read_scan",), r"IM00004\.dcm: is truncated", True),
    "dicom-garbage-after-pixels-memory": (dicom_garbage_after_pixels, ("read_scan",),
                                          r"IM00004\.dcm: is truncated or corrupt: its element \(9E3A,B174\)", True),
    "dicom-huge-rows-memory": (dicom_huge_rows, ("read_scan",), r"IM0000\d\.dcm: .*pixel data where Rows x Columns",
                               True),
    "dicom-rows-over-voxel-cap": (dicom_rows_over_voxel_cap, ("read_scan",),
                                  r"series of 4 slices of 65535 x 65535 pixels holds more voxels", True),
    "dicom-unknown-transfer-syntax": (dicom_unknown_transfer_syntax, ("read_scan", "list_dicom_series"),
                                      r"IM00002\.dcm: .*unknown transfer syntax '1\.2\.3\.4'", False),
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_reproducer_is_refused_naming_the_file(tmp_path, make_ct, name):
    build, readers, problem, isolate = CORPUS[name]
    path = build(tmp_path, make_ct)
    for reader in readers:
        if reader == "list_dicom_series" and "transfer syntax" in problem:
            # listing is tolerant: it names the series; reading one names the damaged file
            assert any(s["n_files"] == 4 for s in list_dicom_series(path))
            continue
        result = read_in_child(reader, path) if isolate else read_here(reader, path)
        assert_refused(result, reader, path, problem)


def test_the_seed_files_themselves_read(tmp_path, make_ct):
    """The corpus damages good files: undamaged, each seed reads (so each refusal above is the damage's)."""
    ct = _ct(make_ct)
    for name, compress in (("a.nii", False), ("a.nii.gz", True), ("a.nrrd", True), ("b.nrrd", False),
                           ("a.mha", True), ("b.mha", False)):
        back = read_scan(write_scan(ct, tmp_path / name, compress=compress))
        np.testing.assert_array_equal(back.array, ct.array)
    seed = write_scan(ct, tmp_path / "c.nrrd", compress=False).read_bytes()
    head, body = seed.split(b"\n\n", 1)
    (tmp_path / "voxels.raw").write_bytes(body)
    (tmp_path / "beside.nhdr").write_bytes(head + b"\ndata file: voxels.raw\n")
    np.testing.assert_array_equal(read_scan(tmp_path / "beside.nhdr").array, ct.array)
    np.testing.assert_array_equal(read_dicom_series(_series(tmp_path, make_ct)).array.shape, (4, 20, 24))


def test_text_nrrd_of_numbers_still_reads(tmp_path):
    """The text-encoding checks refuse binary data and over-long tokens, not a genuine text NRRD."""
    values = np.arange(2 * 3 * 4, dtype=np.float32).reshape(4, 3, 2) - 1000
    head = b"NRRD0004\ntype: float\ndimension: 3\nsizes: 2 3 4\nencoding: ascii\n\n"
    p = tmp_path / "text.nrrd"
    p.write_bytes(head + " ".join(f"{v:g}" for v in values.ravel()).encode() + b"\n")
    check_scan_header(p)
    np.testing.assert_array_equal(read_scan(p).array, values)


@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_in_a_float_label_is_refused(tmp_path, make_ct, make_labels, ending, bad):
    """ITK reads NaN and infinity in a NIfTI as 0: a damaged float label passed check / evaluate as background."""
    ct = make_ct()
    lab = make_labels(ct.shape).astype(np.float32)
    lab[0, 0, 0] = bad
    p = write_scan(Volume(lab, ct.geometry), tmp_path / f"float_label{ending}")
    with pytest.raises(InputError, match=re.escape(str(p)) + r".*NaN or infinite"):
        read_label(p, reference=ct)
    good = write_scan(Volume(make_labels(ct.shape).astype(np.float32), ct.geometry), tmp_path / f"good{ending}")
    np.testing.assert_array_equal(read_label(good, reference=ct).array, make_labels(ct.shape))


def test_a_foreign_exception_becomes_input_error(tmp_path, make_ct, monkeypatch):
    """Whatever a library raises inside a read leaves the boundary as InputError naming the file."""
    import orbitseg.io.read as read_mod

    p = write_scan(make_ct(), tmp_path / "scan.nrrd")

    def broken(*args, **kwargs):
        raise AttributeError("'NoneType' object has no attribute 'GetSize'")

    monkeypatch.setattr(read_mod, "_read_image_file", broken)
    with pytest.raises(InputError, match=re.escape(str(p)) + r".*AttributeError"):
        read_scan(p)


def test_check_case_goes_on_past_every_damaged_dicom(tmp_path, make_ct):
    """``orbitseg check`` records each reader failure as a problem of its case, never raises."""
    from orbitseg.io.dataset import check_case

    for name in ("dicom-missing-columns", "dicom-multivalued-columns", "dicom-invalid-vr", "dicom-wrong-value-length",
                 "dicom-unknown-transfer-syntax"):
        build = CORPUS[name][0]
        folder = build(tmp_path / name, make_ct)
        rep = check_case(name, "p", folder, None, training=False)
        assert not rep.usable and str(folder) in rep.problems[0], rep.problems


def test_no_format_reaches_itk_without_a_header_check():
    """Safe by construction: the registry refuses a readable format without a header layout, and every
    layout of a format read through an ITK ImageIO has its check in orbitseg.io.guard."""
    from orbitseg.io import formats as F
    from orbitseg.io.guard import GUARDS

    with pytest.raises(ValueError, match="header layout"):
        F.FileFormat(".x", "x", "x", "XIO", None, reads_scan=True, reads_label=False)
    for f in F.FORMATS.values():
        if f.itk_io is not None and (f.reads_scan or f.reads_label):
            assert f.header in GUARDS, f.ending


@pytest.mark.slow
def test_the_fuzzer_runs_and_finds_nothing(tmp_path):
    """bench/fuzz_readers.py stays runnable: a few seconds of it, every kind counted, no problem found."""
    bench = Path(__file__).resolve().parents[2] / "bench" / "fuzz_readers.py"
    proc = subprocess.run([sys.executable, str(bench), "--seconds", "4", "--seed", "1", "--timeout", "20",
                           "--out", str(tmp_path / "repro")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for line in ("clean refusals", "foreign exception types:", "hangs", "crashes", "memory over 2 GB"):
        assert line in proc.stdout
    assert re.search(r"foreign exception types:\s+0\b", proc.stdout)
    assert not (tmp_path / "repro").exists()
