"""RTSTRUCT out (issue 22): the truth labels of a synthetic patient, written as a DICOM series and
read back with ``read_scan``, written as an RT Structure Set; its contours, filled again the way
a planning system fills them (pixels whose centres lie inside, nested contours combined by XOR),
give back the labels on every source slice; ROI names, colours, codes and references are what we
set; dciodvfy finds no error.

Same four series as the DICOM-SEG tests: identity, every axis flipped, tilted with flipped rows,
tilted with non-square pixels (a row / column spacing mix-up shows only there)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from skimage.draw import polygon

import orbitseg
from orbitseg.constants import LABEL_COLOURS, LABEL_TITLES, STRUCTURES
from orbitseg.errors import ExistsError, GeometryMismatchError
from orbitseg.io.rtstruct import mask_contours, write_rtstruct
from orbitseg.io.volume import Volume
from dicom_cases import EXPECTED_TYPES, SEEDS, dciodvfy, source_headers

ALL = list(SEEDS)
RT_STRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"


@dataclass
class Case:
    name: str
    folder: Path
    scan: Volume
    truth: Volume
    rt: Path


@pytest.fixture(scope="module")
def build(series_cases):
    """``build(name)`` -> :class:`Case`: the series of ``series_cases`` with its truth written as RTSTRUCT."""
    @functools.cache
    def _build(name: str) -> Case:
        root, folder, scan, _, truth = series_cases(name)
        return Case(name, folder, scan, truth, write_rtstruct(truth, folder, root / "rt.dcm"))

    return _build


def fill(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centres lie inside, nested polygons combined by XOR; ``polygons`` as (row, column)."""
    out = np.zeros(shape, bool)
    for p in polygons:
        rr, cc = polygon(p[:, 0], p[:, 1], shape=shape)
        one = np.zeros(shape, bool)
        one[rr, cc] = True
        out ^= one
    return out


def rasterise(rt_path: Path, scan: Volume) -> dict[int, np.ndarray]:
    """Each ROI's contours filled on the scan's grid (by pydicom and skimage only): ROI number -> mask.
    Every contour must lie on the plane of the slice it references."""
    ds = pydicom.dcmread(rt_path)
    k_of = {h.SOPInstanceUID: k for k, h in enumerate(source_headers(scan))}
    g = scan.geometry
    out = {}
    for roi in ds.ROIContourSequence:
        per_slice: dict[int, list] = {}
        for c in roi.get("ContourSequence", []):
            assert c.ContourGeometricType == "CLOSED_PLANAR"
            xyz = np.asarray([float(v) for v in c.ContourData]).reshape(-1, 3)
            assert len(xyz) == int(c.NumberOfContourPoints)
            ijk = g.physical_to_index(xyz)
            k = k_of[c.ContourImageSequence[0].ReferencedSOPInstanceUID]
            assert np.abs(ijk[:, 2] - k).max() < 1e-3, "contour off its slice's plane"
            per_slice.setdefault(k, []).append(ijk[:, [1, 0]])  # (row j, column i)
        mask = np.zeros(scan.shape, bool)
        for k, polys in per_slice.items():
            mask[k] = fill(polys, scan.shape[1:])
        out[int(roi.ReferencedROINumber)] = mask
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


@pytest.mark.parametrize("name", ALL)
def test_contours_fill_back_to_the_labels(build, name):
    c = build(name)
    masks = rasterise(c.rt, c.scan)
    assert sorted(masks) == list(STRUCTURES)
    scores = {s: dice(masks[s], c.truth.array == s) for s in STRUCTURES}
    assert min(scores.values()) >= 0.98, scores
    # pixel-edge contours give the labelled pixels exactly, not just >= 0.98
    for s in STRUCTURES:
        np.testing.assert_array_equal(masks[s], c.truth.array == s)


