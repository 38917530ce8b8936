"""What a cheaper SEQ-UNET would cost on the CPU: arithmetic and warm network time of candidate layouts (issue 21).

    python bench/network_cost.py [--threads 2] [--rounds 3] [--slices 72] [--emulate-avx2]
                                 [--candidates default w12_head2 w8 ...]

Issue 21's target (one 512 x 512 x 100 scan in <= 5 s on 2 cores without AVX-512) is missed because of the
network's arithmetic: the shipped ``default`` layout needs about 9-12 s for the scan's two orbits on an emulated
AVX2 CPU.  A cheaper layout has to be *trained* (a GPU session's work), so this bench says beforehand which layouts
would reach the target: each candidate is the ``default`` preset with a few fields changed, built with random
weights (time and arithmetic do not depend on the values), in eval mode with channels-last weights as the
PyTorch engine runs them.

Printed per candidate: parameters, GFLOP for one orbit (``--slices`` VOI slices of 80 x 80, four fold networks,
counted by ``torch.utils.flop_counter``: convolutions and matrix products), and the median warm time of
``predict_volume_slices`` over ``--rounds`` rounds, candidates interleaved within each round so that the machine's
drift hits all of them alike.  A whole scan is two orbits plus about 1.6 s of reading, fitting, mapping back,
measuring and writing (README, speed section).  ``--emulate-avx2`` caps PyTorch and oneDNN at AVX2 as
``bench/predict_speed.py`` does.  Accuracy is not measured here: a candidate reaches the target only once trained
and scored like the shipped model.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: candidate layouts: fields of the ``default`` preset's ModelConfig that change
CANDIDATES: dict[str, dict] = {
    "default": {},
    "head2": dict(head_level=2),  # head LSTM at a quarter of the resolution; stage 1 once per sequence
    "w12": dict(widths=(12, 24, 48, 96), bottleneck_lstm_hidden=48, head_lstm_hidden=12),
    "w12_head2": dict(widths=(12, 24, 48, 96), bottleneck_lstm_hidden=48, head_lstm_hidden=12, head_level=2),
    "w8": dict(widths=(8, 16, 32, 64), bottleneck_lstm_hidden=32, head_lstm_hidden=8),
}
INPUT = 80  # the shipped model's slice size
FOLDS = 4


def measure(names: list[str], slices: int, rounds: int) -> list[dict]:
    """Parameters, GFLOP and warm seconds of ``FOLDS`` networks of each candidate on ``slices`` slices."""
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from orbitseg.model import build_model, count_parameters, predict_volume_slices

    torch.manual_seed(0)
    x = torch.from_numpy(np.random.default_rng(0).uniform(0, 1, (slices, 1, INPUT, INPUT)).astype(np.float32))
    nets = {n: [build_model("default", input_size=INPUT, **CANDIDATES[n]).eval().to(memory_format=torch.channels_last)
                for _ in range(FOLDS)] for n in names}
    rows = {}
    for n, ns in nets.items():
        with FlopCounterMode(display=False) as fc:
            predict_volume_slices(ns[0], x)
        rows[n] = {"name": n, "params_m": count_parameters(ns[0]) / 1e6, "gflop": FOLDS * fc.get_total_flops() / 1e9,
                   "seconds": []}
        predict_volume_slices(ns[0], x)  # warm-up: oneDNN builds its kernels for these shapes
    for _ in range(rounds):
        for n, ns in nets.items():
            t0 = time.perf_counter()
            for net in ns:
                predict_volume_slices(net, x)
            rows[n]["seconds"].append(time.perf_counter() - t0)
    return list(rows.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--slices", type=int, default=72, help="VOI slices of one orbit (the standard scan's: 72)")
    ap.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    ap.add_argument("--emulate-avx2", action="store_true", help="cap PyTorch and oneDNN at AVX2 (in a child process)")
    args = ap.parse_args()
    if args.emulate_avx2 and os.environ.get("ONEDNN_MAX_CPU_ISA") != "AVX2":
        env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
        argv = [a for a in sys.argv[1:] if a != "--emulate-avx2"]
        sys.exit(subprocess.run([sys.executable, __file__, *argv, "--emulate-avx2"], env=env).returncode)

    import numpy as np
    import torch

    from predict_speed import cpu_features

    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_features()}; {args.threads} threads"
          + ("; EMULATING AVX2 (PyTorch and oneDNN capped)" if args.emulate_avx2 else ""), flush=True)
    rows = measure(args.candidates, args.slices, args.rounds)
    print(f"one orbit = {FOLDS} fold networks x {args.slices} slices of {INPUT} x {INPUT}, float32, warm; "
          f"median of {args.rounds} interleaved rounds")
    print(f"{'candidate':12s} {'params':>8s} {'GFLOP':>7s} {'seconds':>8s}  changes from the default preset")
    for r in rows:
        print(f"{r['name']:12s} {r['params_m']:7.2f}M {r['gflop']:7.1f} {float(np.median(r['seconds'])):8.2f}  "
              f"{CANDIDATES[r['name']] or '-'}  (rounds: {' '.join(f'{s:.2f}' for s in r['seconds'])})")
    print("a scan = 2 orbits + about 1.6 s around the network; target <= 5 s on 2 cores without AVX-512")


if __name__ == "__main__":
    main()
