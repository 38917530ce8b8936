"""How well the quality flags tell poor predictions from good ones, on synthetic scans no training used.

    python bench/quality_flags.py [--save records.json]   # choose the fold limits, then the report table
    python bench/quality_flags.py --load records.json     # the same from saved records, without predicting
    python bench/quality_flags.py --training-range        # the shipped model's training acquisition (model.json)

Scans come from the synthetic generator (``orbitseg.synth``) with seeds no training run, no choice of the
project and not the README's fresh cohort (2026) used: validation seeds ``VALIDATION_SEEDS`` (where the
fold-disagreement limit is chosen) and report seeds ``REPORT_SEEDS`` (where the table is measured), disjoint.
Every scan is rendered on a 320 x 320 grid (same field of view, pixels kept within 0.3-0.6 mm) to fit 2 shared
cores; every other scan is degraded so that poor predictions exist: slices 5 mm thick, 4x noise, the field of
view cropped through one orbit, the head pitched 25 degrees.  Each scan is predicted by the shipped model
(four folds, their own probabilities kept), its Dice against the synthetic truth is measured per structure,
and the flags of :func:`orbitseg.evaluate.quality.quality_flags` are compared with it: a scan is *poor* when any
structure's Dice (3D, whole scan) is below ``POOR_DICE``.  The CPU's vector features are printed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: a scan whose Dice of any structure is below this is a poor prediction
POOR_DICE = 0.80
#: generator seeds of the scans the fold-disagreement limits are chosen on
VALIDATION_SEEDS = tuple(range(7100, 7108))
#: generator seeds of the scans the table is measured on (disjoint from VALIDATION_SEEDS, training's 0 and 2026)
REPORT_SEEDS = tuple(range(8100, 8136))
#: degradations, in turn over the seeds: None = as drawn
DEGRADATIONS = (None, "thick_5mm", None, "noise_x4", None, "crop_one_orbit", None, "pitch_25deg")
#: in-plane grid of every scan (the generator draws 320, 384 or 512): rendering and mapping labels back cost in
#: proportion to it, and 2 shared cores must do the whole bench in minutes
MATRIX = 320
#: the share of good validation orbits the chosen fold-agreement limit may flag
GOOD_FLAGGED_MAX = 0.05


def scan_of(seed: int, degradation: str | None):
    """(ct, truth labels) of the generator's patient ``seed`` with ``degradation`` applied."""
    from orbitseg.synth import render_patient, sample_patient

    p = sample_patient(np.random.default_rng(seed))
    s = p.scan
    if s.matrix[0] > MATRIX:  # the same field of view on a 320 x 320 grid (pixels within training's 0.3-0.6 mm)
        fov = s.spacing_xy * s.matrix[0]
        s = replace(s, matrix=(MATRIX, MATRIX), spacing_xy=float(np.clip(fov / MATRIX, 0.3, 0.6)))
    if degradation == "thick_5mm":
        s = replace(s, slice_thickness=5.0, n_slices=max(8, round(s.slice_thickness * s.n_slices / 5.0)),
                    noise_sigma=max(6.0, s.noise_sigma * 0.6))
    elif degradation == "noise_x4":
        s = replace(s, noise_sigma=s.noise_sigma * 4.0)
    elif degradation == "pitch_25deg":
        yaw, _, roll = s.head_rotation
        s = replace(s, head_rotation=(yaw, 25.0, roll))
    ct, lab = render_patient(replace(p, scan=s))
    if degradation == "crop_one_orbit":
        ct, lab = _crop_through_right_globe(ct, lab)
    return ct, lab


def _crop_through_right_globe(ct, lab):
    """Both volumes on their canonical grid, cut at the x of the patient-right globe's centre."""
    from orbitseg.evaluate.measure import midline_x
    from orbitseg.io.orient import to_canonical
    from orbitseg.io.volume import Volume

    c_ct, c_lab = to_canonical(ct), to_canonical(lab)
    mid, _ = midline_x(c_lab)
    kji = np.argwhere(c_lab.array == 1)
    x = c_lab.geometry.index_to_physical(kji[:, ::-1].astype(float))[:, 0]
    i_cut = int(round(kji[x < mid, 2].mean()))  # canonical i grows towards patient left
    g = c_ct.geometry
    origin = g.index_to_physical(np.array([i_cut, 0, 0], dtype=float))
    ng = g.with_(size=(g.size[0] - i_cut, g.size[1], g.size[2]), origin=tuple(origin))
    return (Volume(np.ascontiguousarray(c_ct.array[:, :, i_cut:]), ng),
            Volume(np.ascontiguousarray(c_lab.array[:, :, i_cut:]), ng))


