"""Models on a real head CT and on thicker / pitched versions of it: volumes, asymmetry and flags (issue 20).

    python bench/realct_check.py [--scan ../shared/realct/cthead_unc.nii.gz] [--model MODEL[:FOLDS] ...]
                                 [--variants as_scanned slab4 slab6 pitch+15_slab4 pitch-15_slab4]
                                 [--threads 2] [--out /tmp/orbitseg_realct] [--figure realct_check.png]

There is no truth on a real scan, so this bench asks what can be asked of one: are both orbits' globes, muscles
and optic nerves found, with volumes inside the adult reference ranges and left and right alike
(:data:`orbitseg.evaluate.quality.REFERENCE_RANGES_ML`, :data:`~orbitseg.evaluate.quality.ASYMMETRY_LIMITS_PCT`,
the limits the quality flags use), and do they stay so when the same head is scanned the way clinics often scan
it?  The variants are made from the scan itself:

* ``as_scanned``: the file as it is;
* ``slabK``: each run of K/spacing consecutive slices averaged into one (a thick reconstruction: 4 or 6 mm from
  the real CT's 2 mm), origin moved to the slab's centre;
* ``pitch+15_slab4`` / ``pitch-15_slab4``: the head turned 15 degrees about its left-right axis (chin down /
  up; linear resampling on the scan's own grid, about the volume's centre), then 4 mm slabs.

Each model (``--model``: a model folder, a run folder or a checkpoint, optionally ``:FOLDS`` as
``orbitseg predict --folds`` takes it; default the shipped model's four folds and its full network) segments
every variant with ``orbitseg.predict.run.predict_inputs`` (its own post-processing, ``auto`` precision). Printed
per variant and model: globe, muscle and nerve volumes right / left (mL), the structures outside the reference
range or asymmetric, and the flag codes; then per model the count of such findings over all variants (fewer is
more plausible; on a normal adult head, ideally none). A model that labels one real optic nerve as a stub shows
up here where no synthetic benchmark sees it. The CPU's features are printed; the table and every row go to
``OUT/realct_check.json``; ``--figure`` draws every model's labels of the scan as it is, on axial slices through
the optic nerves.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = ("as_scanned", "slab4", "slab6", "pitch+15_slab4", "pitch-15_slab4")
DEFAULT_SCAN = Path(__file__).resolve().parents[1] / ".." / "shared" / "realct" / "cthead_unc.nii.gz"


def make_variant(image, name: str):
    """The SimpleITK ``image`` as variant ``name`` (see the module docstring)."""
    import SimpleITK as sitk

    out = image
    if name.startswith("pitch"):
        deg = float(name[len("pitch"):].split("_")[0])
        centre = image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()])
        rot = sitk.Euler3DTransform()
        rot.SetCenter(centre)
        rot.SetRotation(float(np.deg2rad(deg)), 0.0, 0.0)
        out = sitk.Resample(image, image, rot, sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    if "slab" in name:
        mm = float(name.split("slab")[1])
        out = slab_average(out, mm)
    return sitk.Cast(sitk.Round(out), sitk.sitkInt16) if out.GetPixelID() != sitk.sitkInt16 else out


def parse_model(spec: str) -> tuple[str, str]:
    """``MODEL[:FOLDS]`` as (the model's path as a string: a model folder, run or checkpoint, ``shipped`` for the
    shipped model; the folds, ``all`` when not given)."""
    from orbitseg.runs.layout import resolve_model

    model, _, folds = spec.rpartition(":") if ":" in spec else (spec, "", "all")
    return str(resolve_model(model)), folds or "all"


def slab_average(image, mm: float):
    """Runs of ``round(mm / slice spacing)`` slices along the image's third axis averaged into one."""
    import SimpleITK as sitk

    k = int(round(mm / image.GetSpacing()[2]))
    if k < 2:
        raise ValueError(f"a {mm} mm slab holds fewer than 2 slices of {image.GetSpacing()[2]} mm")
    arr = sitk.GetArrayFromImage(image).astype(np.float32)  # (z, y, x)
    n = arr.shape[0] // k * k
    thick = arr[:n].reshape(-1, k, *arr.shape[1:]).mean(axis=1)
    out = sitk.GetImageFromArray(thick)
    sp = image.GetSpacing()
    out.SetSpacing((sp[0], sp[1], sp[2] * k))
    out.SetDirection(image.GetDirection())
    # the first slab's centre: (k - 1) / 2 slices along the third axis from the first slice
    out.SetOrigin(image.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, (k - 1) / 2)))
    return out


