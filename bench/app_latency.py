"""Latency of ``orbitseg label`` on loopback: slice round trips, SmartPencil clicks, a bounded concurrent load.

    python bench/app_latency.py [--slices 60] [--clicks 20] [--clients 4] [--requests 50]

A synthetic 512 x 512 patient (``sample_patient`` with a 512 matrix, 0.4 mm pixels,
100 slices) is written as a one-case dataset; the server runs in its own process
(uvicorn, as ``orbitseg label`` runs it) and the client uses keep-alive HTTP.

* slice: GET one raw int16 axial slice (what the page fetches while scrolling),
  also the 8-bit PNG variant and coronal / sagittal slices
* click: SmartPencil on a slice seen for the first time = GET superpixel borders
  (SLIC runs) + POST the click; and a click on a slice whose map is cached
* load: ``--clients`` threads, each sending ``--requests`` requests (slices on random
  positions and SmartPencil clicks), then it stops; latencies and the error count

Targets (issue 9): <= 100 ms per slice, <= 150 ms per click.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

SERVER = r"""
import sys, uvicorn
from orbitseg.app.server import create_app
uvicorn.run(create_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stats(ms: list[float]) -> str:
    a = np.asarray(ms)
    return f"median {np.median(a):6.1f} ms  p95 {np.percentile(a, 95):6.1f} ms  max {a.max():6.1f} ms  (n={a.size})"


def make_dataset(root: Path, seed: int = 7, n_slices: int = 100) -> tuple[np.ndarray, tuple]:
    from orbitseg.io.layout import image_path, make_dataset_json, write_dataset_json
    from orbitseg.io.orient import to_canonical
    from orbitseg.io.write import write_scan
    from orbitseg.synth import render_patient, sample_patient

    p = sample_patient(np.random.default_rng(seed))
    p = replace(p, scan=replace(p.scan, spacing_xy=0.4, slice_thickness=0.625, matrix=(512, 512), n_slices=n_slices))
    ct, labels = render_patient(p)
    write_scan(ct, image_path(root, "bench_001"))
    write_dataset_json(root, make_dataset_json({"bench_001": "p1"}, name="AppBench", num_training=0))
    canon = to_canonical(labels).array
    return canon, ct.shape


def browser_timing(base: str, case: str, zs: list[int], n: int) -> None:
    """Slice change and SmartPencil click as the page does them (fetch + paint), in headless Chromium."""
    if not Path("/usr/bin/chromium").exists():
        print("page   (skipped: /usr/bin/chromium missing)")
        return
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("page   (skipped: playwright missing)")
        return
    args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=args)
        pg = b.new_context(viewport={"width": 1400, "height": 900}).new_page()
        pg.goto(base + "/")
        pg.evaluate(f"window.orbitseg.openCase('{case}')")
        pg.wait_for_function("window.orbitseg.state.label && window.orbitseg.idle()", timeout=60000)
        res = pg.evaluate("""async ([zs, n]) => {
            const o = window.orbitseg, S = o.state;
            o.setTool('brush'); await o.render();
            const slice = [];
            for (let k = 0; k < Math.min(S.nz, 40); k++) {
                S.k = k; S.slices.clear(); const t = performance.now(); await o.render(); slice.push(performance.now() - t);
            }
            o.setTool('pencil'); document.querySelector('#pencil-n').value = String(n);
            const click = [];
            for (const z of zs) {
                S.k = z; const t = performance.now(); await o.render();  // borders for a new slice
                const p = o.toScreen(Math.floor(S.ny / 2), Math.floor(S.nx / 2));
                click.push(performance.now() - t);
            }
            return {slice, click};
        }""", [[int(z) + 1 for z in zs[:10]], n])
        b.close()
    print(f"page   slice change (fetch + paint 512x512 + overlay): {_stats(res['slice'])}")
    print(f"page   SmartPencil view of a new slice (superpixels + paint): {_stats(res['click'])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=60, help="sequential slice requests")
    ap.add_argument("--clicks", type=int, default=20, help="SmartPencil clicks (each on a new slice)")
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients in the load test")
    ap.add_argument("--requests", type=int, default=50, help="requests per client in the load test")
    ap.add_argument("--n", type=int, default=1000, help="SmartPencil resolution")
    ap.add_argument("--no-browser", action="store_true", help="skip the in-page timing in headless Chromium")
    args = ap.parse_args()
    import httpx

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        t = time.perf_counter()
        gt, shape = make_dataset(root)
        print(f"synthetic scan {shape[::-1]} (x, y, z) rendered in {time.perf_counter() - t:.1f} s")
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(root), str(port)])
        base = f"http://127.0.0.1:{port}"
        try:
            c = httpx.Client(base_url=base, timeout=120)
            for _ in range(300):
                try:
                    c.get("/api/info")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            case = "bench_001"
            t = time.perf_counter()
            meta = c.get(f"/api/cases/{case}").raise_for_status().json()
            print(f"open case (read + reorient the scan): {1000 * (time.perf_counter() - t):.0f} ms")
            nz, ny, nx = meta["shape"]
            t = time.perf_counter()
            r = c.get(f"/api/cases/{case}/label").raise_for_status()
            print(f"label volume (gzip, {len(r.content) / 1e6:.1f} MB raw): {1000 * (time.perf_counter() - t):.0f} ms")

            def timed(fn) -> float:
                t0 = time.perf_counter()
                fn().raise_for_status()
                return 1000 * (time.perf_counter() - t0)

            ks = [int(k) for k in np.linspace(0, nz - 1, args.slices)]
            ms = [timed(lambda k=k: c.get(f"/api/cases/{case}/slice", params={"axis": 0, "index": k})) for k in ks]
            print(f"slice  axial raw int16 ({ny}x{nx}):  {_stats(ms)}")
            slice_median = float(np.median(ms))
            ms = [timed(lambda k=k: c.get(f"/api/cases/{case}/slice", params={"index": k, "format": "png"})) for k in ks]
            print(f"slice  axial PNG (windowed):        {_stats(ms)}")
            ms = [timed(lambda j=j: c.get(f"/api/cases/{case}/slice", params={"axis": 1, "index": j}))
                  for j in np.linspace(0, ny - 1, 20).astype(int)]
            print(f"slice  coronal raw:                 {_stats(ms)}")

            # SmartPencil clicks inside the eyeball, each on a slice not seen before
            zs = np.nonzero((gt == 1).sum(axis=(1, 2)) > 200)[0]
            zs = [int(z) for z in np.linspace(zs.min(), zs.max(), min(args.clicks, zs.size)).astype(int)]
            cold, warm = [], []
            empty = np.zeros((ny, nx), np.uint8).tobytes()
            for z in zs:
                rr, cc = (int(v.mean()) for v in np.nonzero(gt[z] == 1))
                if gt[z, rr, cc] != 1:
                    rr, cc = (int(v[0]) for v in np.nonzero(gt[z] == 1))
                url = f"/api/cases/{case}/pencil?z0={z}&n={args.n}&row={rr}&col={cc}&label=1"
                t0 = time.perf_counter()
                c.get(f"/api/cases/{case}/superpixels", params={"index": z, "n": args.n}).raise_for_status()
                c.post(url, content=empty).raise_for_status()
                cold.append(1000 * (time.perf_counter() - t0))
                warm.append(timed(lambda url=url: c.post(url, content=empty)))
            print(f"click  SmartPencil, new slice (SLIC {args.n} + click): {_stats(cold)}")
            print(f"click  SmartPencil, cached map:                  {_stats(warm)}")

            # SmartFill / AutoCorrection on one slice, and a save of the whole volume
            z = zs[len(zs) // 2]
            rr, cc = (int(v.mean()) for v in np.nonzero(gt[z] == 1))
            strokes = np.zeros((ny, nx), np.uint8)
            strokes[rr - 2:rr + 3, cc - 2:cc + 3] = 1
            r = c.post(f"/api/cases/{case}/smartfill?z0={z}&labels=1", content=empty + strokes.tobytes())
            fill_ms = timed(lambda: c.post(f"/api/cases/{case}/smartfill?z0={z}&labels=1",
                                           content=empty + strokes.tobytes()))
            ac_ms = timed(lambda: c.post(f"/api/cases/{case}/autocorrect?z0={z}", content=r.content))
            import gzip

            body = gzip.compress(gt.tobytes(), 1)
            save_ms = timed(lambda: c.put(f"/api/cases/{case}/label?base=none", content=body,
                                          headers={"content-encoding": "gzip"}))
            print(f"SmartFill one slice: {fill_ms:.0f} ms   AutoCorrection one slice: {ac_ms:.0f} ms   "
                  f"save whole label ({nz}x{ny}x{nx}, history + atomic write): {save_ms:.0f} ms")

            # bounded concurrent load
            lat: list[float] = []
            errors: list[str] = []
            lock = threading.Lock()

            def client(seed: int) -> None:
                rng = np.random.default_rng(seed)
                with httpx.Client(base_url=base, timeout=120) as cl:
                    for _ in range(args.requests):
                        t0 = time.perf_counter()
                        try:
                            if rng.random() < 0.8:
                                r = cl.get(f"/api/cases/{case}/slice",
                                           params={"axis": int(rng.integers(0, 3)), "index": int(rng.integers(0, min(nz, ny, nx)))})
                            else:
                                zz = int(rng.choice(zs))
                                rr_, cc_ = (int(v.mean()) for v in np.nonzero(gt[zz] == 1))
                                r = cl.post(f"/api/cases/{case}/pencil?z0={zz}&n={args.n}&row={rr_}&col={cc_}&label=1",
                                            content=empty)
                            if r.status_code != 200:
                                raise RuntimeError(f"{r.status_code}: {r.text[:100]}")
                        except Exception as exc:  # noqa: BLE001 - counted
                            with lock:
                                errors.append(str(exc))
                            continue
                        with lock:
                            lat.append(1000 * (time.perf_counter() - t0))

            t0 = time.perf_counter()
            threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall = time.perf_counter() - t0
            total = args.clients * args.requests
            print(f"load   {args.clients} clients x {args.requests} requests (80% slices, 20% clicks): "
                  f"{total / wall:.0f} req/s, {_stats(lat)}, errors {len(errors)}/{total}")
            if errors:
                print("  first error:", errors[0])
            if not args.no_browser:
                browser_timing(base, case, zs, args.n)
            print(f"targets: <= 100 ms per slice (median here {slice_median:.1f} ms), <= 150 ms per click")
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
