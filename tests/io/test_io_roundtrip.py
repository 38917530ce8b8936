"""Every format keeps geometry and values, on every kind of grid."""

from __future__ import annotations

import numpy as np
import pytest

from orbitseg.io.dicom import write_dicom_series
from orbitseg.io.read import read_label, read_scan
from orbitseg.io.write import write_label, write_scan

SCAN_ENDINGS = [".nii.gz", ".nii", ".nrrd", ".mha"]
LABEL_ENDINGS = [".nii.gz", ".nii", ".nrrd", ".seg.nrrd"]


def _same_grid(a, b):
    assert a.differences(b) == [], a.differences(b)
    # tighter than Geometry's tolerances: the numbers themselves survive
    np.testing.assert_allclose(a.spacing, b.spacing, rtol=1e-6)
    np.testing.assert_allclose(a.origin, b.origin, atol=1e-4)
    np.testing.assert_allclose(a.matrix, b.matrix, atol=1e-6)


@pytest.mark.parametrize("ending", SCAN_ENDINGS)
def test_scan_round_trip(tmp_path, make_ct, direction, ending):
    vol = make_ct(direction)
    path = write_scan(vol, tmp_path / f"ct{ending}")
    back = read_scan(path)
    _same_grid(vol.geometry, back.geometry)
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.meta["format"] in ("nifti", "nrrd", "metaimage")
    assert back.path == path


def test_float_scan_stays_float(tmp_path, make_ct):
    vol = make_ct()
    vol.array = vol.array.astype(np.float32) + 0.25
    back = read_scan(write_scan(vol, tmp_path / "f.nrrd"))
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, vol.array)


def test_integral_float_scan_becomes_int16(tmp_path, make_ct):
    vol = make_ct()
    vol.array = vol.array.astype(np.float64)
    back = read_scan(write_scan(vol, tmp_path / "f.mha"))
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, vol.array)


@pytest.mark.parametrize("ending", LABEL_ENDINGS)
def test_label_round_trip(tmp_path, make_ct, make_labels, direction, ending):
    ct = make_ct(direction)
    lab = make_labels(ct.shape)
    path = write_label(lab, tmp_path / f"lab{ending}", reference=ct)
    back = read_label(path, reference=ct)
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, lab)
    back_free = read_label(path)  # without reference: the file's own grid
    _same_grid(ct.geometry, back_free.geometry)
    np.testing.assert_array_equal(back_free.array, lab)


def test_label_volume_written_on_reference_grid(tmp_path, make_ct, make_labels):
    ct = make_ct("oblique")
    # a label Volume whose grid equals the scan's up to float noise gets the scan's exact numbers
    from orbitseg.io.volume import Volume

    noisy = ct.geometry.with_(origin=tuple(np.asarray(ct.geometry.origin) + 1e-7))
    path = write_label(Volume(make_labels(ct.shape), noisy), tmp_path / "l.nrrd", reference=ct)
    _same_grid(ct.geometry, read_label(path).geometry)


def test_dicom_round_trip(tmp_path, make_ct, direction):
    vol = make_ct(direction)
    folder = write_dicom_series(vol, tmp_path / "series", series_uid="round-trip")
    back = read_scan(folder)
    assert back.array.dtype == np.int16
    g, h = vol.geometry, back.geometry
    if np.linalg.det(g.matrix) > 0:
        _same_grid(g, h)
        np.testing.assert_array_equal(back.array, vol.array)
    else:
        # DICOM has no handedness: k is read along row x column cosines, so a
        # left-handed grid comes back with its slices reversed - same voxels,
        # same physical points.
        np.testing.assert_array_equal(back.array, vol.array[::-1])
        last = g.index_to_physical([0, 0, g.size[2] - 1])
        np.testing.assert_allclose(h.origin, last, atol=1e-4)
        np.testing.assert_allclose(h.matrix[:, :2], g.matrix[:, :2], atol=1e-6)
        np.testing.assert_allclose(h.matrix[:, 2], -g.matrix[:, 2], atol=1e-6)
        np.testing.assert_allclose(h.spacing, g.spacing, rtol=1e-6)
    # every voxel: same value at the same physical point
    ijk = np.array([[1, 2, 3], [5, 7, 0], [15, 13, 7]])
    for i, j, k in ijk:
        p = g.index_to_physical([i, j, k])
        i2, j2, k2 = np.round(h.physical_to_index(p)).astype(int)
        assert back.array[k2, j2, i2] == vol.array[k, j, i]
    assert back.meta["format"] == "dicom"
    assert back.meta["patient_id"] == "anon"
    assert len(back.meta["files"]) == vol.shape[0]


def test_dicom_float_values_round_trip(tmp_path, make_ct):
    vol = make_ct()
    vol.array = vol.array.astype(np.float32) * 1.5 + 0.3
    back = read_scan(write_dicom_series(vol, tmp_path / "s"))
    assert back.array.dtype == np.float32
    np.testing.assert_allclose(back.array, vol.array, atol=0.05)


def test_dicom_values_below_minus_1024(tmp_path, make_ct):
    vol = make_ct()
    vol.array[:, 0, :] = -3024  # padding outside the field of view: read as air (issue 19)
    vol.array[:, 1, :] = -1024  # the darkest air some scanners write: kept
    back = read_scan(write_dicom_series(vol, tmp_path / "s"))
    np.testing.assert_array_equal(back.array[:, 1:], vol.array[:, 1:])
    assert (back.array[:, 0, :] == -1000).all()
    assert back.meta["out_of_field_voxels_set_to_air"] == vol.shape[0] * vol.shape[2]


@pytest.mark.parametrize("ending", [".mhd", ".nhdr"])
def test_detached_header_formats_are_read(tmp_path, make_ct, ending):
    import SimpleITK as sitk

    from orbitseg.errors import InputError

    vol = make_ct("oblique")
    path = tmp_path / f"ct{ending}"
    sitk.WriteImage(vol.to_sitk(), str(path))
    back = read_scan(path)
    _same_grid(vol.geometry, back.geometry)
    np.testing.assert_array_equal(back.array, vol.array)
    (tmp_path / "ct.raw").unlink()  # the data file goes missing
    with pytest.raises(InputError, match=f"ct{ending}"):
        read_scan(path)


def test_nifti_with_singleton_fourth_axis_is_3d(tmp_path, make_ct):
    import nibabel as nib

    from orbitseg.errors import InputError

    vol = make_ct()
    data = np.transpose(vol.array, (2, 1, 0))
    nib.Nifti1Image(data[..., None], np.diag([-0.6, -0.5, 1.5, 1])).to_filename(str(tmp_path / "t1.nii.gz"))
    back = read_scan(tmp_path / "t1.nii.gz")
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.geometry.spacing, (0.6, 0.5, 1.5), rtol=1e-6)
    nib.Nifti1Image(np.stack([data, data], -1), np.eye(4)).to_filename(str(tmp_path / "t2.nii.gz"))
    with pytest.raises(InputError, match="t2.nii.gz.*4D"):
        read_scan(tmp_path / "t2.nii.gz")
