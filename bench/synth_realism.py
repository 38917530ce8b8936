"""How real do the synthetic scans look?  The real CT in shared/realct against the default cohort and the
clinical variant (issue 20): intensity statistics per tissue, the optic nerve's density against the muscles
beside it, the noise power spectrum of the brain, and axial pictures through the globes side by side
(docs/synth_realism.png).

Usage: python bench/synth_realism.py [--patients 3] [--real PATH] [--png docs/synth_realism.png]

Tissues are taken the same way on every scan: globe, muscles and nerve from labels (the generator's truth
on synthetic scans, the shipped model's prediction on the real CT), eroded by one pixel in-plane; orbital
fat = -250..-20 HU within 8 mm of those labels; bone = above 300 HU within 20 mm of them (the orbital
walls); brain = 0..90 HU where a 9 x 9 mm in-plane neighbourhood stays within that window, more than 40 mm
behind the globes and no more than 5 mm below their centres (not the neck's muscles).  The noise power spectrum comes from 24 x 24 mm brain patches (plane removed), in
HU^2 mm^2 per radial frequency band (cycles/mm), so scans of any pixel size compare.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

REAL = Path(__file__).resolve().parents[2] / "shared" / "realct" / "cthead_unc.nii.gz"
BANDS = np.arange(0.0, 0.55, 0.1)  # cycles / mm; the real CT's Nyquist is 0.5


def _canon(ct, lab):
    from orbitseg.io.orient import to_canonical

    c, l_ = to_canonical(ct), to_canonical(lab)
    return c.array.astype(np.float32), l_.array, tuple(float(v) for v in c.geometry.spacing)  # (x, y, z) mm


def tissue_masks(a: np.ndarray, lab: np.ndarray, spacing) -> dict[str, np.ndarray]:
    """Boolean masks (z, y, x) of the tissues compared (see the module docstring)."""
    sx, sy, sz = spacing
    plane = np.ones((1, 3, 3), bool)
    out = {"globe": ndimage.binary_erosion(lab == 1, plane), "muscle": ndimage.binary_erosion(lab == 2, plane),
           "nerve": lab == 3}
    dist = ndimage.distance_transform_edt(lab == 0, sampling=(sz, sy, sx))
    out["orbital fat"] = (dist > 0) & (dist <= 8.0) & (a > -250) & (a < -20)
    out["bone"] = (dist <= 20.0) & (a > 300)
    soft = (a > 0) & (a < 90)
    r = max(1, int(round(4.5 / sx)))
    homog = ndimage.binary_erosion(soft, np.ones((1, 2 * r + 1, 2 * r + 1), bool))
    gy = np.nonzero(lab == 1)[1].mean() * sy if (lab == 1).any() else 0.0
    gz = np.nonzero(lab == 1)[0].mean() * sz if (lab == 1).any() else 0.0
    yy = np.arange(a.shape[1])[None, :, None] * sy
    zz = np.arange(a.shape[0])[:, None, None] * sz
    out["brain"] = homog & (yy > gy + 40.0) & (zz > gz - 5.0)
    return out


def nerve_contrast(a: np.ndarray, lab: np.ndarray, spacing) -> list[float]:
    """Per orbit: median HU of the optic nerve minus that of the extraocular muscle within 5 mm of it (the
    nerve's density against its neighbours, what tells them apart where they touch near the apex)."""
    sx, sy, sz = spacing
    nerve = lab == 3
    if not nerve.any() or not (lab == 1).any():
        return []
    near = (lab == 2) & (ndimage.distance_transform_edt(~nerve, sampling=(sz, sy, sx)) <= 5.0)
    mid = float(np.nonzero(lab == 1)[2].mean())  # between the two globes (x of the canonical grid)
    x = np.arange(a.shape[2])[None, None, :]
    out = []
    for side in (x < mid, x >= mid):
        n_, m_ = nerve & side, near & side
        if n_.sum() >= 5 and m_.sum() >= 5:
            out.append(float(np.median(a[n_]) - np.median(a[m_])))
    return out


def _sample(v: np.ndarray, rng, n: int = 20000) -> np.ndarray:
    """At most ``n`` values of ``v`` drawn at random (equal weight per scan whatever its voxel size)."""
    return v if v.size <= n else rng.choice(v, n, replace=False)


def nps(a: np.ndarray, brain: np.ndarray, spacing, rng, n_max: int = 60) -> tuple[np.ndarray, float, int]:
    """Radial noise power spectrum (HU^2 mm^2, per band of BANDS) of brain patches, their noise std, count."""
    sx, sy, _ = spacing
    m = int(round(24.0 / sx))
    inside = ndimage.binary_erosion(brain, np.ones((1, m, m), bool))
    cand = np.argwhere(inside)
    if len(cand) == 0:
        return np.full(len(BANDS) - 1, np.nan), float("nan"), 0
    picks = cand[rng.choice(len(cand), size=min(n_max, len(cand)), replace=False)]
    yy, xx = np.mgrid[:m, :m].astype(np.float64)
    design = np.column_stack([np.ones(m * m), yy.ravel(), xx.ravel()])
    power, stds = [], []
    for k, j, i in picks:
        p = a[k, j - m // 2: j - m // 2 + m, i - m // 2: i - m // 2 + m].astype(np.float64)
        coef, *_ = np.linalg.lstsq(design, p.ravel(), rcond=None)
        p = p - (design @ coef).reshape(m, m)
        stds.append(p.std())
        power.append(np.abs(np.fft.fft2(p)) ** 2 * sx * sy / (m * m))
    ps = np.mean(power, axis=0)
    f = np.sqrt(np.fft.fftfreq(m, sy)[:, None] ** 2 + np.fft.fftfreq(m, sx)[None, :] ** 2)
    bands = np.array([ps[(f >= lo) & (f < hi)].mean() if ((f >= lo) & (f < hi)).any() else np.nan
                      for lo, hi in zip(BANDS[:-1], BANDS[1:])])
    return bands, float(np.median(stds)), len(picks)


def _axial(a, lab, spacing, half=(80.0, 40.0, 110.0)):
    """The axial slice with the most globe, cropped to x +-80 mm, y -40..+110 mm around the globes' centre."""
    k = int(np.argmax((lab == 1).sum(axis=(1, 2))))
    sx, sy, _ = spacing
    y, x = np.nonzero(lab[k] == 1)
    cx, cy = x.mean(), y.mean()
    x0, x1 = int(cx - half[0] / sx), int(cx + half[0] / sx)
    y0, y1 = int(cy - half[1] / sy), int(cy + half[2] / sy)
    out = np.full((y1 - y0, x1 - x0), -1000.0, np.float32)
    ys, xs = slice(max(y0, 0), min(y1, a.shape[1])), slice(max(x0, 0), min(x1, a.shape[2]))
    out[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0] = a[k, ys, xs]
    return out, (-half[0], half[0], half[2], -half[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=3, help="synthetic patients per variety")
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--real", type=Path, default=REAL)
    ap.add_argument("--png", type=Path, default=Path("docs/synth_realism.png"))
    ap.add_argument("--show", type=int, default=3, help="clinical-variant scans in the picture")
    args = ap.parse_args()

    from orbitseg.io.read import read_scan
    from orbitseg.predict import Segmenter
    from orbitseg.synth import render_patient
    from orbitseg.synth.cohort import plan_cohort

    rng = np.random.default_rng(0)
    groups: dict[str, list] = {"real CT": [], "default": [], "clinical": []}
    titles = ["real CT: cadaver, 1 x 1 x 2 mm, shipped model's labels"]
    t = time.perf_counter()
    real = read_scan(args.real)
    groups["real CT"].append(_canon(real, Segmenter.load(None, log=lambda *a: None).segment(real).labels))
    print(f"real CT segmented by the shipped model in {time.perf_counter() - t:.0f} s")
    for variety in ("default", "clinical"):
        for case, _, params, _ in plan_cohort(args.patients, seed=args.seed, variety=variety,
                                              followup_fraction=0.0):
            t = time.perf_counter()
            groups[variety].append(_canon(*render_patient(params)))
            extra = ""
            if params.clinical is not None:
                c = params.clinical
                extra = f", {c.kernel} kernel, {'contrast' if c.contrast else 'plain'}, {c.age_group}"
            titles.append(f"{variety}: {params.scan.spacing_xy:.2f} x {params.scan.slice_thickness} mm, "
                          f"{params.scan.noise_sigma:.0f} HU{extra}")
            print(f"{variety} {case}: {params.scan.spacing_xy:.2f} x {params.scan.slice_thickness} mm, noise "
                  f"{params.scan.noise_sigma:.0f} HU{extra} ({time.perf_counter() - t:.0f} s)")

    tissues = ("globe", "muscle", "nerve", "orbital fat", "bone", "brain")
    print("\nHU per tissue: median [5th-95th percentile] (each scan of a group weighted equally)")
    print(f"| tissue | {' | '.join(groups)} |")
    print("|---|" + "---|" * len(groups))
    masks = {g: [tissue_masks(a, lab, sp) for a, lab, sp in scans] for g, scans in groups.items()}
    for tissue in tissues:
        cells = []
        for g, scans in groups.items():
            v = np.concatenate([_sample(a[m[tissue]], rng) for (a, _, _), m in zip(scans, masks[g])])
            cells.append("-" if v.size == 0 else
                         f"{np.median(v):.0f} [{np.percentile(v, 5):.0f} to {np.percentile(v, 95):.0f}]")
        print(f"| {tissue} | {' | '.join(cells)} |")
    print("\noptic nerve minus the muscle within 5 mm of it (median HU per orbit): median [range], orbits")
    for g, scans in groups.items():
        d = [v for a, lab, sp in scans for v in nerve_contrast(a, lab, sp)]
        print(f"| {g} | " + ("-" if not d else f"{np.median(d):+.0f} [{min(d):+.0f} to {max(d):+.0f}] | {len(d)}")
              + " |")
    print("\nbrain noise power spectrum (HU^2 mm^2) per band of cycles/mm; noise std of 24 mm patches")
    heads = [f"{lo:.1f}-{hi:.1f}" for lo, hi in zip(BANDS[:-1], BANDS[1:])]
    print(f"| group | {' | '.join(heads)} | std HU | patches |")
    print("|---|" + "---|" * (len(heads) + 2))
    for g, scans in groups.items():
        rows = [nps(a, m["brain"], sp, rng) for (a, _, sp), m in zip(scans, masks[g])]
        rows = [r for r in rows if r[2]]
        if not rows:
            print(f"| {g} | no brain patches |")
            continue
        bands = np.nanmean([r[0] for r in rows], axis=0)
        print(f"| {g} | {' | '.join(f'{b:.0f}' for b in bands)} | {np.median([r[1] for r in rows]):.1f} | "
              f"{sum(r[2] for r in rows)} |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_def = len(groups["default"])
    shown = [(titles[0], groups["real CT"][0]), (titles[1], groups["default"][0])]
    shown += [(titles[1 + n_def + i], s) for i, s in enumerate(groups["clinical"][:args.show])]
    fig, axs = plt.subplots(2, len(shown), figsize=(4.2 * len(shown), 8.4), facecolor="black")
    for c, (title, (a, lab, sp)) in enumerate(shown):
        img, ext = _axial(a, lab, sp)
        axs[0, c].imshow(img, cmap="gray", vmin=-160, vmax=240, extent=ext, interpolation="bilinear")
        axs[0, c].set_title(title.replace(": ", "\n", 1), color="white", fontsize=9)
        axs[1, c].imshow(img, cmap="gray", vmin=-700, vmax=1800, extent=ext, interpolation="bilinear")
        for ax in axs[:, c]:
            ax.set_xlim(-80, 80)
            ax.set_ylim(110, -40)
            ax.axis("off")
    axs[0, 0].text(-78, 105, "W 400 L 40", color="yellow", fontsize=9)
    axs[1, 0].text(-78, 105, "W 2500 L 550", color="yellow", fontsize=9)
    plt.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=80, facecolor="black")
    print(f"\nwrote {args.png}")


if __name__ == "__main__":
    main()
