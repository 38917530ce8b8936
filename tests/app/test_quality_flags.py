"""The case list shows the quality flags of a case's Predict (orbitseg.evaluate.quality), kept across restarts."""

from __future__ import annotations

import gzip

import numpy as np
from fastapi.testclient import TestClient
from scipy import ndimage as ndi

from orbitseg.app.server import create_app
from orbitseg.io.orient import to_canonical
from orbitseg.io.read import read_label, read_scan

CASE = "orbit_001"  # the one case of the app_cohort fixture (tests/app/conftest.py)


def _stub_model(dataset, tmp_path, monkeypatch):
    """A model whose draft is the truth without the patient's left optic nerve; (checkpoint, draft Volume)."""
    from orbitseg.predict.segmenter import Segmentation, Segmenter

    ckpt = tmp_path / "checkpoint_best.pt"
    ckpt.write_bytes(b"stands for a network")
    scan = read_scan(dataset / "imagesTr" / f"{CASE}_0000.nii.gz")
    truth = read_label(dataset / "labelsTr" / f"{CASE}.nii.gz", reference=scan)
    canon = to_canonical(truth).array.copy()
    lab, n = ndi.label(canon == 3)
    cols = ndi.center_of_mass(canon == 3, lab, range(1, n + 1))
    left = 1 + int(np.argmax([c[2] for c in cols]))  # canonical columns run patient right -> left
    canon[lab == left] = 0
    from orbitseg.io.orient import from_canonical

    draft = scan.like(from_canonical(canon, scan.geometry).astype(np.uint8))

    class Stub:
        networks, checkpoints, model_info = [None], [], {}  # no model folder: no model.json

        def segment(self, scan, probabilities=False, fold_agreement=False):
            box = np.eye(4, dtype=np.float32)[canon].transpose(3, 0, 1, 2)
            from orbitseg.preprocess.pipeline import BoxProbabilities

            return Segmentation(draft, draft, BoxProbabilities(canon.shape, (0, 0, 0), box))

    monkeypatch.setattr(Segmenter, "load", staticmethod(lambda model, **kw: Stub()))
    return ckpt, scan, draft


def _row(c) -> dict:
    (row,) = [r for r in c.get("/api/cases").json()["cases"] if r["id"] == CASE]
    return row


def test_predict_flags_show_in_the_case_list(dataset, tmp_path, monkeypatch):
    from orbitseg.evaluate.quality import flags_summary, quality_flags

    ckpt, scan, draft = _stub_model(dataset, tmp_path, monkeypatch)
    expected = quality_flags(draft, scan)
    assert any(f["code"] == "nerve_missing" and f["side"] == "left" for f in expected), expected
    c = TestClient(create_app(dataset, model=ckpt), raise_server_exceptions=False, base_url="http://127.0.0.1")
    assert _row(c)["quality"] is None  # no Predict yet: nothing to show
    r = c.post(f"/api/cases/{CASE}/predict")
    assert r.status_code == 200, r.text
    assert r.headers["x-quality-flags"] == str(len(expected))
    q = _row(c)["quality"]
    assert q["flags"] == expected and q["summary"] == flags_summary(expected) and "nerve" in q["summary"]
    assert q["model"] == ckpt.name
    assert q["saved"] is False  # the saved label (the truth) is not the draft
    # the page saves the draft as it came: the flags are those of the saved label now
    meta = c.get(f"/api/cases/{CASE}").json()
    body = gzip.compress(np.frombuffer(r.content, np.uint8).tobytes())
    put = c.put(f"/api/cases/{CASE}/label?base={meta['version']}", content=body,
                headers={"Content-Encoding": "gzip"})
    assert put.status_code == 200, put.text
    assert _row(c)["quality"]["saved"] is True
    # kept across a restart of the app
    c2 = TestClient(create_app(dataset), raise_server_exceptions=False, base_url="http://127.0.0.1")
    assert _row(c2)["quality"]["flags"] == expected
