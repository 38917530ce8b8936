"""The labeling app knows where the orbits are: a case opens there, framed, with superpixel borders only there."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy import ndimage as ndi

from orbitseg.app.server import create_app
from orbitseg.errors import InputError
from orbitseg.io.orient import to_canonical
from orbitseg.io.read import read_label, read_scan

CASE = "orbit_001"  # the one case of the app_cohort fixture (tests/app/conftest.py)


def _client(root) -> TestClient:
    return TestClient(create_app(root), raise_server_exceptions=False, base_url="http://127.0.0.1:8000")


def _truth(root):
    """(canonical scan, canonical truth labels)."""
    scan = read_scan(root / "imagesTr" / f"{CASE}_0000.nii.gz")
    lab = read_label(root / "labelsTr" / f"{CASE}.nii.gz", reference=scan)
    return to_canonical(scan), to_canonical(lab).array


def _centroids(truth, s):
    """(k, j, i) centroids of the two largest blobs of structure ``s``, right (smaller column) first."""
    lab, n = ndi.label(truth == s)
    sizes = ndi.sum(np.ones_like(lab), lab, range(1, n + 1))
    big = np.argsort(sizes)[::-1][:2] + 1
    return sorted((np.array(ndi.center_of_mass(lab == b)) for b in big), key=lambda c: c[2])


def _inside(p, lo, hi) -> bool:
    return all(lo[a] <= p[a] < hi[a] for a in range(3))


def _check_frame_holds_the_truth(o, truth):
    assert o["found"] is True
    right, left = o["orbits"]
    assert (right["side"], left["side"]) == ("right", "left")
    for s in (1, 2, 3):
        cr, cl = _centroids(truth, s)
        # every structure of both orbits inside the frame, each in the box of its own side
        assert _inside(cr, o["lo"], o["hi"]) and _inside(cl, o["lo"], o["hi"]), (s, cr, cl, o)
        assert _inside(cr, right["lo"], right["hi"]) and _inside(cl, left["lo"], left["hi"]), (s, cr, cl, o)
    # the patient's right is on the image's left (canonical LPS columns run right -> left)
    assert right["centre"][2] < left["centre"][2]
    # opened at slices through the eyeballs: axial through both, coronal through both, sagittal through the right
    k, j, i = o["centre"]
    eye = truth == 1
    cols = np.flatnonzero(eye[k].any(axis=0))
    mid = (right["centre"][2] + left["centre"][2]) / 2
    assert (cols < mid).any() and (cols > mid).any(), "the axial slice misses an eyeball"
    cols = np.flatnonzero(eye[:, j, :].any(axis=0))
    assert (cols < mid).any() and (cols > mid).any(), "the coronal slice misses an eyeball"
    assert eye[:, :, i].any() and i < mid, "the sagittal slice misses the right eyeball"
    # framed: the frame is a part of the slice, not the whole of it
    shape = truth.shape
    assert (o["hi"][1] - o["lo"][1]) * (o["hi"][2] - o["lo"][2]) < 0.8 * shape[1] * shape[2]


def test_case_opens_at_its_orbits(dataset):
    c = _client(dataset)
    meta = c.get(f"/api/cases/{CASE}").json()
    o = meta["orbits"]
    assert o["source"] == "finder"
    _, truth = _truth(dataset)
    _check_frame_holds_the_truth(o, truth)


def test_orbits_are_found_once_per_scan(dataset, monkeypatch):
    import orbitseg.preprocess.voi as voi

    calls = []
    real = voi.locate_orbits
    monkeypatch.setattr(voi, "locate_orbits", lambda v, **kw: calls.append(1) or real(v, **kw))
    c = _client(dataset)
    first = c.get(f"/api/cases/{CASE}").json()["orbits"]
    for _ in range(3):
        assert c.get(f"/api/cases/{CASE}").json()["orbits"] == first
        assert c.get(f"/api/cases/{CASE}/superpixels?index={first['centre'][0]}&n=500").status_code == 200
    assert len(calls) == 1


def _no_finder(monkeypatch):
    import orbitseg.preprocess.voi as voi

    def fail(volume, **kw):
        raise InputError(volume.path or "scan", "no orbits found: could not find two globes side by side")

    monkeypatch.setattr(voi, "locate_orbits", fail)


def test_labels_show_the_orbits_when_the_finder_finds_none(dataset, monkeypatch):
    _no_finder(monkeypatch)
    o = _client(dataset).get(f"/api/cases/{CASE}").json()["orbits"]
    assert o["source"] == "labels"
    _, truth = _truth(dataset)
    _check_frame_holds_the_truth(o, truth)


def test_no_orbit_opens_as_before_with_a_one_line_notice(dataset, monkeypatch):
    _no_finder(monkeypatch)
    (dataset / "labelsTr" / f"{CASE}.nii.gz").unlink()
    c = _client(dataset)
    o = c.get(f"/api/cases/{CASE}").json()["orbits"]
    assert o["found"] is False and "no orbits found" in o["notice"] and "\n" not in o["notice"]
    # borders then cover the slice's soft tissue, air and bone excepted
    canon = to_canonical(read_scan(dataset / "imagesTr" / f"{CASE}_0000.nii.gz"))
    k = canon.shape[0] // 2
    b = np.frombuffer(c.get(f"/api/cases/{CASE}/superpixels?index={k}&n=1000").content, np.uint8).reshape(canon.shape[1:])
    img = canon.array[k]
    soft = (img >= -500) & (img <= 500)
    assert b[soft].mean() > 0.05 and not b[~soft].any()


def test_superpixel_borders_only_in_the_orbits(dataset):
    c = _client(dataset)
    o = c.get(f"/api/cases/{CASE}").json()["orbits"]
    canon, truth = _truth(dataset)
    nz, ny, nx = canon.shape
    k = o["centre"][0]
    r = c.get(f"/api/cases/{CASE}/superpixels?index={k}&n=1000")
    assert r.status_code == 200 and int(r.headers["X-Superpixels"]) > 100
    b = np.frombuffer(r.content, np.uint8).reshape(ny, nx).astype(bool)
    img = canon.array[k]
    boxes = np.zeros((ny, nx), bool)
    for side in o["orbits"]:
        boxes[side["lo"][1]:side["hi"][1], side["lo"][2]:side["hi"][2]] = True
    assert not b[~boxes].any(), "borders outside the orbits' boxes"
    assert not b[img < -500].any() and not b[img > 500].any(), "borders in air or bone"
    # where the structures are, borders are drawn (the eyeballs and muscles of this slice)
    near = ndi.binary_dilation(truth[k] > 0, iterations=2)
    assert b[near].mean() > 0.1, b[near].mean()
    # and not much beyond them: less than half the soft tissue of the slice carries borders' region
    assert b.sum() < 0.5 * superpixel_border_count_whole_slice(c, canon, k)
    # a slice with no orbit on it: no borders at all
    below = [z for z in range(nz) if not any(s["lo"][0] <= z < s["hi"][0] for s in o["orbits"])]
    if below:
        r = c.get(f"/api/cases/{CASE}/superpixels?index={below[0]}&n=1000")
        assert r.status_code == 200 and not np.frombuffer(r.content, np.uint8).any()


def superpixel_border_count_whole_slice(c, canon, k) -> int:
    """Borders the whole slice's superpixel map has in soft tissue (what the page drew before)."""
    from orbitseg.labeling import superpixel_borders, superpixels

    sp = canon.geometry.spacing
    spx = superpixels(canon.array[k], n_segments=1000, spacing=(sp[1], sp[0]))
    img = canon.array[k]
    return int((superpixel_borders(spx).astype(bool) & (img >= -500) & (img <= 500)).sum())


