"""What the speed benchmarks share: the standard 512x512x100 scan and timed runs in fresh processes."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace


def standard_scan():
    """(ct, labels): a synthetic patient at 0.4 x 0.4 x 0.625 mm, 512 x 512 x 100 voxels (not timed)."""
    import numpy as np

    from orbitseg.synth import render_patient, sample_patient

    p = sample_patient(np.random.default_rng(7))
    p = replace(p, scan=replace(p.scan, spacing_xy=0.4, slice_thickness=0.625, matrix=(512, 512), n_slices=100))
    return render_patient(p)


def describe(ct) -> str:
    return f"scan {ct.shape[::-1]} (x, y, z) voxels, spacing {tuple(round(s, 3) for s in ct.spacing)} mm"


def run_fresh(child_code: str, args: list[str], repeats: int, env: dict | None = None) -> list[dict]:
    """Run ``child_code`` (which prints one JSON line last) ``repeats`` times, each in a new process
    (environment ``env``, default this one's), so that its peak RSS is its own."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", child_code, *map(str, args)],
                             capture_output=True, text=True, check=True, env=env)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return runs


def summary(runs: list[dict], what: str) -> str:
    import numpy as np

    secs = [r["seconds"] for r in runs]
    return (f"{what}: median {np.median(secs):.2f} s (runs {', '.join(f'{s:.2f}' for s in secs)}), "
            f"peak RSS {max(r['peak_rss_mb'] for r in runs):.0f} MB, imports {runs[0]['import_seconds']:.2f} s "
            "(not counted)")
