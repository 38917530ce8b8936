"""Clinical orbit measurements against the synthetic generator's truth, on scans no training used.

    python bench/clinical_measurements.py              # the README table (12 scans)
    python bench/clinical_measurements.py --scans 4    # a quicker look

Patients are drawn by the generator (``orbitseg.synth``) with seeds ``SEEDS``: not training's cohort
(seed 0), not the README's fresh cohort (2026), not the quality-flag bench's (7100-8135).  For each
scan the generator's truth of every measurement (``orbitseg.synth.truth.clinical_truth``: muscle
thickness from the painted tubes, rims and globe from the painted shapes) is compared with

* the measurements on the truth labels: the error of the measuring method alone, and
* the measurements on the shipped model's prediction (``Segmenter.load(None)``): what a user gets.

Printed: mean absolute error and bias per measurement (mm, mL, and % for volumes), the left - right
difference of proptosis, the time per scan, and the CPU's vector features.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: generator seeds of the scans measured (disjoint from every seed training or another bench used)
SEEDS = tuple(range(9100, 9112))


def _errors(measured: dict, truth: dict) -> dict[str, float]:
    """measurement key -> measured - true, both orbits (``{key}@{side}``)."""
    from orbitseg.evaluate.clinical import GROUPS, RECTI

    out = {}
    for side in ("right", "left"):
        t, m = truth[side], measured[side]
        out[f"proptosis_mm@{side}"] = m["proptosis_mm"] - t.proptosis_mm
        for g in RECTI:
            out[f"{g}_thickness_mm@{side}"] = m[f"{g}_thickness_mm"] - t.thickness_mm[g]
        for g in GROUPS:
            out[f"{g}_ml@{side}"] = m[f"{g}_ml"] - t.volume_ml[g]
            out[f"{g}_ml_pct@{side}"] = 100.0 * (m[f"{g}_ml"] - t.volume_ml[g]) / t.volume_ml[g]
    d_true = truth["left"].proptosis_mm - truth["right"].proptosis_mm
    out["proptosis_lr_mm@both"] = (measured["left"]["proptosis_mm"] - measured["right"]["proptosis_mm"]) - d_true
    return out


def measure_scan(seed: int, segmenter) -> dict:
    """Truth, method error and prediction error of every measurement of generator patient ``seed``."""
    from orbitseg.evaluate.clinical import clinical_measurements
    from orbitseg.synth import render_patient, sample_patient
    from orbitseg.synth.truth import clinical_truth

    p = sample_patient(np.random.default_rng(seed))
    ct, labels = render_patient(p)
    truth = clinical_truth(p, labels)
    t0 = time.perf_counter()
    on_truth = clinical_measurements(labels, ct)
    t_measure = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = segmenter.segment(ct).labels
    t_segment = time.perf_counter() - t0
    on_pred = clinical_measurements(pred, ct)
    return {"seed": seed, "slice_mm": p.scan.slice_thickness, "spacing_mm": p.scan.spacing_xy,
            "ted": max(p.anatomy.left.ted, p.anatomy.right.ted) > 1.0,
            "measure_s": t_measure, "segment_s": t_segment,
            "truth": {s: {"proptosis_mm": truth[s].proptosis_mm, **{f"{g}_thickness_mm": v for g, v in
                                                                   truth[s].thickness_mm.items()},
                          **{f"{g}_ml": v for g, v in truth[s].volume_ml.items()}} for s in ("right", "left")},
            "method_error": _errors(on_truth, truth), "prediction_error": _errors(on_pred, truth)}


ROWS = (("proptosis_mm", "Proptosis (interzygomatic line -> globe)", "mm"),
        ("proptosis_lr_mm", "Proptosis left - right", "mm"),
        ("sr_thickness_mm", "Superior group (SR + levator) thickness", "mm"),
        ("ir_thickness_mm", "Inferior rectus thickness", "mm"),
        ("mr_thickness_mm", "Medial rectus thickness", "mm"),
        ("lr_thickness_mm", "Lateral rectus thickness", "mm"),
        ("sr_ml", "Superior group volume", "mL"), ("ir_ml", "Inferior rectus volume", "mL"),
        ("mr_ml", "Medial rectus volume", "mL"), ("lr_ml", "Lateral rectus volume", "mL"),
        ("so_ml", "Superior oblique volume", "mL"))


def _pooled(records: list[dict], which: str, key: str) -> np.ndarray:
    return np.array([v for r in records for k, v in r[which].items() if k.split("@")[0] == key], float)


def table(records: list[dict]) -> str:
    """The README table: per measurement, true mean, method MAE, prediction MAE and bias."""
    lines = ["| measurement | orbits | true mean | MAE on true labels | MAE on predictions | bias on predictions |",
             "|---|---|---|---|---|---|"]
    for key, title, unit in ROWS:
        m, p = _pooled(records, "method_error", key), _pooled(records, "prediction_error", key)
        truth = np.array([r["truth"][s][key] for r in records for s in ("right", "left")]) \
            if key != "proptosis_lr_mm" else np.array([r["truth"]["left"]["proptosis_mm"]
                                                       - r["truth"]["right"]["proptosis_mm"] for r in records])
        d = 3 if unit == "mL" else 2
        pct = ""
        if unit == "mL":
            mp, pp = _pooled(records, "method_error", key + "_pct"), _pooled(records, "prediction_error", key + "_pct")
            pct = (f" ({np.nanmean(np.abs(mp)):.1f} %)", f" ({np.nanmean(np.abs(pp)):.1f} %)")
        else:
            pct = ("", "")
        true_mean = f"{np.nanmean(np.abs(truth)) if key == 'proptosis_lr_mm' else np.nanmean(truth):.{d}f}"
        lines.append(f"| {title} | {p.size} | {true_mean} {unit} | {np.nanmean(np.abs(m)):.{d}f}{pct[0]} "
                     f"| {np.nanmean(np.abs(p)):.{d}f}{pct[1]} | {np.nanmean(p):+.{d}f} |")
    return "\n".join(lines)


def main() -> None:
    from predict_speed import cpu_features

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scans", type=int, default=len(SEEDS), help="how many of SEEDS to measure")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write every scan's record here")
    args = ap.parse_args()

    import torch

    from orbitseg.predict import Segmenter

    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_features()}; {args.threads} threads", flush=True)
    segmenter = Segmenter.load(None)
    records = []
    for seed in SEEDS[: args.scans]:
        r = measure_scan(seed, segmenter)
        records.append(r)
        print(f"seed {seed}: slices {r['slice_mm']} mm, in-plane {r['spacing_mm']:.2f} mm, TED {r['ted']}; "
              f"measuring {r['measure_s']:.1f} s, segmenting {r['segment_s']:.1f} s", flush=True)
    print(table(records))
    print(f"measuring one scan (both orbits, on the truth labels): median "
          f"{np.median([r['measure_s'] for r in records]):.1f} s")
    if args.json:
        args.json.write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
