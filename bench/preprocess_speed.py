"""Time and peak memory to preprocess one 512x512x100 orbital CT (read, VOIs, window, fit, write).

    python bench/preprocess_speed.py [--size 64] [--repeats 3]

Target (issue 5): <= 3 s and <= 1.5 GB on 2 cores.  The scan is a synthetic
patient rendered at 0.4 mm x 0.4 mm x 0.625 mm; rendering is not timed.  The
timed part runs in a fresh process so its peak RSS is the preprocessing alone.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
from orbitseg.io.layout import list_cases
from orbitseg.preprocess.dataset import preprocess_case
from orbitseg.preprocess.pipeline import PreprocessConfig
root = Path(sys.argv[1]); size = int(sys.argv[2])
t_import = time.perf_counter() - t0
case = list_cases(root)[0]
t1 = time.perf_counter()
entry = preprocess_case(root, root / "preprocessed", case, PreprocessConfig(size=size))
t = time.perf_counter() - t1
print(json.dumps({"seconds": t, "import_seconds": t_import,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "vois": [v["n_slices"] for v in entry["vois"]]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from _common import describe, run_fresh, standard_scan, summary

    from orbitseg.io.layout import image_path, label_path, make_dataset_json, write_dataset_json
    from orbitseg.io.write import write_label, write_scan

    ct, lab = standard_scan()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        write_scan(ct, image_path(root, "bench"))
        write_label(lab, label_path(root, "bench"), reference=ct)
        write_dataset_json(root, make_dataset_json({"bench": "bench"}, name="bench"))
        print(f"{describe(ct)}, input size {args.size}")
        runs = run_fresh(CHILD, [root, args.size], args.repeats)
    print(summary(runs, "preprocess one case") + f", VOI slices {runs[0]['vois']}")
    print("target: <= 3 s and <= 1500 MB on 2 cores")


if __name__ == "__main__":
    main()
