"""Clinical measurements per orbit: volumes of globe, muscles and nerve, and left/right asymmetry.

Sides are the *patient's*, decided in physical LPS coordinates (+x towards the
patient's left), so any direction matrix (a NIfTI stored RAS, a reversed or
oblique grid) gives the same answer for the same anatomy:

* the midline is the x halfway between the centroids of the two eyeballs -
  the largest eyeball component and the largest other one at least
  :data:`MIN_GLOBE_SEPARATION_MM` away in x and at least
  :data:`MIN_SECOND_GLOBE_FRACTION` of its size (26-connected components);
  without two such globes (no eyeball, or one) the midline is the caller's
  ``fallback`` (prediction gives the one between the two globes the orbit finder
  found on the CT: ``"orbit_finder"``), else the x of the volume's centre (which
  puts a lone globe on the wrong side of a scan cut off beside it);
* every labelled voxel whose physical x is below the midline belongs to the
  patient's right orbit, the others to the left.  Voxels are split one by one
  (not whole components), so optic nerves that meet at the chiasm are divided
  at the midline.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from orbitseg.constants import EYEBALL, MUSCLES, NERVE, STRUCTURES
from orbitseg.evaluate.metrics import bounding_box
from orbitseg.io.volume import Volume

__all__ = ["orbit_measurements", "paired_measurements", "midline_x", "component_sizes_and_centres", "MEASUREMENTS_CSV",
           "MEASURE_KEYS", "MIN_GLOBE_SEPARATION_MM"]

#: two eyeball components closer than this in x are taken as pieces of one globe
MIN_GLOBE_SEPARATION_MM = 20.0
#: the second globe must be at least this fraction of the largest one's voxel count
MIN_SECOND_GLOBE_FRACTION = 0.25
#: file (in a run's metrics/ folder) of the test cases' per-orbit volumes, predicted beside true
MEASUREMENTS_CSV = "measurements.csv"
#: a midline known otherwise than from the labels: ``(x, how)``, a function giving it (or None), or None
Fallback = tuple[float, str] | Callable[[], tuple[float, str] | None] | None
#: label -> column name of its volume in mL
MEASURE_KEYS: dict[int, str] = {EYEBALL: "globe_ml", MUSCLES: "muscles_ml", NERVE: "nerve_ml"}


def _physical_x(labels: Volume, kji: np.ndarray) -> np.ndarray:
    """Physical LPS x (mm) of voxels given as array indices ``(N, 3)`` in (k, j, i) order."""
    return labels.geometry.index_to_physical(kji[:, ::-1])[:, 0]


def component_sizes_and_centres(comp: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Voxel counts ``(n,)`` and centroids ``(n, 3)`` (array index order) of components ``1..n`` of a
    labelled array ``comp`` (``scipy.ndimage.label``'s output); one pass over the component voxels, several
    times faster than ``ndimage.center_of_mass`` on an array of ones."""
    where = np.nonzero(comp)
    ids = comp[where]
    sizes = np.bincount(ids, minlength=n + 1)[1:].astype(float)
    sums = [np.bincount(ids, weights=axis_index, minlength=n + 1)[1:] for axis_index in where]
    return sizes, np.stack(sums, axis=1) / np.maximum(sizes, 1.0)[:, None]


def midline_x(labels: Volume, fallback: Fallback = None) -> tuple[float, str]:
    """(x of the mid-sagittal plane in LPS mm, how it was found: ``"eyeballs"``, ``fallback``'s own word or
    ``"volume_centre"``).  ``fallback``: ``(x, how)`` known otherwise, or a function giving it (or None), called
    only where the labels hold fewer than two globes (a missed eye, or a field of view that keeps one orbit and
    a sliver of the other): :func:`orbitseg.predict.core.finder_midline` of the CT."""
    from scipy import ndimage

    eye = labels.array == EYEBALL
    box = bounding_box(eye)
    if box is not None:
        comp, n = ndimage.label(eye[box], structure=np.ones((3, 3, 3), dtype=bool))
        if n >= 2:
            sizes, cents = component_sizes_and_centres(comp, n)  # (n, 3) k, j, i in box
            cents += np.array([s.start for s in box], dtype=float)
            xs = _physical_x(labels, cents)
            order = np.argsort(-sizes, kind="stable")
            a = order[0]
            for b in order[1:]:
                if sizes[b] < MIN_SECOND_GLOBE_FRACTION * sizes[a]:
                    break
                if abs(xs[b] - xs[a]) >= MIN_GLOBE_SEPARATION_MM:
                    return float((xs[a] + xs[b]) / 2.0), "eyeballs"
    found = fallback() if callable(fallback) else fallback
    if found is not None:
        return float(found[0]), str(found[1])
    centre = (np.asarray(labels.shape, dtype=float) - 1.0) / 2.0
    return float(_physical_x(labels, centre[None, :])[0]), "volume_centre"


def _asym_pct(left: float, right: float) -> float:
    mean = (left + right) / 2.0
    return math.nan if mean == 0 else 100.0 * (left - right) / mean


