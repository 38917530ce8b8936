"""Overlap, surface-distance and volume metrics of one case, and their summary.

Everything is computed in 3D on the whole label volumes, in the scan's own
grid, with the voxel spacing of that grid.

Conventions
-----------
* ``pred`` and ``truth`` are integer label arrays of shape ``(nz, ny, nx)``
  holding 0 (background), 1 (eyeball), 2 (extraocular muscles), 3 (optic
  nerve); ``spacing`` is ``(sx, sy, sz)`` in mm along the index axes
  ``(i, j, k)`` as in :class:`orbitseg.io.volume.Geometry` - that is, along the
  array axes ``(2, 1, 0)``.
* ``all`` pools labels 1-3 as one foreground (``label > 0``): a voxel of
  muscle predicted as nerve is wrong for both structures but right for
  ``all``.
* Dice = 2TP / (2TP + FP + FN); volume similarity
  VS = 1 - |FN - FP| / (2TP + FP + FN).
* HD95 is MONAI's symmetric 95th-percentile Hausdorff distance (the larger of
  the two directed 95th percentiles) and ASD its average *symmetric* surface
  distance (mean over the surface voxels of both masks of the distance to the
  other mask's surface), both in mm with the anisotropic voxel spacing.
  Surface voxels are the voxels of a mask with a 6-neighbour outside it.
  :func:`surface_distances` computes them on the sparse voxel list with a
  KD-tree (fast however far apart stray voxels are); the tests check it
  against MONAI's ``compute_hausdorff_distance`` /
  ``compute_average_surface_distance`` (``method="monai"`` calls MONAI).
* MSSD (:func:`mean_signed_surface_distance`) is ASD with a sign: the same
  surface voxels and distances, negative where the prediction lies inside the
  truth, positive outside; it says whether a boundary is biased inward or
  outward (issue 20's robustness table), not how far off it is.  It is not a
  column of :func:`case_metrics`.
* Empty masks: when a structure is absent from both ``pred`` and ``truth``
  every metric of it is NaN (there is nothing to score - never a silent 1 or
  0).  When it is absent from exactly one, Dice is 0, VS follows its formula
  (which gives 0) and HD95 / ASD are NaN (a distance to nothing is undefined;
  MONAI would say inf, which poisons means).  NaN values are left out of the
  means of :func:`summarise` and counted by its ``n``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from orbitseg.constants import SHORT_NAMES, STRUCTURES

__all__ = [
    "bounding_box",
    "Confusion",
    "confusion",
    "dice",
    "volume_similarity",
    "surface_distances",
    "case_metrics",
    "metric_names",
    "summarise",
    "dice_per_structure",
    "mean_signed_surface_distance",
    "signed_surface_distance_per_structure",
]

#: key of the pooled foreground (labels 1-3)
ALL = "all"
_N_LABELS = 4


class Confusion(NamedTuple):
    """Voxel counts of one structure: true positives, false positives, false negatives."""

    tp: int
    fp: int
    fn: int

    @property
    def dice(self) -> float:
        """2TP / (2TP + FP + FN); NaN when both masks are empty."""
        den = 2 * self.tp + self.fp + self.fn
        return math.nan if den == 0 else 2.0 * self.tp / den

    @property
    def volume_similarity(self) -> float:
        """1 - |FN - FP| / (2TP + FP + FN); NaN when both masks are empty."""
        den = 2 * self.tp + self.fp + self.fn
        return math.nan if den == 0 else 1.0 - abs(self.fn - self.fp) / den

    @property
    def n_pred(self) -> int:
        return self.tp + self.fp

    @property
    def n_true(self) -> int:
        return self.tp + self.fn


def _check_pair(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"pred shape {pred.shape} differs from truth shape {truth.shape}")
    if pred.ndim != 3:
        raise ValueError(f"label arrays must be 3D (nz, ny, nx), got shape {pred.shape}")
    return pred, truth


def _joint_counts(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(4, 4) matrix ``m[t, p]`` = number of voxels with truth ``t`` and prediction ``p``."""
    for name, a in (("pred", pred), ("truth", truth)):
        if a.size and (a.dtype.kind not in "biu" or int(a.min()) < 0 or int(a.max()) >= _N_LABELS):
            bad = a.dtype if a.dtype.kind not in "biu" else f"values {int(a.min())}..{int(a.max())}"
            raise ValueError(f"{name} must hold integer labels 0..3, got {bad}")
    fg = (pred != 0) | (truth != 0)  # count foreground voxels only; the rest is background-background
    code = truth[fg].astype(np.uint8) * _N_LABELS + pred[fg].astype(np.uint8)
    m = np.bincount(code, minlength=_N_LABELS**2).reshape(_N_LABELS, _N_LABELS)
    m[0, 0] = pred.size - code.size
    return m


