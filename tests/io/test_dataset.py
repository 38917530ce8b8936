"""import and check: the nnU-Net layout, geometry kept, bad pairs flagged, nothing half-written."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from orbitseg.cli import main
from orbitseg.errors import ExistsError, InputError
from orbitseg.io.dataset import check_dataset, find_source_cases, import_dataset
from orbitseg.io.layout import list_cases
from orbitseg.io.read import read_label, read_scan
from orbitseg.io.volume import Geometry, Volume

FLIP = np.diag([-1.0, -1.0, 1.0])  # what NIfTI exporters from RAS arrays give


def ct_and_labels(geometry: Geometry, seed: int = 0) -> tuple[Volume, Volume]:
    """A tiny CT-like volume (air, soft tissue, bone) with a label blob."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = geometry.shape
    hu = np.full(geometry.shape, -1000, np.int16)
    hu[:, 2:-2, 2:-2] = 40 + rng.integers(-10, 10, (nz, ny - 4, nx - 4))
    hu[:, 2, 2:-2] = 900
    lab = np.zeros(geometry.shape, np.uint8)
    lab[1:-1, 4:7, 4:7] = 1
    lab[1:-1, 8, 5] = 2
    lab[2, 9, 5] = 3
    return Volume(hu, geometry), Volume(lab, geometry)


def _write(vol: Volume, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(vol.to_sitk(), str(path))


@pytest.fixture
def source(tmp_path):
    """SRC/images + SRC/labels in three formats and a patients.csv grouping two scans."""
    src = tmp_path / "src"
    geoms = {
        "a": (Geometry((14, 12, 5), (0.5, 0.5, 2.0), (0, 0, 0)), ".nrrd"),
        "b": (Geometry((14, 12, 5), (0.4, 0.4, 1.0), (5, -3, 7), FLIP), ".nii.gz"),
        "c": (Geometry((14, 12, 5), (0.6, 0.6, 3.0), (1, 2, 3), np.diag([1.0, 1.0, -1.0])), ".mha"),
    }
    for i, (name, (g, ending)) in enumerate(geoms.items()):
        scan, lab = ct_and_labels(g, seed=i)
        _write(scan, src / "images" / f"{name}{ending}")
        _write(lab, src / "labels" / f"{name}{ending}")
    (src / "patients.csv").write_text("case,patient\na,p1\nb,p1\nc,p2\n")
    return src


def test_import_writes_layout_with_geometry_and_patients(source, tmp_path):
    ds = tmp_path / "ds"
    assert import_dataset(source, ds, progress=False) == ["a", "b", "c"]
    info = json.loads((ds / "dataset.json").read_text())
    assert info["channel_names"] == {"0": "CT"}
    assert info["labels"] == {"background": 0, "eyeball": 1, "extraocular_muscles": 2, "optic_nerve": 3}
    assert info["numTraining"] == 3 and info["file_ending"] == ".nii.gz"
    assert info["patients"] == {"a": "p1", "b": "p1", "c": "p2"}
    for case in list_cases(ds):
        orig_scan = read_scan(next((source / "images").glob(f"{case.case_id}.*")))
        scan = read_scan(case.image)
        lab = read_label(case.label, reference=scan)
        assert scan.geometry.differences(orig_scan.geometry) == []
        np.testing.assert_array_equal(scan.array, orig_scan.array)
        # the eyeball blob lands on the same physical points as in the source
        src_lab = read_label(next((source / "labels").glob(f"{case.case_id}.*")))
        pts_src = orig_scan.geometry.index_to_physical(np.argwhere(src_lab.array == 1)[:, ::-1])
        pts_new = scan.geometry.index_to_physical(np.argwhere(lab.array == 1)[:, ::-1])
        np.testing.assert_allclose(np.sort(pts_src, axis=0), np.sort(pts_new, axis=0), atol=1e-3)


def test_flat_folder_pairs_labels_by_suffix(tmp_path):
    src = tmp_path / "flat"
    scan, lab = ct_and_labels(Geometry((14, 12, 5), (0.5, 0.5, 2.0), (0, 0, 0)))
    _write(scan, src / "p7.nii.gz")
    _write(lab, src / "p7_label.nii.gz")
    _write(scan, src / "unlabelled.mha")
    cases = {c.case_id: c for c in find_source_cases(src)}
    assert cases["p7"].label.name == "p7_label.nii.gz" and cases["unlabelled"].label is None
    ds = tmp_path / "ds"
    import_dataset(src, ds, progress=False)
    assert (ds / "imagesTr" / "p7_0000.nii.gz").exists() and (ds / "labelsTr" / "p7.nii.gz").exists()
    assert (ds / "imagesTs" / "unlabelled_0000.nii.gz").exists()
    assert json.loads((ds / "dataset.json").read_text())["numTraining"] == 1


def test_flat_folder_pairs_seg_and_mask_suffixes(tmp_path):
    """`case_seg.*` and `case_mask.*` next to their scans are labels of those scans (in any ending, any
    case of the suffix), not scans of their own; import writes them as the cases' labels."""
    src = tmp_path / "flat"
    geoms = {"a": Geometry((14, 12, 5), (0.5, 0.5, 2.0), (0, 0, 0)),
             "b": Geometry((14, 12, 5), (0.4, 0.4, 1.0), (5, -3, 7), FLIP),
             "c": Geometry((14, 12, 5), (0.6, 0.6, 3.0), (1, 2, 3))}
    pairs = {"a": ("a.nii.gz", "a_seg.nii.gz"), "b": ("b.nrrd", "b_mask.nrrd"), "c": ("c.mha", "c_Mask.nii.gz")}
    labels = {}
    for i, (case, (scan_name, label_name)) in enumerate(pairs.items()):
        scan, lab = ct_and_labels(geoms[case], seed=i)
        lab.array[0, 0, i] = 3  # each case's label differs from the others'
        labels[case] = lab.array
        _write(scan, src / scan_name)
        _write(lab, src / label_name)
    cases = {c.case_id: c for c in find_source_cases(src)}
    assert {k: (c.scan.name, c.label and c.label.name) for k, c in cases.items()} == pairs
    ds = tmp_path / "ds"
    assert import_dataset(src, ds, progress=False) == ["a", "b", "c"]
    info = json.loads((ds / "dataset.json").read_text())
    assert info["numTraining"] == 3 and not (ds / "imagesTs").exists()
    for case in list_cases(ds):
        lab = read_label(case.label, reference=read_scan(case.image))
        np.testing.assert_array_equal(lab.array, labels[case.case_id])


def test_import_refuses_bad_pair_and_writes_nothing(source, tmp_path):
    g = Geometry((14, 12, 5), (0.5, 0.5, 2.5), (0, 0, 0))  # spacing differs from scan "a"
    _, lab = ct_and_labels(g)
    _write(lab, source / "labels" / "a.nrrd")
    ds = tmp_path / "ds"
    with pytest.raises(InputError, match=r"a\.nrrd.*spacing"):
        import_dataset(source, ds, progress=False)
    assert not ds.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]  # no temporary folder left either


