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


def figure(seed: int, path: Path) -> None:
    """Picture of how one scan is measured: the muscle split in a section across the right orbit
    (truth labels) and the proptosis plane with rims, interzygomatic line and globe fronts."""
    from matplotlib.figure import Figure
    from scipy import ndimage

    from orbitseg.evaluate.clinical import (GROUPS, RIGHT_OFFSET, _plane_sample, orbit_frames, proptosis,
                                            split_muscles)
    from orbitseg.evaluate.measure import midline_x
    from orbitseg.synth import render_patient, sample_patient

    p = sample_patient(np.random.default_rng(seed))
    ct, labels = render_patient(p)
    mid = midline_x(labels)[0]
    frames = orbit_frames(labels, midline=mid)
    per = split_muscles(labels, frames, midline=mid)
    prop = proptosis(ct, labels, frames, midline=mid)
    fig = Figure(figsize=(12, 5.2))
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
    f = frames["right"]
    g = np.arange(-22.0, 22.0, 0.2)
    uu, vv = np.meshgrid(g, g[::-1])
    centre = f.centre + 0.35 * f.length * f.axis
    pts = centre + uu.reshape(-1, 1) * f.e_lat + vv.reshape(-1, 1) * f.e_up
    kji = np.rint(labels.geometry.physical_to_index(pts)[:, ::-1]).astype(int)
    inside = np.all((kji >= 0) & (kji < np.asarray(per.array.shape)), axis=1)
    codes = np.zeros(len(pts), int)
    codes[inside] = per.array[tuple(kji[inside].T)]
    img = _plane_sample(ct, pts, cval=-1024.0).reshape(uu.shape)
    ax1.imshow(np.clip(img, -200, 300), cmap="gray", extent=(g[0], g[-1], g[0], g[-1]))
    colours = {"sr": "tab:red", "ir": "tab:blue", "mr": "tab:green", "lr": "tab:orange", "so": "tab:purple"}
    for i, name in enumerate(GROUPS):
        m = (codes == RIGHT_OFFSET + i + 1).reshape(uu.shape)
        if m.any():
            ax1.contourf(uu, vv, m.astype(float), levels=[0.5, 1.5], colors=[colours[name]], alpha=0.6)
            c = np.argwhere(m).mean(0).astype(int)
            ax1.text(uu[tuple(c)], vv[tuple(c)], name.upper(), color="w", fontsize=9, ha="center", va="center",
                     weight="bold")
    ax1.set_title(f"right orbit, section {0.35 * f.length:.0f} mm behind the globe centre\n"
                  "(lateral to the right, superior up)", fontsize=9)
    ax1.set_xlabel("lateral (mm)"), ax1.set_ylabel("superior (mm)")
    # the proptosis plane
    fl, fr = frames["left"], frames["right"]
    c0 = (fl.centre + fr.centre) / 2
    e_lr = (fl.centre - fr.centre) / np.linalg.norm(fl.centre - fr.centre)
    ant = (fr.centre - fr.apex) / fr.length + (fl.centre - fl.apex) / fl.length
    e_ant = ant - ant.dot(e_lr) * e_lr
    e_ant /= np.linalg.norm(e_ant)
    a = np.arange(-60.0, 60.0, 0.2)
    b = np.arange(-30.0, 30.0, 0.2)
    aa, bb = np.meshgrid(a, b[::-1])
    pts = c0 + aa.reshape(-1, 1) * e_lr + bb.reshape(-1, 1) * e_ant
    img = _plane_sample(ct, pts, cval=-1024.0).reshape(aa.shape)
    globe = _plane_sample(labels, pts, cval=0.0, what=lambda x: x == 1).reshape(aa.shape) >= 0.5
    # image x runs towards the patient's left: show it radiologically (patient's right on the left)
    ax2.imshow(np.clip(img, -200, 1000), cmap="gray", extent=(a[0], a[-1], b[0], b[-1]))
    ax2.contour(aa, bb, ndimage.binary_fill_holes(globe).astype(float), levels=[0.5], colors="yellow",
                linewidths=0.8)
    to2 = lambda q: ((q - c0) @ e_lr, (q - c0) @ e_ant)  # noqa: E731
    r1, r2 = to2(prop.rim_right), to2(prop.rim_left)
    ax2.plot([r1[0], r2[0]], [r1[1], r2[1]], "c-", lw=1.2, label="interzygomatic line")
    ax2.plot([r1[0], r2[0]], [r1[1], r2[1]], "co", ms=4)
    d = np.array([r2[0] - r1[0], r2[1] - r1[1]])
    nrm = np.array([-d[1], d[0]]) / np.linalg.norm(d)
    nrm = nrm if nrm[1] > 0 else -nrm
    for front, val in ((prop.front_right, prop.right_mm), (prop.front_left, prop.left_mm)):
        q = np.array(to2(front))
        foot = q - val * nrm
        ax2.plot([foot[0], q[0]], [foot[1], q[1]], "m-", lw=1.2)
        ax2.text(q[0] + 2, q[1] + 1, f"{val:.1f} mm", color="m", fontsize=9)
    ax2.set_title("proptosis plane (through both globe centres, holding the mean orbital axis)", fontsize=9)
    ax2.set_xlabel("patient's right -> left (mm)"), ax2.set_ylabel("anterior (mm)")
    ax2.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    from predict_speed import cpu_features

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scans", type=int, default=len(SEEDS), help="how many of SEEDS to measure")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write every scan's record here")
    ap.add_argument("--figure", type=Path, help="only draw how the first scan is measured (PNG) and stop")
    args = ap.parse_args()
    if args.figure:
        figure(SEEDS[0], args.figure)
        return

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
