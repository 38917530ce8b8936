"""Wall time and peak memory to segment one 512x512x100 orbital CT with the shipped model, I/O included,
per inference engine and precision; and scans per minute for a folder.

    python bench/predict_speed.py [--repeats 3] [--threads 2] [--mirror] [--model RUN_OR_MODEL_DIR]
                                  [--engines torch:float32,torch:bfloat16,onnx:float32,openvino:float32,openvino:bfloat16]
                                  [--folds all] [--folder 20] [--emulate-avx2]

Target (issues 7, 21): <= 5 s and <= 1.5 GB on 2 CPU cores without AVX-512.  The scan is a
synthetic patient at 0.4 x 0.4 x 0.625 mm written as .nii.gz; each timed run is a fresh process
doing `orbitseg predict` (read, find orbits, 4-model ensemble, map back, write labels and
measurements), so peak RSS is the prediction's own.  The ONNX graphs are built (and cached) before
timing, as they would be after a first use or an `orbitseg export` (OpenVINO's compiled graphs too).
The CPU's vector features are printed beside the figures.

``--emulate-avx2`` caps the instruction sets PyTorch (``ATEN_CPU_CAPABILITY=avx2``) and oneDNN, which
PyTorch's and OpenVINO's convolutions use (``ONEDNN_MAX_CPU_ISA=AVX2``), may use, to estimate a CPU
without AVX-512 on one that has it (bfloat16 pairs are then left out).  ONNX Runtime has no such cap:
its figure stays this CPU's.  An estimate, not a measurement on such a CPU.
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
                                mirror=sys.argv[4] == "1", model=sys.argv[5] or None, precision=sys.argv[6],
                                engine=sys.argv[7], folds=sys.argv[8])
t = time.perf_counter() - t1
assert not problems, problems
print(json.dumps({"seconds": t, "import_seconds": t_import,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def cpu_features() -> str:
    """The CPU model and the vector features that decide float32 / bfloat16 speed."""
    import platform

    model, flags = platform.processor(), set()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    keys = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
    return f"{model}; " + " ".join(k for k in keys if k in flags) + (" (no AVX-512)" if "avx512f" not in flags else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mirror", action="store_true", help="with mirrored test-time augmentation")
    ap.add_argument("--model", default="", help="a run, model folder or checkpoint (default: the shipped model)")
    ap.add_argument("--engines", default="torch:float32,torch:bfloat16,onnx:float32,openvino:float32,openvino:bfloat16",
                    help="engine:precision pairs to time (bfloat16 is left out on CPUs without it in hardware)")
    ap.add_argument("--folds", default="all",
                    help="folds of the model to ensemble, as `orbitseg predict --folds` (e.g. 0: one network; full: the "
                         "network trained on every case, where the model holds one)")
    ap.add_argument("--folder", type=int, default=0,
                    help="also time a folder of this many scans (one process, engine auto): scans per minute")
    ap.add_argument("--emulate-avx2", action="store_true",
                    help="cap PyTorch and oneDNN (OpenVINO) at AVX2 in the timed processes (not ONNX Runtime)")
    args = ap.parse_args()
    env = None
    if args.emulate_avx2:
        import os

        env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")

    import torch
    from _common import describe, run_fresh, standard_scan, summary

    from orbitseg.io.write import write_scan
    from orbitseg.model import native_bfloat16
    from orbitseg.predict import Segmenter

    torch.set_num_threads(args.threads)
    ct, _ = standard_scan()
    print(f"CPU: {cpu_features()}; bfloat16 in hardware: {native_bfloat16()}; {args.threads} threads"
          + ("; EMULATING AVX2 (PyTorch and oneDNN capped; ONNX Runtime not)" if env else ""))
    pairs = [tuple(p.split(":")) for p in args.engines.split(",")]
    pairs = [(e, p) for e, p in pairs if p != "bfloat16" or (native_bfloat16() and not env)]
    with tempfile.TemporaryDirectory() as tmp:
        scan = write_scan(ct, Path(tmp) / "bench.nii.gz")
        print(f"{describe(ct)}, {args.model or 'shipped model'}, folds {args.folds}"
              + (", mirrored TTA" if args.mirror else ""))
        for engine, precision in dict.fromkeys((e, p) for e, p in pairs if e != "torch"):
            Segmenter.load(args.model or None, engine=engine, precision=precision)  # graphs built/compiled once (cached)
        for engine, precision in pairs:
            runs = run_fresh(CHILD, [scan, Path(tmp) / "out", args.threads, int(args.mirror), args.model, precision,
                                     engine, args.folds], args.repeats, env=env)
            print(summary(runs, f"predict one scan, engine {engine}, {precision}"))
        if args.folder:
            import shutil
            import time

            from orbitseg.predict.run import predict_inputs

            folder = Path(tmp) / "folder"
            folder.mkdir()
            for i in range(args.folder):
                shutil.copy(scan, folder / f"scan_{i:02d}.nii.gz")
            t0 = time.perf_counter()
            _, problems = predict_inputs(folder, Path(tmp) / "folder_out", model=args.model or None, progress=False,
                                         folds=args.folds)
            sec = time.perf_counter() - t0
            assert not problems, problems
            print(f"folder of {args.folder} scans (engine auto): {sec:.1f} s, {60 * args.folder / sec:.1f} scans per minute")
    print("target: <= 5 s and <= 1500 MB per scan on 2 cores without AVX-512")


if __name__ == "__main__":
    main()