def orbit_measurements(labels: Volume, scan: Volume | None = None, *, clinical: bool = False,
                       midline_fallback: Fallback = None) -> list[dict]:
    """Volumes (mL) of globe, muscles and nerve per orbit, and their asymmetry.

    Returns four rows, each with ``side``, ``globe_ml``, ``muscles_ml``,
    ``nerve_ml``, ``midline_x_mm`` and ``midline_from``:

    * ``side="right"`` and ``side="left"`` - the patient's orbits;
    * ``side="left_minus_right_ml"`` - left - right, mL (mm for the ``_mm`` columns);
    * ``side="asymmetry_pct"`` - (left - right) / mean(left, right) x 100; NaN
      when the structure is absent on both sides.

    With ``clinical``, the rows also hold the columns of
    :func:`orbitseg.evaluate.clinical.clinical_measurements` (each rectus' thickness, each
    muscle group's volume, proptosis; proptosis needs ``scan``, the CT on the same grid) and
    ``outside_reference``: the values outside the adult reference ranges (right / left rows),
    a proptosis asymmetry over 2 mm (left_minus_right_ml row).  ``midline_fallback``: see :func:`midline_x`.
    """
    if labels.array.ndim != 3:
        raise ValueError(f"labels must be 3D, got shape {labels.array.shape}")
    mid, how = midline_x(labels, midline_fallback)
    rows = _measure_about(labels, mid, how)
    if clinical:
        from orbitseg.evaluate.clinical import clinical_measurements

        _add_sides(rows, clinical_measurements(labels, scan, midline=mid))
    return rows


def _add_sides(rows: list[dict], per_side: dict[str, dict[str, float]], *, notes: bool = True) -> None:
    """Add per-side values to the four rows of :func:`orbit_measurements`, with their difference and
    asymmetry, and (``notes``) an ``outside_reference`` column naming values outside the adult ranges."""
    from orbitseg.evaluate.clinical import PROPTOSIS_ASYMMETRY_MM, outside_reference

    left, right = per_side["left"], per_side["right"]
    diff = {k: left[k] - right[k] for k in left}
    extra = {"right": right, "left": left, "left_minus_right_ml": diff,
             "asymmetry_pct": {k: _asym_pct(left[k], right[k]) for k in left}}
    asym = abs(diff["proptosis_mm"]) > PROPTOSIS_ASYMMETRY_MM
    note = {"right": outside_reference(right), "left": outside_reference(left), "asymmetry_pct": [],
            "left_minus_right_ml": [f"proptosis_mm |{diff['proptosis_mm']:.1f}| > {PROPTOSIS_ASYMMETRY_MM:g}"] * asym}
    for r in rows:
        r.update(extra[r["side"]])
        if notes:
            r["outside_reference"] = "; ".join(note[r["side"]])


def _measure_about(labels: Volume, mid: float, how: str) -> list[dict]:
    a = labels.array
    voxel_ml = labels.geometry.voxel_volume_ml
    right = {k: 0.0 for k in MEASURE_KEYS.values()}
    left = dict(right)
    box = bounding_box(a > 0)
    if box is not None:
        sub = a[box]
        offset = np.array([s.start for s in box])
        for lab in STRUCTURES:
            kji = np.argwhere(sub == lab)
            if kji.size == 0:
                continue
            x = _physical_x(labels, (kji + offset).astype(float))
            n_right = int(np.count_nonzero(x < mid))
            right[MEASURE_KEYS[lab]] = n_right * voxel_ml
            left[MEASURE_KEYS[lab]] = (len(x) - n_right) * voxel_ml
    common = {"midline_x_mm": mid, "midline_from": how}
    keys = list(MEASURE_KEYS.values())
    return [
        {"side": "right", **right, **common},
        {"side": "left", **left, **common},
        {"side": "left_minus_right_ml", **{k: left[k] - right[k] for k in keys}, **common},
        {"side": "asymmetry_pct", **{k: _asym_pct(left[k], right[k]) for k in keys}, **common},
    ]


def paired_measurements(pred: Volume, truth: Volume, case: str, scan: Volume | None = None, *,
                        clinical: bool = False) -> list[dict]:
    """Per-orbit measurements of a prediction beside those of its ground truth.

    Returns the four rows of :func:`orbit_measurements` (right, left,
    left_minus_right_ml, asymmetry_pct), each with ``case``, ``side`` and, per
    measure, ``{key}_pred`` and ``{key}_true`` (e.g. ``muscles_ml_pred``).
    Both are measured about the midline found on the ground truth, so that a
    missed globe cannot move the prediction's midline.  With ``clinical``, the
    clinical columns too (:func:`orbitseg.evaluate.clinical.clinical_measurements`;
    proptosis needs ``scan``).
    """
    if pred.shape != truth.shape:
        raise ValueError(f"pred shape {pred.shape} differs from truth shape {truth.shape}")
    t = orbit_measurements(truth)
    mid = t[0]["midline_x_mm"]
    p = _measure_about(pred, mid, t[0]["midline_from"])
    keys = list(MEASURE_KEYS.values())
    if clinical:
        from orbitseg.evaluate.clinical import CLINICAL_KEYS, clinical_measurements

        _add_sides(t, clinical_measurements(truth, scan, midline=mid), notes=False)
        _add_sides(p, clinical_measurements(pred, scan, midline=mid), notes=False)
        keys += list(CLINICAL_KEYS)
    return [{"case": case, "side": a["side"], **{f"{k}_pred": a[k] for k in keys},
             **{f"{k}_true": b[k] for k in keys}} for a, b in zip(p, t)]
