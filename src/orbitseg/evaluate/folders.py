"""Evaluate a folder of predicted label files against a folder of reference labels.

Files are matched by case id: the file name without its label ending (one of
:data:`orbitseg.io.formats.LABEL_WRITE_ENDINGS`, the endings a label file is
written with: ``.nii.gz``, ``.nii``, ``.seg.nrrd``, ``.nrrd``; or ``.seg.dcm`` /
``.dcm`` for a DICOM Segmentation, recognised by its content) and without a
trailing nnU-Net channel suffix ``_0000`` (so ``case_007_0000.nii.gz``,
``case_007.seg.nrrd`` and ``case_007.seg.dcm`` are one case).  Other files
(``dataset.json``, CSV, an RTSTRUCT, hidden files) are ignored.

Each truth file is read first, then its prediction with ``reference=truth``.
A DICOM-SEG stores frames only where there is a structure, so it is placed on
the grid of the other file of its pair (read first); two DICOM-SEGs are both
placed on the grid spanning their frames
(:func:`orbitseg.io.dicomseg.frames_geometry`), and must refer to the same series.
A reference ``.seg.nrrd`` that 3D Slicer saved cropped to its segments is
placed on its prediction's grid the same way.
If any pair cannot be scored - geometry that differs (size, spacing, origin or
direction), an unreadable file, invalid label values - the whole run is
refused: one error lists every bad pair by file name and nothing is written.
Cases found in only one folder are not scored; they are listed in a warning
(:class:`UnmatchedCasesWarning`) and in ``summary.json``.

Outputs (atomic writes) under ``OUT_DIR/metrics/``:

* ``per_case.csv`` / ``per_case.json`` - one row per case: ``case``, ``fold``
  (when ``fold_of`` is given), ``pred`` and ``truth`` file names, ``pixel_mm`` and
  ``slice_mm`` (the reference's in-plane and slice spacing), then
  :func:`~orbitseg.evaluate.metrics.metric_names`.
* ``summary.csv`` / ``summary.json`` - :func:`~orbitseg.evaluate.metrics.summarise`
  rows (overall, and per fold when ``fold_of`` is given); the JSON also holds
  the unmatched cases.

NaN is written as an empty CSV cell and as JSON ``null``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from pathlib import Path

from orbitseg.constants import CHANNEL_SUFFIX, DICOM_OUTPUTS, METRICS_DIR, SHORT_NAMES, STRUCTURES
from orbitseg.errors import GeometryMismatchError, InputError
from orbitseg.evaluate.metrics import case_metrics, metric_names, summarise
from orbitseg.io.atomic import write_text_atomic
from orbitseg.io.formats import LABEL_WRITE_ENDINGS, split_ending

__all__ = [
    "UnmatchedCasesWarning",
    "case_id_of",
    "list_label_files",
    "match_cases",
    "evaluate_folders",
    "format_summary_table",
    "rows_to_csv",
    "to_json",
    "METRICS_DIR",
    "PER_CASE_JSON",
    "SUMMARY_JSON",
]

#: files written into METRICS_DIR (see the module docstring)
PER_CASE_CSV, PER_CASE_JSON = "per_case.csv", "per_case.json"
SUMMARY_CSV, SUMMARY_JSON = "summary.csv", "summary.json"


#: endings of a DICOM Segmentation file (the one orbitseg predict writes, and any other ``.dcm``), listed
#: only when the file is a SEG by its content
SEG_ENDINGS: tuple[str, ...] = (DICOM_OUTPUTS["dicom-seg"], ".dcm")


class UnmatchedCasesWarning(UserWarning):
    """Some cases have a prediction but no reference label, or the other way round."""


def case_id_of(path: str | Path) -> str | None:
    """Case id of a label file name, or None when it has no label ending.

    >>> case_id_of("case_007_0000.nii.gz"), case_id_of("case_007.seg.nrrd"), case_id_of("case_007.seg.dcm")
    ('case_007', 'case_007', 'case_007')
    >>> case_id_of("x.csv")
    """
    stem, ending = split_ending(Path(path).name, LABEL_WRITE_ENDINGS + SEG_ENDINGS)
    if not ending or not stem:
        return None
    if stem.endswith(CHANNEL_SUFFIX) and len(stem) > len(CHANNEL_SUFFIX):
        stem = stem[: -len(CHANNEL_SUFFIX)]
    return stem


def list_label_files(folder: str | Path) -> dict[str, Path]:
    """case id -> label file of ``folder`` (not recursive).

    Raises
    ------
    InputError : the folder does not exist, or two files map to one case id
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "is not a folder of label files")
    from orbitseg.io.dicomseg import is_dicom_seg

    found: dict[str, list[Path]] = {}
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or not f.is_file():
            continue
        if f.name.lower().endswith(SEG_ENDINGS) and not is_dicom_seg(f):
            continue  # an RTSTRUCT or an image slice: not a label volume
        cid = case_id_of(f)
        if cid is not None:
            found.setdefault(cid, []).append(f)
    dup = {c: fs for c, fs in found.items() if len(fs) > 1}
    if dup:
        lines = "; ".join(f"{c}: " + ", ".join(f.name for f in fs) for c, fs in sorted(dup.items()))
        raise InputError(folder, f"holds several label files for one case ({lines}); keep one per case")
    return {c: fs[0] for c, fs in found.items()}


