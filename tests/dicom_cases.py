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
