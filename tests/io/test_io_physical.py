"""A labelled voxel lands on the same physical point, checked with independent readers."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom

from orbitseg.io.dicom import write_dicom_series
from orbitseg.io.read import read_label, read_scan
from orbitseg.io.write import write_label, write_scan

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _mark(shape, ijk, value=3):
    a = np.zeros(shape, np.uint8)
    i, j, k = ijk
    a[k, j, i] = value
    return a


def test_label_on_flipped_nifti_scan(tmp_path, make_ct):
    ct = make_ct("flipped")  # as written by RAS-minded exporters
    scan = read_scan(write_scan(ct, tmp_path / "ct.nii.gz"))
    ijk = (3, 10, 5)
    point = scan.geometry.index_to_physical(ijk)
    path = write_label(_mark(scan.shape, ijk), tmp_path / "lab.nii.gz", reference=scan)
    back = read_label(path, reference=scan)
    k, j, i = np.argwhere(back.array == 3)[0]
    np.testing.assert_allclose(back.geometry.index_to_physical((i, j, k)), point, atol=1e-4)

    # nibabel, an independent reader: RAS affine == LPS affine with x, y negated
    img = nib.load(str(path))
    np.testing.assert_allclose(img.affine, LPS_TO_RAS @ scan.geometry.affine_lps, atol=1e-4)
    data = np.asarray(img.dataobj)  # nibabel indexes (i, j, k)
    (ni, nj, nk), = np.argwhere(data == 3)
    ras = img.affine @ np.array([ni, nj, nk, 1.0])
    np.testing.assert_allclose(ras[:3], point * [-1, -1, 1], atol=1e-4)
    # this grid is exactly RAS-aligned: i runs towards the patient's right
    assert img.affine[0, 0] > 0 and img.affine[1, 1] > 0
    np.testing.assert_allclose(nib.load(str(tmp_path / "ct.nii.gz")).affine, img.affine, atol=1e-5)


def test_label_on_dicom_series(tmp_path, make_ct):
    ct = make_ct("oblique")
    folder = write_dicom_series(ct, tmp_path / "dicom")
    scan = read_scan(folder)
    ijk = (11, 4, 6)
    lab_path = write_label(_mark(scan.shape, ijk), tmp_path / "lab.nii.gz", reference=scan)
    back = read_label(lab_path, reference=scan)
    k, j, i = np.argwhere(back.array == 3)[0]
    point = back.geometry.index_to_physical((i, j, k))

    # pydicom: the marked voxel sits at IPP + i * row_cosine * col_spacing + j * col_cosine * row_spacing
    ds = pydicom.dcmread(scan.meta["files"][k])
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    expected = ipp + i * col_spacing * iop[:3] + j * row_spacing * iop[3:]
    np.testing.assert_allclose(point, expected, atol=1e-4)
    # and the HU value there is the one pydicom decodes
    hu = ds.pixel_array[j, i] * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert hu == scan.array[k, j, i] == ct.array[k, j, i]

    # nibabel sees the label at the same point
    img = nib.load(str(lab_path))
    (ni, nj, nk), = np.argwhere(np.asarray(img.dataobj) == 3)
    ras = img.affine @ np.array([ni, nj, nk, 1.0])
    np.testing.assert_allclose(ras[:3] * [-1, -1, 1], expected, atol=1e-3)


def test_reversed_slices_label_points(tmp_path, make_ct):
    ct = make_ct("reversed")  # k axis points inferior
    scan = read_scan(write_scan(ct, tmp_path / "ct.nrrd"))
    ijk = (2, 3, 1)
    path = write_label(_mark(scan.shape, ijk), tmp_path / "lab.seg.nrrd", reference=scan)
    back = read_label(path, reference=scan)
    k, j, i = np.argwhere(back.array == 3)[0]
    np.testing.assert_allclose(back.geometry.index_to_physical((i, j, k)), ct.geometry.index_to_physical(ijk))
    # slice k=1 lies below slice k=0
    assert ct.geometry.index_to_physical((0, 0, 1))[2] < ct.geometry.origin[2]
