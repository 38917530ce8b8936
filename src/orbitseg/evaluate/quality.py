"""A quality verdict on every prediction: flags a reader can act on, per scan and orbit.

``quality_flags(labels, scan, fold_labels=..., training_acquisition=...)`` returns a list of flags,
each a dict ``{"side", "code", "message", "value", "limit"}``; an empty list means nothing to flag.
``flags_summary(flags)`` is one short line for a table cell or a terminal warning.

What is flagged (limits, sources and what to do: ``docs/quality.md``):

* ``{structure}_missing`` - a structure (eyeball, muscles, nerve) absent, or nearly, on one side;
* ``{structure}_volume_low`` / ``_high`` - a volume outside the adult reference range of published
  normative studies (:data:`REFERENCE_RANGES_ML`, limits at about mean +- 3 SD so that a normal orbit
  is rarely flagged although six volumes are checked per scan);
* ``{structure}_asymmetry`` - left and right differ more than normal anatomy does
  (:data:`ASYMMETRY_LIMITS_PCT`);
* ``{structure}_fold_disagreement`` - the ensemble's fold models disagree (mean pairwise Dice of their
  label maps in that orbit below the model's limit: ``model.json["fold_agreement_min"]`` where the model records
  one, else :data:`FOLD_AGREEMENT_MIN`; chosen on validation scans of the synthetic generator, seeds disjoint
  from every training and report set: ``bench/quality_flags.py``);
* ``cut_by_scan_edge`` - eyeball or muscle voxels on the scan's outer face: the field of view cuts the orbit;
* ``acquisition_*`` - the scan lies outside what the model was trained on (slice thickness, pixel size,
  grid obliquity / gantry tilt, field of view, head roll/yaw, contrast), given the model's
  ``training_acquisition`` record (``model.json``);
* ``thick_slices`` - slices of :data:`THICK_SLICE_MM` or more inside that range: the optic nerve is less reliable.

Sides are the patient's, split by :func:`orbitseg.evaluate.measure.orbit_measurements`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from orbitseg.constants import EYEBALL, MUSCLES, NERVE, SHORT_NAMES, STRUCTURES
from orbitseg.evaluate.measure import MEASURE_KEYS, midline_x, orbit_measurements
from orbitseg.io.volume import Geometry, Volume

__all__ = ["quality_flags", "quality_checks", "QUALITY_CHECKS", "flags_summary", "flag_codes", "acquisition_of",
           "acquisition_range", "fold_agreement",
           "fold_agreement_by_side",
           "REFERENCE_RANGES_ML", "ASYMMETRY_LIMITS_PCT", "EDGE_AREA_MM2", "FOLD_AGREEMENT_MIN", "MISSING_FRACTION",
           "TRAINING_ACQUISITION_KEY", "FOLD_AGREEMENT_KEY", "fold_limits_of", "THICK_SLICE_MM"]

#: key of the training acquisition record in model.json
TRAINING_ACQUISITION_KEY = "training_acquisition"
#: ``model.json`` key of the model's own fold-agreement limits ({"eyeball": 0.94, ...}, with "how")
FOLD_AGREEMENT_KEY = "fold_agreement_min"

#: structure -> (low, high) mL per orbit, adult reference range (docs/quality.md gives the studies):
#: eyeball: Detorakis et al. IOVS 2003 (7246 +- 1102 mm^3) +- 3 SD; muscles: low = Du et al. 2019 (CT,
#: women 1.6 +- 0.3 mL) - 2 SD, high = MRI rectus volumes (Clark & Demer IOVS 2016, about 2.5 mL for the
#: four recti) with the obliques and levator, times the upper-normal thickness ratio squared (Ozgen &
#: Ariyurek AJR 1998); nerve: Du et al. 2019 (women 0.36 +- 0.074 mL) - 3 SD, Detorakis 2003 (569 +- 175
#: mm^3) + 2.5 SD
REFERENCE_RANGES_ML: dict[int, tuple[float, float]] = {EYEBALL: (4.0, 10.5), MUSCLES: (1.0, 6.0), NERVE: (0.14, 1.0)}
#: a structure below this fraction of its range's low limit counts as missing on that side
MISSING_FRACTION = 0.1
#: structure -> largest |left - right| / mean, %, that normal anatomy and the measurement explain
#: (docs/quality.md: normal interocular differences plus the volume error of a segmentation on thick slices)
ASYMMETRY_LIMITS_PCT: dict[int, float] = {EYEBALL: 15.0, MUSCLES: 40.0, NERVE: 60.0}
#: structure -> lowest mean pairwise Dice between the fold models' labels in one orbit, chosen on the validation
#: scans of bench/quality_flags.py (generator seeds 7100-7107, half of them degraded; disjoint from training's,
#: the report's and the README's fresh cohort): per structure the largest limit, in 0.01 steps, that flags at most
#: 5 % of the validation orbits whose own Dice is >= 0.80 (with 12-16 such orbits: none of them)
#: (measured on the network's VOI slices, as predict does, since 2026-12-05).  These are the limits of the model
#: shipped until 2026-12-06, folds trained as `orbitseg train` trains them: the default for a model that records
#: none.  A model records its own in ``model.json["fold_agreement_min"]``, chosen for its folds by the same rule (the
#: shipped model does: docs/quality.md)
FOLD_AGREEMENT_MIN: dict[int, float] = {EYEBALL: 0.87, MUSCLES: 0.85, NERVE: 0.72}
#: eyeball / muscle cross-section (mm^2) on the scan's outer faces from which an orbit counts as cut by the field
#: of view.  A globe cut through its centre shows about 400 mm^2 in truth, but the network labels a scan's last
#: column sparsely (70 mm^2 of it in tests/predict/test_quality_predict.py), hence 30; muscle tips grazing the
#: top or bottom slice of a 50 mm scan (common in training) stay under 100, a lateral cut through the orbit does not
EDGE_AREA_MM2: dict[int, float] = {EYEBALL: 30.0, MUSCLES: 100.0}
#: how far outside the training range (relative) a geometry value may lie before it is flagged
_GEOMETRY_TOLERANCE = 0.10
#: HU margin around the training range of the median HU inside the globe / muscles
_HU_MARGIN = 25.0
#: slices at least this thick (mm) flag ``thick_slices`` even inside the training range: the optic nerve, about
#: 3-4 mm across, is then partly averaged away (docs/quality.md gives the measured loss); also the bin of "thick"
#: scans in the project's ship rule (bench/candidate_check.py)
THICK_SLICE_MM = 3.75


def _flag(side: str, code: str, message: str, value: float | None, limit: str) -> dict:
    return {"side": side, "code": code, "message": message,
            "value": None if value is None or not math.isfinite(value) else float(value), "limit": limit}


def _title(s: int) -> str:
    return {EYEBALL: "eyeball", MUSCLES: "extraocular muscles", NERVE: "optic nerve"}[s]


# ---------------------------------------------------------------------------
# anatomy: missing, range, asymmetry
# ---------------------------------------------------------------------------
def _anatomy_flags(rows: list[dict]) -> list[dict]:
    by_side = {r["side"]: r for r in rows}
    flags = []
    for s in STRUCTURES:
        key, name, title = MEASURE_KEYS[s], SHORT_NAMES[s], _title(s)
        lo, hi = REFERENCE_RANGES_ML[s]
        vols = {side: float(by_side[side][key]) for side in ("right", "left")}
        missing = {side for side, v in vols.items() if v < MISSING_FRACTION * lo}
        if len(missing) == 2:
            flags.append(_flag("both", f"{name}_missing", f"No {title} found on either side: check that the scan "
                               "covers both orbits and is a head CT, and correct the labels by hand.",
                               max(vols.values()), f">= {MISSING_FRACTION * lo:.3g} mL"))
            continue
        for side in sorted(missing):
            flags.append(_flag(side, f"{name}_missing", f"No {title} found in the {side} orbit (the other side has "
                               f"{vols['left' if side == 'right' else 'right']:.2f} mL): look at that orbit and "
                               "draw it, or check that the scan covers it.", vols[side],
                               f">= {MISSING_FRACTION * lo:.3g} mL"))
        for side, v in vols.items():
            if side in missing:
                continue
            if v < lo or v > hi:
                where = "below" if v < lo else "above"
                flags.append(_flag(side, f"{name}_volume_{'low' if v < lo else 'high'}",
                                   f"{title.capitalize()} volume {v:.2f} mL ({side}) is {where} the adult reference "
                                   f"range {lo:g}-{hi:g} mL: check the outline; if it is right, the anatomy is "
                                   "unusual (see docs/quality.md).", v, f"{lo:g}-{hi:g} mL"))
        if missing:
            continue
        mean = (vols["left"] + vols["right"]) / 2.0
        asym = 100.0 * abs(vols["left"] - vols["right"]) / mean if mean > 0 else 0.0
        if asym > ASYMMETRY_LIMITS_PCT[s]:
            big = "left" if vols["left"] > vols["right"] else "right"
            flags.append(_flag("both", f"{name}_asymmetry",
                               f"{title.capitalize()} volumes differ by {asym:.0f} % between the sides (right "
                               f"{vols['right']:.2f}, left {vols['left']:.2f} mL; the {big} is larger): compare the "
                               "two outlines; real asymmetry (e.g. thyroid eye disease) or a segmentation error.",
                               asym, f"<= {ASYMMETRY_LIMITS_PCT[s]:g} %"))
    return flags


# ---------------------------------------------------------------------------
# field of view cutting an orbit
# ---------------------------------------------------------------------------
def _edge_flags(labels: Volume, mid: float) -> list[dict]:
    a = labels.array
    sp = labels.geometry.spacing[::-1]  # mm along array axes (k, j, i)
    area = {(side, s): 0.0 for side in ("right", "left") for s in (EYEBALL, MUSCLES)}
    for f_idx in range(6):
        axis, last = divmod(f_idx, 2)
        fixed = a.shape[axis] - 1 if last else 0
        face = np.take(a, fixed, axis=axis)
        others = [d for d in range(3) if d != axis]
        px = sp[others[0]] * sp[others[1]]
        for s in (EYEBALL, MUSCLES):
            idx2 = np.argwhere(face == s)
            if not len(idx2):
                continue
            kji = np.zeros((len(idx2), 3))
            kji[:, axis] = fixed
            kji[:, others[0]], kji[:, others[1]] = idx2[:, 0], idx2[:, 1]
            x = labels.geometry.index_to_physical(kji[:, ::-1])[:, 0]
            area[("right", s)] += px * int(np.count_nonzero(x < mid))
            area[("left", s)] += px * int(np.count_nonzero(x >= mid))
    flags = []
    for side in ("right", "left"):
        eye, mus = area[(side, EYEBALL)], area[(side, MUSCLES)]
        if eye >= EDGE_AREA_MM2[EYEBALL] or mus >= EDGE_AREA_MM2[MUSCLES]:
            what = "eyeball" if eye >= EDGE_AREA_MM2[EYEBALL] else "muscles"
            v = eye if what == "eyeball" else mus
            flags.append(_flag(side, "cut_by_scan_edge", f"The {side} orbit's {what} reach the edge of the scan "
                               f"({v:.0f} mm^2 of them on its outer face): the field of view cuts that orbit, so its "
                               "outlines and volumes are incomplete; use a scan that covers the whole orbit.", v,
                               f"eyeball < {EDGE_AREA_MM2[EYEBALL]:g}, muscles < {EDGE_AREA_MM2[MUSCLES]:g} mm^2"))
    return flags


# ---------------------------------------------------------------------------
# fold disagreement
# ---------------------------------------------------------------------------
def _physical_x_grid(geometry: Geometry, start: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Physical LPS x (mm) of every voxel of the sub-array ``[start : start + shape]`` (k, j, i order)."""
    m = geometry.matrix * np.asarray(geometry.spacing)[None, :]  # column c: LPS mm of one step along index c
    o = np.asarray(geometry.origin, dtype=float)
    k = np.arange(start[0], start[0] + shape[0], dtype=float)
    j = np.arange(start[1], start[1] + shape[1], dtype=float)
    i = np.arange(start[2], start[2] + shape[2], dtype=float)
    return (o[0] + m[0, 2] * k[:, None, None] + m[0, 1] * j[None, :, None] + m[0, 0] * i[None, None, :])


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = int(a.sum()), int(b.sum())
    if na + nb == 0:
        return math.nan
    return 2.0 * int(np.count_nonzero(a & b)) / (na + nb)


