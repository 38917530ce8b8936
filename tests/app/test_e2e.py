"""End-to-end: the labeling page in Debian's Chromium (Playwright), against a live uvicorn server.

Open a synthetic case that starts unlabelled (its ground truth is moved aside), SmartPencil-click
inside both globes, SmartFill, AutoCorrection, undo/redo, save; the saved NIfTI must sit on the
scan's own grid and overlap the ground-truth eyeball (Dice >= 0.8).  Screenshots go to
``tmp_path`` and are copied to /tmp/orbitseg_app_screens/.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
SCREENS = Path("/tmp/orbitseg_app_screens")
CASE = "orbit_001"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium); skipping the browser tests",
                allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="the playwright package is missing (pip install playwright)")
pytest.importorskip("uvicorn", reason="uvicorn is missing (pip install uvicorn)")

from playwright.sync_api import sync_playwright  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def live(tmp_path):
    """(base url, dataset root, ground-truth label path) with the server running in a thread."""
    import uvicorn

    from orbitseg.app.server import create_app
    from orbitseg.synth import make_cohort

    root = tmp_path / "ds"
    make_cohort(root, patients=1, seed=0, small=True, workers=1)
    gt = tmp_path / "ground_truth.nii.gz"
    shutil.move(root / "labelsTr" / f"{CASE}.nii.gz", gt)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(root), host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.time() + 15
    while not server.started:
        if time.time() > deadline or not t.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", root, gt
    server.should_exit = True
    t.join(10)


@pytest.fixture()
def page(tmp_path):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        ctx = browser.new_context(viewport={"width": 1400, "height": 820})
        pg = ctx.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.errors = errors
        try:
            yield pg
        finally:
            browser.close()


def _shot(page, tmp_path, name):
    path = tmp_path / name
    page.screenshot(path=str(path))
    SCREENS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENS / name)
    return path


def _wait_idle(page):
    page.wait_for_function("window.orbitseg && window.orbitseg.idle()", timeout=20000)


def _digest(page) -> str:
    return page.evaluate("""async () => {
        const d = await crypto.subtle.digest('SHA-256', window.orbitseg.state.label);
        return Array.from(new Uint8Array(d)).map(b => b.toString(16).padStart(2, '0')).join('');
    }""")


def _targets(root, gt_path):
    """Axial slice with the most eyeball and the centre of each globe on it (canonical indices)."""
    from scipy import ndimage as ndi

    from orbitseg.io.orient import to_canonical
    from orbitseg.io.read import read_label, read_scan

    scan = read_scan(root / "imagesTr" / f"{CASE}_0000.nii.gz")
    gt = to_canonical(read_label(gt_path, reference=scan)).array
    k = int(np.argmax((gt == 1).sum(axis=(1, 2))))
    lab, n = ndi.label(gt[k] == 1)
    centres = [tuple(int(round(v)) for v in ndi.center_of_mass(lab == i)) for i in range(1, n + 1)]
    return scan, k, centres


def test_label_a_case_in_chromium(live, page, tmp_path):
    from orbitseg.io.read import read_label

    url, root, gt_path = live
    scan, k, centres = _targets(root, gt_path)
    assert len(centres) == 2

    page.goto(url + "/")
    page.locator("#cases tr.case", has_text=CASE).wait_for()
    assert "unlabelled" in page.locator("#cases tr.case", has_text=CASE).inner_text()
    page.locator("#cases tr.case", has_text=CASE).click()
    page.wait_for_function(f"window.orbitseg.state.caseId === '{CASE}' && window.orbitseg.state.label")
    _wait_idle(page)
    # move to slice k with the keyboard (the page starts in the middle)
    k0 = page.evaluate("window.orbitseg.state.k")
    key = "ArrowUp" if k > k0 else "ArrowDown"
    page.locator("#axial").hover()
    for _ in range(abs(k - k0)):
        page.keyboard.press(key)
    assert page.evaluate("window.orbitseg.state.k") == k
    _wait_idle(page)
    _shot(page, tmp_path, "01_opened_with_superpixels.png")

    # SmartPencil (default tool, eyeball) inside both globes
    for row, col in centres:
        pt = page.evaluate(f"window.orbitseg.toScreen({row}, {col})")
        page.mouse.click(pt["x"], pt["y"])
        _wait_idle(page)
    s0 = _digest(page)
    assert page.evaluate("window.orbitseg.labelCount(1)") > 0
    for row, col in centres:
        assert page.evaluate(f"window.orbitseg.state.label[({k} * window.orbitseg.state.ny + {row}) * "
                             f"window.orbitseg.state.nx + {col}]") == 1

    page.get_by_test_id("smartfill").click()
    _wait_idle(page)
    s1 = _digest(page)
    assert s1 != s0
    page.get_by_test_id("autocorrect").click()
    _wait_idle(page)
    s2 = _digest(page)
    _shot(page, tmp_path, "02_after_fill_and_autocorrect.png")

    # undo restores the previous mask, redo brings the edit back
    page.get_by_test_id("undo").click()
    assert _digest(page) == (s1 if s2 != s1 else s0)
    page.keyboard.press("Control+y")
    assert _digest(page) == s2

    # save (Ctrl+S) and read the file back
    page.keyboard.press("Control+s")
    page.wait_for_function("document.querySelector('#save-state').textContent === 'saved'", timeout=20000)
    page.locator("#cases tr.case", has_text="in progress").wait_for()
    page.keyboard.press("?")
    _shot(page, tmp_path, "03_saved_with_help.png")
    assert page.locator("#help").is_visible()
    assert not page.errors, page.errors

    saved = read_label(root / "labelsTr" / f"{CASE}.nii.gz", reference=scan)
    assert not saved.geometry.differences(scan.geometry)
    truth = read_label(gt_path, reference=scan).array == 1
    got = saved.array == 1
    dice = 2 * (got & truth).sum() / (got.sum() + truth.sum())
    print(f"eyeball Dice vs ground truth: {dice:.3f}")
    assert dice >= 0.8, dice
    # only the eyeball was labelled
    assert set(np.unique(saved.array)) <= {0, 1}


def test_conflict_between_two_tabs_and_predict_message(live, page, tmp_path):
    url, root, _ = live
    ctx = page.context
    other = ctx.new_page()
    for pg in (page, other):
        pg.goto(url + "/")
        pg.locator("#cases tr.case", has_text=CASE).click()
        pg.wait_for_function(f"window.orbitseg.state.caseId === '{CASE}' && window.orbitseg.state.label")
        _wait_idle(pg)
        pg.evaluate("document.querySelector('#autosave').checked = false")
    # tab 1 paints with the brush and saves
    page.keyboard.press("b")
    box = page.locator("#axial").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 30, cy + 10, steps=5)
    page.mouse.up()
    assert page.evaluate("window.orbitseg.labelCount(1)") > 0
    page.get_by_test_id("save").click()
    page.wait_for_function("document.querySelector('#save-state').textContent === 'saved'")
    # tab 2 started from the empty label: its save is refused with a conflict message
    other.keyboard.press("b")
    other.mouse.click(cx - 40, cy - 40)
    other.get_by_test_id("save").click()
    msg = other.get_by_test_id("message")
    msg.wait_for()
    assert "saved elsewhere" in msg.inner_text()
    _shot(other, tmp_path, "04_conflict.png")
    # Predict without a model explains how to configure one
    page.get_by_test_id("predict").click()
    page.get_by_test_id("message").wait_for()
    page.wait_for_function("document.querySelector('[data-testid=message]').textContent.includes('--model')")
    _shot(page, tmp_path, "05_predict_without_model.png")


def test_autosave_and_window_presets(live, page, tmp_path):
    from orbitseg.io.read import read_label, read_scan

    url, root, _ = live
    page.goto(url + "/")
    page.locator("#cases tr.case", has_text=CASE).click()
    page.wait_for_function(f"window.orbitseg.state.caseId === '{CASE}' && window.orbitseg.state.label")
    _wait_idle(page)
    page.evaluate("window.orbitseg.state.autosaveMs = 300")
    page.get_by_role("button", name="bone 500/2000").click()
    assert page.evaluate("[window.orbitseg.state.level, window.orbitseg.state.width]") == [500, 2000]
    page.keyboard.press("2")  # muscles
    page.keyboard.press("b")
    box = page.locator("#axial").bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function("document.querySelector('#save-state').textContent === 'saved'", timeout=10000)
    saved = read_label(root / "labelsTr" / f"{CASE}.nii.gz", reference=read_scan(root / "imagesTr" / f"{CASE}_0000.nii.gz"))
    assert (saved.array == 2).sum() == page.evaluate("window.orbitseg.labelCount(2)") > 0
    _shot(page, tmp_path, "06_autosaved_bone_window.png")