def orbit_dice(pred, truth) -> dict[tuple[str, int], float]:
    """Dice per (side, structure), sides split at the truth's midline."""
    from orbitseg.evaluate.measure import midline_x

    mid, _ = midline_x(truth)
    kji = np.indices(truth.shape).reshape(3, -1).T
    right = (truth.geometry.index_to_physical(kji[:, ::-1].astype(float))[:, 0] < mid).reshape(truth.shape)
    out = {}
    for side, m in (("right", right), ("left", ~right)):
        for s in (1, 2, 3):
            p, t = (pred.array == s) & m, (truth.array == s) & m
            n = int(p.sum()) + int(t.sum())
            out[(side, s)] = math.nan if n == 0 else 2.0 * int((p & t).sum()) / n
    return out


def _asym(labels, s: int) -> float:
    from orbitseg.evaluate.measure import MEASURE_KEYS, orbit_measurements

    return float(orbit_measurements(labels)[3][MEASURE_KEYS[s]])


def predict_set(seeds, segmenter, log=print) -> list[dict]:
    """Per scan: seed, degradation, per-structure Dice, per-orbit Dice, fold agreement, flags."""
    from orbitseg.evaluate.measure import orbit_measurements
    from orbitseg.evaluate.metrics import dice_per_structure
    from orbitseg.evaluate.quality import quality_flags
    from orbitseg.predict.segmenter import training_acquisition

    train_acq = training_acquisition(segmenter)
    out = []
    for n, seed in enumerate(seeds):
        deg = DEGRADATIONS[n % len(DEGRADATIONS)]
        t0 = time.time()
        ct, truth = scan_of(seed, deg)
        seg = segmenter.segment(ct, fold_agreement=True)  # as predict measures it: on the network's VOI slices
        dice = dice_per_structure(seg.labels.array, truth.array)
        # fold flags: from "agreement"; the midline as predict finds it (one globe: the orbit finder's)
        flags = quality_flags(seg.labels, ct, training_acquisition=train_acq, measurements=orbit_measurements(
            seg.labels, midline_fallback=seg.orbit_midline))
        rec = {"seed": seed, "degradation": deg or "none", "spacing": [round(v, 3) for v in ct.spacing],
               "dice": {str(s): float(d) for s, d in dice.items()},
               "orbit_dice": {f"{side}:{s}": d for (side, s), d in orbit_dice(seg.labels, truth).items()},
               "agreement": {f"{side}:{s}": d for (side, s), d in seg.fold_agreement.items()},
               "asymmetry_pct": {k: {"pred": abs(_asym(seg.labels, s)), "true": abs(_asym(truth, s))}
                                 for k, s in (("1", 1), ("2", 2), ("3", 3))},
               "flags": [f["code"] + "@" + f["side"] for f in flags],
               "flag_values": {f["code"] + "@" + f["side"]: f["value"] for f in flags}}
        out.append(rec)
        log(f"seed {seed} {rec['degradation']:>14}: Dice " + " ".join(f"{d:.3f}" for d in dice.values())
            + f"  {time.time() - t0:.1f} s  {', '.join(rec['flags']) or 'ok'}")
    return out


def choose_limits(records: list[dict]) -> dict[int, float]:
    """Per structure, the largest fold-agreement limit (0.05 steps) that flags at most GOOD_FLAGGED_MAX of the
    validation orbits whose own Dice is >= POOR_DICE."""
    limits = {}
    for s in (1, 2, 3):
        good = [r["agreement"][f"{side}:{s}"] for r in records for side in ("right", "left")
                if not math.isnan(r["agreement"][f"{side}:{s}"]) and r["orbit_dice"][f"{side}:{s}"] >= POOR_DICE]
        best = 0.0
        for t in np.arange(0.50, 1.0001, 0.01):
            if np.mean(np.asarray(good) < t) <= GOOD_FLAGGED_MAX:
                best = round(float(t), 2)
        limits[s] = best
        poor = [r["agreement"][f"{side}:{s}"] for r in records for side in ("right", "left")
                if not math.isnan(r["agreement"][f"{side}:{s}"]) and r["orbit_dice"][f"{side}:{s}"] < POOR_DICE]
        print(f"structure {s}: good orbits {len(good)} (agreement 5th pct {np.percentile(good, 5):.3f}), poor orbits "
              f"{len(poor)} (agreement {', '.join(f'{p:.2f}' for p in sorted(poor))}); limit {best}")
    return limits


