"""Adapting the shipped model to a new site, measured (issue 20).

    python bench/adapt.py [--ks 2 4 8] [--test 6] [--epochs 10] [--scratch-epochs 30] [--average-weight 0.5]
                          [--zero-shot MODEL ...] [--out /tmp/adapt]
    python bench/adapt.py --ks --zero-shot MODEL ...     # only the zero-shot rows (a retrained model's site-B row)

A simulated **site B**: patients drawn by :mod:`orbitseg.synth` with seeds no shipped-model training used
(the shipped model's cohort is seed 0, the fresh-patient check seed 2026), then shifted three ways:

* scanner: a softer reconstruction kernel (in-plane blur 1.3-1.6 mm FWHM instead of 0.6-1.0), 1.8x the noise,
  and the head pitched 8-16 degrees further (another positioning habit);
* population: half the patients with thyroid eye disease (rectus bellies 1.3-1.6x thicker, 2 mm proptosis);
* annotation conventions: the globe labelled 0.6 mm wider (its outer rim), the optic nerve 0.5 mm thinner (the
  nerve without its sheath) - both applied to the generator's labels in millimetres, on each scan's own grid.

Arms, each a model trained with ``orbitseg.train.train(DATASET, "full")`` (``orbitseg train --fold full``) on the
first k labelled site-B scans and scored on ``--test`` other site-B patients (3D Dice per structure on each
scan's own grid, four numbers per arm: eyeball, muscles, nerve, their mean):

* ``shipped``: the shipped model untouched (zero-shot);
* with ``--zero-shot MODEL ...``: each of those model folders untouched too, on site B and on the own site (the
  site-B row of a retrained model; ``--ks`` with no value trains nothing);
* ``fine-tune k``: ``--init-from shipped`` (its full network; before 2026-12-06, when it had none, its fold 0),
  ``--epochs`` epochs, slices made ``--like shipped``;
* ``scratch k``: the same k scans and slices from random weights, ``--scratch-epochs`` epochs;
* with ``--average-weight W``: each fine-tuned network averaged with the shipped network it started from (``orbitseg
  export --full --average-with shipped``), scored on site B and on the own site, beside the fine-tuned network on the
  own site (what fine-tuning costs where the shipped model was made).

The shipped model's in-domain reference is measured on the same test patients without the site shift. Every
number printed comes from this run; CPU minutes are the training processes' user+system time. The table, the
seeds and the machine go to ``OUT/adapt.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: site B's patients: seeds of their own (the shipped model's cohort is seed 0, the fresh-patient check 2026)
SITE_SEED = 777
#: the annotation conventions of site B, in mm (see the module docstring)
GLOBE_GROW_MM = 0.6
NERVE_SHRINK_MM = 0.5


def site_params(params, rng: np.random.Generator):
    """Site B's scanner and population applied to one synthetic patient's parameters."""
    scan = params.scan
    yaw, pitch, roll = scan.head_rotation
    scan = replace(scan, psf_fwhm=float(rng.uniform(1.3, 1.6)), noise_sigma=float(scan.noise_sigma * 1.8),
                   head_rotation=(yaw, float(pitch + rng.uniform(8.0, 16.0)), roll))
    an = params.anatomy
    if rng.random() < 0.5:  # thyroid eye disease: the recti thicken, the globe moves forward
        f = float(rng.uniform(1.3, 1.6))

        def ted(side):
            belly = tuple(b * (f if i < 4 else 1.0) for i, b in enumerate(side.muscle_belly))
            return replace(side, muscle_belly=belly, ted=max(side.ted, f), proptosis=side.proptosis + 2.0)

        an = replace(an, left=ted(an.left), right=ted(an.right))
    return replace(params, anatomy=an, scan=scan)


def site_labels(labels: np.ndarray, spacing_kji: tuple[float, float, float]) -> np.ndarray:
    """Site B's annotation conventions on a label array ``(nz, ny, nx)`` with voxel spacing in array order:
    the globe grown by :data:`GLOBE_GROW_MM` into background, the nerve's outer :data:`NERVE_SHRINK_MM` removed."""
    from scipy import ndimage

    from orbitseg.constants import EYEBALL, NERVE

    out = labels.copy()
    to_globe = ndimage.distance_transform_edt(labels != EYEBALL, sampling=spacing_kji)
    out[(labels == 0) & (to_globe <= GLOBE_GROW_MM)] = EYEBALL
    inside = ndimage.distance_transform_edt(labels == NERVE, sampling=spacing_kji)
    out[(labels == NERVE) & (inside <= NERVE_SHRINK_MM)] = 0
    return out