def fold_agreement(labels: Volume, *, fold_labels: Sequence[np.ndarray] | None = None,
                   fold_probabilities=None, midline: float | None = None) -> dict[tuple[str, int], float]:
    """Mean pairwise Dice between the fold models' label maps, per (side, structure).

    Parameters
    ----------
    labels : the ensemble's labels (their eyeballs give the midline that splits the sides)
    fold_labels : each fold's labels ``(nz, ny, nx)`` on ``labels``' grid, or
    fold_probabilities : each fold's :class:`~orbitseg.preprocess.pipeline.BoxProbabilities` (canonical
        grid, as ``Segmenter.segment(scan, per_fold=True)`` returns them); their argmax is taken
    midline : LPS x of the mid-sagittal plane when already known (default :func:`midline_x` of ``labels``)

    Returns
    -------
    ``{("right" | "left", label): mean Dice}``; NaN where no fold labels that structure on that side.
    """
    from orbitseg.io.orient import canonical_geometry

    mid = midline_x(labels)[0] if midline is None else float(midline)
    if fold_probabilities is not None:
        probs = list(fold_probabilities)
        geom = canonical_geometry(labels.geometry)
        maps = [p.values.argmax(axis=0).astype(np.uint8) for p in probs]
        start = probs[0].start
        if any(p.start != start or p.values.shape != probs[0].values.shape for p in probs):
            raise ValueError("fold probabilities cover different boxes")
    elif fold_labels is not None:
        maps = [np.asarray(f) for f in fold_labels]
        if any(m.shape != labels.shape for m in maps):
            raise ValueError(f"fold labels must have the labels' shape {labels.shape}")
        fg = np.zeros(labels.shape, dtype=bool)
        for m in maps:
            fg |= m > 0
        hit = [np.flatnonzero(fg.any(axis=tuple(d for d in range(3) if d != ax))) for ax in range(3)]
        if any(h.size == 0 for h in hit):
            return {(side, s): math.nan for side in ("right", "left") for s in STRUCTURES}
        box = tuple(slice(int(h[0]), int(h[-1]) + 1) for h in hit)
        maps = [m[box] for m in maps]
        start = tuple(b.start for b in box)
        geom = labels.geometry
    else:
        raise ValueError("give fold_labels or fold_probabilities")
    if len(maps) < 2:
        return {(side, s): math.nan for side in ("right", "left") for s in STRUCTURES}
    right = _physical_x_grid(geom, start, maps[0].shape) < mid
    return {(side, s): _mean_pairwise_dice([(m == s) & mask for m in maps])
            for side, mask in (("right", right), ("left", ~right)) for s in STRUCTURES}


