"""The file-format registry: one definition of every ending, and it tells the truth about readers and writers."""

import numpy as np
import pytest

from orbitseg import constants as C
from orbitseg.errors import InputError
from orbitseg.io import formats as F


def test_endings_derived_from_the_registry():
    assert F.SCAN_ENDINGS == (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
    assert F.SCAN_WRITE_ENDINGS == (".nii.gz", ".nii", ".nrrd", ".mha")
    assert F.LABEL_WRITE_ENDINGS == (".nii.gz", ".nii", ".seg.nrrd", ".nrrd")
    assert set(F.LABEL_READ_ENDINGS) == set(F.ENDINGS) == set(F.SCAN_ENDINGS) | {".seg.nrrd"}
    assert all(e == f.ending for e, f in F.FORMATS.items())
    # the project's default ending is a format every writer takes
    assert F.DEFAULT_FORMAT.ending == C.FILE_ENDING
    assert F.DEFAULT_FORMAT.writes_scan and F.DEFAULT_FORMAT.writes_label


def test_a_written_format_must_be_readable():
    with pytest.raises(ValueError, match="readable"):
        F.FileFormat(".x", "x", "x", "XIO", "sitk", reads_scan=True, reads_label=False, writes_label=True)
    with pytest.raises(ValueError, match="writer"):
        F.FileFormat(".x", "x", "x", "XIO", "pen", reads_scan=True, reads_label=True)


@pytest.mark.parametrize("name,stem,ending", [
    ("case_0000.nii.gz", "case_0000", ".nii.gz"),
    ("x.seg.nrrd", "x", ".seg.nrrd"),
    ("x.nrrd", "x", ".nrrd"),
    ("X.MHA", "X", ".MHA"),
    ("notes.txt", "notes.txt", ""),
])
def test_split_ending(name, stem, ending):
    assert F.split_ending(name) == (stem, ending)


def test_format_of(tmp_path):
    assert F.format_of(tmp_path) is F.DICOM_SERIES  # a DICOM series is a folder
    assert F.format_of(tmp_path / "a.SEG.NRRD").segments
    assert F.format_of(tmp_path / "a.seg.nrrd", F.SCAN_ENDINGS).name == "nrrd"
    assert F.format_of(tmp_path / "a_0000.nii.gz") is F.FORMATS[".nii.gz"]
    assert F.format_of(tmp_path / "notes.txt") is None


def test_the_endings_are_defined_once():
    """The registry is the one place: constants no longer holds (or forwards) endings lists."""
    for name in ("SCAN_ENDINGS", "LABEL_ENDINGS", "split_ending"):
        assert not hasattr(C, name), name


@pytest.mark.parametrize("ending", F.ENDINGS)
def test_the_registry_says_what_the_readers_and_writers_do(tmp_path, ending, make_ct, make_labels):
    """For every ending: write_scan / write_label accept it exactly when the registry says so, and
    read_scan / read_label read it back (format name as recorded) exactly when it says so."""
    import SimpleITK as sitk

    from orbitseg.io.read import read_label, read_scan
    from orbitseg.io.volume import Volume
    from orbitseg.io.write import write_label, write_scan

    fmt = F.FORMATS[ending]
    ct = make_ct()
    labels = Volume(make_labels(ct.shape), ct.geometry)
    scan_p, lab_p = tmp_path / f"ct{ending}", tmp_path / f"lab{ending}"
    if fmt.writes_scan:
        write_scan(ct, scan_p)
    else:
        with pytest.raises(InputError, match="use one of"):
            write_scan(ct, scan_p)
    if fmt.writes_label:
        write_label(labels, lab_p)
    else:
        with pytest.raises(InputError, match="use one of"):
            write_label(labels, lab_p)
    # files the project does not write (two-file formats, a scan as .seg.nrrd) made by ITK itself
    if not scan_p.exists():
        sitk.WriteImage(ct.to_sitk(), str(scan_p))
    if not lab_p.exists():
        sitk.WriteImage(Volume(labels.array.astype(np.uint8), ct.geometry).to_sitk(), str(lab_p))
    if fmt.reads_label:
        assert read_label(lab_p).meta["format"] == fmt.name
    if fmt.reads_scan:
        got = read_scan(scan_p)
        assert got.meta["format"] == fmt.name
        np.testing.assert_array_equal(got.array, ct.array)
    else:  # read as a scan, a .seg.nrrd is its NRRD container
        assert read_scan(scan_p).meta["format"] != fmt.name


def test_import_takes_a_segmentation_file_as_a_label(tmp_path, make_ct, make_labels):
    """In a flat folder, a file whose format holds no scan (.seg.nrrd) is a label even without a _label marker."""
    from orbitseg.io.dataset import find_source_cases
    from orbitseg.io.write import write_label, write_scan

    ct = make_ct()
    write_scan(ct, tmp_path / "case1.nii.gz")
    write_label(make_labels(ct.shape), tmp_path / "case1.seg.nrrd", reference=ct)
    [case] = find_source_cases(tmp_path)
    assert case.scan.name == "case1.nii.gz" and case.label.name == "case1.seg.nrrd"
