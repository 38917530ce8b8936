"""DICOM-SEG read as a label volume everywhere labels are read (issue 22): ``read_label`` (with the
scan, or on the grid of its own frames), ``orbitseg import`` (pairing ``CASE.seg.dcm``, ``CASE_seg.dcm``,
``labels/CASE.dcm``), ``orbitseg evaluate`` (SEG against NIfTI, NIfTI against SEG, SEG against SEG)
and ``orbitseg check``.  The SEGs are written by orbitseg's writer from the truth labels of a
synthetic patient written as a DICOM series (tests/dicom_cases.py), so every comparison is exact."""

from __future__ import annotations

import functools
import shutil

import numpy as np
import pytest

from orbitseg.cli import main
from orbitseg.errors import InputError
from orbitseg.evaluate.folders import evaluate_folders, list_label_files
from orbitseg.io.dataset import check_dataset, find_source_cases, import_dataset
from orbitseg.io.dicomseg import frames_geometry, write_dicom_seg
from orbitseg.io.read import read_label
from orbitseg.io.write import write_label, write_scan

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:highdicom")


@pytest.fixture(scope="module")
def seg_of(series_cases, tmp_path_factory):
    """``seg_of(name)`` -> (series folder, scan, truth on the scan's grid, SEG of the truth)."""
    root = tmp_path_factory.mktemp("seg_as_labels")

    @functools.cache
    def make(name: str):
        _, folder, scan, _, truth = series_cases(name)
        return folder, scan, truth, write_dicom_seg(truth, folder, root / f"{name}.seg.dcm")

    return make


def test_read_label_places_a_seg_on_its_scan_and_on_its_own_frames(seg_of):
    folder, scan, truth, seg = seg_of("oblique")
    on_scan = read_label(seg, reference=scan)
    assert on_scan.meta["format"] == "dicom-seg"
    assert on_scan.geometry.differences(scan.geometry) == []
    np.testing.assert_array_equal(on_scan.array, truth.array)
    # without the scan: the series' grid cropped to the slices holding a structure
    own = read_label(seg)
    g, sg = own.geometry, scan.geometry
    assert g.size[:2] == sg.size[:2] and g.size[2] < sg.size[2]
    np.testing.assert_allclose(g.spacing, sg.spacing, rtol=1e-6)
    np.testing.assert_allclose(g.matrix, sg.matrix, atol=1e-6)
    k0 = int(round(sg.physical_to_index(np.asarray(g.origin))[2]))
    np.testing.assert_array_equal(own.array, truth.array[k0:k0 + g.size[2]])
    assert not truth.array[:k0].any() and not truth.array[k0 + g.size[2]:].any()
    # a DICOM-SEG is recognised by its content, whatever its name
    renamed = seg.parent / "export_0001"
    shutil.copy(seg, renamed)
    np.testing.assert_array_equal(read_label(renamed, reference=scan).array, truth.array)


def test_import_pairs_seg_files_and_evaluate_scores_them_dice_one(seg_of, tmp_path, capsys):
    folder, scan, truth, seg = seg_of("identity")
    src = tmp_path / "src"
    shutil.copytree(folder, src / "images" / "p1")
    shutil.copytree(folder, src / "images" / "p2")
    (src / "labels").mkdir()
    shutil.copy(seg, src / "labels" / "p1.seg.dcm")
    shutil.copytree(folder, src / "labels" / "p2")  # a PACS export: the SEG in a folder of its own
    for f in (src / "labels" / "p2").iterdir():
        f.unlink()
    shutil.copy(seg, src / "labels" / "p2" / "1.2.3.dcm")
    cases = {c.case_id: c.label.name for c in find_source_cases(src)}
    assert cases == {"p1": "p1.seg.dcm", "p2": "1.2.3.dcm"}
    ds = tmp_path / "ds"
    assert main(["import", str(src), str(ds)]) == 0
    for case in ("p1", "p2"):
        np.testing.assert_array_equal(read_label(ds / "labelsTr" / f"{case}.nii.gz", reference=scan).array,
                                      truth.array)

    # the SEG scored against the NIfTI truth, the other way round, and against itself
    segs = tmp_path / "segs"
    segs.mkdir()
    shutil.copy(seg, segs / "p1.seg.dcm")
    shutil.copy(seg, segs / "p2_0000.dcm")
    (segs / "p2.rtstruct.dcm").write_bytes(b"")  # not a SEG: ignored (an RTSTRUCT written beside it)
    assert sorted(list_label_files(segs)) == ["p1", "p2"]
    for pred, ref in ((segs, ds / "labelsTr"), (ds / "labelsTr", segs), (segs, segs)):
        rows, _ = evaluate_folders(pred, ref, None, surface=False)
        assert [r["case"] for r in rows] == ["p1", "p2"]
        for r in rows:
            assert [r[f"dice_{k}"] for k in ("all", "eyeball", "muscles", "nerve")] == [1.0] * 4, r


def test_a_flat_folder_pairs_case_seg_dcm_and_check_reads_a_seg(seg_of, tmp_path):
    folder, scan, truth, seg = seg_of("identity")
    src = tmp_path / "flat"
    shutil.copytree(folder, src / "p1")
    shutil.copy(seg, src / "p1_seg.dcm")
    shutil.copy(folder / sorted(f.name for f in folder.iterdir())[0], src / "loose_slice.dcm")  # a CT slice: no label
    cases = find_source_cases(src)
    assert [(c.case_id, c.label.name) for c in cases] == [("p1", "p1_seg.dcm")]

    ds = tmp_path / "ds"
    import_dataset(src, ds, progress=False)
    (ds / "labelsTr" / "p1.nii.gz").unlink()
    shutil.copy(seg, ds / "labelsTr" / "p1.seg.dcm")
    [rep] = check_dataset(ds, progress=False)
    expected = np.bincount(truth.array.ravel(), minlength=4)[1:] * scan.geometry.voxel_volume_ml
    np.testing.assert_allclose(list(rep.volumes_ml.values()), expected, rtol=1e-6)  # NIfTI spacing is float32
    assert not rep.usable and "p1.seg.dcm was checked instead" in rep.problems[0]