def _mean_pairwise_dice(masks: Sequence[np.ndarray]) -> float:
    ds = [_dice(masks[a], masks[b]) for a in range(len(masks)) for b in range(a + 1, len(masks))]
    ds = [d for d in ds if not math.isnan(d)]
    return float(np.mean(ds)) if ds else math.nan


def fold_agreement_by_side(fold_maps: Mapping[str, Sequence[np.ndarray]]) -> dict[tuple[str, int], float]:
    """Mean pairwise Dice between the fold models' label maps, each side given on its own grid.

    :func:`fold_agreement` on the scan's grid needs every fold's probabilities mapped back onto the scan (a
    cubic resampling each); the Segmenter instead takes each fold's argmax on the network's own slices of
    each orbit's VOI, one side per VOI.  There every pixel stands for the same area and every slice for the
    same thickness, so the Dice is a volume Dice.  Measured against the scan grid on 12 scans of the fresh
    cohort (24 orbits): mean difference <= 0.0005 per structure, largest -0.0015..+0.0008 (eyeball,
    muscles) and -0.0055..+0.0108 (nerve), against flag limits of 0.87 / 0.85 / 0.72.

    Parameters
    ----------
    fold_maps : ``{"right" | "left": [each fold's uint8 labels (n, S, S)]}``, the same shape within a side

    Returns
    -------
    ``{(side, label): mean Dice}`` for the sides given; NaN where no fold labels that structure there.
    """
    out = {}
    for side, maps in fold_maps.items():
        if side not in ("right", "left"):
            raise ValueError(f"fold_maps: side must be 'right' or 'left', got {side!r}")
        if any(np.shape(m) != np.shape(maps[0]) for m in maps):
            raise ValueError(f"fold_maps[{side!r}]: the folds' label maps differ in shape")
        for s in STRUCTURES:
            out[(side, s)] = _mean_pairwise_dice([np.asarray(m) == s for m in maps])  # one fold: no pair, NaN
    return out


