"""DICOM series: picking the CT series, sorting, rescaling, spacing checks."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pydicom
import pytest

from orbitseg.errors import AmbiguousSeriesError, ExistsError, InputError, NotCTError
from orbitseg.io.dicom import list_dicom_series, write_dicom_series
from orbitseg.io.read import read_scan


def _files(folder):
    return sorted(p for p in folder.rglob("*.dcm"))


def test_shuffled_file_names_give_same_volume(tmp_path, make_ct):
    vol = make_ct("oblique")
    src = write_dicom_series(vol, tmp_path / "src", series_uid="shuffle")
    files = _files(src)
    names = [f"x{n:03d}.dcm" for n in range(len(files))]
    random.Random(3).shuffle(names)
    dst = tmp_path / "shuffled"
    dst.mkdir()
    for f, name in zip(files, names):
        shutil.copy(f, dst / name)
    a, b = read_scan(src), read_scan(dst)
    np.testing.assert_array_equal(a.array, b.array)
    assert a.geometry.differences(b.geometry) == []
    # the sorted file list follows the slice positions, not the names
    z = [float(np.dot(pydicom.dcmread(f).ImagePositionPatient, vol.geometry.matrix[:, 2])) for f in b.meta["files"]]
    assert z == sorted(z)


def test_rescale_slope_intercept_applied(tmp_path, make_ct):
    vol = make_ct()
    folder = write_dicom_series(vol, tmp_path / "s")
    files = _files(folder)
    # rewrite half the slices with slope 2, intercept -1100 (stored = (HU + 1100) / 2)
    for f in files[::2]:
        ds = pydicom.dcmread(f)
        hu = ds.pixel_array.astype(np.int32) - 1024
        hu = hu - (hu % 2)  # even values only, so the new encoding is exact
        ds.PixelData = ((hu + 1100) // 2).astype(np.uint16).tobytes()
        ds.RescaleSlope, ds.RescaleIntercept = "2", "-1100"
        ds.save_as(f)
    expected = vol.array.astype(np.int32).copy()
    expected[::2] -= expected[::2] % 2
    back = read_scan(folder)
    np.testing.assert_array_equal(back.array, expected)
    assert back.array.min() < -900 and back.array.dtype == np.int16


def test_pixel_padding_becomes_air(tmp_path, make_ct):
    """Pixels marked by PixelPaddingValue (outside the reconstruction circle) are air, not
    64511 HU; the rest of the slice is untouched."""
    from orbitseg.io.validate import check_ct

    vol = make_ct()
    folder = write_dicom_series(vol, tmp_path / "s")
    for f in _files(folder):
        ds = pydicom.dcmread(f)
        stored = ds.pixel_array.copy()
        stored[:2, :3] = 65535  # corner padding; with intercept -1024 it would read as 64511 HU
        ds.PixelData = stored.astype(np.uint16).tobytes()
        ds.add_new(0x00280120, "US", 65535)  # PixelPaddingValue
        ds.save_as(f)
    back = read_scan(folder)
    check_ct(back)  # would refuse 64511 HU
    assert (back.array[:, :2, :3] == -1000).all()
    np.testing.assert_array_equal(back.array[:, 2:, :], vol.array[:, 2:, :])
    assert back.meta["padding_voxels_set_to_air"] == 6 * vol.shape[0]


def test_two_ct_series_are_ambiguous_until_picked(tmp_path, make_ct):
    a = write_dicom_series(make_ct(), tmp_path / "a", series_uid="series-one", series_description="first")
    b = write_dicom_series(make_ct(seed=1), tmp_path / "b", series_uid="series-two", series_description="second")
    both = tmp_path / "both"
    both.mkdir()
    for src, tag in ((a, "a"), (b, "b")):
        for f in _files(src):
            shutil.copy(f, both / f"{tag}_{f.name}")
    uids = {s["description"]: s["uid"] for s in list_dicom_series(both)}
    assert set(uids) == {"first", "second"}
    with pytest.raises(AmbiguousSeriesError) as err:
        read_scan(both)
    msg = str(err.value)
    assert "both" in msg and uids["first"] in msg and uids["second"] in msg and "CT" in msg
    assert {s["uid"] for s in err.value.series} == set(uids.values())
    assert all(s["n_files"] == 8 for s in err.value.series)
    picked = read_scan(both, series_uid=uids["second"])
    np.testing.assert_array_equal(picked.array, make_ct(seed=1).array)
    assert picked.meta["series_uid"] == uids["second"]
    with pytest.raises(InputError, match="no series with uid 1.2.3"):
        read_scan(both, series_uid="1.2.3")


def test_missing_slice_is_an_error_naming_folder(tmp_path, make_ct):
    folder = write_dicom_series(make_ct(), tmp_path / "gappy")
    _files(folder)[3].unlink()
    with pytest.raises(InputError, match=r"gappy.*1 missing slice"):
        read_scan(folder)


def test_uneven_spacing_is_resampled_not_refused(tmp_path, make_ct):
    """A last slice 0.4 mm off the series' 2 mm spacing (once refused as irregular) is read: resampled onto
    the regular 2 mm grid, the slices before it unchanged, and the resampling recorded."""
    vol = make_ct()
    folder = write_dicom_series(vol, tmp_path / "irregular")
    f = _files(folder)[-1]
    ds = pydicom.dcmread(f)
    ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], float(ds.ImagePositionPatient[2]) + 0.4]
    ds.save_as(f)
    back = read_scan(folder)
    assert back.shape == vol.shape and back.spacing == pytest.approx(vol.spacing)
    np.testing.assert_array_equal(back.array[:-1], vol.array[:-1])
    assert back.meta["resampled"]["reason"] == "uneven slice spacing"
    assert back.meta["resampled"]["tilt_deg"] == 0
    assert len(back.meta["source_geometry"]["positions"]) == vol.shape[0]


def test_duplicate_slice_is_an_error(tmp_path, make_ct):
    folder = write_dicom_series(make_ct(), tmp_path / "dup")
    f = _files(folder)[2]
    ds = pydicom.dcmread(f)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(folder / "copy.dcm")
    with pytest.raises(InputError, match="share position"):
        read_scan(folder)


def test_localizer_report_and_dicomdir_ignored_nested_folder(tmp_path, make_ct):
    vol = make_ct()
    top = tmp_path / "study"
    folder = write_dicom_series(vol, top / "nested" / "CT", series_uid="ct-series")
    f0 = _files(folder)[0]
    # a localizer in the same series, different orientation and position
    ds = pydicom.dcmread(f0)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.ImagePositionPatient = [0, 0, 500]
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(folder / "scout.dcm")
    # a structured report in its own series, and a DICOMDIR and a text file
    sr = pydicom.dcmread(f0, stop_before_pixels=True)
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    sr.file_meta.MediaStorageSOPClassUID = sr.SOPClassUID
    sr.Modality = "SR"
    sr.SeriesInstanceUID = pydicom.uid.generate_uid()
    for tag in ("Rows", "Columns", "ImagePositionPatient", "ImageOrientationPatient"):
        delattr(sr, tag)
    sr.save_as(top / "report.dcm")
    # a dose screen: secondary capture with modality CT, in a series of its own
    sc = pydicom.dcmread(f0)
    sc.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    sc.file_meta.MediaStorageSOPClassUID = sc.SOPClassUID
    sc.SeriesInstanceUID = pydicom.uid.generate_uid()
    sc.save_as(top / "dose.dcm")
    (top / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"junk")
    (top / "notes.txt").write_text("scanned on tuesday")
    back = read_scan(top)
    np.testing.assert_array_equal(back.array, vol.array)
    assert "scout.dcm" not in " ".join(back.meta["files"])
    series = {(s["modality"], s["n_images"] > 0): s for s in list_dicom_series(top)}
    assert len(series) == 3
    assert series["CT", True]["n_files"] == 9 and series["CT", True]["n_images"] == 8
    assert series["CT", False]["n_files"] == 1  # the secondary capture
    assert series["SR", False]["n_files"] == 1
    np.testing.assert_array_equal(read_scan(top / "DICOMDIR").array, vol.array)


def test_single_file_reads_its_series(tmp_path, make_ct):
    vol = make_ct()
    folder = write_dicom_series(vol, tmp_path / "s")
    back = read_scan(_files(folder)[4])
    np.testing.assert_array_equal(back.array, vol.array)


def test_mr_series_is_not_ct(tmp_path, make_ct):
    vol = make_ct()
    folder = write_dicom_series(vol, tmp_path / "mr")
    for f in _files(folder):
        ds = pydicom.dcmread(f)
        ds.Modality = "MR"
        ds.save_as(f)
    with pytest.raises(NotCTError, match="no CT series"):
        read_scan(folder)


def test_empty_folder_and_single_slice(tmp_path, make_ct):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty.*no DICOM files"):
        read_scan(tmp_path / "empty")
    folder = write_dicom_series(make_ct(), tmp_path / "one")
    for f in _files(folder)[1:]:
        f.unlink()
    with pytest.raises(InputError, match="single slice"):
        read_scan(folder)


def test_written_headers(tmp_path, make_ct):
    vol = make_ct("oblique")
    folder = write_dicom_series(vol, tmp_path / "s", patient_id="P7", series_description="orbit")
    g = vol.geometry
    files = _files(folder)
    assert len(files) == vol.shape[0]
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.Modality == "CT"
        assert ds.PatientID == "P7" and ds.SeriesDescription == "orbit"
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], g.index_to_physical([0, 0, k]), atol=1e-4)
        np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], g.matrix[:, :2].T.ravel(), atol=1e-6)
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [g.spacing[1], g.spacing[0]])
        assert float(ds.SliceThickness) == pytest.approx(g.spacing[2])
        assert float(ds.RescaleSlope) == 1 and float(ds.RescaleIntercept) == -1024
        hu = ds.pixel_array.astype(np.int32) * 1 - 1024
        np.testing.assert_array_equal(hu, vol.array[k])


def test_deterministic_uids_and_no_overwrite(tmp_path, make_ct):
    vol = make_ct()
    a = write_dicom_series(vol, tmp_path / "a", series_uid="seed-x")
    b = write_dicom_series(vol, tmp_path / "b", series_uid="seed-x")
    assert [f.read_bytes() for f in _files(a)] == [f.read_bytes() for f in _files(b)]
    c = write_dicom_series(vol, tmp_path / "c", series_uid="1.2.826.0.1.3680043.8.498.1")
    assert pydicom.dcmread(_files(c)[0]).SeriesInstanceUID == "1.2.826.0.1.3680043.8.498.1"
    with pytest.raises(ExistsError):
        write_dicom_series(vol, a)
    write_dicom_series(make_ct(seed=5), a, overwrite=True)
    assert len(list(tmp_path.iterdir())) == 3  # no temporary folder left
