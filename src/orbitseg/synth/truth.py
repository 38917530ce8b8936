"""What the generator knows about a synthetic patient's clinical orbit measurements.

The truth that :mod:`orbitseg.evaluate.clinical` is checked against, computed
from the patient's parameters (the shapes that were painted), not from the
rendered voxels:

* :func:`muscle_labels` - each muscle voxel of the rendered labels with the
  muscle whose tube is nearest (1 + index in :data:`~orbitseg.synth.params.MUSCLES`);
* :func:`clinical_truth` - per orbit: globe centre, orbital apex, the anterior-most
  point of the lateral orbital rim and of the globe in the measurement plane,
  proptosis (mm), each rectus' maximal belly thickness (mm) and the volume
  of each muscle group behind a coronal plane just behind the globe centre (mL).

The definitions follow ``docs/measurements.md``; where the clinical definition
needs a plane or a section, the same construction is done here on the exact
shapes sampled at 0.1 mm.  Points are physical LPS mm of the scan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orbitseg.constants import MUSCLES as MUSCLE_LABEL
from orbitseg.io.volume import Volume
from orbitseg.synth.anatomy import _Scene, tube_sdf
from orbitseg.synth.canvas import F32, Canvas
from orbitseg.synth.params import MUSCLES, PatientParams, head_rotation_matrix

__all__ = ["GROUPS", "SideTruth", "clinical_truth", "muscle_labels"]

#: clinical muscle group -> the generator's muscles drawn in it; the levator lies on the superior
#: rectus and CT cannot part them, so "sr" is the superior muscle group (as in Ozgen & Ariyurek 1998)
GROUPS: dict[str, tuple[str, ...]] = {"sr": ("SR", "LPS"), "ir": ("IR",), "mr": ("MR",), "lr": ("LR",),
                                      "so": ("SO",)}
#: the groups whose maximal thickness is measured, and the generator muscle whose path they follow
_RECTUS_PATH = {"sr": "SR", "ir": "IR", "mr": "MR", "lr": "LR"}
_STEP = 0.1  # mm, sampling of the exact shapes
_RIM_WINDOW = (8.0, 40.0)  # lateral offset (mm) from the globe centre searched for the lateral rim
#: muscle volumes count behind the plane this far (mm) behind the globe centre, perpendicular to the
#: globe -> apex axis (= orbitseg.evaluate.clinical.VOLUME_START_MM; synth does not import evaluate)
VOLUME_START_MM = 3.0
#: fat planes up to this wide (mm) do not split the superior group (= orbitseg.evaluate.clinical.BRIDGE_MM)
BRIDGE_MM = 1.5


@dataclass(frozen=True)
class SideTruth:
    """The generator's truth for one orbit (points in physical LPS mm)."""

    side: str
    globe_centre: tuple[float, float, float]
    apex: tuple[float, float, float]
    rim_point: tuple[float, float, float]
    globe_front: tuple[float, float, float]
    proptosis_mm: float
    thickness_mm: dict[str, float]
    volume_ml: dict[str, float]


def _to_physical(params: PatientParams):
    """Head-frame mm -> the scan's physical LPS mm (``(N, 3)`` rows)."""
    rh = head_rotation_matrix(*params.scan.head_rotation)
    h0 = np.asarray(params.scan.head_offset, float)
    return lambda p: (np.asarray(p, float) - h0) @ rh.T


def _head_canvas(params: PatientParams, labels: Volume, start, shape) -> Canvas:
    """A canvas on the voxel centres of ``labels`` from index ``start`` (k, j, i), ``shape`` voxels."""
    g = labels.geometry
    rh = head_rotation_matrix(*params.scan.head_rotation)
    m = g.matrix * np.asarray(g.spacing)[None, :]  # physical = m @ (i, j, k) + origin
    ijk0 = np.array([start[2], start[1], start[0]], float)
    a = rh.T @ m
    b = rh.T @ (np.asarray(g.origin, float) + m @ ijk0) + np.asarray(params.scan.head_offset, float)
    return Canvas(a, b, tuple(int(v) for v in shape), edge=min(g.spacing), coarse=(1, 1, 1), background=0.0)


def muscle_labels(params: PatientParams, labels: Volume) -> Volume:
    """Which muscle each muscle voxel of ``labels`` belongs to.

    Parameters
    ----------
    params : the patient that ``labels`` was rendered from
    labels : rendered labels ``(nz, ny, nx)`` (0..3)

    Returns
    -------
    Volume
        uint8 ``(nz, ny, nx)`` on the same grid: 0 outside the muscle label,
        otherwise 1 + the index in :data:`MUSCLES` of the nearest muscle tube,
        plus 10 for the patient's right orbit (so 1..7 left, 11..17 right).
    """
    mask = labels.array == MUSCLE_LABEL
    out = np.zeros(mask.shape, np.uint8)
    hit = np.argwhere(mask)
    if hit.size == 0:
        return Volume(out, labels.geometry)
    lo, hi = hit.min(0), hit.max(0) + 1
    cv = _head_canvas(params, labels, lo, hi - lo)
    scene = _Scene.shapes_only(params)
    best = np.full(tuple(hi - lo), np.inf, np.float32)
    sub = np.zeros(tuple(hi - lo), np.uint8)
    for orbit in scene.orbits:
        base = 0 if orbit.s > 0 else 10
        for idx, name in enumerate(MUSCLES):
            for pts, ht, hw, radial in scene._muscle_path(orbit, name):
                sl, d = tube_sdf(cv, pts, ht, hw, radial)
                if sl is None:
                    continue
                closer = d < best[sl]
                best[sl][closer] = d[closer]
                sub[sl][closer] = base + idx + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    out[box] = np.where(mask[box], sub, 0)
    return Volume(out, labels.geometry)


