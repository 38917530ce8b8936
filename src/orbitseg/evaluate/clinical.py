"""Clinical orbit measurements from the three-class labels (and the CT for bone).

Per orbit (sides as in :mod:`orbitseg.evaluate.measure`: physical LPS x about
the midline between the globes):

* the muscle label split into the superior muscle group (superior rectus with
  the levator, which CT cannot part), inferior, medial and lateral recti and
  the superior oblique, and each one's volume behind a coronal plane 3 mm
  behind the globe centre (mL);
* each rectus' maximal thickness (mm): the longest chord along the muscle's
  radial direction (towards the orbital wall) in sections perpendicular to
  the muscle's own centre line, as a radiologist measures the short-axis
  diameter on a reformatted image perpendicular to the muscle;
* proptosis (mm): distance from the interzygomatic line (joining the
  anterior-most points of the two lateral orbital rims, bone > 300 HU) to the
  anterior surface of the globe, in the plane through both globe centres that
  holds the mean orbital axis (the neuro-ocular plane, approximately).

Definitions, references, reference ranges and measured errors:
``docs/measurements.md``.  Everything here is derived from the three-class
output; nothing is learned.

How the muscles are split (:func:`split_muscles`): each orbit gets a frame
(:func:`orbit_frames`) with its origin at the globe's centroid and its axis
towards the orbital apex (the posterior end of the optic nerve label, else of
the muscle cone).  Every muscle voxel behind the globe centre gets
an angle about that axis (0 lateral, 90 superior, 180 medial, 270 inferior);
the sector boundaries are the least populated angles of the mid-orbit's angular
histogram between the muscles' usual angles.  Limits: voxels less than
:data:`VOLUME_START_MM` behind the globe centre (tendons, the levator's
aponeurosis, the inferior oblique crossing under the globe, the superior
oblique's trochlear part) are not assigned to a muscle; an inferior oblique
reaching further back counts to the inferior or lateral rectus; near the
apex, where the muscles join in the annulus of Zinn, the split follows the
angle alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from orbitseg.constants import EYEBALL, MUSCLES, NERVE
from orbitseg.io.volume import Volume

__all__ = [
    "BONE_HU",
    "CLINICAL_KEYS",
    "GROUPS",
    "RECTI",
    "OrbitFrame",
    "REFERENCE_RANGES",
    "clinical_measurements",
    "orbit_frames",
    "outside_reference",
    "proptosis",
    "rectus_thickness",
    "split_muscles",
]

#: muscle groups, in the order of their codes (1 + index) in :func:`split_muscles`' output
GROUPS = ("sr", "ir", "mr", "lr", "so")
#: the groups whose thickness is measured (sr = superior rectus + levator, the "superior group")
RECTI = ("sr", "ir", "mr", "lr")
#: muscle volumes start this far (mm) behind the globe centre: in front of it lie the recti's tendons
#: and the inferior oblique, which crosses under the globe there and cannot be told from the recti
VOLUME_START_MM = 3.0
#: code of muscle voxels in front of the :data:`VOLUME_START_MM` plane (not assigned to a muscle)
ANTERIOR = len(GROUPS) + 1
#: added to the codes of the patient's right orbit in :func:`split_muscles`' output
RIGHT_OFFSET = 10
#: usual angle (deg) of each group about the orbit axis: 0 lateral, 90 superior
_ANGLE = {"lr": 0.0, "sr": 90.0, "so": 135.0, "mr": 180.0, "ir": 270.0}
#: (lower group, upper group, search interval in deg) for each sector boundary, counter-clockwise
_BOUNDARIES = (("lr", "sr", (25.0, 65.0)), ("sr", "so", (100.0, 128.0)), ("so", "mr", (142.0, 165.0)),
               ("mr", "ir", (205.0, 245.0)), ("ir", "lr", (295.0, 335.0)))
#: bone threshold (HU) for the lateral orbital rims
BONE_HU = 300.0
#: lateral offset (mm) from a globe centre within which its lateral orbital rim is looked for
RIM_WINDOW_MM = (8.0, 40.0)
#: sampling step (mm) of reformatted sections and of the proptosis plane
SECTION_STEP_MM = 0.2
#: depth window (fraction of globe centre -> apex) of the thickness sections and the angular histogram
BELLY_RANGE = (0.12, 0.8)
#: column names of the clinical measurements, in order
CLINICAL_KEYS = (*(f"{g}_thickness_mm" for g in RECTI), *(f"{g}_ml" for g in GROUPS), "proptosis_mm")
#: adult reference ranges (low, high; None = no bound) a value outside of which is named in
#: ``outside_reference``: muscle diameters mean +- 2 SD on CT (Ozgen & Ariyurek, AJR 1998;170:1093),
#: proptosis mean + 2 SD of normal orbits on CT (13.9 +- 2.4 mm; Orbit 2015;34(5):257-62); docs/measurements.md
REFERENCE_RANGES: dict[str, tuple[float | None, float | None]] = {
    "sr_thickness_mm": (3.2, 6.1), "ir_thickness_mm": (3.2, 6.5), "mr_thickness_mm": (3.3, 5.0),
    "lr_thickness_mm": (1.7, 4.8), "proptosis_mm": (None, 18.7)}
#: a left - right difference of proptosis larger than this (mm) is named (within 2 mm in > 90 % of normal
#: adults: Shin et al., Semin Ophthalmol 2017;32(5), doi:10.3109/08820538.2015.1131837)
PROPTOSIS_ASYMMETRY_MM = 2.0


def outside_reference(values: dict[str, float]) -> list[str]:
    """The measurements of one orbit outside :data:`REFERENCE_RANGES`, e.g. ``["ir_thickness_mm 7.1 > 6.5"]``."""
    out = []
    for key, (lo, hi) in REFERENCE_RANGES.items():
        v = values.get(key, math.nan)
        if lo is not None and v < lo:
            out.append(f"{key} {v:.1f} < {lo:g}")
        if hi is not None and v > hi:
            out.append(f"{key} {v:.1f} > {hi:g}")
    return out


@dataclass(frozen=True)
class OrbitFrame:
    """One orbit's frame, physical LPS mm.

    Attributes
    ----------
    side : ``"right"`` or ``"left"`` (the patient's)
    centre : (3,) centroid of the globe label
    apex : (3,) orbital apex estimate
    axis : (3,) unit vector, globe centre -> apex (posterior)
    e_lat : (3,) unit vector perpendicular to ``axis``, towards the patient's side
    e_up : (3,) unit vector perpendicular to ``axis`` and ``e_lat``, superior
    apex_from : ``"nerve"``, ``"muscles"`` or ``"default"`` (30 mm straight back)
    """

    side: str
    centre: np.ndarray
    apex: np.ndarray
    axis: np.ndarray
    e_lat: np.ndarray
    e_up: np.ndarray
    apex_from: str

    def local(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(depth behind the globe centre mm, angle deg in [0, 360), radius mm) of points ``(N, 3)``."""
        q = np.asarray(xyz, float) - self.centre
        t = q @ self.axis
        a, b = q @ self.e_lat, q @ self.e_up
        return t, np.degrees(np.arctan2(b, a)) % 360.0, np.hypot(a, b)

    @property
    def length(self) -> float:
        """Globe centre -> apex distance (mm)."""
        return float(np.linalg.norm(self.apex - self.centre))


def _unit(v) -> np.ndarray:
    v = np.asarray(v, float)
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def _ortho(v, axis) -> np.ndarray:
    return _unit(v - np.dot(v, axis) * axis)


def _points(labels: Volume, label: int) -> np.ndarray:
    """Physical LPS mm ``(N, 3)`` of the voxels of ``label``."""
    kji = np.argwhere(labels.array == label)
    return labels.geometry.index_to_physical(kji[:, ::-1].astype(float))


def _split_sides(xyz: np.ndarray, mid: float) -> dict[str, np.ndarray]:
    return {"right": xyz[xyz[:, 0] < mid], "left": xyz[xyz[:, 0] >= mid]}


def _apex(centre: np.ndarray, pts: np.ndarray, *, tail_mm: float = 2.0, min_voxels: int = 20) -> np.ndarray | None:
    """Mean of the points within ``tail_mm`` of the farthest one from ``centre`` (None if too few)."""
    if len(pts) < min_voxels:
        return None
    d = np.linalg.norm(pts - centre, axis=1)
    return pts[d >= d.max() - tail_mm].mean(0)


def orbit_frames(labels: Volume, *, midline: float | None = None,
                 min_globe_voxels: int = 50) -> dict[str, OrbitFrame | None]:
    """The frame of each orbit (None where that side has no globe).

    Parameters
    ----------
    labels : three-class labels ``(nz, ny, nx)``
    midline : LPS x of the mid-sagittal plane (default :func:`orbitseg.evaluate.measure.midline_x`)
    min_globe_voxels : fewer globe voxels on a side than this: no frame for that side

    Returns
    -------
    dict
        ``{"right": OrbitFrame | None, "left": OrbitFrame | None}``.  Left-right runs from the
        right globe centre to the left one (LPS +x without two globes); anterior is the mean
        apex -> globe direction (LPS -y without an apex); superior completes the frame.
    """
    from orbitseg.evaluate.measure import midline_x

    mid = midline_x(labels)[0] if midline is None else float(midline)
    globes = _split_sides(_points(labels, EYEBALL), mid)
    nerves = _split_sides(_points(labels, NERVE), mid)
    muscles = _split_sides(_points(labels, MUSCLES), mid)
    centres = {s: g.mean(0) for s, g in globes.items() if len(g) >= min_globe_voxels}
    apexes: dict[str, tuple[np.ndarray, str]] = {}
    for s, c in centres.items():
        a = _apex(c, nerves[s])
        how = "nerve"
        if a is None:
            a, how = _apex(c, muscles[s], tail_mm=3.0), "muscles"
        if a is None:
            a, how = c + np.array([0.0, 30.0, 0.0]), "default"
        apexes[s] = (a, how)
    e_lr = _unit(centres["left"] - centres["right"]) if len(centres) == 2 else np.array([1.0, 0.0, 0.0])
    ant = sum((_unit(centres[s] - apexes[s][0]) for s in centres if apexes[s][1] != "default"), np.zeros(3))
    e_ant = _ortho(ant, e_lr) if np.linalg.norm(ant) > 0 else _ortho(np.array([0.0, -1.0, 0.0]), e_lr)
    e_sup = _unit(np.cross(e_ant, e_lr))
    out: dict[str, OrbitFrame | None] = {"right": None, "left": None}
    for s, c in centres.items():
        a, how = apexes[s]
        axis = _unit(a - c)
        lat = e_lr if s == "left" else -e_lr
        out[s] = OrbitFrame(side=s, centre=c, apex=a, axis=axis, e_lat=_ortho(lat, axis), e_up=_ortho(e_sup, axis),
                            apex_from=how)
    return out


def _circular_smooth(hist: np.ndarray, sigma_bins: float) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter1d(hist.astype(float), sigma_bins, mode="wrap")


def sector_boundaries(angles: np.ndarray, *, bin_deg: float = 2.0, smooth_deg: float = 4.0) -> dict[str, float]:
    """Boundary angles (deg) between neighbouring muscle groups from muscle-voxel angles ``(N,)``.

    Each boundary is the least populated angle of the smoothed angular histogram within its search
    interval (``_BOUNDARIES``); the key is the lower group (counter-clockwise: lr, sr, so, mr, ir),
    the boundary its upper edge.
    """
    nb = int(round(360.0 / bin_deg))
    hist, _ = np.histogram(np.asarray(angles) % 360.0, bins=nb, range=(0.0, 360.0))
    h = _circular_smooth(hist, smooth_deg / bin_deg)
    centres = (np.arange(nb) + 0.5) * bin_deg
    out = {}
    for lower, _upper, (lo, hi) in _BOUNDARIES:
        sel = np.flatnonzero((centres >= lo) & (centres <= hi))
        # the middle of the lowest plateau, so that an empty gap is split in its centre
        low = sel[h[sel] <= h[sel].min() + 1e-9]
        out[lower] = float(centres[low].mean())
    return out


def _sector_of(angles: np.ndarray, bounds: dict[str, float]) -> np.ndarray:
    """Group index (into :data:`GROUPS`) of each angle, given :func:`sector_boundaries`."""
    order = ["lr", "sr", "so", "mr", "ir"]
    edges = [bounds[g] for g in order]  # upper edge of each, increasing
    a = np.asarray(angles) % 360.0
    idx = np.searchsorted(edges, a, side="right")  # 0: below lr's upper edge ... 5: above ir's
    names = np.array(order + ["lr"])  # above the ir/lr boundary wraps to lr
    return np.array([GROUPS.index(n) for n in names[idx]]) if a.size else np.zeros(0, int)


def split_muscles(labels: Volume, frames: dict[str, OrbitFrame | None], *, midline: float) -> Volume:
    """Per-muscle labels derived from the muscle label.

    Parameters
    ----------
    labels : three-class labels ``(nz, ny, nx)``
    frames : :func:`orbit_frames` of the same labels
    midline : LPS x of the mid-sagittal plane

    Returns
    -------
    Volume
        int8 ``(nz, ny, nx)``: 0 where the label is not muscle; on the patient's left
        ``1 + GROUPS.index(g)`` for group ``g`` more than :data:`VOLUME_START_MM` behind the
        globe centre (along the orbit axis) and :data:`ANTERIOR` in front of that; on the right the same plus :data:`RIGHT_OFFSET`;
        -1 for muscle on a side without a frame.  The side of a voxel is its physical x
        against ``midline`` (as in :mod:`orbitseg.evaluate.measure`).
    """
    out = np.zeros(labels.array.shape, np.int8)
    kji = np.argwhere(labels.array == MUSCLES)
    if kji.size == 0:
        return Volume(out, labels.geometry)
    xyz = labels.geometry.index_to_physical(kji[:, ::-1].astype(float))
    codes = np.full(len(kji), -1, np.int8)
    for side, frame in frames.items():
        on = (xyz[:, 0] < midline) if side == "right" else (xyz[:, 0] >= midline)
        if frame is None or not on.any():
            continue
        t, ang, _ = frame.local(xyz[on])
        mid = (t > BELLY_RANGE[0] * frame.length) & (t < BELLY_RANGE[1] * frame.length)
        bounds = sector_boundaries(ang[mid] if mid.sum() >= 20 else ang[t > 0])
        c = (_sector_of(ang, bounds) + 1).astype(np.int8)
        c[t <= VOLUME_START_MM] = ANTERIOR
        codes[on] = c + (RIGHT_OFFSET if side == "right" else 0)
    out[tuple(kji.T)] = codes
    return Volume(out, labels.geometry)


#: fat planes up to this wide (mm) inside a section do not split a muscle group (the levator on the
#: superior rectus): CT's partial volume hides them
BRIDGE_MM = 1.5


def _chord_mm(mask: np.ndarray, step: float, *, bridge_mm: float = BRIDGE_MM, min_area_mm2: float = 1.0) -> float:
    """Longest run along axis 1 (mm) of 2D ``mask`` after bridging gaps up to ``bridge_mm`` along
    axis 1, ignoring pieces smaller than ``min_area_mm2``."""
    from scipy import ndimage

    comp, n = ndimage.label(mask)
    if n == 0:
        return 0.0
    sizes = np.bincount(comp.ravel())
    keep = (sizes >= min_area_mm2 / step ** 2)[comp] & mask
    return _longest_run(bridge_gaps(keep, int(round(bridge_mm / step)))) * step


def bridge_gaps(m: np.ndarray, gap: int) -> np.ndarray:
    """Bool ``(H, W)``: ``m`` with runs of up to ``gap`` False pixels between True ones along axis 1 filled."""
    from scipy import ndimage

    if gap <= 0:
        return m
    pad = np.pad(m, ((0, 0), (gap + 1, gap + 1)))
    closed = ndimage.binary_closing(pad, structure=np.ones((1, gap + 1), bool))
    return closed[:, gap + 1: -(gap + 1)] | m


def _longest_run(m: np.ndarray) -> int:
    """Longest run of True along axis 1 of a 2D bool array."""
    c = np.cumsum(m, axis=1)
    reset = np.maximum.accumulate(np.where(m, 0, c), axis=1)
    return int((c - reset).max(initial=0))


def _centre_line(t: np.ndarray, xyz: np.ndarray, *, bin_mm: float = 1.0,
                 min_points: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(depths (M,), centroids (M, 3), unit tangents (M, 3)) of points binned by depth ``t``."""
    bins = np.floor(t / bin_mm).astype(int)
    uniq, inv, counts = np.unique(bins, return_inverse=True, return_counts=True)
    sums = np.zeros((len(uniq), 3))
    np.add.at(sums, inv, xyz)
    keep = counts >= min_points
    cen = sums[keep] / counts[keep, None]
    dep = (uniq[keep] + 0.5) * bin_mm
    if len(cen) < 3:
        return dep, cen, np.zeros_like(cen)
    k = np.ones(3) / 3.0
    smooth = np.column_stack([np.convolve(np.pad(cen[:, i], 1, mode="edge"), k, mode="valid") for i in range(3)])
    tan = np.gradient(smooth, axis=0)
    tan /= np.maximum(np.linalg.norm(tan, axis=1, keepdims=True), 1e-9)
    return dep, smooth, tan


def rectus_thickness(kji: np.ndarray, labels: Volume, frame: OrbitFrame, *, half_mm: float | None = None,
                     step: float = SECTION_STEP_MM, belly: tuple[float, float] = BELLY_RANGE,
                     smooth: int = 5) -> float:
    """Maximal thickness (mm) of one muscle: its longest radial chord over sections along its belly.

    Parameters
    ----------
    kji : int ``(N, 3)`` array indices (k, j, i) of this muscle's voxels (one side)
    labels : the labels volume (for its geometry)
    frame : that orbit's :class:`OrbitFrame`
    half_mm, step : half-size and sampling step (mm) of each reformatted section (default half-size:
        the farthest voxel from its section's centroid + 2 mm, at most 20 mm)
    belly : depth window, fractions of the globe centre -> apex distance, of the sections
    smooth : the chords are averaged over this many neighbouring sections (1 mm apart) before the
        maximum is taken: a voxel grid makes each section's chord jump by up to a voxel

    Returns
    -------
    float
        The largest, over sections perpendicular to the muscle's centre line at 1 mm steps of
        depth, of the section's longest chord along the radial direction (orbit axis ->
        muscle), fat planes up to :data:`BRIDGE_MM` wide bridged (averaged over ``smooth``
        sections); NaN without voxels in the window.
    """
    from scipy import ndimage

    kji = np.asarray(kji).reshape(-1, 3)
    if len(kji) < 10:
        return math.nan
    geom = labels.geometry
    xyz = geom.index_to_physical(kji[:, ::-1].astype(float))
    t, _, _ = frame.local(xyz)
    dep, cen, tan = _centre_line(t, xyz)
    lo, hi = belly[0] * frame.length, belly[1] * frame.length
    use = (dep >= lo) & (dep <= hi) & (np.linalg.norm(tan, axis=1) > 0)
    if not use.any():
        return math.nan
    box_lo = kji.min(0) - 2
    sub = np.zeros(tuple(kji.max(0) + 3 - box_lo), np.float32)
    sub[tuple((kji - box_lo).T)] = 1.0
    if half_mm is None:  # room for the widest section: the farthest voxel from its section's centroid
        line = np.column_stack([np.interp(t, dep, cen[:, a]) for a in range(3)])
        half_mm = float(min(np.linalg.norm(xyz - line, axis=1).max() + 2.0, 20.0))
    g = np.arange(-half_mm, half_mm + 1e-9, step)
    uu, ww = np.meshgrid(g, g)  # (n, n): rows along w, columns along u
    inv = np.linalg.inv(geom.matrix * np.asarray(geom.spacing)[None, :])  # physical -> (i, j, k)
    origin = np.asarray(geom.origin)
    profile = []
    for c, e in zip(cen[use], tan[use]):
        r = c - (frame.centre + np.dot(c - frame.centre, frame.axis) * frame.axis)
        u = _ortho(r, e)
        w = np.cross(e, u)
        ijk0, du, dw = inv @ (c - origin), inv @ u, inv @ w
        coords = [(ijk0[a] - box_lo[2 - a]) + uu * du[a] + ww * dw[a] for a in (2, 1, 0)]  # (k, j, i)
        vals = ndimage.map_coordinates(sub, coords, order=1, mode="constant", cval=0.0)
        profile.append(_chord_mm(vals >= 0.5, step))
    return float(np.max(_running_mean(np.asarray(profile), smooth)))


def _running_mean(x: np.ndarray, n: int) -> np.ndarray:
    """Mean over a centred window of ``n`` samples (shorter at the ends) of ``x`` ``(M,)``."""
    if n <= 1 or len(x) == 0:
        return x
    c = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(len(x))
    lo, hi = np.maximum(i - n // 2, 0), np.minimum(i + n // 2 + 1, len(x))
    return (c[hi] - c[lo]) / (hi - lo)


def _plane_sample(vol: Volume, pts: np.ndarray, *, cval: float, what=None) -> np.ndarray:
    """Trilinear samples of ``vol`` (or of ``what(vol.array)``) at physical points ``(N, 3)``."""
    from scipy import ndimage

    ijk = vol.geometry.physical_to_index(pts)
    kji = ijk[:, ::-1]
    shape = np.asarray(vol.array.shape)
    lo = np.clip(np.floor(kji.min(0)).astype(int) - 1, 0, shape)
    hi = np.clip(np.ceil(kji.max(0)).astype(int) + 2, 0, shape)
    if np.any(hi <= lo):
        return np.full(len(pts), cval, np.float32)
    arr = vol.array[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))]
    arr = (what(arr) if what is not None else arr).astype(np.float32)
    return ndimage.map_coordinates(arr, (kji - lo).T, order=1, mode="constant", cval=cval)


@dataclass(frozen=True)
class Proptosis:
    """Proptosis of both orbits (mm) and the points it was measured between (physical LPS mm)."""

    right_mm: float
    left_mm: float
    rim_right: np.ndarray | None
    rim_left: np.ndarray | None
    front_right: np.ndarray | None
    front_left: np.ndarray | None


_NO_PROPTOSIS = Proptosis(math.nan, math.nan, None, None, None, None)


def proptosis(scan: Volume, labels: Volume, frames: dict[str, OrbitFrame | None], *, midline: float,
              bone_hu: float = BONE_HU, step: float = SECTION_STEP_MM,
              rim_window: tuple[float, float] = RIM_WINDOW_MM, min_bone_mm2: float = 2.0) -> Proptosis:
    """Globe protrusion beyond the interzygomatic line, both orbits.

    Parameters
    ----------
    scan : CT in HU ``(nz, ny, nx)``, on the grid of ``labels``
    labels : three-class labels ``(nz, ny, nx)``
    frames : :func:`orbit_frames` (both needed: the plane runs through both globe centres)
    midline : LPS x of the mid-sagittal plane (splits the globe label between the sides)
    bone_hu : HU above which a sample is bone
    step : sampling step (mm) in the plane
    rim_window : lateral offset (mm) from each globe centre searched for the lateral rim
    min_bone_mm2 : bone pieces smaller than this (noise, calcification) are ignored

    Returns
    -------
    Proptosis
        Each side: signed distance (mm, positive = globe in front) from the line through the
        anterior-most bone points lateral to the two globes to the globe's anterior-most point,
        measured perpendicular to that line in the plane through both globe centres holding
        the mean orbital axis; NaN for both without two globes or without rim bone.
    """
    from scipy import ndimage

    fr, fl = frames.get("right"), frames.get("left")
    if fr is None or fl is None or scan.array.shape != labels.array.shape:
        return _NO_PROPTOSIS
    centre = (fr.centre + fl.centre) / 2.0
    e_lr = _unit(fl.centre - fr.centre)
    ant = _unit(fr.centre - fr.apex) + _unit(fl.centre - fl.apex)
    e_ant = _ortho(ant, e_lr)
    a = np.arange(-80.0, 80.0 + 1e-9, step)
    b = np.arange(-25.0, 35.0 + 1e-9, step)
    aa, bb = np.meshgrid(a, b)
    pts = centre + aa.reshape(-1, 1) * e_lr + bb.reshape(-1, 1) * e_ant
    bone = (_plane_sample(scan, pts, cval=-1024.0) > bone_hu).reshape(aa.shape)
    globe = (_plane_sample(labels, pts, cval=0.0, what=lambda x: x == EYEBALL) >= 0.5).reshape(aa.shape)
    comp, n = ndimage.label(bone)
    if n:
        sizes = np.bincount(comp.ravel())
        bone &= (sizes >= min_bone_mm2 / step ** 2)[comp]
    right_of_mid = (pts[:, 0] < midline).reshape(aa.shape)
    rims, fronts = {}, {}
    for side, f, sign in (("right", fr, -1.0), ("left", fl, 1.0)):
        ag = float(np.dot(f.centre - centre, e_lr))
        lat = sign * (aa - ag)
        jj, ii = np.nonzero(bone & (lat >= rim_window[0]) & (lat <= rim_window[1]))
        if jj.size == 0:
            return _NO_PROPTOSIS
        k = int(np.argmax(bb[jj, ii]))
        rims[side] = np.array([aa[jj[k], ii[k]], bb[jj[k], ii[k]]])
        on = globe & (right_of_mid if side == "right" else ~right_of_mid)
        if not on.any():
            return _NO_PROPTOSIS
        fronts[side] = np.column_stack([aa[on], bb[on]])
    d = rims["left"] - rims["right"]
    nrm = _unit(np.array([-d[1], d[0]]))
    if nrm[1] < 0:
        nrm = -nrm
    to3 = lambda q: centre + q[0] * e_lr + q[1] * e_ant  # noqa: E731
    res = {}
    for side in ("right", "left"):
        proj = (fronts[side] - rims["right"]) @ nrm
        k = int(np.argmax(proj))
        res[side] = (float(proj[k]), to3(fronts[side][k]))
    return Proptosis(res["right"][0], res["left"][0], to3(rims["right"]), to3(rims["left"]),
                     res["right"][1], res["left"][1])


def clinical_measurements(labels: Volume, scan: Volume | None = None, *,
                          midline: float | None = None) -> dict[str, dict[str, float]]:
    """Every clinical measurement of both orbits.

    Parameters
    ----------
    labels : three-class labels ``(nz, ny, nx)``
    scan : the CT (HU) on the same grid; without it proptosis is NaN
    midline : LPS x of the mid-sagittal plane (default: :func:`orbitseg.evaluate.measure.midline_x`)

    Returns
    -------
    dict
        ``{"right": {...}, "left": {...}}``, each with the :data:`CLINICAL_KEYS`:
        ``{g}_thickness_mm`` for the recti (NaN when not found), ``{g}_ml`` for every group
        (0 when absent; NaN for every muscle on a side without a globe), ``proptosis_mm``.
    """
    from orbitseg.evaluate.measure import midline_x
    from orbitseg.evaluate.metrics import bounding_box

    if labels.array.ndim != 3:
        raise ValueError(f"labels must be 3D, got shape {labels.array.shape}")
    mid = midline_x(labels)[0] if midline is None else float(midline)
    prop_labels = labels
    box = bounding_box(labels.array > 0)
    if box is not None:  # every label-only measure is in mm: the labels' box holds them (10x fewer voxels)
        labels = labels.crop(box)
    frames = orbit_frames(labels, midline=mid)
    per = split_muscles(labels, frames, midline=mid)
    vox = labels.geometry.voxel_volume_ml
    # proptosis samples bone lateral to the globes, outside the labels' box: the whole grids
    prop = proptosis(scan, prop_labels, frames, midline=mid) if scan is not None else _NO_PROPTOSIS
    kji = np.argwhere(per.array > 0)
    codes = per.array[tuple(kji.T)]
    out = {}
    for side, frame in frames.items():
        if frame is None:
            out[side] = {k: math.nan for k in CLINICAL_KEYS}
            continue
        row: dict[str, float] = {}
        base = RIGHT_OFFSET if side == "right" else 0
        for i, g in enumerate(GROUPS):
            mine = kji[codes == base + i + 1]
            row[f"{g}_ml"] = len(mine) * vox
            if g in RECTI:
                row[f"{g}_thickness_mm"] = rectus_thickness(mine, labels, frame)
        row["proptosis_mm"] = prop.right_mm if side == "right" else prop.left_mm
        out[side] = {k: row[k] for k in CLINICAL_KEYS}
    return out