def test_import_refuses_non_ct(source, tmp_path):
    mr = Volume(np.random.default_rng(0).uniform(0, 3000, (5, 12, 14)).astype(np.float32),
                Geometry((14, 12, 5), (0.5, 0.5, 2.0), (0, 0, 0)))
    _write(mr, source / "images" / "a.nrrd")
    with pytest.raises(InputError, match=r"a\.nrrd"):
        import_dataset(source, tmp_path / "ds", progress=False)
    assert not (tmp_path / "ds").exists()


def test_import_never_overwrites_without_asking(source, tmp_path):
    ds = tmp_path / "ds"
    import_dataset(source, ds, progress=False)
    marker = ds / "labelsTr" / "a.nii.gz"
    before = marker.read_bytes()
    with pytest.raises(ExistsError):
        import_dataset(source, ds, progress=False)
    assert marker.read_bytes() == before
    import_dataset(source, ds, progress=False, overwrite=True)


@pytest.mark.parametrize("missing", ["nothing-here", "file"])
def test_import_missing_source(tmp_path, missing):
    src = tmp_path / missing
    if missing == "file":
        src.write_text("x")
    with pytest.raises(InputError, match=missing):
        find_source_cases(src)


def test_check_flags_broken_pairs(source, tmp_path, capsys):
    ds = tmp_path / "ds"
    import_dataset(source, ds, progress=False)
    reports = {r.case_id: r for r in check_dataset(ds, progress=False)}
    assert all(r.usable for r in reports.values())
    assert reports["a"].volumes_ml["eyeball"] == pytest.approx(3 * 3 * 3 * 0.5 * 0.5 * 2.0 / 1000)
    assert main(["check", str(ds)]) == 0

    # break pairs: wrong grid, empty label, missing label
    scan_b = read_scan(ds / "imagesTr" / "b_0000.nii.gz")
    bad = Volume(np.zeros((5, 12, 13), np.uint8), scan_b.geometry.with_(size=(13, 12, 5)))
    sitk.WriteImage(bad.to_sitk(), str(ds / "labelsTr" / "b.nii.gz"))
    scan_c = read_scan(ds / "imagesTr" / "c_0000.nii.gz")
    sitk.WriteImage(scan_c.like(np.zeros(scan_c.shape, np.uint8)).to_sitk(), str(ds / "labelsTr" / "c.nii.gz"))
    (ds / "labelsTr" / "a.nii.gz").unlink()
    reports = {r.case_id: r for r in check_dataset(ds, progress=False)}
    assert not reports["a"].usable and "missing" in reports["a"].problems[0]
    assert not reports["b"].usable and "size" in reports["b"].problems[0]
    assert not reports["c"].usable and "empty" in reports["c"].problems[0].lower()
    capsys.readouterr()
    assert main(["check", str(ds)]) == 1
    out = capsys.readouterr().out
    assert "UNUSABLE" in out and "b.nii.gz" in out and "0 usable, 3 unusable" in out