def _confusion_from_joint(m: np.ndarray, label: int | None) -> Confusion:
    if label is None:  # pooled foreground
        tp = int(m[1:, 1:].sum())
        fp = int(m[0, 1:].sum())
        fn = int(m[1:, 0].sum())
    else:
        tp = int(m[label, label])
        fp = int(m[:, label].sum()) - tp
        fn = int(m[label, :].sum()) - tp
    return Confusion(tp, fp, fn)


def _check_label(label) -> int | None:
    if label is None or label == ALL:
        return None
    if label not in STRUCTURES:
        raise ValueError(f"label must be one of {STRUCTURES} or None/'all' (pooled foreground), got {label!r}")
    return int(label)


def confusion(pred, truth, label: int | str | None = None) -> Confusion:
    """TP / FP / FN voxel counts of ``label`` (None or ``"all"``: labels 1-3 pooled)."""
    pred, truth = _check_pair(pred, truth)
    return _confusion_from_joint(_joint_counts(pred, truth), _check_label(label))


def dice(pred, truth, label: int | str | None = None) -> float:
    """Dice of ``label`` (None or ``"all"``: pooled foreground); NaN when both are empty."""
    return confusion(pred, truth, label).dice


def dice_per_structure(pred, truth) -> dict[int, float]:
    """Dice of each structure (1, 2, 3) from one pass over the volumes; NaN where both are empty."""
    pred, truth = _check_pair(pred, truth)
    m = _joint_counts(pred, truth)
    return {s: _confusion_from_joint(m, s).dice for s in STRUCTURES}


def volume_similarity(pred, truth, label: int | str | None = None) -> float:
    """VS = 1 - |FN - FP| / (2TP + FP + FN) of ``label``; NaN when both are empty."""
    return confusion(pred, truth, label).volume_similarity


# ---------------------------------------------------------------------------
# surface distances
# ---------------------------------------------------------------------------
def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Slices of the bounding box of ``mask`` (any number of axes) grown by ``margin`` voxels (clipped to the
    array); None when ``mask`` is empty."""
    out = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        if hit.size == 0:
            return None
        out.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(out)


def _array_spacing(spacing) -> tuple[float, float, float]:
    s = tuple(float(v) for v in spacing)
    if len(s) != 3 or min(s) <= 0 or not all(math.isfinite(v) for v in s):
        raise ValueError(f"spacing must be 3 positive numbers (sx, sy, sz) in mm, got {spacing!r}")
    return s[2], s[1], s[0]  # array axes are (k, j, i)


def _edge_coords(coords: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Surface voxels among the foreground voxels ``coords`` (N, 3), C-ordered, of an array of ``shape``.

    A voxel is on the surface when one of its 6 face neighbours is background
    or outside the array - what ``mask ^ scipy.ndimage.binary_erosion(mask)``
    (MONAI's edges) gives, computed on the sparse voxel list so that a few
    stray voxels far apart cost nothing.
    """
    if len(coords) == 0:
        return coords
    nz, ny, nx = (int(v) + 2 for v in shape)  # padded by one so no neighbour wraps around
    c = coords.astype(np.int64) + 1
    lin = (c[:, 0] * ny + c[:, 1]) * nx + c[:, 2]  # increasing, as coords are in C order
    interior = np.ones(len(lin), dtype=bool)
    for d in (1, nx, nx * ny):
        for step in (d, -d):
            target = lin + step
            pos = np.minimum(np.searchsorted(lin, target), len(lin) - 1)
            interior &= lin[pos] == target
    return coords[~interior]