def test_a_seg_of_another_series_or_grid_is_refused_naming_the_file(seg_of, tmp_path, capsys):
    folder, scan, truth, _ = seg_of("identity")
    _, _, _, other_seg = seg_of("oblique")
    src = tmp_path / "src"
    shutil.copytree(folder, src / "images" / "p1")
    (src / "labels").mkdir()
    shutil.copy(other_seg, src / "labels" / "p1.seg.dcm")
    assert main(["import", str(src), str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert "p1.seg.dcm" in err and "refers to series" in err, err
    assert not (tmp_path / "ds").exists()

    # against a NIfTI truth on an unrelated grid (no series to compare): the frames are off its slices
    truth_dir, pred_dir = tmp_path / "truth", tmp_path / "pred"
    write_label(truth, truth_dir / "p1.nii.gz")
    pred_dir.mkdir()
    shutil.copy(other_seg, pred_dir / "p1.seg.dcm")
    with pytest.raises(InputError, match="not on a slice of the reference scan") as e:
        evaluate_folders(pred_dir, truth_dir, None, surface=False)
    assert "p1.seg.dcm" in str(e.value)
    # two SEGs of different series
    shutil.copy(seg_of("identity")[3], truth_dir / "p1.seg.dcm")
    (truth_dir / "p1.nii.gz").unlink()
    with pytest.raises(InputError, match="segment different scans") as e:
        evaluate_folders(pred_dir, truth_dir, None, surface=False)
    assert "p1.seg.dcm" in str(e.value)
    with pytest.raises(InputError, match="not a DICOM Segmentation"):
        frames_geometry(folder / sorted(f.name for f in folder.iterdir())[0])


def test_a_nifti_scan_takes_a_seg_on_its_grid(seg_of, tmp_path):
    """A scan imported from NIfTI has no series UID: the SEG is placed by its frames' positions."""
    folder, scan, truth, seg = seg_of("flip_all")
    src = tmp_path / "src"
    write_scan(scan, src / "p1.nii.gz")
    shutil.copy(seg, src / "p1.seg.dcm")
    import_dataset(src, tmp_path / "ds", progress=False)
    np.testing.assert_array_equal(read_label(tmp_path / "ds" / "labelsTr" / "p1.nii.gz").array, truth.array)


def test_frames_off_one_stack_of_planes_are_refused_without_a_scan(seg_of, tmp_path):
    """A SEG (from another tool) whose frames do not lie on one stack of parallel planes a slice apart has no
    grid of its own: read without its scan it is refused, naming the file, rather than guessed."""
    import pydicom

    _, scan, _, seg = seg_of("identity")
    ds = pydicom.dcmread(seg)
    normal = scan.geometry.matrix[:, 2]
    for name, shift in (("half_slice", 0.5 * scan.geometry.spacing[2] * normal),
                        ("sideways", 0.5 * scan.geometry.spacing[0] * scan.geometry.matrix[:, 0])):
        bad = ds.copy()
        pos = bad.PerFrameFunctionalGroupsSequence[-1].PlanePositionSequence[0]
        pos.ImagePositionPatient = [f"{float(v) + d:.6f}" for v, d in zip(pos.ImagePositionPatient, shift)]
        path = tmp_path / f"{name}.seg.dcm"
        bad.save_as(path, enforce_file_format=True)
        with pytest.raises(InputError, match="is not on the stack of planes") as e:
            read_label(path)
        assert str(path) in str(e.value)


def test_a_cropped_seg_nrrd_is_imported_and_scored_either_way(seg_of, tmp_path):
    """3D Slicer saves a .seg.nrrd cropped to its segments' extent: import places it on the scan, evaluate on
    the other file's grid whichever folder it is in (Dice 1.0 against the same labels in NIfTI)."""
    from orbitseg.io.volume import Volume

    _, scan, truth, _ = seg_of("oblique")
    nz = np.flatnonzero(truth.array.any(axis=(1, 2)))
    k0, k1 = int(nz[0]), int(nz[-1]) + 1
    g = scan.geometry
    origin = g.index_to_physical(np.array([0.0, 0.0, k0]))
    cropped = Volume(truth.array[k0:k1], g.with_(size=(g.size[0], g.size[1], k1 - k0), origin=tuple(origin)))
    src = tmp_path / "flat"
    write_scan(scan, src / "p1.nii.gz")
    write_label(cropped, src / "p1.seg.nrrd")
    assert [c.label.name for c in find_source_cases(src)] == ["p1.seg.nrrd"]
    import_dataset(src, tmp_path / "ds", progress=False)
    np.testing.assert_array_equal(read_label(tmp_path / "ds" / "labelsTr" / "p1.nii.gz").array, truth.array)
    nifti, slicer = tmp_path / "nifti", tmp_path / "slicer"
    write_label(truth, nifti / "p1.nii.gz")
    write_label(cropped, slicer / "p1.seg.nrrd")
    for pred, ref in ((slicer, nifti), (nifti, slicer)):
        [row], _ = evaluate_folders(pred, ref, None, surface=False)
        assert row["dice_all"] == 1.0 and row["dice_nerve"] == 1.0