def test_check_missing_dataset_is_a_clear_error(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_add_a_dataset_under_a_prefix_keeps_both_and_their_patients(source, tmp_path):
    """Another site's dataset added to ours: its cases and patients prefixed, follow-up scans kept together,
    our cases untouched, a clash refused and a bad file adding nothing."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    import_dataset(source, ours, progress=False)
    import_dataset(source, theirs, progress=False)  # a dataset as a source: same case names, same patients
    before = {f.name: f.read_bytes() for f in (ours / "imagesTr").iterdir()}
    with pytest.raises(InputError, match=r"already holds case\(s\) a, b, c.*--prefix"):
        import_dataset(theirs, ours, add=True, progress=False)
    # their dataset as `orbitseg synth` records it: the import keeps what re-makes it (model.json's recreate)
    made = {"seed": 46, "generator_version": "1.0-clinical2", "variety": "clinical", "small": False,
            "cases": {"a": {"patient": "p1"}, "b": {"patient": "p1"}, "c": {"patient": "p2"}}}
    (theirs / "dataset.json").write_text(json.dumps({**json.loads((theirs / "dataset.json").read_text()),
                                                      "synthetic": made}))
    assert main(["import", str(theirs), str(ours), "--add", "--prefix", "site2_"]) == 0
    info = json.loads((ours / "dataset.json").read_text())
    assert info["imports"][0]["synthetic"] == {"seed": 46, "generator_version": "1.0-clinical2",
                                               "variety": "clinical", "small": False, "patients": 2}
    assert "synthetic" not in info  # ours was not made by the generator: the import says nothing else of it
    assert info["patients"] == {"a": "p1", "b": "p1", "c": "p2", "site2_a": "site2_p1", "site2_b": "site2_p1",
                                "site2_c": "site2_p2"}
    assert info["numTraining"] == 6 and info["imports"][0]["prefix"] == "site2_"
    assert {c.case_id: c.label is not None for c in list_cases(ours)} == {k: True for k in info["patients"]}
    for f in (ours / "imagesTr").iterdir():
        if f.name in before:
            assert f.read_bytes() == before[f.name]  # ours untouched
    added = read_scan(ours / "imagesTr" / "site2_b_0000.nii.gz")
    assert added.geometry.differences(read_scan(theirs / "imagesTr" / "b_0000.nii.gz").geometry) == []
    assert not [p for p in ours.iterdir() if p.name.startswith(".import-")]  # no temporary folder left
    # a source with one unreadable scan adds nothing at all
    bad = tmp_path / "bad"
    (bad / "images").mkdir(parents=True)
    for f in (source / "images").iterdir():
        (bad / "images" / f.name).write_bytes(f.read_bytes())
    (bad / "images" / "zz.nii.gz").write_bytes(b"not a scan")
    snapshot = sorted(p.relative_to(ours) for p in ours.rglob("*"))
    dataset_json = (ours / "dataset.json").read_text()
    with pytest.raises(InputError, match="zz.nii.gz"):
        import_dataset(bad, ours, add=True, prefix="site3_", progress=False)
    assert sorted(p.relative_to(ours) for p in ours.rglob("*")) == snapshot
    assert (ours / "dataset.json").read_text() == dataset_json
    with pytest.raises(InputError, match="prefix"):
        import_dataset(theirs, ours, add=True, prefix="a/b", progress=False)
