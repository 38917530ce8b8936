"""DICOM-SEG out and in (issue 22): a synthetic patient written as a DICOM series, read back with
``read_scan``, its truth labels written as a DICOM Segmentation, then read back three ways - with
orbitseg's reader, with highdicom, and frame by frame with plain pydicom through each frame's
reference to its source slice - and validated with dciodvfy.

Four series: as rendered (identity), every axis flipped (the reader reverses the slice order),
tilted 18 degrees with flipped rows, and a tilted grid with non-square pixels (catches a row /
column spacing mix-up, which square pixels hide)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest

import orbitseg
from orbitseg.constants import LABEL_COLOURS, LABEL_TITLES, STRUCTURES
from orbitseg.errors import ExistsError, GeometryMismatchError, InputError
from orbitseg.io.dicomseg import read_dicom_seg, write_dicom_seg
from orbitseg.io.read import read_scan
from orbitseg.io.volume import Volume
from dicom_cases import EXPECTED_TYPES, SEEDS, dciodvfy, source_headers

# highdicom warns that the synthetic patient's name "anon" has no "^" (the test series' name, not ours)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:highdicom")

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


@dataclass
class Case:
    name: str
    root: Path
    folder: Path  # the DICOM series
    scan: Volume  # read_scan(folder)
    truth_ct: Volume  # truth labels on the grid they were rendered on
    truth: Volume  # truth labels on the scan's grid
    seg: Path  # truth written as DICOM-SEG


@pytest.fixture(scope="module")
def build(series_cases):
    """``build(name)`` -> :class:`Case`: the series of ``series_cases`` with its truth written as DICOM-SEG."""
    @functools.cache
    def _build(name: str) -> Case:
        root, folder, scan, truth_ct, truth = series_cases(name)
        return Case(name, root, folder, scan, truth_ct, truth, write_dicom_seg(truth, folder, root / "seg.dcm"))

    return _build


def labels_by_source_reference(seg_path: Path, scan: Volume) -> np.ndarray:
    """The label volume rebuilt with pydicom alone: each frame goes onto the slice it names in its
    Source Image Sequence (not by its position), its segment's structure from the type code."""
    ds = pydicom.dcmread(seg_path)
    assert ds.SegmentationType == "BINARY"
    by_code = {code[0]: label for label, code in EXPECTED_TYPES.items()}
    structure = {int(s.SegmentNumber): by_code[s.SegmentedPropertyTypeCodeSequence[0].CodeValue] for s in ds.SegmentSequence}
    k_of = {h.SOPInstanceUID: k for k, h in enumerate(source_headers(scan))}
    frames = np.asarray(ds.pixel_array).reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    out = np.zeros(scan.shape, np.uint8)
    for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        source = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        k = k_of[source]
        fg = frames[f] > 0
        assert not (out[k][fg] > 0).any(), "two segments claim one voxel"
        out[k][fg] = structure[int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)]
    return out


ALL = list(SEEDS)


# ---------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_seg_reads_back_to_identical_voxels(build, name):
    c = build(name)
    back = read_dicom_seg(c.seg, c.scan)
    assert back.array.dtype == np.uint8
    assert back.geometry.differences(c.scan.geometry) == []
    np.testing.assert_array_equal(back.array, c.truth.array)
    assert back.meta["series_uid"] == c.scan.meta["series_uid"]
    # the reference may also be the series folder
    np.testing.assert_array_equal(read_dicom_seg(c.seg, c.folder).array, c.truth.array)


@pytest.mark.parametrize("name", ALL)
def test_seg_read_independently_by_source_references_and_by_highdicom(build, name):
    import highdicom as hd

    c = build(name)
    np.testing.assert_array_equal(labels_by_source_reference(c.seg, c.scan), c.truth.array)
    uids = [h.SOPInstanceUID for h in source_headers(c.scan)]
    combined = hd.seg.segread(c.seg).get_pixels_by_source_instance(uids, combine_segments=True)
    np.testing.assert_array_equal(combined, c.truth.array)


