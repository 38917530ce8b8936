"""Outputs (issue 18): one bad scan never stops a batch, a run that writes nothing leaves no folder, bad
output paths are one-line errors, a killed run's temporaries are cleaned, `show -o` does not overwrite.

``orbitseg predict`` runs here with a stand-in for the network (its tests of the real network live in
tests/predict): what is checked is what happens around reading and writing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest

from orbitseg.errors import ExistsError, OutputError
from orbitseg.io.atomic import atomic_dir, atomic_path, remove_stale_temporaries
from orbitseg.io.dicom import write_dicom_series
from orbitseg.io.volume import Volume
from orbitseg.io.write import write_scan


class _StandIn:
    """What predict_inputs asks of a Segmenter; labels: one eyeball voxel block on the scan's grid."""

    precision = "float32"
    engine = SimpleNamespace(name="torch", files=lambda: {})
    model_info: dict = {}  # no model folder: no model.json

    def settings(self):
        return {"model": "stand-in"}

    def describe(self):
        return "stand-in network"

    def segment(self, scan, fold_agreement=False):
        lab = np.zeros(scan.array.shape, np.uint8)
        lab[1:3, 4:8, 4:8] = 1
        return SimpleNamespace(labels=Volume(lab, scan.geometry), fold_agreement=None, orbit_midline=None)


@pytest.fixture
def stand_in(monkeypatch):
    from orbitseg.predict import segmenter

    monkeypatch.setattr(segmenter.Segmenter, "load", lambda *a, **k: _StandIn())


def _bad_inputs(folder, make_ct):
    """Damaged scans the fuzzer found: each raised a foreign exception type, hung or crashed before."""
    ct = make_ct(shape=(6, 20, 24))
    seed = write_scan(ct, folder / "seed.nrrd").read_bytes()
    (folder / "seed.nrrd").unlink()
    (folder / "b_huge.nrrd").write_bytes(seed.replace(b"sizes: 24 20 6", b"sizes: 4294967296 1 1", 1))
    series = write_dicom_series(make_ct(shape=(4, 20, 24)), folder / "d_series", series_uid="bad-series")
    ds = pydicom.dcmread(series / "IM00002.dcm")
    del ds.Columns  # was: AttributeError out of io, and the batch stopped with a traceback
    ds.save_as(series / "IM00002.dcm", enforce_file_format=True)
    return ["b_huge.nrrd", "d_series"]


def test_one_bad_scan_never_stops_a_batch(tmp_path, make_ct, stand_in):
    from orbitseg.predict.run import predict_inputs

    src = tmp_path / "scans"
    src.mkdir()
    bad = _bad_inputs(src, make_ct)
    for name in ("a_good.nii.gz", "c_good.nrrd", "e_good.mha"):
        write_scan(make_ct(shape=(6, 20, 24)), src / name)
    rows, problems = predict_inputs(src, tmp_path / "out", progress=False)
    written = sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz"))
    assert written == ["a_good.nii.gz", "c_good.nii.gz", "e_good.nii.gz"]
    assert len(problems) == 2
    for name, problem in zip(bad, sorted(problems)):
        assert str(src / name) in problem


def test_predict_that_writes_nothing_leaves_no_folder(tmp_path, make_ct, stand_in):
    from orbitseg.predict.run import predict_inputs

    src = tmp_path / "scans"
    src.mkdir()
    _bad_inputs(src, make_ct)
    out = tmp_path / "out"
    rows, problems = predict_inputs(src, out, progress=False)
    assert rows == [] and len(problems) == 2
    assert not out.exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_resume_cleans_the_temporaries_of_a_killed_run(tmp_path, make_ct, stand_in):
    from orbitseg.predict.run import predict_inputs

    src = tmp_path / "scans"
    src.mkdir()
    write_scan(make_ct(shape=(6, 20, 24)), src / "a.nii.gz")
    write_scan(make_ct(shape=(6, 20, 24)), src / "b.nii.gz")
    out = tmp_path / "out"
    predict_inputs(src, out, progress=False)
    (out / "b.nii.gz").unlink()  # the run was killed while writing b ...
    dead = _dead_pid()
    stale = [out / f".b.orbitseg-{dead}-x1y2z3w4.tmp.nii.gz", out / f".prediction.orbitseg-{dead}-abcdefgh.tmp.json"]
    for p in stale:
        p.write_bytes(b"half a fi")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # ... while another orbitseg process is writing into the same folder: its temporary stays
        live = out / f".c.orbitseg-{sleeper.pid}-abcdefgh.tmp.nii.gz"
        live.write_bytes(b"being written")
        rows, problems = predict_inputs(src, out, resume=True, progress=False)
        assert problems == [] and {r["case"] for r in rows} == {"a", "b"}
        assert not any(p.exists() for p in stale) and live.exists()
        assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
            "a.nii.gz", "b.nii.gz", "measurements.csv", "prediction.json"]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_temporaries_name_their_process_and_only_dead_ones_are_removed(tmp_path):
    target = tmp_path / "lab.nii.gz"
    with atomic_path(target) as tmp:
        assert f".orbitseg-{os.getpid()}-" in tmp.name and tmp.name.startswith(".lab.")
        assert remove_stale_temporaries(tmp_path) == [] and tmp.exists()  # ours, in progress
        tmp.write_bytes(b"x")
    with atomic_dir(tmp_path / "series") as d:
        assert f".orbitseg-{os.getpid()}-" in d.name
    dead = _dead_pid()
    (tmp_path / f".series.orbitseg-{dead}-abcdefgh.tmp").mkdir()
    (tmp_path / f".series.orbitseg-{dead}-abcdefgh.tmp" / "IM00001.dcm").write_bytes(b"x")
    (tmp_path / ".hidden_user_file.tmp").write_bytes(b"not ours")
    removed = remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == [f".series.orbitseg-{dead}-abcdefgh.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden_user_file.tmp", "lab.nii.gz", "series"]