def _edge_distances(edges_pred: np.ndarray, edges_true: np.ndarray, sp: tuple[float, float, float]) -> tuple[float, float]:
    """(HD95, ASD) from surface voxel coordinates (k, j, i) and array-axis spacing ``sp``."""
    from scipy.spatial import cKDTree

    scale = np.asarray(sp, dtype=np.float64)
    p = edges_pred * scale
    t = edges_true * scale
    d_pt = cKDTree(t).query(p, k=1)[0]
    d_tp = cKDTree(p).query(t, k=1)[0]
    hd95 = max(float(np.percentile(d_pt, 95)), float(np.percentile(d_tp, 95)))
    asd = float(np.concatenate([d_pt, d_tp]).mean())
    return hd95, asd


def surface_distances(pred_mask, true_mask, *, spacing, method: str = "fast") -> tuple[float, float]:
    """(HD95, ASD) in mm between two boolean masks; NaN when either is empty.

    ``spacing`` is ``(sx, sy, sz)`` along index axes (i, j, k), i.e. along array
    axes (2, 1, 0).  Definitions are MONAI's: surface voxels are the mask's
    voxels with a 6-neighbour outside it; distances are exact Euclidean mm
    from each surface voxel to the nearest surface voxel of the other mask;
    HD95 = the larger of the two directed 95th percentiles (linear
    interpolation, as ``torch.quantile``); ASD = the mean over both directions'
    distances (``compute_average_surface_distance(symmetric=True)``).

    method : ``"fast"`` (default) extracts the surface voxels from the sparse
        voxel list and queries a ``scipy.spatial.cKDTree`` (as MONAI does on
        CPU) - a whole 512x512x100 case with stray voxels takes well under a
        second; ``"monai"`` calls ``monai.metrics.utils.get_edge_surface_distance``
        on the masks' bounding box (the reference the tests compare against;
        slow when stray voxels make the box large).
    """
    pred_mask, true_mask = _check_pair(pred_mask, true_mask)
    pred_mask, true_mask = pred_mask.astype(bool, copy=False), true_mask.astype(bool, copy=False)
    sp = _array_spacing(spacing)
    if not pred_mask.any() or not true_mask.any():
        return math.nan, math.nan
    if method == "fast":
        return _edge_distances(_edge_coords(np.argwhere(pred_mask), pred_mask.shape),
                               _edge_coords(np.argwhere(true_mask), true_mask.shape), sp)
    if method != "monai":
        raise ValueError(f"method must be 'fast' or 'monai', got {method!r}")
    import torch

    try:
        from monai.metrics.utils import get_edge_surface_distance
    except ImportError as exc:
        raise ImportError("method='monai' needs MONAI: pip install monai") from exc

    box = bounding_box(pred_mask | true_mask, margin=1)
    p = torch.from_numpy(np.ascontiguousarray(pred_mask[box]))
    t = torch.from_numpy(np.ascontiguousarray(true_mask[box]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, dists, _ = get_edge_surface_distance(p, t, distance_metric="euclidean", spacing=sp,
                                                symmetric=True, warn_empty=False)
    d_pt, d_tp = (np.asarray(d, dtype=np.float64).ravel() for d in dists)
    hd95 = max(float(np.percentile(d_pt, 95)), float(np.percentile(d_tp, 95)))
    asd = float(np.concatenate([d_pt, d_tp]).mean())
    return hd95, asd


def _signed_edge_distances(edges_pred: np.ndarray, edges_true: np.ndarray, pred_mask: np.ndarray,
                           true_mask: np.ndarray, sp: tuple[float, float, float]) -> float:
    """Mean signed surface distance (mm) from surface voxel coordinates (k, j, i); see
    :func:`mean_signed_surface_distance`."""
    from scipy.spatial import cKDTree

    scale = np.asarray(sp, dtype=np.float64)
    d_pt = cKDTree(edges_true * scale).query(edges_pred * scale, k=1)[0]
    d_tp = cKDTree(edges_pred * scale).query(edges_true * scale, k=1)[0]
    # pred -> truth: a predicted surface voxel inside the truth lies inside (-), outside it (+)
    s_pt = np.where(true_mask[tuple(edges_pred.T)], -1.0, 1.0)
    # truth -> pred: a true surface voxel outside the prediction means the prediction lies inside (-)
    s_tp = np.where(pred_mask[tuple(edges_true.T)], 1.0, -1.0)
    return float(np.concatenate([s_pt * d_pt, s_tp * d_tp]).mean())


def mean_signed_surface_distance(pred_mask, true_mask, *, spacing) -> float:
    """Mean signed surface distance (mm) of a predicted mask from the true one; NaN when either is empty.

    Negative when the prediction lies inside the truth (under-segmentation, an inward bias of the
    boundary), positive when it lies outside (over-segmentation); 0 for identical masks.

    Definition: the surface voxels of each mask are those of :func:`surface_distances` (a mask voxel with
    a 6-neighbour outside the mask), and distances the same exact Euclidean mm between surface voxels
    with the anisotropic ``spacing`` (nearest surface voxel of the other mask, by KD-tree - the
    distances of ASD, so that ``|MSSD| <= ASD`` always, with equality when one mask's boundary lies
    wholly on one side of the other's). Each distance gets a sign:

    * from a **predicted** surface voxel to the true surface: ``-`` when that voxel lies in the true mask
      (the predicted boundary is inside the truth there), ``+`` when it lies outside the true mask;
    * from a **true** surface voxel to the predicted surface: ``-`` when that voxel lies outside the
      predicted mask (the prediction stops short of the true boundary there), ``+`` when it lies in it.

    MSSD is the mean of the signed distances over the surface voxels of **both** masks (symmetric, as
    MONAI's ASD). Why symmetric: the one-way mean over the predicted surface does not see a part of the
    structure the prediction misses altogether (e.g. a missed muscle belly adds no predicted surface
    there), whereas the true surface voxels along the miss count as inward; likewise a stray blob only
    shows from the predicted side. For a boundary displaced uniformly by ``d`` mm both directions give
    ``+-d``, so the symmetric mean is ``+-d`` too. A surface voxel of one mask lying on the other's
    surface has distance 0, so its sign does not matter. Distances are between voxel centres: a
    displacement smaller than a voxel is resolved only on average over the surface.

    ``spacing`` is ``(sx, sy, sz)`` in mm along index axes (i, j, k), as ``Geometry.spacing`` (array axes
    (2, 1, 0)), as for :func:`surface_distances`.
    """
    pred_mask, true_mask = _check_pair(pred_mask, true_mask)
    pred_mask, true_mask = pred_mask.astype(bool, copy=False), true_mask.astype(bool, copy=False)
    sp = _array_spacing(spacing)
    if not pred_mask.any() or not true_mask.any():
        return math.nan
    box = bounding_box(pred_mask | true_mask, margin=1)
    pred_mask, true_mask = pred_mask[box], true_mask[box]
    return _signed_edge_distances(_edge_coords(np.argwhere(pred_mask), pred_mask.shape),
                                  _edge_coords(np.argwhere(true_mask), true_mask.shape),
                                  pred_mask, true_mask, sp)


def signed_surface_distance_per_structure(pred, truth, *, spacing) -> dict[int, float]:
    """:func:`mean_signed_surface_distance` (mm) of each structure (1, 2, 3) of two label arrays
    ``(nz, ny, nx)``; NaN where a structure is absent from either. Not a column of :func:`case_metrics`
    (whose columns other outputs rely on)."""
    pred, truth = _check_pair(pred, truth)
    _joint_counts(pred, truth)  # the same label checks as the other metrics
    return {s: mean_signed_surface_distance(pred == s, truth == s, spacing=spacing) for s in STRUCTURES}


# ---------------------------------------------------------------------------
# one case
# ---------------------------------------------------------------------------
def metric_names(*, surface: bool = True) -> list[str]:
    """Keys of :func:`case_metrics`' dict, in order."""
    names = []
    for key in [SHORT_NAMES[s] for s in STRUCTURES] + [ALL]:
        names += [f"dice_{key}", f"vs_{key}"]
        if surface:
            names += [f"hd95_{key}", f"asd_{key}"]
        names += [f"vol_pred_ml_{key}", f"vol_true_ml_{key}"]
    return names


def case_metrics(pred: np.ndarray, truth: np.ndarray, *, spacing: tuple[float, float, float],
                 surface: bool = True) -> dict:
    """Every metric of one case as a flat dict (keys: :func:`metric_names`).

    For each structure ``eyeball``, ``muscles``, ``nerve`` and for ``all``
    (labels 1-3 pooled): ``dice_*``, ``vs_*``, ``hd95_*`` and ``asd_*`` (mm),
    ``vol_pred_ml_*`` and ``vol_true_ml_*`` (mL).  See the module docstring for
    empty masks.  ``surface=False`` skips HD95/ASD (the slow part).

    Parameters
    ----------
    pred, truth : label arrays (nz, ny, nx) on the same grid
    spacing : (sx, sy, sz) mm along index axes (i, j, k) - ``Geometry.spacing``
    """
    pred, truth = _check_pair(pred, truth)
    _array_spacing(spacing)
    voxel_ml = float(np.prod([float(v) for v in spacing])) / 1000.0
    box = bounding_box((pred > 0) | (truth > 0), margin=1)
    if box is not None:  # everything below works on the foreground's bounding box
        pred, truth = pred[box], truth[box]
    m = _joint_counts(pred, truth)
    sp = _array_spacing(spacing)
    if surface:  # foreground voxel lists (C order) and their labels, one pass per array
        kp, kt = np.argwhere(pred), np.argwhere(truth)
        vp, vt = pred[tuple(kp.T)], truth[tuple(kt.T)]
    out: dict = {}
    for label in list(STRUCTURES) + [None]:
        key = ALL if label is None else SHORT_NAMES[label]
        c = _confusion_from_joint(m, label)
        out[f"dice_{key}"] = c.dice
        out[f"vs_{key}"] = c.volume_similarity
        if surface:
            if c.n_pred and c.n_true:
                cp, ct = (kp, kt) if label is None else (kp[vp == label], kt[vt == label])
                hd95, asd = _edge_distances(_edge_coords(cp, pred.shape), _edge_coords(ct, truth.shape), sp)
            else:
                hd95 = asd = math.nan
            out[f"hd95_{key}"] = hd95
            out[f"asd_{key}"] = asd
        out[f"vol_pred_ml_{key}"] = c.n_pred * voxel_ml
        out[f"vol_true_ml_{key}"] = c.n_true * voxel_ml
    return out


# ---------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------
def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _stats(values: list[float]) -> dict:
    a = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = int(a.size)
    return {
        "n": n,
        "mean": float(a.mean()) if n else math.nan,
        "sd": float(a.std(ddof=1)) if n > 1 else math.nan,
        "median": float(np.median(a)) if n else math.nan,
        "min": float(a.min()) if n else math.nan,
        "max": float(a.max()) if n else math.nan,
    }


def summarise(rows: list[dict], *, by: str | None = None, metrics: Iterable[str] | None = None) -> list[dict]:
    """Mean +- sd (sample sd, ddof=1), median, min, max and n of each metric.

    NaN (and None) values are left out of every statistic; ``n`` counts the
    values used.  One row per (group, metric)::

        {"by": by or "", "group": "all" | str(group value), "n_cases": ..., "metric": ...,
         "n": ..., "mean": ..., "sd": ..., "median": ..., "min": ..., "max": ...}

    The overall rows (``group == "all"``) come first, then one block per value
    of ``rows[i][by]`` in sorted order (rows whose ``by`` value is missing or
    None count only overall).

    Parameters
    ----------
    rows : per-case dicts (e.g. :func:`case_metrics` plus a case id)
    by : key of a grouping column (e.g. ``"fold"``)
    metrics : metric keys to summarise (default: every numeric key of the rows
        in first-seen order, except ``by``)
    """
    if metrics is None:
        names: list[str] = []
        for r in rows:
            for k, v in r.items():
                if k != by and k not in names and _is_number(v):
                    names.append(k)
    else:
        names = list(metrics)
    groups: list[tuple[str, list[dict]]] = [("all", list(rows))]
    if by is not None:
        values = sorted({r.get(by) for r in rows if r.get(by) is not None}, key=lambda v: (str(type(v)), v))
        groups += [(str(v), [r for r in rows if r.get(by) == v]) for v in values]
    out = []
    for group, members in groups:
        for name in names:
            vals = [r.get(name) for r in members]
            vals = [float(v) if _is_number(v) else None for v in vals]
            out.append({"by": by or "", "group": group, "n_cases": len(members), "metric": name,
                        **_stats(vals)})
    return out