def make_patient(seed: int, *, shifted: bool):
    """(ct, labels) Volumes of site-B patient ``seed`` (``shifted=False``: the same patient as the shipped
    model's own site would scan and label it)."""
    from orbitseg.io.volume import Volume
    from orbitseg.synth import render_patient, sample_patient

    rng = np.random.default_rng([SITE_SEED, seed])
    params = sample_patient(rng)
    if shifted:
        params = site_params(params, np.random.default_rng([SITE_SEED, seed, 1]))
    ct, labels = render_patient(params)
    if shifted:
        labels = Volume(site_labels(labels.array, labels.geometry.spacing[::-1]), labels.geometry)
    return ct, labels


def write_dataset(root: Path, seeds: list[int], pool: Path) -> None:
    """A site-B dataset in the nnU-Net layout: one labelled case per seed, each scan rendered once into
    ``pool`` and copied from there."""
    import shutil

    from orbitseg.io.layout import image_path, label_path, make_dataset_json, write_dataset_json
    from orbitseg.io.write import write_label, write_scan

    cases = {}
    for s in seeds:
        case = f"SITEB_{s:03d}"
        if not label_path(pool, case).exists():
            ct, labels = make_patient(s, shifted=True)
            write_scan(ct, image_path(pool, case), overwrite=True)
            write_label(labels, label_path(pool, case), reference=ct, overwrite=True)
        for path in (image_path, label_path):
            path(root, case).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path(pool, case), path(root, case))
        cases[case] = f"siteB_{s:03d}"
    write_dataset_json(root, make_dataset_json(cases, name="SiteB", description="bench/adapt.py site B"))