def asymmetry_error(records: list[dict]) -> None:
    """How far the predicted left/right asymmetry strays from the true one on good validation scans."""
    for s in ("1", "2", "3"):
        good = [r for r in records if all(not math.isnan(r["orbit_dice"][f"{side}:{s}"])
                                          and r["orbit_dice"][f"{side}:{s}"] >= POOR_DICE for side in ("right", "left"))]
        err = [abs(r["asymmetry_pct"][s]["pred"] - r["asymmetry_pct"][s]["true"]) for r in good]
        pred = [r["asymmetry_pct"][s]["pred"] for r in good]
        true = [r["asymmetry_pct"][s]["true"] for r in good]
        if good:
            print(f"structure {s}: {len(good)} good scans; |asymmetry| true max {max(true):.1f} %, predicted max "
                  f"{max(pred):.1f} %, |predicted - true| 95th pct {np.percentile(err, 95):.1f}, max {max(err):.1f} points")


def with_fold_flags(records: list[dict], limits: dict) -> list[dict]:
    """The records' flags plus the fold-disagreement flags that ``limits`` give (not on a structure flagged missing)."""
    out = []
    for r in records:
        fold = [f"{SHORT[int(s)]}_fold_disagreement@{side}" for key, d in r["agreement"].items()
                for side, s in [key.split(":")]
                if not math.isnan(d) and d < limits[int(s)]
                and f"{SHORT[int(s)]}_missing@{side}" not in r["flags"] and f"{SHORT[int(s)]}_missing@both" not in r["flags"]]
        out.append(r | {"flags": r["flags"] + fold})
    return out


SHORT = {1: "eyeball", 2: "muscles", 3: "nerve"}


def table(records: list[dict]) -> str:
    """Markdown table: per flag family, scans flagged and how many of them are poor; and the poor scans missed."""
    poor = {r["seed"] for r in records if min(v for v in r["dice"].values() if not math.isnan(v)) < POOR_DICE
            or any(math.isnan(v) for v in r["dice"].values())}
    fams = {"missing": "_missing", "volume range": "_volume_", "asymmetry": "_asymmetry",
            "fold disagreement": "_fold_disagreement", "cut by scan edge": "cut_by_scan_edge",
            "acquisition": "acquisition_", "thick slices": "thick_slices"}
    lines = [f"| flag | scans flagged | of them poor (precision) | poor scans it catches (recall, of {len(poor)}) |",
             "|---|---|---|---|"]
    for name, key in {**fams, "any flag": ""}.items():
        flagged = {r["seed"] for r in records if any(key in f for f in r["flags"])}
        tp = len(flagged & poor)
        prec = f"{tp} ({tp / len(flagged):.0%})" if flagged else "-"
        lines.append(f"| {name} | {len(flagged)} | {prec} | {tp} ({tp / len(poor):.0%}) |" if poor else
                     f"| {name} | {len(flagged)} | {prec} | - |")
    missed = sorted(r["seed"] for r in records if r["seed"] in poor and not r["flags"])
    by_deg = {}
    for r in records:
        d = by_deg.setdefault(r["degradation"], [0, 0, 0])
        d[0] += 1
        d[1] += r["seed"] in poor
        d[2] += bool(r["flags"])
    lines.append("")
    lines.append(f"poor = a structure's Dice < {POOR_DICE}; {len(records)} scans, {len(poor)} poor, "
                 f"{len(missed)} poor scan(s) without any flag (seeds {missed})")
    lines.append("by degradation (scans, poor, flagged): " + "; ".join(f"{k} {v[0]}/{v[1]}/{v[2]}"
                                                                       for k, v in by_deg.items()))
    return "\n".join(lines)


