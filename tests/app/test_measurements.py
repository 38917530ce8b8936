"""The app's per-orbit clinical measurements (issue 22): of the saved label (cached per version), else of the draft."""

from __future__ import annotations

import gzip
import json

import pytest
from fastapi.testclient import TestClient

from orbitseg.app.server import create_app
from orbitseg.app.store import PREDICTION_RECORD, measurement_rows
from orbitseg.evaluate.measure import orbit_measurements
from orbitseg.io.orient import to_canonical
from orbitseg.io.read import read_label, read_scan
from orbitseg.predict.core import finder_midline

CASE = "orbit_001"  # the one case of the app_cohort fixture (tests/app/conftest.py)


def _client(dataset, **kw) -> TestClient:
    return TestClient(create_app(dataset, **kw), raise_server_exceptions=False, base_url="http://127.0.0.1")


def _expected(dataset) -> list[dict]:
    """orbit_measurements of the saved label with the scan (the orbit finder's midline where the label holds
    fewer than two globes), as JSON gives it back (NaN -> None)."""
    scan = read_scan(dataset / "imagesTr" / f"{CASE}_0000.nii.gz")
    rows = orbit_measurements(read_label(dataset / "labelsTr" / f"{CASE}.nii.gz"), scan, clinical=True,
                              midline_fallback=lambda: finder_midline(scan))
    return json.loads(json.dumps([{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
                                  for r in rows]))


def _same(got: list[dict], want: list[dict]) -> None:
    """Equal rows, numbers to 1e-6 (a label read with or without the scan as reference may differ in the
    last bits of its header geometry: the midline moves by ~1e-7 mm)."""
    assert [r["side"] for r in got] == [r["side"] for r in want]
    for g, w in zip(got, want):
        assert g.keys() == w.keys(), (g.keys() ^ w.keys())
        for k in w:
            if isinstance(w[k], float):
                assert g[k] == pytest.approx(w[k], rel=1e-6, abs=1e-5), (g["side"], k, g[k], w[k])
            else:
                assert g[k] == w[k], (g["side"], k, g[k], w[k])


def _side(rows, side):
    (r,) = [r for r in rows if r["side"] == side]
    return r


def test_measurements_are_those_of_the_saved_label_and_follow_a_save(dataset):
    c = _client(dataset)
    m = c.get(f"/api/cases/{CASE}/measurements").json()
    expected = _expected(dataset)
    assert m["source"] == "saved" and m["version"] == c.get(f"/api/cases/{CASE}").json()["version"]
    _same(m["rows"], expected)
    right, left = _side(m["rows"], "right"), _side(m["rows"], "left")
    assert right["globe_ml"] > 5 and right["proptosis_mm"] is not None and "mr_thickness_mm" in right
    assert right != left  # the two orbits of the synthetic patient differ

    # erase the patient's right globe (canonical columns run patient right -> left) and save
    scan = read_scan(dataset / "imagesTr" / f"{CASE}_0000.nii.gz")
    canon = to_canonical(read_label(dataset / "labelsTr" / f"{CASE}.nii.gz", reference=scan)).array.copy()
    half = canon.shape[2] // 2
    canon[:, :, :half][canon[:, :, :half] == 1] = 0
    put = c.put(f"/api/cases/{CASE}/label?base={m['version']}", content=gzip.compress(canon.tobytes()),
                headers={"Content-Encoding": "gzip"})
    assert put.status_code == 200, put.text
    m2 = c.get(f"/api/cases/{CASE}/measurements").json()
    assert m2["source"] == "saved" and m2["version"] == put.json()["version"] != m["version"]
    _same(m2["rows"], _expected(dataset))  # not the cached rows of the earlier version
    assert _side(m2["rows"], "right")["globe_ml"] == 0 and _side(m2["rows"], "left")["globe_ml"] == left["globe_ml"]
    # one globe left: the sides' midline is the orbit finder's on the scan, where the two globes had put it (the
    # grid's centre, the old fallback, lies 12 mm off on this synthetic head)
    assert _side(m2["rows"], "right")["midline_from"] == "orbit_finder"
    assert _side(m2["rows"], "right")["midline_x_mm"] == pytest.approx(right["midline_x_mm"], abs=0.5)


def test_without_a_saved_label_the_drafts_measurements_are_shown(dataset, tmp_path, monkeypatch):
    from tests.app.test_quality_flags import _stub_model

    ckpt, scan, draft = _stub_model(dataset, tmp_path, monkeypatch)  # the truth without the left nerve
    (dataset / "labelsTr" / f"{CASE}.nii.gz").unlink()
    c = _client(dataset, model=ckpt)
    m = c.get(f"/api/cases/{CASE}/measurements").json()
    assert m["source"] is None and m["rows"] is None and "nothing to measure" in m["notice"]
    assert c.post(f"/api/cases/{CASE}/predict").status_code == 200
    m = c.get(f"/api/cases/{CASE}/measurements").json()
    assert m["source"] == "draft" and m["model"] == ckpt.name
    assert m["rows"] == json.loads(json.dumps(measurement_rows(draft, scan)))
    assert _side(m["rows"], "left")["nerve_ml"] == 0 and _side(m["rows"], "right")["nerve_ml"] > 0
    rec = json.loads((dataset / "labelsTr" / ".history" / CASE / PREDICTION_RECORD).read_text())
    assert rec["measurements"] == m["rows"]  # kept with the flags of that Predict


def test_a_saved_label_is_measured_not_the_draft_predict_gave(dataset, tmp_path, monkeypatch):
    from tests.app.test_quality_flags import _stub_model

    ckpt, scan, draft = _stub_model(dataset, tmp_path, monkeypatch)  # the draft lacks the left nerve
    c = _client(dataset, model=ckpt)
    assert c.post(f"/api/cases/{CASE}/predict").status_code == 200
    m = c.get(f"/api/cases/{CASE}/measurements").json()
    assert m["source"] == "saved" and m["notice"] == "of the saved label"
    _same(m["rows"], _expected(dataset))
    assert _side(m["rows"], "left")["nerve_ml"] > 0