def fold_limits_of(record: Mapping | None) -> dict[int, float]:
    """The fold-agreement limits a model records (``model.json["fold_agreement_min"]``: structure name -> lowest
    mean pairwise Dice), by label; :data:`FOLD_AGREEMENT_MIN` for a structure it does not name (or None)."""
    limits = dict(FOLD_AGREEMENT_MIN)
    for s in STRUCTURES:
        v = (record or {}).get(SHORT_NAMES[s])
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            limits[s] = float(v)
    return limits


def _fold_flags(agreement: dict[tuple[str, int], float], missing: set[tuple[str, int]],
                limits: Mapping[int, float]) -> list[dict]:
    flags = []
    for (side, s), d in sorted(agreement.items(), key=lambda kv: (kv[0][0] != "right", kv[0][1])):
        if math.isnan(d) or (side, s) in missing or d >= limits[s]:
            continue
        flags.append(_flag(side, f"{SHORT_NAMES[s]}_fold_disagreement",
                           f"The model's folds disagree on the {side} {_title(s)} (mean Dice between them "
                           f"{d:.2f}): the outline there is uncertain; check it and correct it by hand.",
                           d, f">= {limits[s]:g}"))
    return flags


# ---------------------------------------------------------------------------
# acquisition
# ---------------------------------------------------------------------------
def _obliquity_deg(geometry: Geometry) -> float:
    """Largest angle (degrees) between an index axis and its nearest LPS axis."""
    d = np.abs(np.asarray(geometry.direction, dtype=float))
    return float(np.degrees(np.arccos(np.clip(d.max(axis=0), -1.0, 1.0))).max())


