"""Scoring a trained fold with the :class:`~orbitseg.predict.Segmenter`, as a user's prediction would.

After the last epoch, :func:`choose_on_validation` segments the fold's *validation* cases with its
best checkpoint and chooses the connected-component post-processing there (``postprocess.json``);
:func:`score_test_fold` segments its *test* cases from their original scans (``segmented/``) and
evaluates them against ``labelsTr`` (``metrics/``); :func:`cross_validation_metrics` scores the
four test folds together.  ``orbitseg export`` re-scores its float16 folds through
:func:`segment_cases` too, so every score goes through the object ``orbitseg predict`` uses.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from orbitseg.constants import CHECKPOINT_BEST, FILE_ENDING, SHORT_NAMES, STRUCTURES
from orbitseg.io.atomic import write_text_atomic
from orbitseg.io.volume import Volume
from orbitseg.predict.segmenter import Segmentation, Segmenter
from orbitseg.runs.layout import SEGMENTED_DIR

__all__ = ["segment_cases", "choose_on_validation", "choose_postprocessing_with", "score_test_fold",
           "cross_validation_metrics"]


def segment_cases(root: Path, segmenter: Segmenter, cases: list[str],
                  log: Callable[[str], None] = print) -> Iterator[tuple[str, Volume, Segmentation, Path]]:
    """Yield ``(case, scan, segmentation, label path)`` for the ``cases`` of dataset ``root`` that
    have a scan and a label, segmented by ``segmenter``; a case without them is named and skipped.

    A scan the Segmenter refuses (e.g. no orbit found) stops nothing: it is named in a warning and
    yielded with empty labels, so a test fold scores it as the failure a user would meet (Dice 0)
    instead of leaving it out of the mean."""
    from orbitseg.errors import OrbitsegError
    from orbitseg.io.layout import list_cases
    from orbitseg.io.read import read_scan

    by_id = {c.case_id: c for c in list_cases(root) if c.training}
    for case in cases:
        c = by_id.get(case)
        if c is None or c.label is None or not c.label.exists():
            log(f"warning: case {case} has no scan/label in {root}; skipped")
            continue
        scan = read_scan(c.image)
        try:
            seg = segmenter.segment(scan)
        except OrbitsegError as exc:
            log(f"warning: case {case} could not be segmented ({exc}); scored as empty labels")
            empty = scan.like(np.zeros(scan.shape, dtype=np.uint8))
            seg = Segmentation(empty, empty)
        yield case, scan, seg, c.label


def _best(run: Path, device, postprocess: bool | dict) -> Segmenter:
    """The run's best checkpoint as a Segmenter in float32 (scores must not depend on the CPU)."""
    return Segmenter.load(run / CHECKPOINT_BEST, device=device, precision="float32", postprocess=postprocess)


def choose_on_validation(root: Path, run: Path, cases: list[str], device, log: Callable[[str], None]) -> dict:
    """Choose post-processing on the fold's validation ``cases``; writes ``run/postprocess.json``."""
    from orbitseg.predict.postprocess import NO_POSTPROCESSING, write_postprocessing

    choice = choose_postprocessing_with(root, _best(run, device, False), cases, log)
    if choice is None:
        return dict(NO_POSTPROCESSING)
    write_postprocessing(run, choice)
    return choice


def choose_postprocessing_with(root: Path, segmenter: Segmenter, cases: list[str],
                               log: Callable[[str], None]) -> dict | None:
    """The connected-component post-processing chosen on the validation ``cases`` of dataset ``root`` as
    ``segmenter`` (loaded with ``postprocess=False``) labels them (None when none has a scan and label);
    writes nothing.  ``orbitseg export --average-with`` re-chooses it so for averaged weights."""
    from orbitseg.io.read import read_label
    from orbitseg.predict.postprocess import choose_postprocessing

    t0 = time.time()
    pairs = [(case, seg.network_labels, read_label(label_path, reference=scan).array)
             for case, scan, seg, label_path in segment_cases(root, segmenter, cases, log)]
    if not pairs:
        return None
    choice = choose_postprocessing(pairs)
    text = "; ".join(f"{name}: {rule} (" + ", ".join(f"{r} {d:.4f}" for r, d in choice["validation"][name].items())
                     + ")" for name, rule in choice["rules"].items())
    log(f"post-processing chosen on {len(pairs)} validation case(s) in {time.time() - t0:.1f} s: {text}")
    return choice


