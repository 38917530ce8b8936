"""Wall time and peak memory to segment one 512x512x100 orbital CT with the shipped model, I/O included.

    python bench/predict_speed.py [--repeats 3] [--threads 2] [--mirror] [--model RUN_OR_MODEL_DIR]
                                  [--precision auto|float32|bfloat16]

Target (issue 7): <= 5 s and <= 1.5 GB on 2 CPU cores.  The scan is a synthetic
patient at 0.4 x 0.4 x 0.625 mm written as .nii.gz; each timed run is a fresh
process doing `orbitseg predict` (read, find orbits, 4-model ensemble, map
back, write labels and measurements), so peak RSS is the prediction's own.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[3]))
from orbitseg.predict.run import predict_inputs
t_import = time.perf_counter() - t0
t1 = time.perf_counter()
rows, problems = predict_inputs(sys.argv[1], sys.argv[2], overwrite=True, progress=False,
                                mirror=sys.argv[4] == "1", model=sys.argv[5] or None, precision=sys.argv[6])
t = time.perf_counter() - t1
assert not problems, problems
print(json.dumps({"seconds": t, "import_seconds": t_import,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    from orbitseg.constants import PRECISIONS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mirror", action="store_true", help="with mirrored test-time augmentation")
    ap.add_argument("--model", default="", help="a run, model folder or checkpoint (default: the shipped model)")
    ap.add_argument("--precision", default="auto", choices=PRECISIONS,
                    help="network arithmetic, as `orbitseg predict --precision` (default auto)")
    args = ap.parse_args()

    from _common import describe, run_fresh, standard_scan, summary

    from orbitseg.io.write import write_scan
    from orbitseg.model import native_bfloat16

    ct, _ = standard_scan()
    with tempfile.TemporaryDirectory() as tmp:
        scan = write_scan(ct, Path(tmp) / "bench.nii.gz")
        print(f"{describe(ct)}, {args.model or 'shipped model'}, {args.threads} threads"
              + (", mirrored TTA" if args.mirror else "") + f", precision {args.precision} "
              f"(bfloat16 in hardware: {native_bfloat16()})")
        runs = run_fresh(CHILD, [scan, Path(tmp) / "out", args.threads, int(args.mirror), args.model,
                                    args.precision], args.repeats)
    print(summary(runs, "predict one scan"))
    print("target: <= 5 s and <= 1500 MB on 2 cores")


if __name__ == "__main__":
    main()
