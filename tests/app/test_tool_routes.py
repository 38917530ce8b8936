"""The labeling routes are thin: each answers what its orbitseg.labeling / preprocess function computes."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from fastapi.testclient import TestClient

from orbitseg.app.server import create_app
from orbitseg.io.orient import to_canonical
from orbitseg.io.read import read_label, read_scan

CASE = "orbit_001"  # the one case of the app_cohort fixture (tests/app/conftest.py)


@pytest.fixture(scope="module")
def dataset(app_cohort) -> Path:
    return app_cohort  # these tests only read


@pytest.fixture(scope="module")
def client(dataset) -> TestClient:
    return TestClient(create_app(dataset), raise_server_exceptions=False, base_url="http://127.0.0.1:8000")


@pytest.fixture(scope="module")
def canon(dataset):
    scan = read_scan(dataset / "imagesTr" / f"{CASE}_0000.nii.gz")
    label = to_canonical(read_label(dataset / "labelsTr" / f"{CASE}.nii.gz", reference=scan)).array
    return to_canonical(scan), label


def _zyx(canon_scan) -> tuple[float, float, float]:
    sx, sy, sz = canon_scan.geometry.spacing
    return sz, sy, sx


def _globe_slice(label) -> int:
    return int(np.argmax((label == 1).sum(axis=(1, 2))))


def _png_pixels(data: bytes) -> np.ndarray:
    """Pixels of the 8-bit grayscale PNG the server writes (one IDAT, filter 0 on every row)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        (n,), tag = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        if tag == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
    w, h = size
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, w + 1)
    assert not raw[:, 0].any()
    return raw[:, 1:]


@pytest.mark.parametrize("level, width", [(48, 400), (40, 350), (500, 2000), (37.5, 123.25), (0, 1)])
def test_png_slice_is_the_project_window(client, canon, level, width):
    from orbitseg.preprocess.window import apply_window

    scan, _ = canon
    r = client.get(f"/api/cases/{CASE}/slice", params={"index": 5, "format": "png", "level": level, "width": width})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    expected = (apply_window(scan.array[5], level=level, width=width) * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(_png_pixels(r.content), expected)


def test_png_width_must_be_positive(client):
    for width in (0, -3):
        r = client.get(f"/api/cases/{CASE}/slice", params={"index": 5, "format": "png", "width": width})
        assert r.status_code == 422 and r.json() == {"error": "bad_parameter", "message": "width must be positive"}


def test_superpixels_route_is_superpixel_borders(client, canon):
    from orbitseg.labeling import superpixel_borders, superpixels, visible_borders

    scan, label = canon
    k = _globe_slice(label)
    r = client.get(f"/api/cases/{CASE}/superpixels", params={"index": k, "n": 500})
    assert r.status_code == 200
    spx = superpixels(scan.array[k], n_segments=500, spacing=_zyx(scan)[1:])
    # the borders of the whole slice's map, kept where they help: in the orbits the store found
    frame, _ = client.app.state.store.orbit_frame(CASE)
    want = visible_borders(superpixel_borders(spx), frame.border_region(scan.array[k], k, _zyx(scan)))
    got = np.frombuffer(r.content, np.uint8).reshape(spx.shape)
    np.testing.assert_array_equal(got, want)
    assert got.sum() > 100
    assert int(r.headers["x-superpixels"]) == int(spx.max()) + 1


@pytest.mark.parametrize("depth", [1, 5])
def test_smartfill_route_is_smart_fill_slab(client, canon, depth):
    from orbitseg.labeling import smart_fill_slab

    scan, label = canon
    k = _globe_slice(label)
    z0, z1 = k - depth // 2, k - depth // 2 + depth
    mask = np.zeros((depth,) + label.shape[1:], np.uint8)
    strokes = np.zeros_like(mask)
    for y, x in (np.argwhere(label[k] == 1)[[0, -1]]):  # a dot in each globe: two groups
        strokes[k - z0, y, x] = 1
    r = client.post(f"/api/cases/{CASE}/smartfill?z0={z0}&z1={z1}&labels=1", content=mask.tobytes() + strokes.tobytes())
    assert r.status_code == 200, r.text
    assert r.headers["x-orbitseg-prior"] == "none" and r.headers["x-shape"] == ",".join(map(str, mask.shape))
    expected = smart_fill_slab(scan.array[z0:z1], mask, strokes, spacing=_zyx(scan), labels=(1,))
    np.testing.assert_array_equal(np.frombuffer(r.content, np.uint8).reshape(mask.shape), expected)


@pytest.mark.parametrize("depth", [1, 5])
def test_autocorrect_route_is_auto_correct_slab(client, canon, depth):
    from scipy import ndimage as ndi

    from orbitseg.labeling import auto_correct_slab

    scan, label = canon
    k = _globe_slice(label)
    z0, z1 = k - depth // 2, k - depth // 2 + depth
    mask = np.where(ndi.binary_dilation(label[z0:z1] == 1, iterations=2), 1, label[z0:z1]).astype(np.uint8)
    r = client.post(f"/api/cases/{CASE}/autocorrect?z0={z0}&z1={z1}&labels=1,2", content=mask.tobytes())
    assert r.status_code == 200, r.text
    expected = auto_correct_slab(scan.array[z0:z1], mask, spacing=_zyx(scan), labels=(1, 2))
    np.testing.assert_array_equal(np.frombuffer(r.content, np.uint8).reshape(mask.shape), expected)


def test_smartfill_errors_keep_their_codes(client, canon):
    from orbitseg.labeling.slab import NO_STROKES_MESSAGE

    _, label = canon
    k = _globe_slice(label)
    empty = np.zeros(label.shape[1:], np.uint8)
    r = client.post(f"/api/cases/{CASE}/smartfill?z0={k}&labels=1", content=empty.tobytes() * 2)
    assert r.status_code == 422 and r.json() == {"error": "no_strokes", "message": NO_STROKES_MESSAGE}
    # any other refusal of the algorithm: smartfill_failed, its message after "SmartFill: "
    drawn = (label[k] == 1).astype(np.uint8)
    bad = np.full_like(empty, 7)
    r = client.post(f"/api/cases/{CASE}/smartfill?z0={k}&labels=1", content=drawn.tobytes() + bad.tobytes())
    assert r.status_code == 422 and r.json()["error"] == "smartfill_failed"
    assert r.json()["message"].startswith("SmartFill: strokes holds unknown label(s) [7]")


def test_autocorrect_without_the_labels_answers_the_mask(client, canon):
    _, label = canon
    k = _globe_slice(label)
    mask = np.where(label[k] == 2, 2, 0).astype(np.uint8)
    r = client.post(f"/api/cases/{CASE}/autocorrect?z0={k}&labels=1", content=mask.tobytes())
    assert r.status_code == 200 and r.content == mask.tobytes() and "x-orbitseg-prior" not in r.headers