def test_rois_names_colours_codes_and_references(build):
    c = build("oblique")
    ds = pydicom.dcmread(c.rt)
    heads = source_headers(c.scan)
    h0 = heads[0]
    assert ds.SOPClassUID == RT_STRUCT_SOP_CLASS and ds.Modality == "RTSTRUCT"
    assert ds.file_meta.MediaStorageSOPClassUID == RT_STRUCT_SOP_CLASS
    assert (ds.PatientID, ds.StudyInstanceUID, ds.FrameOfReferenceUID) == (h0.PatientID, h0.StudyInstanceUID, h0.FrameOfReferenceUID)
    assert ds.SeriesInstanceUID != h0.SeriesInstanceUID
    assert (ds.Manufacturer, ds.SoftwareVersions) == ("orbitseg", orbitseg.__version__)
    ref = ds.ReferencedFrameOfReferenceSequence[0]
    assert ref.FrameOfReferenceUID == h0.FrameOfReferenceUID
    study = ref.RTReferencedStudySequence[0]
    assert study.ReferencedSOPInstanceUID == h0.StudyInstanceUID
    series = study.RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == c.scan.meta["series_uid"]
    assert [it.ReferencedSOPInstanceUID for it in series.ContourImageSequence] == [h.SOPInstanceUID for h in heads]
    assert [int(r.ROINumber) for r in ds.StructureSetROISequence] == list(STRUCTURES)
    for r, contour, obs in zip(ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence):
        label = int(r.ROINumber)
        assert r.ROIName == LABEL_TITLES[label]
        assert r.ReferencedFrameOfReferenceUID == h0.FrameOfReferenceUID
        assert r.ROIGenerationAlgorithm == "AUTOMATIC"
        assert int(contour.ReferencedROINumber) == label
        assert [int(v) for v in contour.ROIDisplayColor] == list(LABEL_COLOURS[label])
        assert int(obs.ReferencedROINumber) == label and obs.RTROIInterpretedType == "ORGAN"
        code = obs.RTROIIdentificationCodeSequence[0]
        assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == EXPECTED_TYPES[label]
        # a contour for every slice where the structure is, each naming a slice of the series
        slices = {it.ContourImageSequence[0].ReferencedSOPInstanceUID for it in contour.ContourSequence}
        expected = {heads[k].SOPInstanceUID for k in np.nonzero((c.truth.array == label).any(axis=(1, 2)))[0]}
        assert slices == expected


def test_absent_structure_is_an_roi_without_contours(build, tmp_path):
    c = build("identity")
    labels = c.truth.like(np.where(c.truth.array == 3, 0, c.truth.array).astype(np.uint8))
    ds = pydicom.dcmread(write_rtstruct(labels, c.scan, tmp_path / "rt.dcm"))
    assert [int(r.ROINumber) for r in ds.StructureSetROISequence] == [1, 2, 3]
    assert "ContourSequence" not in ds.ROIContourSequence[2]
    assert len(ds.ROIContourSequence[0].ContourSequence) > 0


def test_existing_file_refused_and_grid_checked(build, tmp_path):
    c = build("identity")
    out = tmp_path / "rt.dcm"
    out.write_bytes(b"keep me")
    with pytest.raises(ExistsError):  # refused before the series is read, as the SEG writer does
        write_rtstruct(c.truth, c.folder, out)
    assert out.read_bytes() == b"keep me"
    assert pydicom.dcmread(write_rtstruct(c.truth, c.folder, out, overwrite=True)).Modality == "RTSTRUCT"
    g = c.truth.geometry
    shifted = Volume(c.truth.array, g.with_(origin=tuple(np.asarray(g.origin) + 0.5 * g.spacing[1] * g.matrix[:, 1])))
    with pytest.raises(GeometryMismatchError):
        write_rtstruct(shifted, c.folder, tmp_path / "b.dcm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rt.dcm"]


@pytest.mark.parametrize("seed", range(6))
def test_mask_contours_are_exact_pixel_edges(seed):
    """Random masks with holes, islands and pixels touching at a corner only: the polygons filled
    by XOR give the mask back, their signed areas add up to its pixel count, every vertex is a
    pixel corner, and no polygon crosses itself (each vertex once)."""
    rng = np.random.default_rng(seed)
    for _ in range(40):
        shape = tuple(int(v) for v in rng.integers(1, 14, size=2))
        mask = rng.random(shape) < rng.uniform(0.1, 0.9)
        polys = mask_contours(mask)
        np.testing.assert_array_equal(fill(polys, shape), mask)
        area = sum(0.5 * np.sum(p[:, 1] * np.roll(p[:, 0], -1) - np.roll(p[:, 1], -1) * p[:, 0]) for p in polys)
        assert abs(abs(area) - mask.sum()) < 1e-9
        for p in polys:
            assert np.all((p * 2) % 2 == 1), "vertices must be pixel corners (half-integers)"
            assert len({tuple(v) for v in p}) == len(p)
    diagonal = np.array([[1, 0], [0, 1]], bool)
    assert len(mask_contours(diagonal)) == 2  # corner-touching pixels: one polygon each
    ring = np.ones((5, 5), bool)
    ring[2, 2] = False
    assert len(mask_contours(ring)) == 2  # outer boundary and the hole


@pytest.mark.parametrize("name", ALL)
def test_dciodvfy_finds_no_error_in_the_rtstruct(build, name, require):
    warnings = dciodvfy(build(name).rt, require)
    # the only warning is about the synthetic series' patient name, which the structure set copies
    assert all("Patient's Name" in w for w in warnings), warnings