def _resampled_tilt(meta: dict) -> float | None:
    """Gantry tilt (degrees) the reader resampled away, when it recorded one in ``meta["resampled"]``."""
    rec = meta.get("resampled") if isinstance(meta, dict) else None
    if not isinstance(rec, dict):
        return None
    for k, v in rec.items():
        if "tilt" in str(k).lower():
            try:
                return abs(float(v))
            except (TypeError, ValueError):
                return None
    return None


def _head_angles(labels: Volume, geometry_canonical: Geometry,
                 midline: tuple[float, str] | None = None) -> tuple[float, float] | None:
    """(yaw, roll) in degrees of the line through the two eyeballs' centroids, measured in the canonical
    grid's index axes (what the network sees); None without two eyeballs.  ``midline``: :func:`midline_x`'s
    answer when already known."""
    from orbitseg.io.orient import to_canonical

    canon = to_canonical(labels)
    mid, how = midline_x(labels) if midline is None else midline
    if how != "eyeballs":
        return None
    eye = canon.array == EYEBALL
    kji = np.argwhere(eye)
    if len(kji) == 0:
        return None
    x = geometry_canonical.index_to_physical(kji[:, ::-1].astype(float))[:, 0]
    cents = []
    for sel in (x < mid, x >= mid):
        if not sel.any():
            return None
        cents.append(kji[sel].mean(axis=0) * np.asarray(geometry_canonical.spacing[::-1]))  # mm along k, j, i
    v = cents[1] - cents[0]  # (dz, dy, dx) in mm along canonical index axes
    dz, dy, dx = (abs(float(c)) for c in v)
    if dx == 0:
        return None
    return float(np.degrees(np.arctan2(dy, dx))), float(np.degrees(np.arctan2(dz, dx)))