def match_cases(pred_dir: str | Path, truth_dir: str | Path) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """(matched ``(case, pred, truth)`` sorted by case, cases only in pred, cases only in truth)."""
    pred, truth = list_label_files(pred_dir), list_label_files(truth_dir)
    both = sorted(set(pred) & set(truth))
    return ([(c, pred[c], truth[c]) for c in both], sorted(set(pred) - set(truth)),
            sorted(set(truth) - set(pred)))


def evaluate_folders(
    pred_dir: str | Path,
    truth_dir: str | Path,
    out_dir: str | Path | None,
    *,
    fold_of: dict | None = None,
    surface: bool = True,
    progress: bool = False,
) -> tuple[list[dict], list[dict]]:
    """Score every predicted label file against its reference; write ``metrics/``.

    Parameters
    ----------
    pred_dir, truth_dir : folders of label files (see the module docstring)
    out_dir : the run folder; files go to ``out_dir/metrics/`` (None: write nothing)
    fold_of : case id -> fold; adds a ``fold`` column and per-fold summary rows
    surface : compute HD95 / ASD (the slow part)
    progress : show a progress bar

    Returns
    -------
    (per_case_rows, summary_rows)

    Raises
    ------
    InputError : a folder is missing, holds two files for one case, no case is
        in both folders, or some pair cannot be scored (the message lists every
        bad pair; :class:`~orbitseg.errors.GeometryMismatchError` when all of
        them are geometry mismatches).  Nothing is written then.
    """
    from orbitseg.io.validate import EmptyLabelWarning

    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    pairs, pred_only, truth_only = match_cases(pred_dir, truth_dir)
    if not pairs:
        raise InputError(
            pred_dir,
            f"no case has both a prediction here and a reference label in {truth_dir} "
            f"({_unmatched_text(pred_only, truth_only) or 'both folders hold no label file'}; "
            f"files are matched by name without ending and without a {CHANNEL_SUFFIX!r} suffix)",
        )
    if pred_only or truth_only:
        warnings.warn(_unmatched_text(pred_only, truth_only), UnmatchedCasesWarning, stacklevel=2)

    rows: list[dict] = []
    problems: list[InputError] = []
    iterator = pairs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(pairs, desc="evaluate", unit="case")
    for case, pred_path, truth_path in iterator:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", EmptyLabelWarning)  # an empty label is a valid answer here
                truth, pred = _read_pair(truth_path, pred_path)
        except InputError as exc:
            problems.append(exc)
            continue
        row: dict = {"case": case}
        if fold_of is not None:
            row["fold"] = fold_of.get(case)
        row["pred"] = pred_path.name
        row["truth"] = truth_path.name
        # acquisition, so results can be read by slice thickness (thin structures suffer on thick slices)
        sx, sy, sz = truth.geometry.spacing
        row["pixel_mm"] = round(float(sx + sy) / 2, 4)
        row["slice_mm"] = round(float(sz), 4)
        if not problems:  # once the run is refused, only look for further problems
            row.update(case_metrics(pred.array, truth.array, spacing=truth.geometry.spacing, surface=surface))
        rows.append(row)
        del pred, truth
    if problems:
        cls = GeometryMismatchError if all(isinstance(p, GeometryMismatchError) for p in problems) else InputError
        err = cls(pred_dir, f"refusing to evaluate: {len(problems)} of {len(pairs)} pair(s) cannot be scored, "
                            "nothing was written:\n" + "\n".join(f"  {p}" for p in problems))
        err.problems = problems  # type: ignore[attr-defined]
        raise err

    summary = summarise(rows, by="fold" if fold_of is not None else None,
                        metrics=metric_names(surface=surface))
    if out_dir is not None:
        mdir = Path(out_dir) / METRICS_DIR
        write_text_atomic(mdir / PER_CASE_CSV, rows_to_csv(rows))
        write_text_atomic(mdir / PER_CASE_JSON, to_json(rows))
        write_text_atomic(mdir / SUMMARY_CSV, rows_to_csv(summary))
        write_text_atomic(mdir / SUMMARY_JSON, to_json({
            "pred_dir": str(pred_dir), "truth_dir": str(truth_dir), "n_cases": len(rows),
            "unmatched": {"pred_only": pred_only, "truth_only": truth_only},
            "summary": summary,
        }))
    return rows, summary


