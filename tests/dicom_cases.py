"""Synthetic patients written as DICOM series on chosen grids, shared by the DICOM-SEG and RTSTRUCT
tests (importable: ``pythonpath = ["tests"]``), and the rotation the test grids are built from."""

from __future__ import annotations

import numpy as np

from orbitseg.io.volume import Geometry, Volume

#: case -> seed of orbitseg.synth.sample_patient(small=True); the seeds' own scan directions are
#: identity (0), flip_all (4) and an 18-degree tilt with flipped rows (10); "anisotropic" puts seed 0's
#: voxels on a tilted grid with 0.7 x 1.1 mm pixels (a row / column spacing mix-up shows only there)
SEEDS = {"identity": 0, "flip_all": 4, "oblique": 10, "anisotropic": 0}
#: the codes the issue asks for, written out here so that a changed code in the modules fails
EXPECTED_TYPES = {1: ("79652003", "SCT", "Eyeball"), 2: ("32725001", "SCT", "Extraocular muscle"),
                  3: ("18234004", "SCT", "Optic nerve")}


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix ``Rz @ Ry @ Rx`` of angles in radians about x, y, z."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def patient(name: str) -> tuple[Volume, Volume]:
    """CT and truth labels of case ``name``, on the grid the series will be written on."""
    from orbitseg.synth import render_patient, sample_patient

    ct, labels = render_patient(sample_patient(np.random.default_rng(SEEDS[name]), small=True))
    if name == "anisotropic":
        g = Geometry(ct.geometry.size, (0.7, 1.1, 2.0), (-60.0, -80.0, -25.0), rotation(0.3, -0.2, 0.5))
        ct, labels = Volume(ct.array, g), Volume(labels.array, g)
    return ct, labels


def on_grid(labels: Volume, scan: Volume) -> Volume:
    """``labels`` moved onto ``scan``'s grid (same voxels, axes possibly flipped), by position."""
    import SimpleITK as sitk

    img = sitk.Resample(labels.to_sitk(), scan.to_sitk(), sitk.Transform(), sitk.sitkNearestNeighbor, 255)
    out = Volume.from_sitk(img)
    assert out.geometry.differences(scan.geometry) == []
    assert np.array_equal(np.bincount(out.array.ravel(), minlength=4)[:4],
                          np.bincount(labels.array.ravel(), minlength=4)[:4])
    return out


def dciodvfy(path, require) -> list[str]:
    """dciodvfy's warnings for ``path``; fails on any error.  Without dciodvfy: skipped locally,
    failed in CI (the ``require`` fixture of tests/conftest.py)."""
    import shutil
    import subprocess

    exe = shutil.which("dciodvfy")
    require(exe is not None, "dciodvfy is not installed (Debian package dicom3tools: apt-get install -y dicom3tools)")
    run = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    lines = [ln.strip() for ln in (run.stdout + run.stderr).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error")]
    assert not errors, f"dciodvfy {path.name}:\n" + "\n".join(lines)
    warnings = [ln for ln in lines if ln.startswith("Warning")]
    print(f"dciodvfy {path.name}: {len(warnings)} warning(s)", *warnings, sep="\n  ")
    return warnings


def series_case(root, name: str):
    """Case ``name`` written as a DICOM series under ``root`` and read back: (series folder, scan
    Volume, truth labels on the rendered grid, truth labels on the scan's grid)."""
    from orbitseg.io.read import read_scan
    from orbitseg.io.write import write_dicom_series

    ct, truth_ct = patient(name)
    folder = write_dicom_series(ct, root / "series", series_uid=f"orbitseg-test-{name}")
    scan = read_scan(folder)
    return folder, scan, truth_ct, on_grid(truth_ct, scan)


def source_headers(scan: Volume) -> list:
    """The scan's slice headers (no pixels), in the scan's slice order (``scan.array[k]``)."""
    import pydicom

    return [pydicom.dcmread(f, stop_before_pixels=True) for f in scan.meta["files"]]


def tilted_slices(ct: Volume, *, tilt_deg: float, table_steps, z_start: float | None = None):
    """``ct`` (any grid) sampled, linearly, on the slices a scanner with its gantry tilted ``tilt_deg``
    about the patient's left-right axis acquires while the table moves along z: slice ``k`` is centred
    on the scan's (x, y) centre at table position ``z_k``, its rows along +x and its columns tilted out
    of the axial plane, so successive slice origins move in-plane along the stack (a sheared series).

    Parameters
    ----------
    table_steps : ((n_slices, table step mm), ...): blocks of slices, e.g. ((14, 4.0), (14, 7.0)); the
        first slice of a block lies one step of that block after the previous block's last
    z_start : table position of the first slice (default: the stack centred on the scan)

    Returns
    -------
    (Volume, positions) : the slices as a Volume whose geometry gives rows, columns and pixel spacing
        (its origin and third axis mean nothing), and each slice's ImagePositionPatient (n, 3): what
        ``write_dicom_series(volume, folder, positions=positions)`` takes
    """
    from scipy import ndimage

    t = np.radians(tilt_deg)
    row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, np.cos(t), np.sin(t)])
    normal = np.cross(row, col)
    g = ct.geometry
    nx, ny = g.size[0], g.size[1]
    sc, sr = g.spacing[0], g.spacing[1]
    centre = g.index_to_physical((np.asarray(g.size) - 1) / 2.0)
    steps = [step for n, step in table_steps for _ in range(n)]
    z = np.cumsum([0.0, *steps[1:]])
    z = z + (centre[2] - z[-1] / 2 if z_start is None else z_start)
    positions = np.array([[centre[0], centre[1], zk] for zk in z]) - (nx - 1) / 2 * sc * row - (ny - 1) / 2 * sr * col
    jj, ii = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    out = np.empty((len(z), ny, nx), np.int16)
    for k, p in enumerate(positions):
        pts = p + ii[..., None] * sc * row + jj[..., None] * sr * col
        idx = g.physical_to_index(pts.reshape(-1, 3))
        vals = ndimage.map_coordinates(np.asarray(ct.array, np.float32), [idx[:, 2], idx[:, 1], idx[:, 0]],
                                       order=1, mode="constant", cval=-1000.0)
        out[k] = np.rint(vals).reshape(ny, nx).astype(np.int16)
    geom = Geometry((nx, ny, len(z)), (sc, sr, 1.0), tuple(positions[0]), np.stack([row, col, normal], axis=1))
    return Volume(out, geom), positions