def training_range(samples: int = 20000, rendered: int = 16) -> dict:
    """The acquisition range of the generator's full-size scans (orbitseg.synth.params, small=False), as the
    shipped model saw them: geometry from ``samples`` drawn acquisitions, HU inside the true eyeballs and muscles
    from ``rendered`` rendered patients (seeds 9000...)."""
    from orbitseg.evaluate.quality import acquisition_of
    from orbitseg.synth import render_patient, sample_patient
    from orbitseg.synth.params import head_rotation_matrix, sample_acquisition

    rng = np.random.default_rng(12345)
    vals: dict[str, list[float]] = {k: [] for k in ("slice_mm", "pixel_mm", "fov_mm", "coverage_mm", "obliquity_deg",
                                                    "head_yaw_deg", "head_roll_deg")}
    for _ in range(samples):
        a = sample_acquisition(rng)
        d = np.asarray(a.direction).reshape(3, 3)
        vals["slice_mm"].append(a.slice_thickness)
        vals["pixel_mm"].append(a.spacing_xy)
        vals["fov_mm"].append(a.spacing_xy * a.matrix[0])
        vals["coverage_mm"].append(a.slice_thickness * a.n_slices)
        vals["obliquity_deg"].append(float(np.degrees(np.arccos(np.clip(np.abs(d).max(axis=0), -1, 1))).max()))
        v = d.T @ head_rotation_matrix(*a.head_rotation) @ np.array([1.0, 0.0, 0.0])
        vals["head_yaw_deg"].append(float(np.degrees(np.arctan2(abs(v[1]), abs(v[0])))))
        vals["head_roll_deg"].append(float(np.degrees(np.arctan2(abs(v[2]), abs(v[0])))))
    hu: dict[str, list[float]] = {"globe_hu": [], "muscle_hu": []}
    for seed in range(9000, 9000 + rendered):
        ct, lab = render_patient(sample_patient(np.random.default_rng(seed)))
        acq = acquisition_of(ct, lab)
        for k in hu:
            hu[k].append(acq[k])
    out = {k: [round(min(v), 3), round(max(v), 3)] for k, v in vals.items()}
    out.update({k: [round(min(v), 1), round(max(v), 1)] for k, v in hu.items()})
    out["source"] = "synthetic generator 1.0 (orbitseg.synth.params, full-size scans)"
    out["how"] = (f"geometry: min/max over {samples} acquisitions drawn by sample_acquisition; globe_hu / muscle_hu: "
                  f"median HU inside the true labels of {rendered} rendered patients (seeds 9000-{9000 + rendered - 1}); "
                  "`python bench/quality_flags.py --training-range`")
    return out


def main() -> None:
    from _common import describe  # noqa: F401  (the bench helpers; the CPU line below)
    from predict_speed import cpu_features

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--training-range", action="store_true", help="print the shipped model's training acquisition")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save", default=None, help="write the per-scan records (JSON) here")
    ap.add_argument("--load", default=None, help="read the per-scan records (JSON) from here instead of predicting")
    ap.add_argument("--sets", choices=("both", "validation", "report"), default="both",
                    help="predict only one set (with --merge: the other from saved records)")
    ap.add_argument("--merge", default=None, help="saved records to take the set not predicted from")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_features()}; {args.threads} threads")
    if args.training_range:
        print(json.dumps(training_range(), indent=1))
        return
    from orbitseg.evaluate.quality import FOLD_AGREEMENT_KEY, fold_limits_of
    from orbitseg.pretrained import shipped_model_dir
    from orbitseg.runs.layout import read_model_json

    recorded = fold_limits_of((read_model_json(shipped_model_dir()) or {}).get(FOLD_AGREEMENT_KEY))
    if args.load:
        records = json.loads(Path(args.load).read_text(encoding="utf-8"))
    else:
        from orbitseg.predict.segmenter import Segmenter

        seg = Segmenter.load(log=lambda _: None)
        print(seg.describe())
        t0 = time.time()
        records = {"validation": [], "report": []}
        for name, seeds in (("validation", VALIDATION_SEEDS), ("report", REPORT_SEEDS)):
            if args.sets in ("both", name):
                records[name] = predict_set(seeds, seg)
                if args.save:  # after each set, so that an interrupted run keeps what it measured
                    Path(args.save).write_text(json.dumps(records, indent=1), encoding="utf-8")
                if name == "validation":
                    print("chosen on validation:", choose_limits(records["validation"]), flush=True)
        if args.merge:  # the other set from an earlier run's records
            old = json.loads(Path(args.merge).read_text(encoding="utf-8"))
            records = {k: v or old[k] for k, v in records.items()}
        print(f"{sum(map(len, records.values()))} scans in {time.time() - t0:.0f} s")
    print(f"validation seeds {VALIDATION_SEEDS[0]}-{VALIDATION_SEEDS[-1]}:")
    limits = choose_limits(records["validation"])
    asymmetry_error(records["validation"])
    if limits != recorded:
        print(f"note: the shipped model's limits (model.json {FOLD_AGREEMENT_KEY}, else FOLD_AGREEMENT_MIN) are "
              f"{recorded}; chosen here {limits}")
    print(f"report seeds {REPORT_SEEDS[0]}-{REPORT_SEEDS[-1]}, fold limits {limits}:")
    print(table(with_fold_flags(records["report"], limits)))


if __name__ == "__main__":
    main()