def score(model, tests: list[tuple]) -> list[float]:
    """Mean 3D Dice (eyeball, muscles, nerve, mean of the three) of ``model`` over ``tests`` [(ct, labels)]."""
    from orbitseg.constants import STRUCTURES
    from orbitseg.evaluate.metrics import dice_per_structure
    from orbitseg.predict import Segmenter

    seg = Segmenter.load(model, engine="torch", log=lambda _: None)
    per = []
    for ct, truth in tests:
        d = dice_per_structure(seg.segment(ct).labels.array, truth.array)
        per.append([d[s] for s in STRUCTURES])
    m = np.nanmean(np.asarray(per, dtype=float), axis=0)
    return [*map(float, m), float(np.mean(m))]


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ks", type=int, nargs="*", default=[2, 4, 8],
                    help="labelled site-B scans per arm (none: only the zero-shot rows)")
    ap.add_argument("--test", type=int, default=6, help="held-out site-B test patients")
    ap.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs")
    ap.add_argument("--scratch-epochs", type=int, default=30, help="epochs from random weights")
    ap.add_argument("--lr", type=float, default=None,
                    help="fine-tuning learning rate (default: the preset's, 1e-3 for the default preset)")
    ap.add_argument("--arms", nargs="+", default=["fine-tune", "scratch"], choices=["fine-tune", "scratch"])
    ap.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16"),
                    help="training arithmetic (auto: bfloat16 where the CPU computes it in hardware)")
    ap.add_argument("--average-weight", type=float, default=None,
                    help="also export each fine-tuned network averaged with the shipped network it started from "
                         "(`orbitseg export --full --average-with shipped --average-weight W`) and score it on both "
                         "sites, beside the fine-tuned one on the own site")
    ap.add_argument("--zero-shot", type=Path, nargs="+", default=[], metavar="MODEL",
                    help="other model folders (orbitseg export) scored untouched beside the shipped one")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/orbitseg_adapt"))
    args = ap.parse_args()
    for m in args.zero_shot:
        if not (m / "model.json").is_file():
            ap.error(f"--zero-shot: {m}: not a model folder (no model.json; make one with orbitseg export)")

    import torch

    from predict_speed import cpu_features

    from orbitseg.model import native_bfloat16
    from orbitseg.preprocess.dataset import preprocess_dataset
    from orbitseg.runs.checkpoint import preprocess_of
    from orbitseg.runs.layout import resolve_model
    from orbitseg.train import train

    torch.set_num_threads(args.threads)
    precision = args.precision if args.precision != "auto" else ("bfloat16" if native_bfloat16() else "float32")
    print(f"CPU: {cpu_features()}; {args.threads} threads; training precision {precision}", flush=True)
    shipped = resolve_model(None)
    like = preprocess_of(shipped)
    kmax = max(args.ks, default=0)
    train_seeds = list(range(kmax))
    test_seeds = list(range(1000, 1000 + args.test))
    t0 = time.time()
    tests = [make_patient(s, shifted=True) for s in test_seeds]
    tests_home = [make_patient(s, shifted=False) for s in test_seeds]
    print(f"made {2 * len(tests)} test scans in {time.time() - t0:.0f} s", flush=True)

    rows = {"shipped, own site (in-domain reference)": score(shipped, tests_home),
            "shipped, site B (zero-shot)": score(shipped, tests)}
    for m in args.zero_shot:
        rows[f"{m.name}, own site"] = score(m, tests_home)
        rows[f"{m.name}, site B (zero-shot)"] = score(m, tests)
    minutes = {}
    for line, vals in rows.items():
        print(f"{line}: {vals}", flush=True)
    for k in sorted(args.ks):
        ds = args.out / f"k{k}"
        if not (ds / "dataset.json").exists():
            write_dataset(ds, train_seeds[:k], args.out / "pool")
        preprocess_dataset(ds, like, progress=False, overwrite=True)
        for arm, init, epochs in (("fine-tune", shipped, args.epochs), ("scratch", None, args.scratch_epochs)):
            if arm not in args.arms:
                continue
            over = {"precision": precision, "threads": args.threads}
            if arm == "fine-tune" and args.lr is not None:
                over["lr"] = args.lr
            c0 = cpu_seconds()
            run = train(ds, "full", epochs=epochs, init_from=init, overwrite=True, progress=False,
                        out=ds / "runs" / arm, overrides=over)[0]
            minutes[f"{arm} k={k}"] = (cpu_seconds() - c0) / 60.0
            rows[f"{arm} k={k}"] = score(run, tests)
            print(f"{arm} k={k}: {rows[f'{arm} k={k}']} ({minutes[f'{arm} k={k}']:.1f} CPU min)", flush=True)
            if arm == "fine-tune" and args.average_weight is not None:
                from orbitseg.train.export import export_model

                avg = export_model(ds / "runs" / arm, ds / "runs" / f"{arm}-averaged", full=True, overwrite=True,
                                   dataset=ds, average_with=shipped, average_weight=args.average_weight,
                                   progress=False)
                for name, model, where in ((f"{arm} k={k}, own site", run, tests_home),
                                           (f"{arm} k={k} averaged ({args.average_weight:g}), site B", avg, tests),
                                           (f"{arm} k={k} averaged ({args.average_weight:g}), own site", avg,
                                            tests_home)):
                    rows[name] = score(model, where)
                    print(f"{name}: {rows[name]}", flush=True)

    arms = [f"fine-tune {args.epochs} epochs (lr {args.lr or 'of the preset'})" * ("fine-tune" in args.arms),
            f"scratch {args.scratch_epochs} epochs" * ("scratch" in args.arms)] if args.ks else ["zero-shot only"]
    print(f"\nsite B: {len(tests)} test patients (seeds {test_seeds}), training scans from seeds {train_seeds}; "
          f"{', '.join(a for a in arms if a)}, {precision}")
    print(f"{'model':44s} {'eyeball':>8s} {'muscles':>8s} {'nerve':>8s} {'mean':>8s} {'CPU min':>8s}")
    for name, v in rows.items():
        cpu = f"{minutes[name]:8.1f}" if name in minutes else f"{'':8s}"
        print(f"{name:44s} " + " ".join(f"{x:8.3f}" for x in v) + f" {cpu}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "adapt.json").write_text(json.dumps({
        "cpu": cpu_features(), "threads": args.threads, "precision": precision, "site_seed": SITE_SEED,
        "train_seeds": train_seeds, "test_seeds": test_seeds, "epochs": args.epochs,
        "scratch_epochs": args.scratch_epochs, "lr": args.lr, "dice": rows, "cpu_minutes": minutes,
        "columns": ["eyeball", "muscles", "nerve", "mean"], "pid": os.getpid()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