def _plane_canvas(centre, e_u, e_w, normal, half: float) -> Canvas:
    """A one-voxel-thick canvas in the plane ``centre + a e_u + b e_w``, ``|a|, |b| <= half``, step 0.1 mm."""
    n = int(round(2 * half / _STEP)) + 1
    a = np.column_stack([_STEP * np.asarray(e_u), _STEP * np.asarray(e_w), np.asarray(normal)])
    b = np.asarray(centre, float) - half * (np.asarray(e_u) + np.asarray(e_w))
    return Canvas(a, b, (1, n, n), edge=_STEP, coarse=(1, 1, 1), background=0.0)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def _longest_run_through(mask: np.ndarray, through: np.ndarray, bridge: int) -> float:
    """Longest run (pixels) along axis 1 of ``mask``, gaps up to ``bridge`` pixels filled, among the
    runs that hold a pixel of ``through``."""
    best = 0
    for row, hit in zip(mask, through):
        if not hit.any():
            continue
        idx = np.flatnonzero(row)
        breaks = np.flatnonzero(np.diff(idx) > bridge + 1)
        starts = np.concatenate([[0], breaks + 1])
        ends = np.concatenate([breaks, [len(idx) - 1]])
        for a, b in zip(idx[starts], idx[ends]):
            if hit[a: b + 1].any():
                best = max(best, int(b - a + 1))
    return float(best)


def _thickness(scene: _Scene, orbit, group: str) -> float:
    """Maximal thickness (mm) of a rectus group across its long axis.

    One muscle: twice its largest half-thickness (the tube's semi-axis along the radial
    direction).  The superior group (superior rectus with the levator on it): the longest chord
    through the rectus along its radial direction in the union of both tubes, a fat plane up to
    :data:`BRIDGE_MM` wide between them bridged (as CT shows them), in sections perpendicular to
    the rectus' path, sampled every 0.1 mm.
    """
    path_name = _RECTUS_PATH[group]
    pts, ht, _, radial = scene._muscle_path(orbit, path_name)[0]
    if len(GROUPS[group]) == 1:
        return 2.0 * float(np.max(ht))
    tubes = [t for name in GROUPS[group] for t in scene._muscle_path(orbit, name)]
    best = 2.0 * float(np.max(ht))
    half = best + 3.0  # room for the levator on the rectus
    for i in range(1, len(pts) - 1):
        tan = _unit(pts[i + 1] - pts[i - 1])
        u = np.asarray(radial[i], float)
        u = _unit(u - np.dot(u, tan) * tan)
        w = np.cross(tan, u)
        cv = _plane_canvas(pts[i], u, w, tan, half)
        inside = np.zeros(cv.shape[1:], bool)
        rectus = np.zeros(cv.shape[1:], bool)
        for j, (tp, tht, thw, trad) in enumerate(tubes):
            sl, d = tube_sdf(cv, tp, tht, thw, trad)
            if sl is not None:
                inside[sl[1], sl[2]] |= d[0] < 0
                if j == 0:
                    rectus[sl[1], sl[2]] |= d[0] < 0
        # rows of the canvas run along e_u (array axis 2 = i): chords through the rectus, with the
        # levator on it across a fat plane up to BRIDGE_MM wide
        best = max(best, _longest_run_through(inside, rectus, int(round(BRIDGE_MM / _STEP))) * _STEP)
    return best


def _globe_sdf(orbit, p: np.ndarray) -> np.ndarray:
    """Signed distance (approx., mm) of head-frame points ``(N, 3)`` to the globe (sclera and cornea)."""
    from orbitseg.synth.anatomy import _ellipsoid

    loc = (p - orbit.G) @ orbit.R_g.T
    u, v, w = loc[:, 0], loc[:, 1], loc[:, 2]
    r, ar = orbit.R, orbit.ar
    d_sc = _ellipsoid(u, v, w, r, r, r * ar)
    rc = 7.8
    wc = r * ar + 1.0 - rc
    d_co = np.sqrt(u * u + v * v + (w - wc) ** 2) - rc
    return np.minimum(d_sc, d_co)


