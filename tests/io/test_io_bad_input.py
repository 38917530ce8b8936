"""Bad input gives a clear InputError naming the file, and nothing is written."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import SimpleITK as sitk

from orbitseg.errors import ExistsError, GeometryMismatchError, InputError, NotCTError
from orbitseg.io import write as write_mod
from orbitseg.io.read import check_scan_header, read_label, read_scan
from orbitseg.io.validate import EmptyLabelWarning, check_ct, check_label_values, check_volume_3d
from orbitseg.io.volume import Volume
from orbitseg.io.write import write_label, write_scan


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_truncated_file(tmp_path, make_ct, ending):
    good = write_scan(make_ct(shape=(12, 20, 24)), tmp_path / f"good{ending}")
    data = good.read_bytes()
    bad = tmp_path / f"half{ending}"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=f"half{ending}.*(truncated|corrupt)"):
        read_scan(bad)
    with pytest.raises(InputError, match=f"half{ending}"):
        read_label(bad)
    check_scan_header(good)  # the header-only check used for case lists passes the good file
    if ending in (".nii.gz", ".nii"):  # and catches a truncated NIfTI without reading its voxels
        with pytest.raises(InputError, match=f"half{ending}.*truncated"):
            check_scan_header(bad)


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("random.nrrd", os.urandom(2000), "not a readable nrrd"),
        ("random.nii.gz", os.urandom(2000), "(?i)not a readable nifti"),
        ("notes.nii", b"patient scanned on tuesday\n" * 20, "(?i)not a readable nifti"),
        ("notes.mha", b"hello\n", "not a readable metaimage"),
        ("empty.nrrd", b"", "empty"),
        ("scan.png", b"\x89PNG\r\n\x1a\n", "unknown file type"),
    ],
    ids=["random-nrrd", "random-niigz", "text-nii", "text-mha", "empty-nrrd", "png-ending"],
)
def test_not_an_image(tmp_path, name, content, problem):
    p = tmp_path / name
    p.write_bytes(content)
    pattern = f"{name}.*{problem}" if not problem.startswith("(?i)") else f"(?i){name}.*{problem[4:]}"
    with pytest.raises(InputError, match=pattern):
        read_scan(p)
    with pytest.raises(InputError, match=pattern):
        check_scan_header(p)
    assert _listing(tmp_path) == [name]


def test_png_renamed_to_nifti(tmp_path):
    png = tmp_path / "slice.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((10, 12), np.uint8)), str(png))
    fake = tmp_path / "slice.nii.gz"
    png.rename(fake)
    with pytest.raises(InputError, match="slice.nii.gz.*not a readable"):
        read_scan(fake)


def test_2d_image_and_single_slice(tmp_path):
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((10, 12), -1000, np.int16)), str(flat))
    with pytest.raises(InputError, match="flat.nii.gz.*2D image"):
        read_scan(flat)
    one = tmp_path / "one.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((1, 10, 12), -1000, np.int16)), str(one))
    with pytest.raises(InputError, match="one.nrrd.*1 slice"):
        read_scan(one)
    with pytest.raises(InputError, match="2D"):
        check_volume_3d(np.zeros((4, 4)))


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="nowhere.nii.gz.*does not exist"):
        read_scan(tmp_path / "nowhere.nii.gz")
    with pytest.raises(InputError, match="nowhere.seg.nrrd.*does not exist"):
        read_label(tmp_path / "nowhere.seg.nrrd")


def test_mr_and_normalised_volumes_are_not_ct(tmp_path, make_ct):
    ct = make_ct()
    mr = Volume(np.random.default_rng(0).integers(0, 4000, ct.shape).astype(np.int16), ct.geometry)
    p = write_scan(mr, tmp_path / "mr.nii.gz")
    with pytest.raises(NotCTError, match="mr.nii.gz.*air"):
        read_scan(p)
    assert read_scan(p, check=False).array.max() > 1000  # check=False reads it anyway
    norm = Volume(np.random.default_rng(0).random(ct.shape).astype(np.float32), ct.geometry)
    with pytest.raises(NotCTError, match="norm.nrrd"):
        read_scan(write_scan(norm, tmp_path / "norm.nrrd"))
    wild = Volume(ct.array.astype(np.float32) * 20, ct.geometry)  # -20000 HU
    with pytest.raises(NotCTError, match="outside the Hounsfield range"):
        check_ct(wild, tmp_path / "wild.nii.gz")
    check_ct(ct)  # a real CT passes
    # CT numbers stored without their rescale (HU + 1024, as some exports write them): said what is missing
    raw = Volume((ct.array.astype(np.int32) + 1024).astype(np.uint16), ct.geometry)
    with pytest.raises(NotCTError, match=r"raw.nii.gz.*without the rescale to Hounsfield units.*subtract 1024"):
        read_scan(write_scan(raw, tmp_path / "raw.nii.gz"))
    with pytest.raises(NotCTError, match="is this an MR") as mr_error:
        read_scan(p)
    assert "rescale" not in str(mr_error.value)  # an MR's dark background is not taken for raw CT numbers


def test_label_bad_values(tmp_path, make_ct, make_labels):
    ct = make_ct()
    lab = make_labels(ct.shape).astype(np.int16)
    lab[0, 0, :2] = [7, -1]
    p = tmp_path / "lab.nii.gz"
    sitk.WriteImage(Volume(lab, ct.geometry).to_sitk(), str(p))
    with pytest.raises(InputError, match=r"lab.nii.gz.*values \[-1, 7\]"):
        read_label(p)
    half = make_labels(ct.shape).astype(np.float32)
    half[1, 1, 1] = 1.5
    q = tmp_path / "frac.nrrd"
    sitk.WriteImage(Volume(half, ct.geometry).to_sitk(), str(q))
    with pytest.raises(InputError, match=r"frac.nrrd.*non-integer values \[1.5\]"):
        read_label(q)
    # integral floats are fine
    r = tmp_path / "float.nrrd"
    sitk.WriteImage(Volume(make_labels(ct.shape).astype(np.float32), ct.geometry).to_sitk(), str(r))
    np.testing.assert_array_equal(read_label(r).array, make_labels(ct.shape))
    with pytest.raises(InputError, match="values"):
        check_label_values(np.array([0, 4]))


def test_label_geometry_mismatch(tmp_path, make_ct, make_labels):
    ct = make_ct()
    lab = make_labels(ct.shape)
    shifted = Volume(lab, ct.geometry.with_(origin=(0.0, 0.0, 0.0), spacing=(1.0, 0.5, 1.5)))
    p = write_label(shifted, tmp_path / "shifted.nii.gz")
    with pytest.raises(GeometryMismatchError, match="shifted.nii.gz") as err:
        read_label(p, reference=ct)
    msg = str(err.value)
    assert "origin" in msg and "spacing" in msg and "size" not in msg and "direction" not in msg
    flipped = make_ct("flipped")
    q = write_label(lab, tmp_path / "flip.nrrd", reference=flipped)
    with pytest.raises(GeometryMismatchError, match="direction"):
        read_label(q, reference=ct)


def test_empty_label_warns_for_view_and_fails_for_train(tmp_path, make_ct):
    ct = make_ct()
    p = write_label(np.zeros(ct.shape, np.uint8), tmp_path / "empty.nii.gz", reference=ct)
    with pytest.warns(EmptyLabelWarning, match="empty.nii.gz"):
        read_label(p, reference=ct)
    assert issubclass(EmptyLabelWarning, UserWarning)
    with pytest.raises(InputError, match="empty.nii.gz.*empty"):
        read_label(p, reference=ct, purpose="train")


def test_write_label_validates_before_writing(tmp_path, make_ct, make_labels):
    ct = make_ct()
    bad = make_labels(ct.shape)
    bad[0, 0, 0] = 9
    with pytest.raises(InputError, match=r"bad.nii.gz.*\[9\]"):
        write_label(bad, tmp_path / "bad.nii.gz", reference=ct)
    with pytest.raises(InputError, match="shape"):
        write_label(make_labels((8, 14, 15)), tmp_path / "shape.nii.gz", reference=ct)
    other = Volume(make_labels(ct.shape), make_ct("oblique").geometry)
    with pytest.raises(GeometryMismatchError, match="direction"):
        write_label(other, tmp_path / "grid.nii.gz", reference=ct)
    with pytest.raises(InputError, match="reference"):
        write_label(make_labels(ct.shape), tmp_path / "noref.nii.gz")
    with pytest.raises(InputError, match="use one of"):
        write_label(make_labels(ct.shape), tmp_path / "lab.png", reference=ct)
    assert _listing(tmp_path) == []


def test_write_label_refuses_to_overwrite(tmp_path, make_ct, make_labels):
    ct = make_ct()
    p = write_label(make_labels(ct.shape), tmp_path / "lab.nii.gz", reference=ct)
    before = p.read_bytes()
    with pytest.raises(ExistsError, match="lab.nii.gz"):
        write_label(np.zeros(ct.shape, np.uint8), p, reference=ct)
    assert p.read_bytes() == before
    with pytest.raises(ExistsError):
        write_scan(ct, write_scan(ct, tmp_path / "ct.nii.gz"))
    write_label(np.zeros(ct.shape, np.uint8), p, reference=ct, overwrite=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyLabelWarning)
        assert not read_label(p).array.any()


@pytest.mark.parametrize("ending", [".nii.gz", ".seg.nrrd"])
def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch, make_ct, make_labels, ending):
    ct = make_ct()
    import nrrd

    def half_then_fail(*args, **kwargs):
        target = next(str(a) for a in args if isinstance(a, (str, os.PathLike)) and ".tmp" in str(a))
        with open(target, "wb") as fh:
            fh.write(b"\x1f\x8b half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", half_then_fail)
    monkeypatch.setattr(nrrd, "write", half_then_fail)
    with pytest.raises((RuntimeError, InputError), match="disk full"):
        write_label(make_labels(ct.shape), tmp_path / f"lab{ending}", reference=ct)
    with pytest.raises((RuntimeError, InputError), match="disk full"):
        write_scan(ct, tmp_path / "ct.nii.gz")
    assert _listing(tmp_path) == []
    # an existing file is left untouched by a failed overwrite
    monkeypatch.undo()
    p = write_label(make_labels(ct.shape), tmp_path / f"keep{ending}", reference=ct)
    before = p.read_bytes()
    monkeypatch.setattr(sitk, "WriteImage", half_then_fail)
    monkeypatch.setattr(nrrd, "write", half_then_fail)
    with pytest.raises((RuntimeError, InputError)):
        write_label(np.zeros(ct.shape, np.uint8), p, reference=ct, overwrite=True)
    assert p.read_bytes() == before and _listing(tmp_path) == [p.name]


def test_write_scan_refuses_two_file_formats(tmp_path, make_ct):
    with pytest.raises(InputError, match="use one of"):
        write_scan(make_ct(), tmp_path / "ct.mhd")
    assert list(write_mod.SCAN_WRITE_ENDINGS) == [".nii.gz", ".nii", ".nrrd", ".mha"]


def test_a_nifti_whose_sform_is_sheared_or_disagrees_with_its_qform_is_refused(tmp_path, make_ct):
    """A CT with gantry tilt converted without correcting it carries a sheared sform: ITK refuses it obscurely
    when it is alone and silently reads the qform beside it, so labels written on ITK's grid would misalign in
    tools that follow the sform. Both refused naming the problem; an ordinary file (sform = qform) reads, and so
    does one whose orthogonal sform differs from its qform (ITK then reads the sform, as most tools do)."""
    import nibabel as nib

    ok = write_scan(make_ct(), tmp_path / "ok.nii.gz")
    read_scan(ok)
    img = nib.load(str(ok))
    data, straight = np.asarray(img.dataobj), img.affine
    sheared = straight.copy()
    sheared[1, 2] = sheared[2, 2] * np.tan(np.radians(15))  # each slice shifted along y: a 15-degree tilt
    for name, sform, qform in (("alone", sheared, None), ("with_qform", sheared, straight)):
        n = nib.Nifti1Image(data, sform)
        n.set_sform(sform, code=1)
        n.set_qform(qform, code=1 if qform is not None else 0)
        nib.save(n, str(tmp_path / f"{name}.nii.gz"))
        with pytest.raises(InputError, match=rf"{name}.nii.gz.*sheared sform.*15.0 degrees.*DICOM series"):
            read_scan(tmp_path / f"{name}.nii.gz")
    moved = straight.copy()
    moved[:3, 3] += [3.0, 0.0, 0.0]  # both orthogonal, 3 mm apart
    n = nib.Nifti1Image(data, moved)
    n.set_sform(moved, code=1)
    n.set_qform(straight, code=1)
    nib.save(n, str(tmp_path / "apart.nii.gz"))
    # an orthogonal sform is what ITK reads (and most tools): read, on the sform's grid (LPS x = -RAS x)
    assert read_scan(tmp_path / "apart.nii.gz").geometry.origin[0] == pytest.approx(-moved[0, 3])
    # an sform sheared by a hair (0.05 degrees, under the refusal) makes ITK fall back to the qform: where the two
    # disagree, refused
    slight = moved.copy()
    slight[1, 2] = slight[2, 2] * np.tan(np.radians(0.05))
    n = nib.Nifti1Image(data, slight)
    n.set_sform(slight, code=1)
    n.set_qform(straight, code=1)
    nib.save(n, str(tmp_path / "slight.nii.gz"))
    with pytest.raises(InputError, match=r"slight.nii.gz.*qform and an sform that disagree by up to 3.0 mm"):
        read_scan(tmp_path / "slight.nii.gz")
