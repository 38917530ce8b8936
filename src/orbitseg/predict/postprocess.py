"""Connected-component post-processing, chosen on validation data.

A network's argmax leaves stray islands: a speck of "nerve" in the temporal
fossa, a piece of "muscle" in the sinus.  A reader expects one globe, one
muscle cone and one nerve per orbit, so the candidate rule ``"largest"``
keeps, for a structure, only the largest 26-connected component on each side
of the mid-sagittal plane (the side of a component is that of its centroid),
and ``"islands"`` drops the components smaller than a tenth of the largest on
their side (the rectus muscles may rightly be several components); removed
voxels become background.  Like nnU-Net, the rule is applied to a
structure only where it raised the mean Dice on *validation* cases (never on a
test fold): :func:`choose_postprocessing` makes that choice and
:func:`apply_postprocessing` applies it.

The choice is stored as ``postprocess.json`` beside the checkpoints (one per
fold run; for an ensemble, the folds' validation cases are pooled, see
:func:`pool_choices`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from orbitseg.constants import SHORT_NAMES, STRUCTURES
from orbitseg.errors import InputError
from orbitseg.io.atomic import write_text_atomic
from orbitseg.io.volume import Volume
from orbitseg.runs.layout import POSTPROCESS_JSON as POSTPROCESS_FILE  # file name of a stored choice

__all__ = [
    "RULES",
    "POSTPROCESS_FILE",
    "NO_POSTPROCESSING",
    "keep_largest_per_orbit",
    "apply_postprocessing",
    "choose_postprocessing",
    "pool_choices",
    "read_postprocessing",
    "write_postprocessing",
]

#: candidate rules per structure
RULES = ("none", "largest", "islands")
#: "islands" removes components smaller than this fraction of the largest on their side
ISLAND_FRACTION = 0.1
#: a rule is adopted only when it raises the validation mean Dice by more than this
MIN_GAIN = 1e-4
#: the choice that changes nothing
NO_POSTPROCESSING: dict = {"rules": {SHORT_NAMES[s]: "none" for s in STRUCTURES}}

_FULL = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity: a diagonal touch is one component


def keep_largest_per_orbit(labels: Volume, structures: Iterable[int] = STRUCTURES, *,
                           min_fraction: float | None = None, midline: float | None = None) -> Volume:
    """Keep each structure's largest connected component on each side of the midline.

    Parameters
    ----------
    labels : label Volume ``(nz, ny, nx)`` with values 0..3, any direction matrix
    structures : labels to clean; others are left as they are
    min_fraction : None keeps only the largest component per side; a number keeps every
        component of at least this fraction of the largest one on its side (removes islands,
        keeps e.g. the separate rectus muscles)
    midline : LPS x (mm) of the plane between the sides (default :func:`~orbitseg.evaluate.measure.midline_x`
        of ``labels``)

    Returns
    -------
    a new Volume (same geometry); removed voxels are 0
    """
    from scipy import ndimage

    from orbitseg.evaluate.measure import component_sizes_and_centres, midline_x

    out = np.array(labels.array, copy=True)
    if out.ndim != 3:
        raise ValueError(f"labels must be 3D, got shape {out.shape}")
    if min_fraction is not None and not 0.0 < min_fraction <= 1.0:
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction!r}")
    mid = midline_x(labels)[0] if midline is None else float(midline)
    for lab in structures:
        if lab not in STRUCTURES:
            raise ValueError(f"structures: unknown label {lab!r}; expected some of {STRUCTURES}")
        mask = out == lab
        box = ndimage.find_objects(mask.astype(np.uint8))
        if not box or box[0] is None:
            continue
        box = box[0]
        comp, n = ndimage.label(mask[box], structure=_FULL)
        if n <= 1:
            continue
        sizes, cents = component_sizes_and_centres(comp, n)
        cents += np.array([s.start for s in box], dtype=float)
        x = labels.geometry.index_to_physical(cents[:, ::-1])[:, 0]  # LPS x of each centroid
        keep = np.zeros(n + 1, dtype=bool)
        for on_side in (x < mid, x >= mid):
            if not on_side.any():
                continue
            if min_fraction is None:
                keep[1 + int(np.flatnonzero(on_side)[np.argmax(sizes[on_side])])] = True
            else:
                keep[1:][on_side & (sizes >= min_fraction * sizes[on_side].max())] = True
        drop = ~keep[comp] & (comp > 0)
        out[box][drop] = 0
    return labels.like(out)


def _apply_rules(labels: Volume, steps: Sequence[tuple[str, list[int]]],
                 midline_fallback: tuple[float, str] | None = None) -> Volume:
    """Apply each ``(rule, structures)`` in turn; each step sees the labels the previous one left."""
    from orbitseg.evaluate.measure import midline_x
    from orbitseg.evaluate.metrics import bounding_box

    steps = [(rule, structures) for rule, structures in steps if rule != "none" and structures]
    box = bounding_box(labels.array > 0)  # rules only remove voxels: this box holds every later step's labels
    if not steps or box is None:
        return labels
    out = np.array(labels.array, copy=True)
    for rule, structures in steps:
        # on the labels' box only (a few % of a head CT), about the midline of the whole grid as it stands
        # (without two globes midline_x falls back to the orbit finder's midline when given, else to the grid's
        # centre, which a crop would move)
        now = labels.like(out)
        kept = keep_largest_per_orbit(now.crop(box), structures, midline=midline_x(now, midline_fallback)[0],
                                      min_fraction=None if rule == "largest" else ISLAND_FRACTION)
        out[box] = kept.array
    return labels.like(out)


def _check_rules(rules: dict) -> dict[int, str]:
    by_label = {}
    names = {SHORT_NAMES[s]: s for s in STRUCTURES}
    for name, rule in rules.items():
        if name not in names:
            raise ValueError(f"rules: unknown structure {name!r}; expected some of {sorted(names)}")
        if rule not in RULES:
            raise ValueError(f"rules: unknown rule {rule!r} for {name}; expected one of {RULES}")
        by_label[names[name]] = rule
    return by_label


def apply_postprocessing(labels: Volume, choice: dict, *, midline_fallback: tuple[float, str] | None = None
                         ) -> Volume:
    """Apply a stored choice (``{"rules": {"eyeball": "largest", "muscles": "islands", ...}}``)
    to a label Volume; structures are cleaned independently of each other.  ``midline_fallback``: the orbits'
    midline where the labels hold fewer than two globes (:func:`~orbitseg.evaluate.measure.midline_x`; the
    Segmenter gives the orbit finder's); without it, the grid's centre."""
    rules = _check_rules(choice.get("rules", {}))
    return _apply_rules(labels, [(rule, [lab for lab, r in rules.items() if r == rule]) for rule in RULES[1:]],
                        midline_fallback)


def choose_postprocessing(pairs: Sequence[tuple[str, Volume, np.ndarray]]) -> dict:
    """Choose each structure's rule on validation cases.

    Parameters
    ----------
    pairs : (case id, predicted label Volume, true labels ``(nz, ny, nx)``) per validation case

    Returns
    -------
    ``{"rules": {name: rule}, "validation": {name: {rule: mean Dice}}, "per_case":
    {case: {name: {rule: Dice}}}, "cases": [...], "criterion": ...}``; a structure keeps
    ``"none"`` unless the better of ``"largest"`` and ``"islands"`` raises its mean
    validation Dice by more than :data:`MIN_GAIN`.  Cases where the structure is absent from both prediction and truth
    do not count (their Dice is NaN).
    """
    from orbitseg.evaluate.metrics import dice_per_structure

    if not pairs:
        raise ValueError("pairs: no validation cases to choose post-processing on")
    per_case: dict[str, dict] = {}
    for case, pred, truth in pairs:
        scores = {rule: dice_per_structure(_apply_rules(pred, [(rule, list(STRUCTURES))]).array, truth) for rule in RULES}
        per_case[case] = {SHORT_NAMES[s]: {rule: scores[rule][s] for rule in RULES} for s in STRUCTURES}
    return _decide(per_case)


def _decide(per_case: dict[str, dict]) -> dict:
    validation, rules = {}, {}
    for s in STRUCTURES:
        name = SHORT_NAMES[s]
        means = {}
        for rule in RULES:
            vals = [per_case[c][name][rule] for c in per_case]
            vals = [v for v in vals if v is not None and not math.isnan(v)]
            means[rule] = float(np.mean(vals)) if vals else math.nan
        validation[name] = means
        best = max(RULES[1:], key=lambda r: -math.inf if math.isnan(means[r]) else means[r])
        gain = means[best] - means["none"]
        rules[name] = best if not math.isnan(gain) and gain > MIN_GAIN else "none"
    return {"rules": rules, "validation": validation, "cases": sorted(per_case), "per_case": per_case,
            "criterion": f"per structure, the better of 'largest' (keep the largest 26-connected component per "
                         f"orbit side) and 'islands' (drop components under {ISLAND_FRACTION} of the largest on "
                         f"their side) is adopted when it raises the mean validation Dice by more than {MIN_GAIN}"}


def pool_choices(choices: Sequence[dict]) -> dict:
    """One choice for an ensemble: the folds' validation cases pooled (each fold model on its
    own validation cases, never on a test fold) and the rules decided on the pooled means."""
    per_case: dict[str, dict] = {}
    for ch in choices:
        per_case.update(ch.get("per_case", {}))
    if not per_case:
        raise ValueError("choices: none holds per-case validation results")
    out = _decide(per_case)
    out["pooled_from"] = len(choices)
    return out


def write_postprocessing(folder: str | Path, choice: dict) -> Path:
    """Write ``choice`` to ``folder/postprocess.json`` (atomically)."""
    from orbitseg.evaluate.folders import to_json

    path = Path(folder) / POSTPROCESS_FILE
    write_text_atomic(path, to_json(choice))
    return path


def read_postprocessing(folder: str | Path) -> dict | None:
    """The choice stored in ``folder/postprocess.json``, or None when there is none."""
    path = Path(folder) / POSTPROCESS_FILE
    if not path.is_file():
        return None
    try:
        choice = json.loads(path.read_text(encoding="utf-8"))
        _check_rules(choice["rules"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(path, f"is not a valid post-processing choice ({exc})") from None
    return choice