def _read_pair(truth_path: Path, pred_path: Path):
    """(truth, prediction) label volumes on one grid: a DICOM-SEG on the grid of the other file (its frames
    cover only the slices with a structure), two SEGs on the grid spanning both, a truth ``.seg.nrrd`` cropped
    to its segments on the prediction's grid."""
    from orbitseg.io.dicomseg import frames_geometry, is_dicom_seg
    from orbitseg.io.read import read_label

    truth_seg, pred_seg = is_dicom_seg(truth_path), is_dicom_seg(pred_path)
    if truth_seg and pred_seg:
        grid = frames_geometry(truth_path, pred_path)
        return read_label(truth_path, reference=grid), read_label(pred_path, reference=grid)
    if truth_seg:
        pred = read_label(pred_path)
        return read_label(truth_path, reference=pred), pred
    truth = read_label(truth_path)
    try:
        return truth, read_label(pred_path, reference=truth)
    except GeometryMismatchError:
        if truth.meta.get("format") != "seg.nrrd":
            raise
    # a 3D Slicer segmentation saved cropped to its segments: placed on the prediction's grid instead
    pred = read_label(pred_path)
    return read_label(truth_path, reference=pred), pred


def _names(cases: list[str], limit: int = 20) -> str:
    more = f", ... ({len(cases)} in all)" if len(cases) > limit else ""
    return ", ".join(cases[:limit]) + more


def _unmatched_text(pred_only: list[str], truth_only: list[str]) -> str:
    parts = []
    if truth_only:
        parts.append(f"{len(truth_only)} reference label(s) without a prediction (not scored): {_names(truth_only)}")
    if pred_only:
        parts.append(f"{len(pred_only)} prediction(s) without a reference label (not scored): {_names(pred_only)}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------
# serialisation
# ---------------------------------------------------------------------------
def _clean(v):
    """JSON-safe value: NaN/inf -> None, NumPy scalars -> Python."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def to_json(obj) -> str:
    """JSON text (indent 2) with NaN/inf written as null."""
    return json.dumps(_clean(obj), indent=2, allow_nan=False) + "\n"


def _cell(v, digits: int | None = None) -> str:
    v = _clean(v)
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if digits is None else f"{v:.{digits}f}"
    return str(v)


def rows_to_csv(rows: list[dict], *, digits: int | None = None) -> str:
    """CSV text of dict rows (columns in first-seen order; NaN/inf as empty cells; floats in
    full precision, or with ``digits`` decimals)."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(keys)
    for r in rows:
        w.writerow([_cell(r.get(k), digits) for k in keys])
    return buf.getvalue()


# ---------------------------------------------------------------------------
# table
# ---------------------------------------------------------------------------
#: (column title, metric key prefix) pairs per block of the table, as the paper's Table 1
_TABLE_BLOCKS: list[tuple[str, str]] = [("Multi-label", "all")] + [
    (title, SHORT_NAMES[s]) for title, s in zip(("Eyeball", "Muscles", "Nerve"), STRUCTURES)
]


def _pm(stat: dict | None, digits: int) -> str:
    if stat is None or stat["n"] == 0:
        return "n/a"
    mean, sd = stat["mean"], stat["sd"]
    sd_txt = "" if math.isnan(sd) else f" ± {sd:.{digits}f}"
    return f"{mean:.{digits}f}{sd_txt}"


def format_summary_table(summary: list[dict], *, hd95: bool = True) -> str:
    """Plain-text table of :func:`summarise` rows: one line per group, structures as columns.

    Columns follow the paper's Table 1 - Multi-label Dice / VS, Eyeball Dice /
    VS, Muscles Dice / VS, Nerve Dice / VS - then HD95 (mm) of each structure.
    Cells are ``mean ± sd`` over the cases where the metric is defined; ``n/a``
    when none is.
    """
    by_group: dict[str, dict[str, dict]] = {}
    n_cases: dict[str, int] = {}
    for r in summary:
        by_group.setdefault(r["group"], {})[r["metric"]] = r
        n_cases[r["group"]] = r.get("n_cases", r["n"])
    cols: list[tuple[str, str, str, int]] = []  # (block title, sub title, metric, digits)
    for title, key in _TABLE_BLOCKS:
        cols += [(title, "Dice", f"dice_{key}", 3), (title, "VS", f"vs_{key}", 3)]
    if hd95:
        cols += [(title, "HD95 mm", f"hd95_{key}", 2) for title, key in _TABLE_BLOCKS[1:]]
    first_by = next((r["by"] for r in summary if r.get("by")), "")
    head = ["group" if not first_by else f"group ({first_by})", "n"]
    body = [[g, str(n_cases[g])] + [_pm(stats.get(m), d) for _, _, m, d in cols] for g, stats in by_group.items()]
    top = ["", ""] + [t for t, _, _, _ in cols]
    sub = head + [s for _, s, _, _ in cols]
    widths = [max(len(line[i]) for line in [top, sub] + body) for i in range(len(sub))]
    # print a block title once, over its first column
    top = [t if i < 2 or i == 2 or cols[i - 2][0] != cols[i - 3][0] else "" for i, t in enumerate(top)]

    def fmt(line: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) if i == 1 else c.ljust(w)
                         for i, (c, w) in enumerate(zip(line, widths))).rstrip()

    lines = [fmt(top), fmt(sub), "  ".join("-" * w for w in widths)] + [fmt(b) for b in body]
    return "\n".join(lines)