@pytest.mark.parametrize("name", ["flip_all", "anisotropic"])
def test_labels_on_the_rendered_grid_give_the_same_frames(build, name, tmp_path):
    """Labels on the grid the CT was made on (slices in the other order than the series is read
    in, for flip_all) are matched to the series' slices by position: same frames, same references."""
    c = build(name)
    seg = write_dicom_seg(c.truth_ct, c.folder, tmp_path / "seg.dcm")
    np.testing.assert_array_equal(labels_by_source_reference(seg, c.scan), c.truth.array)


def test_source_given_as_folder_volume_or_datasets_is_the_same_object(build, tmp_path):
    c = build("oblique")
    paths = [
        write_dicom_seg(c.truth, c.folder, tmp_path / "a.dcm"),
        write_dicom_seg(c.truth, c.scan, tmp_path / "b.dcm"),
        write_dicom_seg(c.truth, source_headers(c.scan)[::-1], tmp_path / "c.dcm"),
    ]
    for p in paths:
        np.testing.assert_array_equal(labels_by_source_reference(p, c.scan), c.truth.array)
        np.testing.assert_array_equal(read_dicom_seg(p, c.scan).array, c.truth.array)


# ---------------------------------------------------------------------------
# what the object says
# ---------------------------------------------------------------------------
def test_segments_codes_colours_and_algorithm(build):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    ds = pydicom.dcmread(build("identity").seg)
    assert ds.SOPClassUID == SEG_SOP_CLASS and ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert [int(s.SegmentNumber) for s in ds.SegmentSequence] == list(STRUCTURES)
    for s in ds.SegmentSequence:
        label = int(s.SegmentNumber)
        assert s.SegmentLabel == LABEL_TITLES[label]
        t = s.SegmentedPropertyTypeCodeSequence[0]
        assert (t.CodeValue, t.CodingSchemeDesignator, t.CodeMeaning) == EXPECTED_TYPES[label]
        cat = s.SegmentedPropertyCategoryCodeSequence[0]
        assert (cat.CodeValue, cat.CodingSchemeDesignator, cat.CodeMeaning) == ("91723000", "SCT", "Anatomical Structure")
        assert s.SegmentAlgorithmType == "AUTOMATIC" and s.SegmentAlgorithmName == "orbitseg"
        alg = s.SegmentationAlgorithmIdentificationSequence[0]
        assert (alg.AlgorithmName, alg.AlgorithmVersion) == ("orbitseg", orbitseg.__version__)
        fam = alg.AlgorithmFamilyCodeSequence[0]
        assert (fam.CodeValue, fam.CodingSchemeDesignator, fam.CodeMeaning) == ("123110", "DCM", "Artificial Intelligence")
        rgb = hd.color.CIELabColor.from_dicom_value(s.RecommendedDisplayCIELabValue).to_rgb()
        assert np.abs(np.asarray(rgb, float) - LABEL_COLOURS[label]).max() <= 1, (label, rgb)
    # the codes that DICOM's own tables hold agree with them (pydicom's copy of PS3.16)
    assert codes.SCT.Eyeball.value == EXPECTED_TYPES[1][0]
    assert codes.SCT.OpticNerve.value == EXPECTED_TYPES[3][0]
    assert codes.SCT.AnatomicalStructure.value == "91723000"
    assert ds.ContentLabel == "ORBITSEG" and ds.Manufacturer == "orbitseg"
    assert ds.SoftwareVersions == orbitseg.__version__