def test_bad_output_paths_are_output_errors(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="a_file is a file, not a folder"):
        with atomic_path(a_file / "sub" / "lab.nii.gz"):
            pass
    with pytest.raises(OutputError, match="is a file"):
        with atomic_dir(a_file, overwrite=True):
            pass
    (tmp_path / "folder").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        with atomic_path(tmp_path / "folder", overwrite=True):
            pass
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(OutputError, match="no permission"):
                with atomic_path(ro / "lab.nii.gz"):
                    pass
        finally:
            ro.chmod(0o700)


@pytest.mark.parametrize("where", ["an existing file", "under a file"])
def test_predict_bad_output_is_one_line_before_any_work(tmp_path, make_ct, where, capsys):
    from orbitseg.cli import main

    src = tmp_path / "scan.nii.gz"
    write_scan(make_ct(shape=(6, 20, 24)), src)
    a_file = tmp_path / "results.txt"
    a_file.write_text("mine")
    out = a_file if where == "an existing file" else a_file / "out"
    assert main(["predict", str(src), str(out)]) == 2  # refused before the model is even loaded
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and "Traceback" not in err[0]
    assert a_file.read_text() == "mine"


def test_show_does_not_overwrite_without_overwrite(tmp_path, make_ct, capsys):
    from orbitseg.cli import main

    scan = write_scan(make_ct(shape=(6, 20, 24)), tmp_path / "scan.nii.gz")
    png = tmp_path / "views.png"
    png.write_bytes(b"the user's picture")
    assert main(["show", str(scan), "-o", str(png)]) == 2
    assert "--overwrite" in capsys.readouterr().err and png.read_bytes() == b"the user's picture"
    assert main(["show", str(scan), "-o", str(png), "--overwrite"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # refused before the scan is read: a missing scan is not even looked at
    assert main(["show", str(tmp_path / "missing.nii.gz"), "-o", str(png)]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "missing.nii.gz" not in err


def test_render_views_refuses_before_drawing(tmp_path, make_ct):
    from orbitseg.report.pictures import render_views

    png = tmp_path / "v.png"
    png.write_bytes(b"x")
    with pytest.raises(ExistsError):
        render_views(make_ct(shape=(6, 20, 24)), None, png, overwrite=False)
    assert png.read_bytes() == b"x"
    render_views(make_ct(shape=(6, 20, 24)), None, png)  # the library's default replaces, as before
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_an_output_that_cannot_be_written_stops_the_batch(tmp_path, make_ct, stand_in, monkeypatch):
    """Unlike a bad scan, an OUTPUT that cannot take a file stops at once (the next scans would fail alike)."""
    from orbitseg.io import write as write_mod
    from orbitseg.predict.run import predict_inputs

    src = tmp_path / "scans"
    src.mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        write_scan(make_ct(shape=(6, 20, 24)), src / name)
    calls = []

    def full_disk(labels, path, **kwargs):
        calls.append(path)
        raise OutputError(path, "cannot be written: the disk is full")

    monkeypatch.setattr(write_mod, "write_label", full_disk)
    with pytest.raises(OutputError, match="disk is full"):
        predict_inputs(src, tmp_path / "out", progress=False)
    assert len(calls) == 1