def acquisition_of(scan: Volume, labels: Volume | None = None, *, midline: tuple[float, str] | None = None) -> dict:
    """What the model sees of ``scan``'s acquisition: grid and, with ``labels``, pose and contrast.

    Returns
    -------
    dict with ``slice_mm`` (spacing along the axis nearest superior-inferior), ``pixel_mm`` (largest
    in-plane spacing), ``obliquity_deg`` (grid axes against LPS), ``gantry_tilt_deg`` (resampled away by
    the reader, or None), ``fov_mm`` (smaller in-plane extent), ``coverage_mm`` (extent along the slices'
    axis) and, with ``labels``, ``head_yaw_deg``, ``head_roll_deg`` (inter-globe line in the grid),
    ``globe_hu`` and ``muscle_hu`` (median HU inside the predicted eyeballs and muscles).  ``midline``:
    :func:`~orbitseg.evaluate.measure.midline_x` of ``labels`` when already known.
    """
    from orbitseg.io.orient import canonical_geometry, to_canonical

    g = canonical_geometry(scan.geometry)
    sx, sy, sz = g.spacing
    nx, ny, nz = g.size
    out: dict = {"slice_mm": float(sz), "pixel_mm": float(max(sx, sy)), "obliquity_deg": _obliquity_deg(g),
                 "gantry_tilt_deg": _resampled_tilt(scan.meta), "fov_mm": float(min(nx * sx, ny * sy)),
                 "coverage_mm": float(nz * sz)}
    if labels is not None:
        angles = _head_angles(labels, g, midline)
        out["head_yaw_deg"], out["head_roll_deg"] = angles if angles is not None else (None, None)
        canon_scan = to_canonical(scan).array
        canon_lab = to_canonical(labels).array
        for key, s in (("globe_hu", EYEBALL), ("muscle_hu", MUSCLES)):
            sel = canon_lab == s
            out[key] = float(np.median(canon_scan[sel])) if sel.any() else None
    return out


#: the keys of a training acquisition record that hold ``[low, high]`` ranges
ACQUISITION_KEYS = ("slice_mm", "pixel_mm", "fov_mm", "coverage_mm", "obliquity_deg", "head_yaw_deg", "head_roll_deg",
                    "globe_hu", "muscle_hu")


def acquisition_range(acquisitions: Sequence[dict], source: str) -> dict:
    """The training acquisition record of a model from the :func:`acquisition_of` of its training scans:
    ``[min, max]`` of every :data:`ACQUISITION_KEYS` value seen, and ``source`` (what they are)."""
    out: dict = {}
    for key in ACQUISITION_KEYS:
        vals = [float(a[key]) for a in acquisitions if a.get(key) is not None]
        if vals:
            out[key] = [round(min(vals), 3), round(max(vals), 3)]
    out["source"] = source
    return out