@pytest.mark.parametrize("name", ALL)
def test_seg_references_the_source_series_and_slices(build, name):
    c = build(name)
    ds = pydicom.dcmread(c.seg)
    heads = source_headers(c.scan)
    by_uid = {h.SOPInstanceUID: h for h in heads}
    h0 = heads[0]
    assert len(ds.ReferencedSeriesSequence) == 1
    ref = ds.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == c.scan.meta["series_uid"] == h0.SeriesInstanceUID
    assert {it.ReferencedSOPInstanceUID for it in ref.ReferencedInstanceSequence} == set(by_uid)
    assert (ds.StudyInstanceUID, ds.FrameOfReferenceUID, ds.PatientID) == (
        h0.StudyInstanceUID, h0.FrameOfReferenceUID, h0.PatientID)
    assert ds.SeriesInstanceUID != h0.SeriesInstanceUID
    shared = ds.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
                               [float(v) for v in h0.ImageOrientationPatient], atol=1e-6)
    np.testing.assert_allclose([float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing],
                               [float(v) for v in h0.PixelSpacing], rtol=1e-9)
    per_segment = {s: 0 for s in STRUCTURES}
    for item in ds.PerFrameFunctionalGroupsSequence:
        src = by_uid[item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        # each frame lies on the plane of the slice it names
        np.testing.assert_allclose([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient],
                                   [float(v) for v in src.ImagePositionPatient], atol=1e-4)
        per_segment[int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)] += 1
    # one frame per slice where the structure is (empty frames left out)
    for s in STRUCTURES:
        assert per_segment[s] == int((c.truth.array == s).any(axis=(1, 2)).sum()), s


def test_absent_structure_is_an_empty_segment(build, tmp_path):
    c = build("oblique")
    labels = c.truth.like(np.where(c.truth.array == 3, 0, c.truth.array).astype(np.uint8))
    path = write_dicom_seg(labels, c.scan, tmp_path / "no_nerve.dcm")
    ds = pydicom.dcmread(path)
    assert [int(s.SegmentNumber) for s in ds.SegmentSequence] == [1, 2, 3]
    assert all(int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber) != 3
               for f in ds.PerFrameFunctionalGroupsSequence)
    np.testing.assert_array_equal(read_dicom_seg(path, c.scan).array, labels.array)


# ---------------------------------------------------------------------------
# refusals
# ---------------------------------------------------------------------------
def test_existing_file_refused_unless_overwrite_and_nothing_left_behind(build, tmp_path):
    c = build("identity")
    out = tmp_path / "seg.dcm"
    out.write_bytes(b"keep me")
    with pytest.raises(ExistsError):
        write_dicom_seg(c.truth, c.folder, out)
    assert out.read_bytes() == b"keep me"
    write_dicom_seg(c.truth, c.folder, out, overwrite=True)
    np.testing.assert_array_equal(read_dicom_seg(out, c.scan).array, c.truth.array)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.dcm"]  # no temporary file left


def test_labels_not_on_the_series_grid_or_not_labels_are_refused(build, tmp_path):
    c = build("identity")
    g = c.truth.geometry
    half = np.asarray(g.origin) + 0.5 * g.matrix[:, 0] * g.spacing[0]
    shifted = Volume(c.truth.array, g.with_(origin=tuple(half)))
    with pytest.raises(GeometryMismatchError, match="not a plane of the labels' grid"):
        write_dicom_seg(shifted, c.folder, tmp_path / "a.dcm")
    cropped = Volume(c.truth.array[1:], g.with_(size=(g.size[0], g.size[1], g.size[2] - 1),
                                               origin=tuple(g.index_to_physical([0, 0, 1]))))
    with pytest.raises(GeometryMismatchError):
        write_dicom_seg(cropped, c.folder, tmp_path / "b.dcm")
    bad = c.truth.like(np.where(c.truth.array == 1, 7, c.truth.array))
    with pytest.raises(InputError, match=r"values \[7\]"):
        write_dicom_seg(bad, c.folder, tmp_path / "c.dcm")
    assert not any(tmp_path.iterdir())


def test_a_scan_that_is_not_dicom_is_refused(build, tmp_path):
    from orbitseg.io.write import write_scan

    c = build("identity")
    nifti = read_scan(write_scan(c.scan, tmp_path / "scan.nii.gz"))
    with pytest.raises(InputError, match="not read from a DICOM series"):
        write_dicom_seg(c.truth, nifti, tmp_path / "seg.dcm")
    with pytest.raises(InputError, match="holds no DICOM image slices"):
        write_dicom_seg(c.truth, tmp_path, tmp_path / "seg2.dcm")