def measurement_plane(g_right, g_left, apex_right, apex_left) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre, e_lr, e_ant) of the plane through both globe centres that holds the mean orbital axis.

    ``e_lr`` runs from the right globe centre to the left one; ``e_ant`` is the mean of the two
    apex -> globe directions, made perpendicular to ``e_lr``.  The same construction as
    :func:`orbitseg.evaluate.clinical.orbit_frames` (there from the labels).
    """
    g_right, g_left = np.asarray(g_right, float), np.asarray(g_left, float)
    e_lr = _unit(g_left - g_right)
    ant = _unit(g_right - np.asarray(apex_right, float)) + _unit(g_left - np.asarray(apex_left, float))
    ant = _unit(ant - np.dot(ant, e_lr) * e_lr)
    return (g_right + g_left) / 2.0, e_lr, ant


def _proptosis(scene: _Scene) -> dict[int, tuple[np.ndarray, np.ndarray, float]]:
    """side (+1 left, -1 right) -> (rim point, globe front, proptosis mm), all in the head frame."""
    left, right = scene.orbits
    centre, e_lr, e_ant = measurement_plane(right.G, left.G, right.apex, left.apex)
    b = np.arange(-20.0, 30.0 + 1e-9, _STEP)
    rims, fronts = {}, {}
    for o in scene.orbits:
        ag = float(np.dot(o.G - centre, e_lr))
        # the lateral window: bone only matters there
        a = ag + o.s * np.arange(_RIM_WINDOW[0], _RIM_WINDOW[1] + 1e-9, _STEP)
        aa, bb = np.meshgrid(a, b)
        p = centre + aa.reshape(-1, 1) * e_lr + bb.reshape(-1, 1) * e_ant
        x, y, z = (p[:, k].astype(F32) for k in range(3))
        bone = scene.bone_sdf(x, y, z) < 0
        for other in scene.orbits:
            bone &= other.sdf(x, y, z) >= 0
        bone &= scene.temporalis_sdf(x, y, z, o.s) >= 0
        jj, ii = np.nonzero(bone.reshape(aa.shape))
        k = np.argmax(bb[jj, ii])
        rims[o.s] = np.array([aa[jj[k], ii[k]], bb[jj[k], ii[k]]])
        # the globe, around its centre
        a = ag + np.arange(-(o.R + 3.0), o.R + 3.0 + 1e-9, _STEP)
        aa, bb = np.meshgrid(a, b)
        p = centre + aa.reshape(-1, 1) * e_lr + bb.reshape(-1, 1) * e_ant
        inside = _globe_sdf(o, p) < 0
        fronts[o.s] = np.column_stack([aa.reshape(-1)[inside], bb.reshape(-1)[inside]])
    out = {}
    d = rims[1] - rims[-1]
    nrm = np.array([-d[1], d[0]]) / np.linalg.norm(d)
    if nrm[1] < 0:
        nrm = -nrm
    for s in (1, -1):
        proj = (fronts[s] - rims[-1]) @ nrm
        k = int(np.argmax(proj))
        to3 = lambda q: centre + q[0] * e_lr + q[1] * e_ant  # noqa: E731
        out[s] = (to3(rims[s]), to3(fronts[s][k]), float(proj[k]))
    return out


def clinical_truth(params: PatientParams, labels: Volume) -> dict[str, object]:
    """The generator's truth of every clinical measurement of one rendered scan.

    Parameters
    ----------
    params : the patient (anatomy and acquisition) that ``labels`` was rendered from
    labels : its rendered labels ``(nz, ny, nx)``

    Returns
    -------
    dict
        ``"muscles"``: :func:`muscle_labels` of the scan; ``"right"`` and ``"left"``:
        :class:`SideTruth` (volumes counted from ``"muscles"`` behind the plane
        :data:`VOLUME_START_MM` behind the true globe centre, perpendicular to the globe -> apex axis).
    """
    scene = _Scene.shapes_only(params)
    phys = _to_physical(params)
    per_muscle = muscle_labels(params, labels)
    prop = _proptosis(scene)
    vox = labels.geometry.voxel_volume_ml
    hit = np.argwhere(per_muscle.array > 0)
    xyz = labels.geometry.index_to_physical(hit[:, ::-1].astype(float)) if hit.size else np.zeros((0, 3))
    ids = per_muscle.array[tuple(hit.T)] if hit.size else np.zeros(0, np.uint8)
    out: dict[str, object] = {"muscles": per_muscle}
    for o in scene.orbits:
        g, apex = phys(o.G[None])[0], phys(o.apex[None])[0]
        axis = _unit(apex - g)
        behind = (xyz - g) @ axis > VOLUME_START_MM
        base = 0 if o.s > 0 else 10
        vols = {grp: float(np.count_nonzero(behind & np.isin(ids, [base + 1 + MUSCLES.index(m) for m in names])))
                * vox for grp, names in GROUPS.items()}
        rim, front, pro = prop[o.s]
        side = "left" if o.s > 0 else "right"
        out[side] = SideTruth(
            side=side, globe_centre=tuple(g), apex=tuple(apex), rim_point=tuple(phys(rim[None])[0]),
            globe_front=tuple(phys(front[None])[0]), proptosis_mm=pro,
            thickness_mm={grp: _thickness(scene, o, grp) for grp in _RECTUS_PATH}, volume_ml=vols)
    return out