def _acquisition_flags(acq: dict, train: dict) -> list[dict]:
    flags = []
    src = train.get("source", "the model's training data")

    def rng(key):
        r = train.get(key)
        return (float(r[0]), float(r[1])) if isinstance(r, (list, tuple)) and len(r) == 2 else None

    checks = [("slice_mm", "slice thickness", "mm", "both"), ("pixel_mm", "pixel size", "mm", "both"),
              ("fov_mm", "field of view", "mm", "low"), ("obliquity_deg", "grid obliquity", "deg", "high"),
              ("gantry_tilt_deg", "gantry tilt (resampled)", "deg", "high"),
              ("head_yaw_deg", "head yaw in the grid", "deg", "high"),
              ("head_roll_deg", "head roll in the grid", "deg", "high")]
    for key, what, unit, sides in checks:
        # a gantry tilt resampled away is set against the tilted (oblique) grids the model was trained on
        r = rng(key) or (rng("obliquity_deg") if key == "gantry_tilt_deg" else None)
        v = acq.get(key)
        if r is None or v is None:
            continue
        lo, hi = r
        tol = _GEOMETRY_TOLERANCE * (hi if unit == "mm" else max(hi, 10.0))
        low = sides in ("both", "low") and v < lo - tol
        high = sides in ("both", "high") and v > hi + tol
        if low or high:
            flags.append(_flag("both", f"acquisition_{key.rsplit('_', 1)[0]}",
                               f"The scan's {what} ({v:.2f} {unit}) is outside the {lo:g}-{hi:g} {unit} the model was "
                               f"trained on ({src}): its outlines may be less accurate; check them, or predict a "
                               "scan reconstructed within that range.", v, f"{lo:g}-{hi:g} {unit}"))
    v = acq.get("slice_mm")
    if v is not None and v >= THICK_SLICE_MM and not any(f["code"] == "acquisition_slice" for f in flags):
        flags.append(_flag("both", "thick_slices",
                           f"Slices of {v:.2f} mm: the optic nerve, thinner than a slice, is partly averaged away, so "
                           "its outline and volume are underestimated and less reliable than on thin slices (the "
                           "muscles less so): take nerve measurements from a reconstruction of 3 mm or thinner "
                           "where they matter (docs/quality.md).", v, f"< {THICK_SLICE_MM:g} mm"))
    for key, what in (("globe_hu", "eyeballs"), ("muscle_hu", "extraocular muscles")):
        r, v = rng(key), acq.get(key)
        if r is None or v is None:
            continue
        lo, hi = r[0] - _HU_MARGIN, r[1] + _HU_MARGIN
        if v < lo or v > hi:
            hint = ("contrast medium or a shifted HU scale" if v > hi else "a shifted HU scale or another modality")
            flags.append(_flag("both", f"acquisition_contrast_{key.split('_')[0]}",
                               f"The median HU inside the predicted {what} ({v:.0f} HU) is outside the {lo:g} to "
                               f"{hi:g} HU of the model's training scans ({src}), which suggests {hint}: check the "
                               "outlines.", v, f"{lo:g} to {hi:g} HU"))
    return flags


# ---------------------------------------------------------------------------
def quality_flags(labels: Volume, scan: Volume | None = None, *, fold_labels: Sequence[np.ndarray] | None = None,
                  fold_probabilities=None, agreement: Mapping[tuple[str, int], float] | None = None,
                  training_acquisition: dict | None = None, measurements: list[dict] | None = None,
                  fold_limits: Mapping | None = None) -> list[dict]:
    """Flags a reader can act on for one predicted scan; an empty list when nothing is flagged.

    Parameters
    ----------
    labels : the predicted label Volume (values 0..3) on the scan's grid
    scan : the CT it was predicted from (needed for the contrast check); None skips it
    fold_labels : each fold model's labels ``(nz, ny, nx)`` on ``labels``' grid, for the fold-disagreement check
    fold_probabilities : or each fold's BoxProbabilities (``Segmenter.segment(scan, per_fold=True)``)
    agreement : or the folds' agreement already measured, ``{(side, label): mean Dice}``
        (:func:`fold_agreement_by_side`; ``Segmenter.segment(scan, fold_agreement=True).fold_agreement``)
    training_acquisition : the model's ``training_acquisition`` record (``model.json``): ranges
        ``[low, high]`` of ``slice_mm``, ``pixel_mm``, ``fov_mm``, ``obliquity_deg``, ``gantry_tilt_deg``,
        ``head_yaw_deg``, ``head_roll_deg``, ``globe_hu``, ``muscle_hu`` and its ``source``; None skips the check
    measurements : :func:`~orbitseg.evaluate.measure.orbit_measurements` of ``labels`` when the caller has
        them already (e.g. with the clinical columns): not measured again, and their midline is used throughout
    fold_limits : the model's ``fold_agreement_min`` record (``model.json``: structure name -> limit); None, or a
        structure it does not name: :data:`FOLD_AGREEMENT_MIN`

    Returns
    -------
    list of ``{"side": "right" | "left" | "both", "code": str, "message": str, "value": float | None,
    "limit": str}``, in the order anatomy, field of view, fold disagreement, acquisition.
    """
    rows = orbit_measurements(labels) if measurements is None else measurements
    midline = (rows[0]["midline_x_mm"], rows[0]["midline_from"])  # one midline for every check
    flags = _anatomy_flags(rows)
    missing = {(f["side"], s) for f in flags for s in STRUCTURES if f["code"] == f"{SHORT_NAMES[s]}_missing"}
    missing |= {(side, s) for side0, s in list(missing) if side0 == "both" for side in ("right", "left")}
    flags += _edge_flags(labels, midline[0])
    given = sum(x is not None for x in (fold_labels, fold_probabilities, agreement))
    if given > 1:
        raise ValueError("give one of fold_labels, fold_probabilities and agreement")
    made = quality_checks(fold_check=given == 1, training_acquisition=training_acquisition)
    if "fold_disagreement" in made:
        flags += _fold_flags(dict(agreement) if agreement is not None else
                             fold_agreement(labels, fold_labels=fold_labels, fold_probabilities=fold_probabilities,
                                            midline=midline[0]), missing, fold_limits_of(fold_limits))
    if "acquisition" in made:
        geometry_scan = scan if scan is not None else Volume(np.zeros(labels.shape, np.int16), labels.geometry)
        acq = acquisition_of(geometry_scan, labels, midline=midline)
        if scan is None:
            acq["globe_hu"] = acq["muscle_hu"] = None
        flags += _acquisition_flags(acq, training_acquisition)
    return flags


