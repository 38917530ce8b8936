"""One self-contained HTML report of a training run (``orbitseg report RUN_DIR``).

The report reads what training wrote - ``RUN/fold_k/{run.json, log.csv,
curves.png, metrics/per_case.json, segmented/}`` (or a single fold folder that
holds ``run.json`` itself) - and writes ``RUN/report.html``: run facts, the
paper's Table 1 beside ours, per-fold and per-case tables, box plots, training
curves and Figure-3-like overlays of the best, median and worst cases.  Images
are embedded as base64 PNG and the CSS is inline, so the file can be mailed or
opened anywhere.  Whatever is missing (a fold without metrics, no
``segmented/`` folder, a dataset that moved) is said in the report instead of
stopping it.

    from orbitseg.report import write_report
    write_report("DATASET/runs/default")          # -> DATASET/runs/default/report.html
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from orbitseg.constants import (
    CHANNEL_SUFFIX,
    FILE_ENDING,
    IMAGES_TR,
    LABEL_COLOURS,
    LABEL_TITLES,
    LABELS_TR,
    SHORT_NAMES,
    STRUCTURES,
    label_colour_hex,
)
from orbitseg.errors import InputError
from orbitseg.io.atomic import write_text_atomic
from orbitseg.evaluate.folders import METRICS_DIR, PER_CASE_JSON
from orbitseg.runs.layout import LOG_CSV, RUN_JSON, SEGMENTED_DIR, fold_number

__all__ = ["write_report", "PAPER_TABLE1", "REPORT_NAME"]

REPORT_NAME = "report.html"

#: The paper's Table 1 (Chung et al., "Application of Deep Learning-Based Medical Image Segmentation
#: via Orbital Computed Tomography", J. Vis. Exp. 189, e64500, 2022): mean Dice and volume similarity (VS) of SEQ-UNET on
#: its test set.  key -> (Dice, VS); "all" is the multi-label column.
PAPER_TABLE1: dict[str, tuple[float, float]] = {
    "all": (0.79, 0.82),
    "eyeball": (0.86, 0.83),
    "muscles": (0.54, 0.65),
    "nerve": (0.34, 0.80),
}

#: (column title, metric key) of the Table 1 blocks, in the paper's order
_BLOCKS: list[tuple[str, str]] = [("Multi-label", "all")] + [
    (f"Label {s} ({LABEL_TITLES[s].replace('muscles', 'muscle')})", SHORT_NAMES[s]) for s in STRUCTURES
]

_COMPARISON_NOTE = (
    "The paper computed its metrics per 2D batch on labelled slices and chose its checkpoint on the "
    "test fold; ours are computed in 3D per case in the scan's own geometry, with the checkpoint chosen "
    "on a separate validation set, so the two rows are not strictly comparable."
)


# ---------------------------------------------------------------------------
# reading the run
# ---------------------------------------------------------------------------
@dataclass
class _Fold:
    k: int
    path: Path
    info: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _read_json(path: Path, problems: list[str], what: str):
    if not path.is_file():
        problems.append(f"{what}: {path.name} is missing")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        problems.append(f"{what}: {path.name} cannot be read ({type(exc).__name__}: {exc})")
        return None


def _load_folds(run_dir: Path) -> list[_Fold]:
    if not run_dir.is_dir():
        raise InputError(run_dir, "is not a folder; give a training run folder (e.g. DATASET/runs/default)")
    if (run_dir / RUN_JSON).is_file():
        dirs = [run_dir]
    else:
        dirs = sorted((d for d in run_dir.iterdir() if d.is_dir() and fold_number(d) is not None
                       and ((d / RUN_JSON).is_file() or (d / METRICS_DIR).is_dir())), key=fold_number)
    if not dirs:
        raise InputError(run_dir, "is not a training run: it holds neither run.json nor fold_k/ folders "
                                  "with run.json (give e.g. DATASET/runs/default)")
    folds = []
    for d in dirs:
        f = _Fold(k=-1, path=d)
        f.info = _read_json(d / RUN_JSON, f.problems, f"{d.name}") or {}
        k = f.info.get("fold", fold_number(d))
        f.k = int(k) if k is not None else 0
        rows = _read_json(d / METRICS_DIR / PER_CASE_JSON, f.problems, f"fold {f.k} metrics")
        if isinstance(rows, list):
            f.rows = [dict(r, fold=f.k) for r in rows if isinstance(r, dict) and "case" in r]
        folds.append(f)
    return folds


def _dataset_root(run_dir: Path, folds: list[_Fold], dataset: Path | None) -> Path | None:
    cands = [dataset] if dataset is not None else []
    cands += [Path(f.info["dataset"]) for f in folds if f.info.get("dataset")]
    base = run_dir if (run_dir / RUN_JSON).is_file() is False else run_dir.parent
    cands += [base.parent.parent]
    for c in cands:
        if c is not None and (c / LABELS_TR).is_dir():
            return c
    return None


# ---------------------------------------------------------------------------
# numbers
# ---------------------------------------------------------------------------
def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _vals(rows: list[dict], key: str) -> np.ndarray:
    return np.asarray([float(r[key]) for r in rows if _finite(r.get(key))], dtype=float)


def _mean_sd(rows: list[dict], key: str) -> tuple[float, float, int]:
    a = _vals(rows, key)
    if a.size == 0:
        return math.nan, math.nan, 0
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else math.nan, int(a.size)


def _pm(rows: list[dict], key: str, digits: int = 3) -> str:
    mean, sd, n = _mean_sd(rows, key)
    if n == 0:
        return '<span class="na">n/a</span>'
    sd_txt = "" if math.isnan(sd) else f" ± {sd:.{digits}f}"
    return f"{mean:.{digits}f}{sd_txt}"


def _num(v, digits: int = 3) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return f"{v:.{digits}f}"
    return '<span class="na">–</span>'


def _e(s) -> str:
    return html.escape(str(s))


# ---------------------------------------------------------------------------
# pictures
# ---------------------------------------------------------------------------
def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, facecolor=fig.get_facecolor())
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(uri: str, alt: str, cls: str = "") -> str:
    return f'<img class="{cls}" alt="{_e(alt)}" src="{uri}">'


def _box_plots(rows: list[dict], folds: list[int]) -> str | None:
    from matplotlib.figure import Figure

    panels = [("Dice", "dice", (0, 1.02)), ("HD95 (mm)", "hd95", None)]
    panels = [p for p in panels if any(_vals(rows, f"{p[1]}_{SHORT_NAMES[s]}").size for s in STRUCTURES)]
    if not panels:
        return None
    fig = Figure(figsize=(5.2 * len(panels), 3.8))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    rng = np.random.default_rng(0)
    for ax, (title, metric, ylim) in zip(axes, panels):
        data, colours, names = [], [], []
        for s in STRUCTURES:
            a = _vals(rows, f"{metric}_{SHORT_NAMES[s]}")
            data.append(a if a.size else np.asarray([np.nan]))
            colours.append(label_colour_hex(s))
            names.append(LABEL_TITLES[s])
        bp = ax.boxplot([d[np.isfinite(d)] for d in data], patch_artist=True, widths=0.55, showfliers=False)
        for patch, c in zip(bp["boxes"], colours):
            patch.set_facecolor(c), patch.set_alpha(0.45)
        for med in bp["medians"]:
            med.set_color("black")
        for i, s in enumerate(STRUCTURES):  # the cases themselves, marked by fold
            sel = [r for r in rows if isinstance(r.get(f"{metric}_{SHORT_NAMES[s]}"), (int, float))]
            for k in folds:
                ys = _vals([r for r in sel if r.get("fold") == k], f"{metric}_{SHORT_NAMES[s]}")
                xs = i + 1 + rng.uniform(-0.18, 0.18, ys.size)
                ax.scatter(xs, ys, s=12, marker="os^Dv<>p"[k % 8], color="k", alpha=0.6,
                           label=f"fold {k}" if i == 0 else None)
        ax.set_xticks(range(1, len(names) + 1), names, fontsize=8)
        ax.set_title(f"{title} per case", fontsize=10)
        if ylim:
            ax.set_ylim(*ylim)
        ax.grid(axis="y", alpha=0.3)
    if len(folds) > 1:  # below the plots, where it hides no box
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(folds), fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.07, 1, 1))
    else:
        fig.tight_layout()
    return _png(fig)


def _read_measurements(folds: list[_Fold]) -> list[dict]:
    """The folds' ``metrics/measurements.csv`` rows (per-orbit volumes, predicted and true)."""
    from orbitseg.evaluate.measure import MEASUREMENTS_CSV

    rows = []
    for f in folds:
        path = f.path / METRICS_DIR / MEASUREMENTS_CSV
        if path.is_file():
            rows += [r | {"fold": f.k} for r in _read_csv(path, text_columns=("case", "side", "flags", "flag_codes"))]
    return rows


