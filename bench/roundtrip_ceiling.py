"""What the network's input size alone costs: Dice of labels sent through preprocessing and back.

    python bench/roundtrip_ceiling.py [--patients 8] [--sizes 64 96 128 160] [--aspect stretch|pad]

For synthetic patients of the default cohort, every orbit VOI's labels are
fitted into ``size x size`` and mapped back to the scan's own grid, (a) as
soft per-class fractions (what orbitseg stores and trains on) and (b) as hard
labels (what a nearest-label pipeline like the paper's keeps).  The Dice of
the result against the original labels, per structure, is the ceiling any
model at that input size can reach.
"""

from __future__ import annotations

import argparse

import numpy as np

from orbitseg.constants import FIT_ASPECT, FIT_ASPECTS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=8)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128, 160])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--aspect", choices=FIT_ASPECTS, default=FIT_ASPECT)
    args = ap.parse_args()

    from orbitseg.constants import LABEL_NAMES, STRUCTURES
    from orbitseg.preprocess.fit import one_hot
    from orbitseg.preprocess.pipeline import PreprocessConfig, labels_to_scan, prepare_scan
    from orbitseg.evaluate.metrics import dice_per_structure
    from orbitseg.synth import render_patient, sample_patient

    seqs = np.random.SeedSequence(args.seed).spawn(args.patients)
    res = {(s, kind): [] for s in args.sizes for kind in ("soft", "hard")}
    px = {s: [] for s in args.sizes}
    for i, ss in enumerate(seqs):
        ct, lab = render_patient(sample_patient(np.random.default_rng(ss)))
        for size in args.sizes:
            preps = prepare_scan(ct, PreprocessConfig(size=size, aspect=args.aspect), lab)
            px[size] += [p.fit.pixel_spacing for p in preps]  # (row, col) mm
            for kind in ("soft", "hard"):
                parts = [(p.box, p.fit, p.fractions if kind == "soft" else one_hot(p.fractions.argmax(1)))
                         for p in preps]
                back = labels_to_scan(parts, ct.geometry)
                res[(size, kind)].append(list(dice_per_structure(back, lab.array).values()))
        print(f"patient {i + 1}/{args.patients}: spacing {tuple(round(s, 2) for s in ct.spacing)}", flush=True)
    names = [LABEL_NAMES[c] for c in STRUCTURES]
    print(f"\n{'size':>5} {'px mm':>11} {'target':>6}  " + "  ".join(f"{n:>20}" for n in names))
    for size in args.sizes:
        for kind in ("soft", "hard"):
            d = np.array(res[(size, kind)])
            cells = "  ".join(f"{m:.3f} (min {lo:.3f})".rjust(20) for m, lo in zip(d.mean(0), d.min(0)))
            r, c = np.mean(px[size], axis=0)
            print(f"{size:>5} {f'{r:.2f} x {c:.2f}':>11} {kind:>6}  {cells}")


if __name__ == "__main__":
    main()