def test_reader_refuses_what_is_not_a_usable_seg(build, tmp_path):
    c = build("identity")
    other = build("oblique")
    with pytest.raises(InputError, match="not a DICOM Segmentation") as e:
        read_dicom_seg(c.scan.meta["files"][0], c.scan)
    assert str(c.scan.meta["files"][0]) in str(e.value)
    text = tmp_path / "notes.dcm"
    text.write_text("not dicom")
    with pytest.raises(InputError, match="not a DICOM file"):
        read_dicom_seg(text, c.scan)
    with pytest.raises(InputError, match="needs its reference scan") as e:
        read_dicom_seg(c.seg)
    assert str(c.seg) in str(e.value)
    with pytest.raises(InputError, match="refers to series"):
        read_dicom_seg(c.seg, other.scan)
    g = c.scan.geometry
    off = g.with_(origin=tuple(np.asarray(g.origin) + 0.5 * g.spacing[2] * g.matrix[:, 2]))
    with pytest.raises(InputError, match="not on a slice of the reference scan"):
        read_dicom_seg(c.seg, off)


def _foreign_seg(c: Case, path: Path, segments: list[tuple[str, tuple[str, str, str]]], masks: list[np.ndarray]) -> Path:
    """A SEG as another tool might write it: our segments replaced by ``segments`` (label, type code)."""
    import highdicom as hd

    descs = [
        hd.seg.SegmentDescription(
            n, label, hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure"),
            hd.sr.CodedConcept(*code), "MANUAL")
        for n, (label, code) in enumerate(segments, 1)
    ]
    pixels = np.stack(masks, axis=-1).astype(np.uint8)  # (slices, rows, columns, segments)
    seg = hd.seg.Segmentation(source_headers(c.scan), pixels, "BINARY", descs, hd.UID(), 5, hd.UID(), 1,
                              "other", "other", "1", "1")
    seg.save_as(path)
    return path


def test_segments_of_other_tools(build, tmp_path):
    """Left and right eyes as two 'Eye' segments read as one eyeball; a segment that is no orbit
    structure is refused by name."""
    c = build("identity")
    eye = c.truth.array == 1
    left, right = eye.copy(), eye.copy()
    half = eye.shape[2] // 2
    left[..., :half] = False
    right[..., half:] = False
    path = _foreign_seg(c, tmp_path / "eyes.dcm", [("Left eye", ("81745001", "SCT", "Eye")),
                                                    ("Right eye", ("81745001", "SCT", "Eye")),
                                                    ("optic_nerve", ("999", "99LOCAL", "nerve"))],
                        [left, right, c.truth.array == 3])
    back = read_dicom_seg(path, c.scan)
    np.testing.assert_array_equal(back.array, np.where(eye, 1, np.where(c.truth.array == 3, 3, 0)))
    liver = _foreign_seg(c, tmp_path / "liver.dcm", [("Eyeball", EXPECTED_TYPES[1]), ("Liver", ("10200004", "SCT", "Liver"))],
                         [eye, c.truth.array == 2])
    with pytest.raises(InputError, match="segment 2 'Liver' \\(SCT 10200004 'Liver'\\)"):
        read_dicom_seg(liver, c.scan)


# ---------------------------------------------------------------------------
# dciodvfy
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_dciodvfy_finds_no_error_in_the_seg(build, name, require):
    warnings = dciodvfy(build(name).seg, require)
    # the only warning is about the synthetic series' patient name, which the SEG copies
    assert all("Patient's Name" in w for w in warnings), warnings


def test_a_damaged_seg_is_refused_by_name_within_the_reader_boundary(build, tmp_path):
    """A SEG that declares a billion frames is refused from its header before any frame is read; a
    truncated one gives the project's error naming it, never a library's exception."""
    c = build("identity")
    ds = pydicom.dcmread(c.seg)
    ds.NumberOfFrames = 10**9
    huge = tmp_path / "huge.dcm"
    ds.save_as(huge)
    with pytest.raises(InputError, match="declares 1000000000 frames"):
        read_dicom_seg(huge, c.scan)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(c.seg.read_bytes()[: c.seg.stat().st_size * 2 // 3])
    with pytest.raises(InputError) as err:
        read_dicom_seg(cut, c.scan)
    assert "cut.dcm" in str(err.value)