def _flags_section(rows: list[dict]) -> str:
    """The test cases' quality flags (``flags`` column of metrics/measurements.csv), one row per flagged orbit."""
    if not any("flags" in r for r in rows):
        return '<p class="na">No quality flags recorded (runs scored before orbitseg had them).</p>'
    flagged = [r for r in rows if r.get("side") in ("right", "left") and r.get("flags") not in (None, "", "ok")]
    n_cases = len({r.get("case") for r in rows})
    if not flagged:
        return f'<p class="note">No quality flag on any of the {n_cases} test cases.</p>'
    body = "".join(f"<tr><td class='l'>{_e(r.get('case'))}</td><td>{_e(r.get('fold'))}</td><td>{_e(r['side'])}</td>"
                   f"<td class='l'>{_e(r['flags'])}</td></tr>" for r in flagged)
    return (f'<p class="note">{len({r.get("case") for r in flagged})} of {n_cases} test cases flagged '
            '(docs/quality.md: what each flag means and what to do).</p><div class="scroll"><table>'
            "<tr><th class='l'>Case</th><th>fold</th><th>side</th><th class='l'>flags</th></tr>"
            f"{body}</table></div>")


def _paired(rows: list[dict], a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    """Values of keys ``a`` and ``b`` over the rows where both are finite numbers."""
    pairs = [(r.get(a), r.get(b)) for r in rows]
    ok = [(x, y) for x, y in pairs if all(isinstance(v, float) and math.isfinite(v) for v in (x, y))]
    return (np.array([x for x, _ in ok], dtype=float), np.array([y for _, y in ok], dtype=float))


def _measurement_section(rows: list[dict]) -> str:
    """Table of volume agreement per structure and a predicted-vs-true scatter per orbit."""
    from matplotlib.figure import Figure

    from orbitseg.evaluate.measure import MEASURE_KEYS

    orbits = [r for r in rows if r.get("side") in ("right", "left")]
    asym = [r for r in rows if r.get("side") == "asymmetry_pct"]
    if not orbits:
        return ('<p class="na">No per-orbit measurements (metrics/measurements.csv is written by the test-fold '
                'evaluation of orbitseg train; runs trained before it have none).</p>')
    body = ""
    fig = Figure(figsize=(12, 3.8))
    axes = fig.subplots(1, len(STRUCTURES))
    for ax, s in zip(axes, STRUCTURES):
        key = MEASURE_KEYS[s]
        t, p = _paired(orbits, f"{key}_true", f"{key}_pred")
        at, ap = _paired(asym, f"{key}_true", f"{key}_pred")
        err = p - t
        body += (f"<tr><td class='l'>{_e(LABEL_TITLES[s])}</td><td>{t.size}</td><td>{t.mean():.2f}</td>"
                 f"<td>{p.mean():.2f}</td><td>{err.mean():+.2f}</td><td>{np.abs(err).mean():.2f}</td>"
                 f"<td>{100 * np.abs(err / np.where(t > 0, t, np.nan)).mean():.1f}</td>"
                 f"<td>{np.abs(ap - at).mean() if at.size else float('nan'):.1f}</td></tr>")
        ax.scatter(t, p, s=12, color=label_colour_hex(s), edgecolor="k", linewidth=0.4)
        lim = (0, max(t.max(initial=0), p.max(initial=0)) * 1.08 + 1e-6)
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set_xlim(*lim), ax.set_ylim(*lim)
        ax.set_xlabel("true volume per orbit (mL)", fontsize=8), ax.set_ylabel("predicted (mL)", fontsize=8)
        ax.set_title(LABEL_TITLES[s], fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    head = ("<tr><th class='l'>Structure</th><th>orbits</th><th>true mean mL</th><th>predicted mean mL</th>"
            "<th>bias mL</th><th>mean |error| mL</th><th>mean |error| %</th><th>asymmetry |error| (points)</th></tr>")
    return (f'<div class="scroll"><table>{head}{body}</table></div>' + _clinical_table(orbits)
            + _img(_png(fig), "predicted against true volume per orbit", "fig")
            + '<p class="note">Per orbit (left and right of the midline found on the ground truth), test cases '
              'only. Asymmetry = (left - right) / mean x 100; its error is in percentage points.</p>')


def _clinical_table(orbits: list[dict]) -> str:
    """Predicted against true clinical measurements per orbit (docs/measurements.md), where recorded."""
    from orbitseg.evaluate.clinical import CLINICAL_KEYS

    body = ""
    for key in CLINICAL_KEYS:
        t, p = _paired(orbits, f"{key}_true", f"{key}_pred")
        if t.size:
            err = p - t
            body += (f"<tr><td class='l'>{_e(key)}</td><td>{t.size}</td><td>{t.mean():.2f}</td><td>{p.mean():.2f}</td>"
                     f"<td>{err.mean():+.2f}</td><td>{np.abs(err).mean():.2f}</td></tr>")
    if not body:
        return ""
    return ("<p class='note'>Clinical measurements (mm, mL; definitions in docs/measurements.md), "
            "prediction against ground truth:</p><div class='scroll'><table><tr><th class='l'>Measurement</th>"
            "<th>orbits</th><th>true mean</th><th>predicted mean</th><th>bias</th><th>mean |error|</th></tr>"
            f"{body}</table></div>")


def _read_csv(path: Path, text_columns: tuple[str, ...] = ()) -> list[dict]:
    """Rows of a CSV file: ``text_columns`` as strings, every other value a float (NaN if empty or not a number)."""
    with path.open(encoding="utf-8", newline="") as fh:
        return [{k: v if k in text_columns else (float(v) if v not in ("", None) and _isfloat(v) else math.nan)
                 for k, v in r.items()} for r in csv.DictReader(fh)]


def _isfloat(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _curves(folds: list[_Fold], problems: list[str]) -> str | None:
    from matplotlib.figure import Figure

    from orbitseg.report.pictures import plot_training_history

    logs = []
    for f in folds:
        p = f.path / LOG_CSV
        if not p.is_file():
            problems.append(f"fold {f.k}: log.csv is missing (no training curves)")
            continue
        try:
            h = _read_csv(p)
        except (OSError, ValueError) as exc:
            problems.append(f"fold {f.k}: log.csv cannot be read ({exc})")
            continue
        if h:
            logs.append((f.k, h))
    if not logs:
        return None
    n = len(logs)
    fig = Figure(figsize=(11, 2.9 * n))
    axes = fig.subplots(n, 2, squeeze=False)
    for (ax_loss, ax_dice), (k, h) in zip(axes, logs):
        plot_training_history(ax_loss, ax_dice, h, loss_title=f"fold {k}: loss",
                              dice_title=f"fold {k}: validation Dice (dotted: chosen epoch)")
    fig.tight_layout()
    return _png(fig)


def _pick_cases(rows: list[dict]) -> list[tuple[str, dict]]:
    """(role, row) for the best, median and worst case by multi-label Dice."""
    scored = sorted((r for r in rows if _vals([r], "dice_all").size), key=lambda r: float(r["dice_all"]))
    if not scored:
        return []
    picks = [("best", scored[-1]), ("median", scored[(len(scored) - 1) // 2]), ("worst", scored[0])]
    return picks


def _overlay(case: str, fold_dir: Path, root: Path | None) -> tuple[str | None, str | None]:
    """(PNG data URI, None) or (None, why not) for one case: scan crop | prediction | truth."""
    import warnings

    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from orbitseg.io.orient import to_canonical
    from orbitseg.io.read import read_label, read_scan
    from orbitseg.preprocess.window import apply_window
    from orbitseg.report.pictures import label_rgba, side_letters

    pred_p = fold_dir / SEGMENTED_DIR / f"{case}{FILE_ENDING}"
    if not pred_p.is_file():
        return None, f"no prediction {pred_p.relative_to(fold_dir.parent)}"
    if root is None:
        return None, "the dataset folder (with imagesTr/labelsTr) was not found"
    img_p = root / IMAGES_TR / f"{case}{CHANNEL_SUFFIX}{FILE_ENDING}"
    lab_p = root / LABELS_TR / f"{case}{FILE_ENDING}"
    for p in (img_p, lab_p):
        if not p.is_file():
            return None, f"{p} is missing"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scan = read_scan(img_p)
            truth = read_label(lab_p, reference=scan)
            pred = read_label(pred_p, reference=scan)
    except (InputError, OSError) as exc:
        return None, f"cannot read it ({exc})"
    scan, truth, pred = to_canonical(scan), to_canonical(truth), to_canonical(pred)
    t, p, a = truth.array, pred.array, scan.array
    fg = (t > 0) | (p > 0)
    if not fg.any():
        return None, "neither prediction nor ground truth holds a label"
    # the axial slice with the most ground-truth voxels (prediction if the truth is empty)
    counts = (t > 0).sum(axis=(1, 2)) if (t > 0).any() else (p > 0).sum(axis=(1, 2))
    k = int(np.argmax(counts))
    sx, sy, _ = scan.spacing
    # crop around the ground truth (a noisy prediction would widen the box to the whole head)
    js, is_ = np.nonzero((t > 0).any(axis=0) if (t > 0).any() else fg.any(axis=0))
    margin_j, margin_i = int(math.ceil(12 / sy)), int(math.ceil(12 / sx))  # ~12 mm around the structures
    j0, j1 = max(js.min() - margin_j, 0), min(js.max() + margin_j + 1, a.shape[1])
    i0, i1 = max(is_.min() - margin_i, 0), min(is_.max() + margin_i + 1, a.shape[2])
    crop = np.s_[j0:j1, i0:i1]
    img = apply_window(a[k][crop])
    extent = (0, (i1 - i0) * sx, (j1 - j0) * sy, 0)
    fig = Figure(figsize=(11, 11 * (j1 - j0) * sy / max((i1 - i0) * sx, 1e-6) / 3 + 0.9), facecolor="black")
    axes = fig.subplots(1, 3)
    for ax, lab, name in zip(axes, (None, p[k][crop], t[k][crop]), ("scan (crop)", "prediction", "ground truth")):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1, extent=extent, interpolation="nearest")
        if lab is not None:
            ax.imshow(label_rgba(lab, alpha=0.55), extent=extent, interpolation="nearest")
        ax.set_title(name, color="white", fontsize=10)
        ax.axis("off")
        side_letters(ax, extent, ("R", "L"), fontsize=10)
    handles = [Patch(color=np.asarray(LABEL_COLOURS[s]) / 255, label=LABEL_TITLES[s]) for s in STRUCTURES]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, labelcolor="white", fontsize=9)
    fig.suptitle(f"{case}   axial slice k={k} (canonical)", color="white", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.94))
    return _png(fig), None


# ---------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1250px;
     color:#222;line-height:1.4;padding:0 16px}
h1{font-size:24px;margin-bottom:4px} h2{font-size:19px;border-bottom:1px solid #ddd;padding-bottom:3px;
     margin-top:32px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f3f3f3} th[colspan]{text-align:center} td.l,th.l{text-align:left}
tr.paper td{background:#fff8e6} tr.ours td{background:#eef6ff;font-weight:600}
.na{color:#999} .note{color:#555;font-size:13px;max-width:1000px}
.warn{background:#fff3f3;border:1px solid #e8b4b4;padding:6px 10px;font-size:13px}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 14px;font-size:14px}
dl.facts dt{font-weight:600} dl.facts dd{margin:0}
img{max-width:100%} img.fig{display:block;margin:8px 0}
.swatch{display:inline-block;width:12px;height:12px;vertical-align:middle;margin-right:3px;border-radius:2px}
.scroll{overflow-x:auto}
"""


def _facts(run_dir: Path, folds: list[_Fold], rows: list[dict], root: Path | None) -> str:
    infos = [f.info for f in folds if f.info]

    def uniq(get) -> str:
        vals = []
        for i in infos:
            v = get(i)
            if v is not None and v not in vals:
                vals.append(v)
        return ", ".join(str(v) for v in vals) if vals else "unknown"

    patients = set()
    for i in infos:
        patients.update(i.get("split", {}).get("test_patients", []) or [])
    tested = {r["case"] for r in rows}
    started = sorted(i["started"] for i in infos if i.get("started"))
    dates = "unknown" if not started else (started[0] if len(started) == 1 else f"{started[0]} … {started[-1]}")
    device = uniq(lambda i: i.get("options", {}).get("device"))
    items = [
        ("Run folder", _e(run_dir.resolve())),
        ("Dataset", _e(uniq(lambda i: i.get("dataset")))
         + ("" if root is None or str(root.resolve()) in uniq(lambda i: i.get("dataset"))
            else f" (read from {_e(root)})")),
        ("Preset", _e(uniq(lambda i: i.get("preset_name")))),
        ("Seeds", _e(f"training {uniq(lambda i: i.get('seed'))}; split {uniq(lambda i: i.get('split_seed'))}")),
        ("Started", _e(dates)),
        ("Folds", _e(", ".join(str(f.k) for f in folds))),
        ("Test cases scored", _e(f"{len(tested)} case(s)"
                                 + (f" of {len(patients)} patient(s)" if patients else ""))),
        ("Epochs / best epoch", _e("; ".join(
            f"fold {f.k}: {f.info.get('result', {}).get('epochs', '?')} / {f.info.get('result', {}).get('best_epoch', '?')}"
            for f in folds if f.info))),
        ("Post-processing (chosen on validation cases)", _e("; ".join(
            f"fold {f.k}: " + (", ".join(f"{k} {v}" for k, v in f.info["result"]["postprocess"].items())
                               if f.info.get("result", {}).get("postprocess") else "none recorded")
            for f in folds if f.info))),
        ("Parameters", _e(uniq(lambda i: i.get("parameters")))),
        ("Device", _e(device)),
        ("Git commit", _e(uniq(lambda i: i.get("git_commit")))),
    ]
    return '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def _table1(rows: list[dict]) -> str:
    head1 = '<tr><th class="l" rowspan="2">Method</th><th rowspan="2">n</th>' + "".join(
        f'<th colspan="2">{_e(t)}</th>' for t, _ in _BLOCKS) + "</tr>"
    head2 = "<tr>" + "<th>DICE</th><th>VS</th>" * len(_BLOCKS) + "</tr>"
    paper = '<tr class="paper"><td class="l">Chung et al. 2022, Table 1 (SEQ-UNET)</td><td>–</td>' + "".join(
        f"<td>{PAPER_TABLE1[k][0]:.2f}</td><td>{PAPER_TABLE1[k][1]:.2f}</td>" for _, k in _BLOCKS) + "</tr>"
    ours = f'<tr class="ours"><td class="l">orbitseg (this run), mean ± sd</td><td>{len(rows)}</td>' + "".join(
        f"<td>{_pm(rows, f'dice_{k}')}</td><td>{_pm(rows, f'vs_{k}')}</td>" for _, k in _BLOCKS) + "</tr>"
    return f'<div class="scroll"><table>{head1}{head2}{paper}{ours}</table></div>'


def _fold_table(folds: list[_Fold]) -> str:
    has_hd = any(_vals(f.rows, f"hd95_{SHORT_NAMES[s]}").size for f in folds for s in STRUCTURES)
    head1 = '<tr><th class="l" rowspan="2">Fold</th><th rowspan="2">cases</th>' + "".join(
        f'<th colspan="2">{_e(t)}</th>' for t, _ in _BLOCKS)
    head2 = "<tr>" + "<th>Dice</th><th>VS</th>" * len(_BLOCKS)
    if has_hd:
        head1 += f'<th colspan="{len(STRUCTURES)}">HD95 (mm)</th>'
        head2 += "".join(f"<th>{_e(LABEL_TITLES[s])}</th>" for s in STRUCTURES)
    body = ""
    for f in folds:
        if not f.rows:
            span = 2 * len(_BLOCKS) + (len(STRUCTURES) if has_hd else 0)
            body += f'<tr><td class="l">{f.k}</td><td>0</td><td class="l" colspan="{span}">' \
                    f'<span class="na">no metrics ({_e("; ".join(f.problems) or "no test case")})</span></td></tr>'
            continue
        body += f'<tr><td class="l">{f.k}</td><td>{len(f.rows)}</td>' + "".join(
            f"<td>{_pm(f.rows, f'dice_{k}')}</td><td>{_pm(f.rows, f'vs_{k}')}</td>" for _, k in _BLOCKS)
        if has_hd:
            body += "".join(f"<td>{_pm(f.rows, f'hd95_{SHORT_NAMES[s]}', 2)}</td>" for s in STRUCTURES)
        body += "</tr>"
    return f'<div class="scroll"><table>{head1}</tr>{head2}</tr>{body}</table></div>'


def _case_table(rows: list[dict], roles: dict[str, str]) -> str:
    has_hd = any(_vals(rows, f"hd95_{SHORT_NAMES[s]}").size for s in STRUCTURES)
    structs = [("Multi-label", "all")] + [(LABEL_TITLES[s], SHORT_NAMES[s]) for s in STRUCTURES]
    per = 4 + (1 if has_hd else 0)
    head1 = '<tr><th class="l" rowspan="2">Case</th><th rowspan="2">Fold</th>' + "".join(
        f'<th colspan="{per}">{_e(t)}</th>' for t, _ in structs) + "</tr>"
    sub = "<th>Dice</th><th>VS</th>" + ("<th>HD95 mm</th>" if has_hd else "") + "<th>pred mL</th><th>true mL</th>"
    head2 = "<tr>" + sub * len(structs) + "</tr>"
    body = ""
    for r in sorted(rows, key=lambda r: (r.get("fold", 0), r["case"])):
        role = roles.get(r["case"])
        body += f'<tr><td class="l">{_e(r["case"])}{f" <b>({role})</b>" if role else ""}</td><td>{_e(r.get("fold", ""))}</td>'
        for _, k in structs:
            body += f"<td>{_num(r.get(f'dice_{k}'))}</td><td>{_num(r.get(f'vs_{k}'))}</td>"
            if has_hd:
                body += f"<td>{_num(r.get(f'hd95_{k}'), 2)}</td>"
            body += f"<td>{_num(r.get(f'vol_pred_ml_{k}'), 2)}</td><td>{_num(r.get(f'vol_true_ml_{k}'), 2)}</td>"
        body += "</tr>"
    return f'<div class="scroll"><table>{head1}{head2}{body}</table></div>'


#: slice-thickness groups of the report's "by slice thickness" table: (title, lowest, highest) mm
_THICKNESS_GROUPS = [("thin, <= 1.25 mm", 0.0, 1.25), ("1.5-2 mm", 1.25, 2.0), ("thick, > 2 mm", 2.0, math.inf)]


def _thickness_table(rows: list[dict]) -> str | None:
    """Dice per structure by the scans' slice thickness (None when the rows do not say it)."""
    if not any(_finite(r.get("slice_mm")) for r in rows):
        return None
    head = ('<tr><th class="l">Slice thickness</th><th>cases</th>'
            + "".join(f"<th>{_e(t)} Dice</th>" for t, _ in _BLOCKS) + "</tr>")
    body = ""
    for title, lo, hi in _THICKNESS_GROUPS:
        group = [r for r in rows if _finite(r.get("slice_mm")) and lo < float(r["slice_mm"]) <= hi]
        if group:
            body += (f'<tr><td class="l">{_e(title)}</td><td>{len(group)}</td>'
                     + "".join(f"<td>{_pm(group, f'dice_{k}')}</td>" for _, k in _BLOCKS) + "</tr>")
    lacking = sum(not _finite(r.get("slice_mm")) for r in rows)
    gap = "" if not lacking else (f'<p class="warn">{lacking} test case(s) are not in this table: their metrics '
                                  'were written before orbitseg recorded slice spacing.</p>')
    return f'<div class="scroll"><table>{head}{body}</table></div>{gap}'


def _legend() -> str:
    return " ".join(f'<span class="swatch" style="background:{label_colour_hex(s)}"></span>{_e(LABEL_TITLES[s])}'
                    for s in STRUCTURES)


def build_report(run_dir: str | Path, *, dataset: str | Path | None = None) -> str:
    """The report's HTML text (see :func:`write_report`)."""
    run_dir = Path(run_dir)
    folds = _load_folds(run_dir)
    root = _dataset_root(run_dir, folds, None if dataset is None else Path(dataset))
    rows = [r for f in folds for r in f.rows]
    problems = [p for f in folds for p in f.problems]
    fold_dir = {f.k: f.path for f in folds}
    fold_ids = [f.k for f in folds]
    title = f"orbitseg run report – {run_dir.resolve().name}"

    parts = [f"<h1>{_e(title)}</h1>", _facts(run_dir, folds, rows, root)]

    parts.append("<h2>Paper's Table 1 and ours</h2>")
    if rows:
        parts.append(_table1(rows))
        parts.append(f'<p class="note">Ours: mean ± sample sd over all {len(rows)} test case(s) of the '
                     f'cross-validation folds (each case is scored once, by the model of the fold that held it '
                     f'out). {_e(_COMPARISON_NOTE)} VS = volume similarity.</p>')
    else:
        parts.append('<p class="warn">No fold has test metrics yet (metrics/per_case.json), so there is no row '
                     'of ours. Paper: ' + _e(", ".join(f"{t} Dice {d:.2f} / VS {v:.2f}"
                                                       for t, k in _BLOCKS for d, v in [PAPER_TABLE1[k]])) + "</p>")
    if problems:
        parts.append('<div class="warn"><b>Missing pieces</b><ul>' + "".join(f"<li>{_e(p)}</li>" for p in problems)
                     + "</ul></div>")

    parts.append("<h2>Per fold</h2>")
    parts.append(_fold_table(folds))

    thick = _thickness_table(rows)
    if thick:
        parts.append("<h2>By slice thickness</h2>")
        parts.append(thick)
        parts.append('<p class="note">Test cases grouped by the slice spacing of their reference label. Thin '
                     'structures lose most on thick slices: a muscle or nerve seen obliquely in a 3 mm slab is '
                     'partly there, and the reference decides voxel by voxel.</p>')

    parts.append("<h2>Distributions</h2>")
    box = _box_plots(rows, fold_ids) if rows else None
    parts.append(_img(box, "box plots of Dice and HD95 per structure", "fig") if box
                 else '<p class="na">No per-case metrics to plot.</p>')

    parts.append("<h2>Clinical measurements: volume per orbit</h2>")
    measured = _read_measurements(folds)
    parts.append(_measurement_section(measured))
    parts.append("<h3>Quality flags of the test cases</h3>")
    parts.append(_flags_section(measured))

    parts.append("<h2>Training curves</h2>")
    curve_problems: list[str] = []
    curves = _curves(folds, curve_problems)
    parts.append(_img(curves, "training loss and validation Dice per fold", "fig") if curves
                 else '<p class="na">No training log to plot.</p>')
    if curve_problems:
        parts.append('<p class="warn">' + "<br>".join(_e(p) for p in curve_problems) + "</p>")

    parts.append("<h2>Best, median and worst case (multi-label Dice)</h2>")
    picks = _pick_cases(rows)
    roles: dict[str, str] = {}
    if not picks:
        parts.append('<p class="na">No case has a multi-label Dice.</p>')
    else:
        parts.append(f'<p class="note">Axial slice through the labelled structures, radiological orientation '
                     f'(patient right on the left, anterior up), CT window L48/W400 HU; labels: {_legend()}.</p>')
        seen: set[str] = set()
        for role, r in picks:
            case = r["case"]
            roles[case] = roles[case] + "/" + role if case in roles else role
            parts.append(f"<h3>{role.capitalize()}: {_e(case)} (fold {_e(r.get('fold', '?'))}, multi-label Dice "
                         f"{_num(r.get('dice_all'))})</h3>")
            if case in seen:
                parts.append('<p class="note">Same case as above.</p>')
                continue
            seen.add(case)
            try:
                uri, why = _overlay(case, fold_dir.get(r.get("fold"), run_dir), root)
            except Exception as exc:  # a picture must never stop the report
                uri, why = None, f"{type(exc).__name__}: {exc}"
            parts.append(_img(uri, f"{role} case {case}", "fig") if uri
                         else f'<p class="warn">No overlay for {_e(case)}: {_e(why)}.</p>')

    parts.append("<h2>Per case</h2>")
    parts.append(_case_table(rows, roles) if rows else '<p class="na">No per-case metrics.</p>')
    parts.append('<p class="note">Volumes in mL; HD95 = symmetric 95th-percentile Hausdorff distance; '
                 '– = undefined (structure absent from prediction or truth, or not computed).</p>')

    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def write_report(run_dir: str | Path, out: str | Path | None = None, *, dataset: str | Path | None = None) -> Path:
    """Write the run's HTML report (atomically) and return its path.

    Parameters
    ----------
    run_dir : a training run folder (``DATASET/runs/PRESET`` with ``fold_k/`` folders, or one fold folder)
    out : the HTML file (default ``RUN_DIR/report.html``); replaced if it exists
    dataset : dataset root holding ``imagesTr``/``labelsTr`` for the overlays (default: the
        ``dataset`` recorded in ``run.json``, else two levels above ``run_dir``)

    Raises
    ------
    InputError : ``run_dir`` is not a training run folder
    """
    run_dir = Path(run_dir)
    text = build_report(run_dir, dataset=dataset)
    out = Path(out) if out is not None else run_dir / REPORT_NAME
    return write_text_atomic(out, text, overwrite=True)
