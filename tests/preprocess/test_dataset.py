"""orbitseg preprocess over a dataset: outputs, manifest, resume, refusals by name."""

import json

import nibabel as nib
import numpy as np
import pytest

from orbitseg.cli import main
from orbitseg.errors import InputError
from orbitseg.io.read import read_label, read_scan
from orbitseg.preprocess.dataset import preprocess_dataset
from orbitseg.preprocess.pipeline import PreprocessConfig
from orbitseg.synth import make_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort") / "ds"
    make_cohort(root, patients=2, seed=1, small=True, workers=1, followup_fraction=0.0)
    return root


def test_outputs_and_manifest(cohort, tmp_path):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(cohort, ds)
    assert main(["preprocess", str(ds), "--size", "48", "--seq-len", "3"]) == 0
    man = json.loads((ds / "preprocessed" / "manifest.json").read_text())
    assert man["config"]["size"] == 48 and len(man["cases"]) == 2
    entry = man["cases"]["orbit_001"]
    assert entry["patient"] == "patient_001" and [v["side"] for v in entry["vois"]] == ["right", "left"]
    assert entry["labelled_voxels_outside_vois"] == 0
    v = entry["vois"][0]
    assert len(v["box"]["box_min"]) == 3 and v["n_slices"] > 0

    # VOI files overlay the original scan: same physical point, same HU
    scan = read_scan(ds / "imagesTr" / "orbit_001_0000.nii.gz")
    voi = read_scan(ds / "VOIs" / "orbit_001_right_0000.nii.gz")
    voi_lab = read_label(ds / "VOIs" / "orbit_001_right.nii.gz", reference=voi)
    k, j, i = (s // 2 for s in voi.shape)
    p = voi.geometry.index_to_physical([i, j, k])
    ii, jj, kk = np.round(scan.geometry.physical_to_index(p)).astype(int)
    assert voi.array[k, j, i] == scan.array[kk, jj, ii]
    assert (voi_lab.array > 0).any()

    # sequences (NIfTI) and the compact store agree; every slice is a centre once
    seq = nib.load(ds / "preprocessed" / "scans" / "orbit_001_right.nii.gz").get_fdata()
    masks = nib.load(ds / "preprocessed" / "masks" / "orbit_001_right.nii.gz").get_fdata()
    img = np.load(ds / "preprocessed" / "store" / "orbit_001_right_image.npy", mmap_mode="r")
    frac = np.load(ds / "preprocessed" / "store" / "orbit_001_right_fractions.npy", mmap_mode="r")
    n = v["n_slices"]
    assert seq.shape == (48, 48, 3, n) and masks.shape == (48, 48, n)
    assert img.shape == (n, 48, 48) and frac.shape == (n, 3, 48, 48) and frac.dtype == np.uint8
    np.testing.assert_allclose(seq[:, :, 1, 5].T, img[5], atol=1e-3)  # centre of sequence 5 is slice 5
    np.testing.assert_allclose(seq[:, :, 0, 0].T, img[0], atol=1e-3)  # edge replicated
    assert 0 <= img.min() and img.max() <= 1

    # resume: a second run skips done cases (files untouched)
    stamp = (ds / "preprocessed" / "store" / "orbit_001_right_image.npy").stat().st_mtime_ns
    preprocess_dataset(ds, PreprocessConfig(size=48), progress=False)
    assert (ds / "preprocessed" / "store" / "orbit_001_right_image.npy").stat().st_mtime_ns == stamp
    # another configuration is refused instead of mixing
    with pytest.raises(InputError, match=r"another configuration \(size 48 \(asked 64\)\)"):
        preprocess_dataset(ds, PreprocessConfig(size=64), progress=False)
    with pytest.raises(InputError, match=r"aspect stretch \(asked pad\)"):
        preprocess_dataset(ds, PreprocessConfig(size=48, aspect="pad"), progress=False)
    # a manifest from before the aspect option was padded: it matches pad, not the new default
    mpath = ds / "preprocessed" / "manifest.json"
    m = json.loads(mpath.read_text())
    del m["config"]["aspect"]
    mpath.write_text(json.dumps(m))
    preprocess_dataset(ds, PreprocessConfig(size=48, aspect="pad"), progress=False)
    with pytest.raises(InputError, match=r"aspect pad \(asked stretch\)"):
        preprocess_dataset(ds, PreprocessConfig(size=48), progress=False)


def test_mismatched_mask_is_refused_by_name(cohort, tmp_path):
    import shutil

    import SimpleITK as sitk

    ds = tmp_path / "ds"
    shutil.copytree(cohort, ds)
    lab = sitk.ReadImage(str(ds / "labelsTr" / "orbit_002.nii.gz"))
    lab.SetSpacing([s * 1.1 for s in lab.GetSpacing()])
    sitk.WriteImage(lab, str(ds / "labelsTr" / "orbit_002.nii.gz"))
    with pytest.raises(InputError, match=r"orbit_002\.nii\.gz.*spacing"):
        preprocess_dataset(ds, PreprocessConfig(size=32), progress=False)
    man = json.loads((ds / "preprocessed" / "manifest.json").read_text())
    assert list(man["cases"]) == ["orbit_001"]  # the good case is kept


def test_non_ct_scan_is_refused_by_name(cohort, tmp_path):
    import shutil

    import SimpleITK as sitk

    ds = tmp_path / "ds"
    shutil.copytree(cohort, ds)
    img = sitk.ReadImage(str(ds / "imagesTr" / "orbit_001_0000.nii.gz"))
    mr = sitk.Cast(sitk.Abs(img) * 0 + 300, sitk.sitkInt16)  # flat positive volume, no air: not CT
    sitk.WriteImage(mr, str(ds / "imagesTr" / "orbit_001_0000.nii.gz"))
    with pytest.raises(InputError, match=r"orbit_001_0000\.nii\.gz"):
        preprocess_dataset(ds, PreprocessConfig(size=32), progress=False)
