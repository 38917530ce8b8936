"""Find each orbit's volume of interest from the image alone.

The globes are the landmark: on CT a globe is a ~24 mm ball of water-like
density (vitreous 0-20 HU, sclera ~50 HU) sitting in orbital fat in the front
of the head.  We look for them on a coarse copy of the canonical (LPS) scan,
pair the two that sit side by side, and place around each a box that holds
the globe, the muscle cone and the orbital apex.  Left and right are decided
by the LPS x coordinate (patient coordinates), never by array index.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from orbitseg.errors import InputError
from orbitseg.io.volume import Volume

#: HU range of the globe's contents (vitreous, lens, sclera) after light smoothing
GLOBE_HU = (-45.0, 140.0)
#: tried only when no pair is found with GLOBE_HU: a vitreous filled with silicone oil (after retinal detachment
#: surgery) reads 100-160 HU and with noise leaves GLOBE_HU's ball full of holes
GLOBE_HU_WIDE = (-45.0, 220.0)
#: a globe's radius in mm (axial length 20-28 mm)
GLOBE_RADIUS_MM = (8.5, 15.0)
#: typical globe radius (mm) and spread used to rank candidates
GLOBE_RADIUS_TYPICAL = (11.5, 2.0)
#: soft tissue (lids) allowed between a globe's front surface and the air in front of it, mm
MAX_TISSUE_IN_FRONT_MM = 12.0
#: working resolution of the search in mm
SEARCH_SPACING_MM = 1.5
#: a candidate globe's least score (sphericity x radius prior)
GLOBE_MIN_SCORE = 0.1
#: the last try, when no pair is found otherwise: a clear globe (score >= CLEAR_GLOBE_SCORE) with a weaker fellow
#: (>= PARTNER_MIN_SCORE) level with it (within PARTNER_LEVEL_MM in y and z).  Retrobulbar tissue swollen in thyroid
#: eye disease, or a silicone-filled eye, makes a globe less round to the search: two clinical-variety scans were
#: refused with such a globe scoring 0.065-0.068 beside its fellow's 0.37-0.40; a chest phantom's best blobs score 0.27
CLEAR_GLOBE_SCORE = 0.3
PARTNER_MIN_SCORE = 0.04
PARTNER_LEVEL_MM = 10.0
#: the lone-globe fallback (a patient with one eye: enucleation, a fat-filled socket): a clear globe whose centre
#: lies this far (mm) from the head's midline, the head's width at its level within HEAD_WIDTH_MM and not cut by
#: the scan's left or right edge; the other orbit's box is the globe's mirrored across that midline
LONE_GLOBE_OFFSET_MM = (20.0, 45.0)
HEAD_WIDTH_MM = (100.0, 230.0)


@dataclass(frozen=True)
class OrbitBox:
    """One orbit's VOI.

    Attributes
    ----------
    side : "right" or "left" (the patient's)
    globe_centre : LPS mm of the detected globe centre
    globe_radius : mm
    box_min, box_max : LPS mm corners of the crop (axis-aligned in the canonical frame)
    index_min, index_max : canonical index (i, j, k) of the crop, max exclusive
    mirrored : True when no globe was found on this side: the box is the other globe's mirrored across the
        head's midline (:func:`locate_orbits`' lone-globe fallback), ``globe_centre`` that mirrored centre
    """

    side: str
    globe_centre: tuple[float, float, float]
    globe_radius: float
    box_min: tuple[float, float, float]
    box_max: tuple[float, float, float]
    index_min: tuple[int, int, int]
    index_max: tuple[int, int, int]
    mirrored: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    def slices(self) -> tuple[slice, slice, slice]:
        """NumPy slices ``(k, j, i)`` of the crop in the canonical array."""
        (i0, j0, k0), (i1, j1, k1) = self.index_min, self.index_max
        return slice(k0, k1), slice(j0, j1), slice(i0, i1)


@dataclass(frozen=True)
class VOIMargins:
    """Extent of an orbit box around its globe centre, in mm (before the margin).

    lateral/medial along x (medial towards the midline), anterior/posterior
    along y, superior/inferior along z.  Defaults hold the globe, the
    rectus muscles along the walls and the apex at the optic canal
    (~40-45 mm behind the globe centre, ~18 mm medial of it).
    """

    lateral: float = 17.0
    medial: float = 24.0
    anterior: float = 16.0
    posterior: float = 46.0
    superior: float = 19.0
    inferior: float = 18.0
    margin: float = 4.0


def _coarse(volume: Volume) -> Volume:
    """Block-averaged HU on a ~SEARCH_SPACING_MM grid (averaging is the anti-aliasing), lightly smoothed."""
    import SimpleITK as sitk

    shrink = [max(1, int(round(SEARCH_SPACING_MM / s))) for s in volume.spacing]
    img = sitk.BinShrink(sitk.Cast(volume.to_sitk(), sitk.sitkFloat32), shrink)
    img = sitk.SmoothingRecursiveGaussian(img, 0.6 * SEARCH_SPACING_MM)  # noise; keeps 12 mm balls
    return Volume.from_sitk(img)


def find_globes(volume: Volume, hu: tuple[float, float] = GLOBE_HU, *,
                min_score: float = GLOBE_MIN_SCORE) -> list[tuple[np.ndarray, float, float]]:
    """Candidate globes in a canonical volume: (LPS centre mm, radius mm, score), best first.
    ``hu``: the (low, high) HU a globe's inside may have; ``min_score``: the least score kept."""
    coarse = _coarse(volume)
    small = coarse.array
    sp_small = np.asarray(coarse.spacing)[::-1]  # (sz, sy, sx) mm of the coarse grid
    inside = (small > hu[0]) & (small < hu[1])
    head = small > -400
    if not head.any():
        return []
    dist = ndimage.distance_transform_edt(inside, sampling=sp_small)
    rmin, rmax = GLOBE_RADIUS_MM
    # a globe centre is a local maximum of the distance map with a globe-like radius
    # (the sclera and the fat rim bound the ball); brain and big muscles give larger or flatter maxima
    peak = (dist == ndimage.maximum_filter(dist, size=3)) & (dist >= rmin) & (dist <= rmax)
    lab, n = ndimage.label(peak)
    if n == 0:
        return []
    centres = ndimage.center_of_mass(peak, lab, range(1, n + 1))
    # anterior third of the head: globes sit in front
    js = np.flatnonzero(head.any(axis=(0, 2)))
    front, back = js[0], js[-1]
    cands = []
    for c in centres:
        kji = np.asarray(c)
        r = float(dist[tuple(np.round(kji).astype(int))])
        if (kji[1] - front) > 0.45 * (back - front + 1):
            continue
        # a globe sits at the front of the face: air (between the lids, in front of them) lies
        # straight ahead within a few mm of its front surface; brain or temporalis never do
        if _air_ahead_mm(small, kji, sp_small[1]) > r + MAX_TISSUE_IN_FRONT_MM:
            continue
        mu, sd = GLOBE_RADIUS_TYPICAL
        score = _sphericity(small, kji, r, sp_small, hu) * float(np.exp(-(((r - mu) / sd) ** 2)))
        if score > min_score:
            cands.append((coarse.geometry.index_to_physical(kji[::-1]), r, score))
    cands.sort(key=lambda t: -t[2])
    return cands