#: the groups of checks :func:`quality_flags` makes, in its order
QUALITY_CHECKS: tuple[str, ...] = ("anatomy", "field_of_view", "fold_disagreement", "acquisition")


def quality_checks(*, fold_check: bool, training_acquisition: dict | None) -> list[str]:
    """Which of :data:`QUALITY_CHECKS` :func:`quality_flags` makes with these inputs, for the record: an empty
    flag list then says "nothing found" only for these.

    Parameters
    ----------
    fold_check : whether the folds' agreement (or their labels or probabilities) was given; a model of one
        network (``--folds 0``, a ``full`` model) has no second opinion to compare with
    training_acquisition : the model's ``training_acquisition`` record, or None (a bare checkpoint)
    """
    return [c for c in QUALITY_CHECKS
            if (c != "fold_disagreement" or fold_check) and (c != "acquisition" or training_acquisition)]


def flag_codes(flags: Sequence[dict], side: str | None = None) -> str:
    """The flags' codes joined by ``;`` (only those of ``side`` and ``both`` when a side is given)."""
    return ";".join(f["code"] for f in flags if side is None or f["side"] in (side, "both"))


def _short(f: dict) -> str:
    code = f["code"]
    v = f.get("value")
    for s in STRUCTURES:
        name = SHORT_NAMES[s]
        if code == f"{name}_missing":
            return f"{name} missing"
        if code.startswith(f"{name}_volume_") and v is not None:
            where = "below" if code.endswith("low") else "above"
            return f"{name} volume {v:.2f} mL {where} range"
        if code == f"{name}_asymmetry" and v is not None:
            return f"{name} asymmetry {v:.0f} %"
        if code == f"{name}_fold_disagreement" and v is not None:
            return f"{name} fold Dice {v:.2f}"
    if code == "cut_by_scan_edge":
        return "orbit cut by scan edge"
    if code == "thick_slices" and v is not None:
        return f"slices {v:.3g} mm: nerve less reliable"
    if code.startswith("acquisition_") and v is not None:
        return f"{code.removeprefix('acquisition_').replace('_', ' ')} {v:.3g} outside training ({f['limit']})"
    return code.replace("_", " ")


def flags_summary(flags: Sequence[dict]) -> str:
    """One short line: ``"ok"``, or ``"2 flags: nerve missing (left); globe volume 11.20 mL above range (right)"``."""
    if not flags:
        return "ok"
    parts = [f"{_short(f)} ({f['side']})" for f in flags]
    return f"{len(flags)} flag{'s' if len(flags) > 1 else ''}: " + "; ".join(parts)
