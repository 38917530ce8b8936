"""Evaluation: per-case metrics, summaries, folder-vs-folder scoring, clinical measurements.

* :mod:`orbitseg.evaluate.metrics` - Dice, volume similarity, HD95 / ASD (mm,
  MONAI's definitions, checked against MONAI in the tests), volumes (mL) per
  structure and pooled; :func:`summarise`.
* :mod:`orbitseg.evaluate.folders` - :func:`evaluate_folders` matches two
  folders of label files by case and writes ``metrics/`` CSV / JSON.
* :mod:`orbitseg.evaluate.measure` - :func:`orbit_measurements`: volumes per
  orbit side and left/right asymmetry.
* :mod:`orbitseg.evaluate.clinical` - :func:`clinical_measurements`: each rectus'
  thickness, per-muscle volumes, proptosis (docs/measurements.md).
* :mod:`orbitseg.evaluate.quality` - :func:`quality_flags`: a verdict on every
  prediction (structure missing, volume out of the adult range, asymmetry, fold
  disagreement, orbit cut by the field of view, acquisition unlike training).
"""

from __future__ import annotations

from orbitseg.evaluate.folders import (
    UnmatchedCasesWarning,
    case_id_of,
    evaluate_folders,
    format_summary_table,
    match_cases,
)
from orbitseg.evaluate.measure import midline_x, orbit_measurements
from orbitseg.evaluate.quality import flags_summary, quality_flags
from orbitseg.evaluate.metrics import (
    Confusion,
    case_metrics,
    confusion,
    dice,
    metric_names,
    summarise,
    surface_distances,
    volume_similarity,
)

__all__ = [
    "Confusion",
    "UnmatchedCasesWarning",
    "case_id_of",
    "case_metrics",
    "confusion",
    "dice",
    "evaluate_folders",
    "flags_summary",
    "format_summary_table",
    "match_cases",
    "metric_names",
    "midline_x",
    "orbit_measurements",
    "quality_flags",
    "summarise",
    "surface_distances",
    "volume_similarity",
]
