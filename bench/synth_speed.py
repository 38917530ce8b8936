"""Time the synthetic cohort: per-patient render time and the whole default cohort (writing included).

Usage: python bench/synth_speed.py [--patients 46] [--workers N] [--out DIR]
Prints the machine load too: other processes share the CPU, so timings are noisy.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=46)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--sample", type=int, default=4, help="patients timed one by one first")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from orbitseg.synth import make_cohort, render_patient
    from orbitseg.synth.cohort import plan_cohort

    print(f"cpus {os.cpu_count()}  load average {os.getloadavg()}")
    plan = plan_cohort(args.patients, seed=0)
    times = []
    for case, _, params, _ in plan[: args.sample]:
        t = time.perf_counter()
        ct, _ = render_patient(params)
        dt = time.perf_counter() - t
        times.append(dt)
        s = params.scan
        print(f"  {case}: {ct.shape} sp {s.spacing_xy:.2f} T {s.slice_thickness} -> {dt:.2f} s render")
    print(f"render per scan (first {len(times)}): mean {np.mean(times):.2f} s")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or os.path.join(tmp, "cohort")
        t = time.perf_counter()
        cases = make_cohort(out, patients=args.patients, seed=0, workers=args.workers, overwrite=True)
        total = time.perf_counter() - t
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"cohort: {args.patients} patients, {len(cases)} scans in {total:.1f} s "
          f"({total / len(cases):.2f} s per scan wall, workers={args.workers or os.cpu_count()})")
    print(f"peak memory: main {self_rss:.0f} MB, largest worker {child_rss:.0f} MB")
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