def _air_ahead_mm(small: np.ndarray, kji: np.ndarray, sy: float) -> float:
    """Distance (mm) from a point straight anterior (-y, lower j) to the air outside the head.

    Outside air is where the ray turns to air and stays air to the edge of the
    field of view; a sinus (air, then bone and tissue again) does not count.
    """
    k, j, i = np.round(kji).astype(int)
    ray = small[k, :j + 1, i][::-1] < -500
    tissue = np.flatnonzero(~ray)
    first_outside = tissue[-1] + 1 if len(tissue) else 0
    return float(first_outside * sy) if first_outside < len(ray) else np.inf


def _sphericity(small: np.ndarray, kji: np.ndarray, r: float, sp: np.ndarray,
                hu: tuple[float, float] = GLOBE_HU) -> float:
    """Share of a shell just outside radius r that is NOT globe-like (fat, air, bone): ~1 for a globe."""
    zz, yy, xx = (np.arange(n) * s for n, s in zip(small.shape, sp))
    c = kji * sp
    lo = np.maximum(0, np.floor((c - r - 6) / sp).astype(int))
    hi = np.minimum(small.shape, np.ceil((c + r + 6) / sp).astype(int) + 1)
    sub = small[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    d = np.sqrt((zz[lo[0]:hi[0], None, None] - c[0]) ** 2 + (yy[None, lo[1]:hi[1], None] - c[1]) ** 2
                + (xx[None, None, lo[2]:hi[2]] - c[2]) ** 2)
    shell = (d > r + 2.5) & (d < r + 5.5)
    if shell.sum() < 10:
        return 0.0
    outside = (sub[shell] < hu[0]) | (sub[shell] > hu[1])
    return float(outside.mean())


def locate_orbits(volume: Volume, *, margins: VOIMargins = VOIMargins()) -> list[OrbitBox]:
    """One :class:`OrbitBox` per orbit (right first) of a canonical (LPS) scan.

    Without a pair, a lone clear globe (a patient with one eye) is taken with the head's midline at its level
    (:func:`head_midline_x`): the other orbit's box is its mirror image, marked ``mirrored``.

    Raises
    ------
    InputError
        no pair of globes and no lone globe is found (e.g. a chest CT, or a brain-only field of view).
    """
    m = volume.geometry.matrix
    if not np.allclose(np.sign(np.diag(m)), 1) or np.abs(np.diag(m)).min() < 0.7:
        raise ValueError("volume must be in canonical LPS orientation (use orbitseg.io.orient.to_canonical)")
    # each window searched once, its candidates kept down to a partner's score; a silicone-filled eye is
    # denser than a vitreous, so the wide window is searched only when the usual one finds no pair
    searched = []
    for hu in (GLOBE_HU, GLOBE_HU_WIDE):
        searched.append(find_globes(volume, hu, min_score=PARTNER_MIN_SCORE))
        best = _best_pair([c for c in searched[-1] if c[2] > GLOBE_MIN_SCORE])
        if best is not None:
            break
    else:  # a clear globe and a fellow less round to the search, level with it
        for cands in searched:
            best = _best_pair(cands, anchor=CLEAR_GLOBE_SCORE, level=PARTNER_LEVEL_MM)
            if best is not None:
                break
    where = volume.path or "scan"
    if best is None:
        lone = _lone_globe(volume, searched)
        if lone is None:
            raise InputError(where, "no orbits found: could not find two globes side by side, nor one globe beside "
                                    "the head's midline (is this an orbital/head CT covering the eyes?)")
        (globe, mirror), mid = lone
        seen = "right" if globe[0][0] < mid else "left"  # LPS: smaller x = patient's right
        other = "left" if seen == "right" else "right"
        boxes = {seen: _box(volume, globe, seen, margins), other: _box(volume, mirror, other, margins, mirrored=True)}
        return [boxes["right"], boxes["left"]]
    right, left = sorted(best[1:], key=lambda c: c[0][0])  # LPS: smaller x = patient's right
    return [_box(volume, right, "right", margins), _box(volume, left, "left", margins)]


def head_midline_x(volume: Volume, z_mm: float, half_height_mm: float = 10.0) -> tuple[float, float] | None:
    """(LPS x of the head's mid-sagittal plane, the head's width in mm) on the axial slab within
    ``half_height_mm`` of ``z_mm`` of a canonical volume, or None where the slab is outside the scan or the body
    (the largest region above -300 HU) touches the scan's left or right edge: a field of view that cuts the head
    gives no midline.  The plane is where the bone of the front of the head (orbital rims and walls, nose,
    zygomas) best matches its own mirror image: on the real CT 1 mm from the two globes' midpoint, where the
    middle of the skin outline was 4.6 mm off."""
    from scipy import signal

    g = volume.geometry
    ks = np.arange(volume.shape[0])
    zs = g.index_to_physical(np.stack([np.zeros_like(ks), np.zeros_like(ks), ks], axis=1).astype(float))[:, 2]
    near = np.flatnonzero(np.abs(zs - z_mm) <= half_height_mm)
    if not len(near):
        return None
    body = (volume.array[near] > -300).any(axis=0)  # (j, i)
    lab, n = ndimage.label(body)
    if n == 0:
        return None
    largest = lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:]))
    cols = np.flatnonzero(largest.any(axis=0))
    if cols[0] == 0 or cols[-1] == body.shape[1] - 1:
        return None

    def x_at(i: float) -> float:
        return float(g.index_to_physical(np.array([[i, 0.0, float(near[0])]]))[0, 0])

    width = abs(x_at(cols[-1]) - x_at(cols[0])) + g.spacing[0]
    bone = ((volume.array[near] > 250).any(axis=0) & largest).astype(np.float32)
    rows = np.flatnonzero(largest.any(axis=1))
    bone[rows[0] + int(0.45 * (rows[-1] - rows[0])):] = 0  # the face and orbits, not the skull's back
    if not bone.any():
        return (x_at(cols[0]) + x_at(cols[-1])) / 2.0, width
    # row by row, the correlation of the bone with its mirror image: its peak at s mirrors about column s / 2
    corr = sum(signal.fftconvolve(r, r, mode="full") for r in bone if r.any())
    return x_at(float(np.argmax(corr)) / 2.0), width