def score_test_fold(root: Path, run: Path, cases: list[str], device, surface: bool, log: Callable[[str], None],
                    choice: dict | None = None) -> dict:
    """Segment the test ``cases`` with the best checkpoint (post-processed by ``choice``, the
    validation choice) into ``run/segmented/`` and evaluate them against labelsTr into ``run/metrics/``."""
    from orbitseg.evaluate.folders import METRICS_DIR, evaluate_folders, format_summary_table, rows_to_csv
    from orbitseg.evaluate.measure import MEASUREMENTS_CSV, orbit_measurements, paired_measurements
    from orbitseg.evaluate.metrics import dice_per_structure
    from orbitseg.evaluate.quality import flag_codes, flags_summary, quality_flags
    from orbitseg.io.read import read_label
    from orbitseg.io.write import write_label

    t0 = time.time()
    seg_dir = run / SEGMENTED_DIR
    seg_dir.mkdir(parents=True, exist_ok=True)
    done, raw, measured = [], {s: [] for s in STRUCTURES}, []
    segmenter = _best(run, device, False if choice is None else choice)
    for case, scan, seg, label_path in segment_cases(root, segmenter, cases, log):
        truth = read_label(label_path, reference=scan)
        if choice is not None:
            for s, d in dice_per_structure(seg.network_labels.array, truth.array).items():
                raw[s].append(d)
        write_label(seg.labels, seg_dir / f"{case}{FILE_ENDING}", reference=scan, overwrite=True)
        # the flags' midline as predict finds it (with one globe, the head's symmetry plane from the orbit finder)
        flags = quality_flags(seg.labels, scan, measurements=orbit_measurements(
            seg.labels, midline_fallback=seg.orbit_midline))
        measured += [r | {"flags": flags_summary(mine), "flag_codes": flag_codes(mine)}
                     for r in paired_measurements(seg.labels, truth, case, scan, clinical=True)
                     for mine in [[f for f in flags if r["side"] not in ("right", "left") or f["side"] in (r["side"], "both")]]]
        done.append((case, label_path))
    if not done:
        return {"cases": 0}
    with tempfile.TemporaryDirectory(prefix=".truth_", dir=run) as tmp:
        for case, label_path in done:
            os.symlink(label_path.resolve(), Path(tmp) / label_path.name)  # labelsTr/{case}{ending}
        rows, summary = evaluate_folders(seg_dir, tmp, run, surface=surface)
    write_text_atomic(run / METRICS_DIR / MEASUREMENTS_CSV, rows_to_csv(measured, digits=4))
    log(f"test fold: {len(done)} case(s) segmented and evaluated in {time.time() - t0:.1f} s -> {run / METRICS_DIR}")
    log(format_summary_table(summary, hd95=surface))
    means = {r["metric"]: r["mean"] for r in summary if r["group"] == "all" and r["metric"].startswith("dice_")}
    out = {"cases": len(done), "dice": means}
    if choice is not None:
        out["dice_before_postprocessing"] = {f"dice_{SHORT_NAMES[s]}": float(np.nanmean(v)) if v else None
                                             for s, v in raw.items()}
    return out


def cross_validation_metrics(root: Path, runs: list[Path], progress: bool, surface: bool) -> None:
    """Score the test folds of ``runs`` (their ``segmented/`` labels) together into ``PARENT/metrics/``."""
    from orbitseg.evaluate.folders import METRICS_DIR, evaluate_folders, format_summary_table
    from orbitseg.io.layout import list_cases

    parent = runs[0].parent
    labels = {c.case_id: c.label for c in list_cases(root) if c.training and c.label is not None}
    fold_of = {}
    with tempfile.TemporaryDirectory(prefix=".cv_", dir=parent) as tmp:
        pred, truth = Path(tmp) / "pred", Path(tmp) / "truth"
        pred.mkdir(), truth.mkdir()
        for k, r in enumerate(runs):
            for f in sorted((r / SEGMENTED_DIR).glob(f"*{FILE_ENDING}")):
                case = f.name[: -len(FILE_ENDING)]
                if case in labels:
                    os.symlink(f.resolve(), pred / f.name)
                    os.symlink(labels[case].resolve(), truth / labels[case].name)  # its own ending
                    fold_of[case] = k
        if not fold_of:
            return
        _, summary = evaluate_folders(pred, truth, parent, fold_of=fold_of, surface=surface)
    if progress:
        print(f"cross-validation over {len(fold_of)} test cases -> {parent / METRICS_DIR}")
        print(format_summary_table(summary, hd95=surface))