def findings(rows: dict[str, dict]) -> list[str]:
    """What is implausible in one segmentation's right / left rows: volumes outside the reference ranges,
    asymmetries beyond the flags' limits."""
    from orbitseg.constants import EYEBALL, MUSCLES, NERVE
    from orbitseg.evaluate.quality import ASYMMETRY_LIMITS_PCT, REFERENCE_RANGES_ML

    out = []
    for label, col in ((EYEBALL, "globe_ml"), (MUSCLES, "muscles_ml"), (NERVE, "nerve_ml")):
        lo, hi = REFERENCE_RANGES_ML[label]
        vals = {s: float(rows[s][col]) for s in ("right", "left") if s in rows}
        for side, v in vals.items():
            if not lo <= v <= hi:
                out.append(f"{col[:-3]} {side} {v:.2f}")
        if len(vals) == 2 and max(vals.values()) > 0:
            asym = 100 * abs(vals["right"] - vals["left"]) / (0.5 * (vals["right"] + vals["left"]))
            if asym > ASYMMETRY_LIMITS_PCT[label]:
                out.append(f"{col[:-3]} asym {asym:.0f}%")
    return out


def draw(scan_path: Path, labels: list[tuple[str, Path]], out: Path, n_slices: int = 5) -> None:
    """PNG of ``n_slices`` axial slices through the optic nerves: the scan, then each model's labels on it
    (rows), cropped to the orbits.  ``labels``: (row title, label file on the scan's grid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from orbitseg.constants import EYEBALL, NERVE
    from orbitseg.io.orient import to_canonical
    from orbitseg.io.read import read_label, read_scan

    scan = to_canonical(read_scan(scan_path))
    maps = [(t, to_canonical(read_label(p, reference=read_scan(scan_path))).array) for t, p in labels]
    union = np.zeros(scan.shape, bool)
    for _, m in maps:
        union |= m > 0
    kji = np.argwhere(union)
    lo, hi = kji.min(0), kji.max(0) + 1
    pad = 6
    ys, xs = slice(max(lo[1] - pad, 0), hi[1] + pad), slice(max(lo[2] - pad, 0), hi[2] + pad)
    nerve_z = np.unique(np.concatenate([np.argwhere(m == NERVE)[:, 0] for _, m in maps] or [lo[:1]]))
    ks = np.unique(np.linspace(nerve_z.min(), nerve_z.max(), n_slices).round().astype(int))
    colours = np.array([[0, 0, 0, 0], [0.9, 0.1, 0.1, 0.35], [0.1, 0.85, 0.2, 0.45], [1.0, 0.6, 0.0, 0.85]])
    rows = [("scan", None)] + maps
    fig, axes = plt.subplots(len(rows), len(ks), figsize=(2.6 * len(ks) * (xs.stop - xs.start) / (ys.stop - ys.start),
                                                          2.6 * len(rows)), squeeze=False)
    for i, (title, m) in enumerate(rows):
        for j, k in enumerate(ks):
            a = axes[i, j]
            a.imshow(np.clip((scan.array[k, ys, xs] + 160.0) / 400.0, 0, 1), cmap="gray", interpolation="nearest")
            if m is not None:
                a.imshow(colours[m[k, ys, xs]], interpolation="nearest")
            a.set_title(f"{title}, slice {k}" if m is not None else f"slice {k}", fontsize=8)
            a.axis("off")
    fig.suptitle(f"{scan_path.name}: axial slices through the optic nerves (patient right on the left); "
                 f"red eyeball {EYEBALL}, green muscles, orange nerve {NERVE}", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scan", type=Path, default=DEFAULT_SCAN,
                    help="a head CT with both orbits (default: shared/realct)")
    ap.add_argument("--model", nargs="+", default=None,
                    help="MODEL[:FOLDS] each, MODEL a model folder, run or checkpoint or 'shipped' (default: the shipped "
                         "model's four folds and its full network)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/orbitseg_realct"))
    ap.add_argument("--figure", type=Path, default=None,
                    help="also draw the as-scanned labels of every model through the optic nerves (PNG)")
    args = ap.parse_args()
    bad = [v for v in args.variants if v != "as_scanned" and "slab" not in v and not v.startswith("pitch")]
    if bad:
        ap.error(f"unknown variant(s) {bad}; e.g. {', '.join(VARIANTS)}")

    import SimpleITK as sitk
    import torch

    from predict_speed import cpu_features

    from orbitseg.predict.run import predict_inputs
    from orbitseg.pretrained import shipped_model_dir

    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_features()}; {args.threads} threads", flush=True)
    if not args.scan.is_file():
        sys.exit(f"error: {args.scan}: no such scan (pass --scan)")
    specs = [parse_model(s) for s in args.model or [f"{shipped_model_dir()}:all", f"{shipped_model_dir()}:full"]]
    for (model, _), spec in zip(specs, args.model or []):  # every name checked before any scan is segmented
        if not Path(model).exists():
            sys.exit(f"error: --model {spec}: no such model folder, run or checkpoint (or 'shipped')")
    image = sitk.ReadImage(str(args.scan))
    scans = args.out / "scans"
    scans.mkdir(parents=True, exist_ok=True)
    for v in args.variants:
        path = scans / f"{v}.nii.gz"
        if not path.exists():
            sitk.WriteImage(make_variant(image, v), str(path), True)

    results = []
    for i, (model, folds) in enumerate(specs):
        for v in args.variants:
            out = args.out / "labels" / f"{i}_{Path(model).name}_{folds}_{v}"
            t0 = time.time()
            rows, problems = predict_inputs(scans / f"{v}.nii.gz", out, model=model, folds=folds,
                                            overwrite=True, progress=False)
            by_side = {r["side"]: r for r in rows if r["side"] in ("right", "left")}
            rec = {"model": model, "folds": folds, "variant": v, "seconds": round(time.time() - t0, 1),
                   "problems": problems, "rows": by_side,
                   "findings": findings(by_side) if len(by_side) == 2 else ["no orbits segmented"],
                   "flags": sorted({c for r in by_side.values() for c in (r.get("flag_codes") or "").split(";") if c})}
            results.append(rec)
            vol = " ".join(f"{by_side[s][c]:.2f}" if s in by_side else "-"
                           for c in ("globe_ml", "muscles_ml", "nerve_ml") for s in ("right", "left"))
            print(f"{v:16s} {Path(model).name}:{folds:4s} globe R/L, muscles R/L, nerve R/L (mL): {vol}"
                  f" | implausible: {', '.join(rec['findings']) or 'none'}"
                  f" | flags: {', '.join(rec['flags']) or 'none'}",
                  flush=True)
    if args.figure is not None and "as_scanned" in args.variants:
        label_files = []
        for i, (model, folds) in enumerate(specs):
            folder = args.out / "labels" / f"{i}_{Path(model).name}_{folds}_as_scanned"
            label_files.append((f"{Path(model).name}:{folds}", folder / "as_scanned.nii.gz"))
        draw(scans / "as_scanned.nii.gz", label_files, args.figure)
        print(f"wrote {args.figure}")
    print("\nimplausible findings per model over the variants (fewer is better; a normal adult head: none):")
    for model, folds in specs:
        mine = [r for r in results if r["model"] == model and r["folds"] == folds]
        print(f"  {model}:{folds}: {sum(len(r['findings']) for r in mine)} in {len(mine)} variants; "
              f"nerves right / left (mL): " + ", ".join(
                  f"{r['variant']} {r['rows'].get('right', {}).get('nerve_ml', float('nan')):.2f}/"
                  f"{r['rows'].get('left', {}).get('nerve_ml', float('nan')):.2f}" for r in mine))
    (args.out / "realct_check.json").write_text(json.dumps(
        {"cpu": cpu_features(), "scan": str(args.scan.resolve()), "variants": args.variants, "results": results},
        indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