def _lone_globe(volume: Volume, searched: list[list]) -> tuple[tuple, float] | None:
    """((the clearest globe, its mirror across the head's midline), that midline's x), or None: the globe must
    score at least CLEAR_GLOBE_SCORE and sit LONE_GLOBE_OFFSET_MM from a midline measured on a head of
    HEAD_WIDTH_MM."""
    clear = sorted((c for cands in searched for c in cands if c[2] >= CLEAR_GLOBE_SCORE), key=lambda c: -c[2])
    for centre, radius, score in clear:
        found = head_midline_x(volume, float(centre[2]))
        if found is None:
            continue
        mid, width = found
        if HEAD_WIDTH_MM[0] <= width <= HEAD_WIDTH_MM[1] and \
                LONE_GLOBE_OFFSET_MM[0] <= abs(centre[0] - mid) <= LONE_GLOBE_OFFSET_MM[1]:
            mirror = np.array([2.0 * mid - centre[0], centre[1], centre[2]])
            return ((centre, radius, score), (mirror, radius, 0.0)), mid
    return None


def _best_pair(cands: list, anchor: float = 0.0, level: float = 20.0) -> tuple | None:
    """(score, globe, globe) of the best pair of candidates side by side (40-90 mm apart in x, within ``level``
    mm in y and 15 mm in z), or None; with ``anchor``, only pairs where one of the two scores at least that."""
    best = None
    for a in range(len(cands)):
        for b in range(a + 1, len(cands)):
            pa, pb = cands[a][0], cands[b][0]
            dx, dy, dz = np.abs(pa - pb)
            if (40 <= dx <= 90 and dy <= level and dz <= min(15.0, level)
                    and max(cands[a][2], cands[b][2]) >= anchor):
                score = cands[a][2] + cands[b][2] - 0.01 * (dy + dz)
                if best is None or score > best[0]:
                    best = (score, cands[a], cands[b])
    return best


def _box(volume: Volume, cand, side: str, mg: VOIMargins, *, mirrored: bool = False) -> OrbitBox:
    centre, radius, _ = cand
    lat, med = mg.lateral + mg.margin, mg.medial + mg.margin
    x_lo, x_hi = (centre[0] - lat, centre[0] + med) if side == "right" else (centre[0] - med, centre[0] + lat)
    lo = np.array([x_lo, centre[1] - mg.anterior - mg.margin, centre[2] - mg.inferior - mg.margin])
    hi = np.array([x_hi, centre[1] + mg.posterior + mg.margin, centre[2] + mg.superior + mg.margin])
    g = volume.geometry
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    idx = g.physical_to_index(corners)
    imin = np.clip(np.floor(idx.min(0)), 0, np.array(g.size) - 1).astype(int)
    imax = np.clip(np.ceil(idx.max(0)) + 1, 1, np.array(g.size)).astype(int)
    pmin = g.index_to_physical(imin)
    pmax = g.index_to_physical(imax - 1)
    return OrbitBox(side, tuple(map(float, centre)), float(radius), tuple(map(float, pmin)),
                    tuple(map(float, pmax)), tuple(map(int, imin)), tuple(map(int, imax)), mirrored)