def test_smartpencil_works_outside_the_drawn_borders(dataset):
    """SmartPencil keeps the whole slice's superpixels: a click where no border is drawn still labels."""
    c = _client(dataset)
    o = c.get(f"/api/cases/{CASE}").json()["orbits"]
    canon, _ = _truth(dataset)
    nz, ny, nx = canon.shape
    k = o["centre"][0]
    b = np.frombuffer(c.get(f"/api/cases/{CASE}/superpixels?index={k}&n=1000").content, np.uint8).reshape(ny, nx)
    img = canon.array[k]
    rows, cols = np.nonzero((b == 0) & (img > -500) & (img < 500) & ~ndi.binary_dilation(b > 0, iterations=6))
    row, col = int(rows[len(rows) // 2]), int(cols[len(cols) // 2])
    r = c.post(f"/api/cases/{CASE}/pencil?z0={k}&n=1000&row={row}&col={col}&label=2",
               content=np.zeros((1, ny, nx), np.uint8).tobytes())
    assert r.status_code == 200, r.text
    out = np.frombuffer(r.content, np.uint8).reshape(ny, nx)
    assert out[row, col] == 2 and 1 < (out == 2).sum() < ny * nx // 10


def test_a_new_label_moves_a_frame_that_came_from_labels(dataset, monkeypatch):
    """With the finder failing, the frame comes from the saved label and follows it when it changes."""
    from orbitseg.io.orient import from_canonical
    from orbitseg.io.write import write_label

    _no_finder(monkeypatch)
    c = _client(dataset)
    assert [s["side"] for s in c.get(f"/api/cases/{CASE}").json()["orbits"]["orbits"]] == ["right", "left"]
    scan = read_scan(dataset / "imagesTr" / f"{CASE}_0000.nii.gz")
    path = dataset / "labelsTr" / f"{CASE}.nii.gz"
    _, truth = _truth(dataset)
    truth = truth.copy()
    truth[:, :, truth.shape[2] // 2:] = 0  # keep the patient's right orbit only
    write_label(from_canonical(truth, scan.geometry), path, reference=scan, overwrite=True)
    o = c.get(f"/api/cases/{CASE}").json()["orbits"]
    assert [s["side"] for s in o["orbits"]] == ["right"] and o["source"] == "labels"
