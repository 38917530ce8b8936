"""orbitseg predict --format dicom-seg rtstruct: DICOM objects beside the label volume, for DICOM inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orbitseg.cli import main
from orbitseg.io.dicomseg import read_dicom_seg
from orbitseg.io.read import read_label, read_scan
from orbitseg.io.write import write_dicom_series, write_scan
from orbitseg.synth import render_patient, sample_patient


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom_outputs")
    ct, _ = render_patient(sample_patient(np.random.default_rng(77), small=True))
    write_dicom_series(ct, root / "in" / "series", patient_id="p77")
    write_scan(ct, root / "in" / "plain.nii.gz")
    return root


def test_several_formats_at_once_agree_voxel_for_voxel(scans, tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["predict", str(scans / "in" / "series"), str(out), "--model", str(tiny_run),
               "--format", ".nii.gz", "dicom-seg", "rtstruct"])
    assert rc == 0, capsys.readouterr().err
    scan = read_scan(scans / "in" / "series")
    nifti = read_label(out / "series.nii.gz", reference=scan).array
    seg = read_dicom_seg(out / "series.seg.dcm", reference=scan).array
    np.testing.assert_array_equal(seg, nifti)
    assert (out / "series.rtstruct.dcm").is_file()
    case = json.loads((out / "prediction.json").read_text())["cases"]["series"]
    assert case["outputs"] == ["series.nii.gz", "series.seg.dcm", "series.rtstruct.dcm"]


def test_dicom_objects_for_a_file_scan_are_refused_by_name_and_the_rest_is_written(scans, tiny_run, tmp_path,
                                                                                   capsys):
    out = tmp_path / "out"
    rc = main(["predict", str(scans / "in"), str(out), "--model", str(tiny_run), "--format", ".nii.gz", "dicom-seg"])
    err = capsys.readouterr().err
    assert rc == 1 and "plain.nii.gz" in err and "not a DICOM series" in err, err
    assert (out / "plain.nii.gz").is_file() and not (out / "plain.seg.dcm").exists()
    assert (out / "series.nii.gz").is_file() and (out / "series.seg.dcm").is_file()


def test_resume_reads_a_dicom_seg_back(scans, tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["predict", str(scans / "in" / "series"), str(out), "--model", str(tiny_run), "--format", "dicom-seg"]
    assert main(args) == 0
    before = (out / "series.seg.dcm").read_bytes()
    rows = (out / "measurements.csv").read_text()
    assert main([*args, "--resume"]) == 0
    assert "kept 1 existing" in capsys.readouterr().out
    assert (out / "series.seg.dcm").read_bytes() == before  # kept, not rewritten
    assert (out / "measurements.csv").read_text() == rows  # measured from the SEG read back: same volumes
    assert main(args) == 1  # without --resume or --overwrite an existing object is refused