def resampled_onto(volume: Volume, geometry: Geometry, *, labels: bool, outside: float = 0.0) -> Volume:
    """``volume`` resampled in physical space onto ``geometry`` (nearest for labels, else linear)."""
    import SimpleITK as sitk

    ref = sitk.Image([int(v) for v in geometry.size], sitk.sitkUInt8)
    ref.SetSpacing(geometry.spacing)
    ref.SetOrigin(geometry.origin)
    ref.SetDirection(tuple(geometry.matrix.ravel()))
    src = Volume(np.asarray(volume.array, np.uint8 if labels else np.float32), volume.geometry).to_sitk()
    img = sitk.Resample(src, ref, sitk.Transform(), sitk.sitkNearestNeighbor if labels else sitk.sitkLinear,
                        outside)
    return Volume(sitk.GetArrayFromImage(img), geometry)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


#: compressed transfer syntaxes a CT series may come in, by name: (UID, who encodes it in the tests)
COMPRESSIONS = {
    "rle": ("1.2.840.10008.1.2.5", "pydicom"),
    "jpeg-ls": ("1.2.840.10008.1.2.4.80", "pydicom"),  # pyjpegls
    "jpeg-lossless": ("1.2.840.10008.1.2.4.70", "gdcm"),
    "jpeg2000": ("1.2.840.10008.1.2.4.90", "gdcm"),
}


def compress_series(folder, name: str) -> None:
    """Rewrite every slice file of ``folder`` in place in the lossless compressed transfer syntax ``name`` of
    :data:`COMPRESSIONS`: RLE and JPEG-LS with pydicom's encoders, JPEG lossless (process 14) and JPEG 2000
    with GDCM (SimpleITK's DICOM writer encodes the slice's stored values; its encapsulated pixel data then
    replaces the slice's, so every other tag stays as written)."""
    import tempfile
    from pathlib import Path

    import pydicom
    import SimpleITK as sitk

    uid, how = COMPRESSIONS[name]
    for f in sorted(Path(folder).glob("*.dcm")):
        ds = pydicom.dcmread(f)
        if how == "pydicom":
            ds.compress(uid, encoding_plugin="pyjpegls" if name == "jpeg-ls" else "")
        else:
            stored = ds.pixel_array
            with tempfile.TemporaryDirectory() as tmp:
                w = sitk.ImageFileWriter()
                w.SetFileName(str(Path(tmp) / "x.dcm"))
                w.SetImageIO("GDCMImageIO")
                w.SetUseCompression(True)
                w.SetCompressor({"jpeg-lossless": "JPEG", "jpeg2000": "JPEG2000"}[name])
                w.Execute(sitk.GetImageFromArray(stored[None]))
                enc = pydicom.dcmread(Path(tmp) / "x.dcm")
            assert str(enc.file_meta.TransferSyntaxUID) == uid
            assert (int(enc.BitsAllocated), int(enc.PixelRepresentation)) == (int(ds.BitsAllocated),
                                                                               int(ds.PixelRepresentation))
            ds.file_meta.TransferSyntaxUID = uid
            ds.PixelData = enc.PixelData
            ds["PixelData"].VR = "OB"
        ds.save_as(f, enforce_file_format=True)
