"""Render a synthetic orbital CT and its labels from :class:`PatientParams`.

Anatomy lives in the head frame (mm, LPS axes, origin midway between the globe
centres).  Every structure is a signed-distance shape painted, in anatomical
order, onto the scan's grid (see :mod:`orbitseg.synth.canvas`):

air -> skin -> subcutaneous fat -> skull (cortex, diploe) -> temporalis ->
zygomatic arches -> brain (CSF rim, parenchyma) -> sinuses (frontal,
sphenoid, nasal cavity with septum and turbinates, ethmoid cells with bony
septa, maxillary) with mucosa -> orbital fat -> optic canal, superior orbital
fissure -> eyelids, canthal tissue, lacrimal gland, superior ophthalmic vein
(unlabelled soft tissue) -> extraocular muscles (label 2) -> optic nerve
(label 3) -> globe: sclera, vitreous, lens, cornea (label 1).

Bony walls are what remains between cavities: each cavity keeps a set
distance from its neighbours (lamina papyracea 0.3-0.5 mm, floor 0.5-1 mm...),
so thin walls come out faint through partial volume, as in real scans.

The levator palpebrae superioris is labelled as muscle (annotators usually
draw it together with the superior rectus).  The inferior oblique is labelled
as muscle too.  The optic nerve label stops at the orbital opening of the
optic canal; the canalicular and intracranial nerve are unlabelled soft tissue.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from orbitseg.constants import EYEBALL, MUSCLES as MUSCLE_LABEL, NERVE
from orbitseg.io.volume import Geometry, Volume
from orbitseg.synth.canvas import F32, Canvas
from orbitseg.synth.params import MUSCLES, Anatomy, PatientParams, SideParams, head_rotation_matrix

_BIG = F32(1e4)
#: clinical variant: an intraocular lens (acrylic / PMMA disc), dental fillings (before clipping at 3071)
_IOL_HU = 350.0
_METAL_HU = 8000.0


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def _smax(*ds):
    out = ds[0]
    for d in ds[1:]:
        out = np.maximum(out, d)
    return out


def _smin(*ds):
    out = ds[0]
    for d in ds[1:]:
        out = np.minimum(out, d)
    return out


def _ellipsoid(u, v, w, a, b, c):
    """Approximate signed distance to an axis-aligned ellipsoid (ray distance near the surface)."""
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2)
    r = np.sqrt(u * u + v * v + w * w)
    k = np.clip(r / np.maximum(rho, 1e-6), min(a, b, c), max(a, b, c))
    return (rho - 1.0) * k


def _frame(axis_w, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Rows (e_u, e_v, e_w): e_w along ``axis_w``, e_v as close to ``up`` as possible."""
    w = _unit(axis_w)
    v = np.asarray(up, float) - np.dot(up, w) * w
    v = _unit(v)
    u = np.cross(v, w)
    return np.stack([u, v, w])


# ---------------------------------------------------------------------------
# The orbit: a rounded pyramid from the apex to the rim
# ---------------------------------------------------------------------------
class Orbit:
    """Geometry of one orbit and its globe, in the head frame."""

    def __init__(self, an: Anatomy, sp: SideParams):
        s = sp.side
        self.s = s
        self.sp = sp
        self.apex = np.array([s * sp.apex[0], sp.apex[1], sp.apex[2]])
        gx = an.globe_half_distance
        # the rim centre sits a little behind and above the nominal globe centre
        rim_dir = _unit(np.array([s * gx, -3.0, 1.0]) - self.apex)
        self.L = sp.orbit_length
        self.rim = self.apex + self.L * rim_dir
        self.e_ax = rim_dir  # apex -> rim
        fr = _frame(-self.e_ax)  # rows: u, v(up), w(posterior along axis)
        e_up = fr[1]
        e_lat = np.cross(self.e_ax, e_up) * (-s)  # positive towards the patient's side
        e_lat = _unit(e_lat - np.dot(e_lat, self.e_ax) * self.e_ax)
        if np.dot(e_lat, [s, 0, 0]) < 0:
            e_lat = -e_lat
        self.e_lat, self.e_up = e_lat, e_up
        self.R_o = np.stack([self.e_lat, self.e_up, self.e_ax])  # local (u lateral, v up, t along)
        self.a_apex, self.b_apex = 2.6, 2.6
        self.a_rim, self.b_rim = sp.rim_halfwidth, sp.rim_halfheight
        # globe
        R = sp.globe_radius
        self.R = R
        self.ar = sp.globe_axial_ratio
        sh = sp.globe_shift
        self.G = np.array([s * (gx + sh[0]), sh[1] - sp.proptosis, sh[2]])
        yaw, pitch = math.radians(sp.gaze[0]), math.radians(sp.gaze[1])
        self.e_g = _unit([s * math.sin(yaw) * math.cos(pitch), -math.cos(yaw) * math.cos(pitch), math.sin(pitch)])
        gf = _frame(-self.e_g)
        self.e_gup = gf[1]
        gl = np.cross(self.e_gup, self.e_g)  # = +x for straight gaze
        self.e_gx = _unit(gl)
        self.e_glat = s * self.e_gx
        self.R_g = np.stack([self.e_gx, self.e_gup, self.e_g])  # local (x, up, forward)

    # cross-section half-axes at fraction t of the depth
    def half_axes(self, t):
        g = np.clip(t, 0.0, 1.0) ** 0.75 + 0.08 * np.sin(np.pi * np.clip(t, 0.0, 1.0))
        return (self.a_apex + (self.a_rim - self.a_apex) * g, self.b_apex + (self.b_rim - self.b_apex) * g)

    @staticmethod
    def _rho(un, vn):
        q2 = un * un + vn * vn
        return 0.5 * np.sqrt(q2) + 0.5 * np.sqrt(np.sqrt(q2 * q2 - 2 * un * un * vn * vn))

    def wall_radius(self, t: float, phi: float) -> float:
        """Distance from the axis to the wall at depth fraction t, direction phi (0 lateral, 90 up)."""
        a, b = self.half_axes(t)
        c, s = math.cos(math.radians(phi)), math.sin(math.radians(phi))
        return float(1.0 / self._rho(c / a, s / b))

    def point(self, t: float, phi: float, inset: float) -> np.ndarray:
        """Point at depth fraction t on direction phi, ``inset`` mm inside the wall."""
        r = self.wall_radius(t, phi) - inset
        c, s = math.cos(math.radians(phi)), math.sin(math.radians(phi))
        return self.apex + t * self.L * self.e_ax + r * (c * self.e_lat + s * self.e_up)

    def sdf(self, x, y, z):
        """Signed distance (approx.) to the bony orbital cavity; open cylinder in front of the rim."""
        px, py, pz = x - F32(self.apex[0]), y - F32(self.apex[1]), z - F32(self.apex[2])
        R = self.R_o.astype(F32)
        u = px * R[0, 0] + py * R[0, 1] + pz * R[0, 2]
        v = px * R[1, 0] + py * R[1, 1] + pz * R[1, 2]
        t = px * R[2, 0] + py * R[2, 1] + pz * R[2, 2]
        a, b = self.half_axes(t / F32(self.L))
        rho = self._rho(u / a, v / b)
        r = np.sqrt(u * u + v * v)
        k = np.clip(r / np.maximum(rho, 1e-6), np.minimum(a, b), np.maximum(a, b))
        d = (rho - 1.0) * k * F32(0.93)
        return np.maximum(d, -t).astype(F32)

    def bbox(self, margin: float = 0.0):
        pts = [self.apex, self.rim + 12 * self.e_ax, self.G + (self.R + 6) * self.e_g]
        for phi in range(0, 360, 45):
            for t in (0.5, 0.8, 1.0):
                pts.append(self.point(t, phi, -6.0))
        pts = np.array(pts)
        return pts.min(0) - margin, pts.max(0) + margin

    def globe_point(self, polar_deg: float, direction, radius: float) -> np.ndarray:
        th = math.radians(polar_deg)
        d = _unit(direction)
        d = _unit(d - np.dot(d, self.e_g) * self.e_g)
        return self.G + radius * (math.cos(th) * self.e_g + math.sin(th) * d)


# ---------------------------------------------------------------------------
# Tubes: chains of elliptical-section segments (muscles, nerve, veins)
# ---------------------------------------------------------------------------
def _catmull_rom(points: np.ndarray, per_span: int = 6) -> np.ndarray:
    P = np.asarray(points, float)
    P = np.vstack([2 * P[0] - P[1], P, 2 * P[-1] - P[-2]])
    out = []
    for i in range(1, len(P) - 2):
        p0, p1, p2, p3 = P[i - 1], P[i], P[i + 1], P[i + 2]
        for u in np.linspace(0, 1, per_span, endpoint=False):
            u2, u3 = u * u, u * u * u
            out.append(0.5 * ((2 * p1) + (-p0 + p2) * u + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u2
                              + (-p0 + 3 * p1 - 3 * p2 + p3) * u3))
    out.append(P[-2])
    return np.array(out)


def _arc_fraction(pts: np.ndarray) -> np.ndarray:
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    return s / max(s[-1], 1e-6)


def tube_sdf(cv: Canvas, pts, half_t, half_w, radial):
    """Signed distance to a chain of elliptical-section segments, on its bounding box.

    ``half_t`` (thickness, along ``radial``) and ``half_w`` (width) per point.
    Returns (slices, d) or (None, None) when off the grid.
    """
    pts = np.asarray(pts, float)
    ht = np.asarray(half_t, float)
    hw = np.asarray(half_w, float)
    rmax = float(max(ht.max(), hw.max()))
    sl = cv.bbox(pts.min(0), pts.max(0), margin=rmax)
    if sl is None:
        return None, None
    x, y, z = cv.coords(sl)
    D = np.full(x.shape, _BIG, dtype=F32)
    off = np.array([s.start for s in sl])
    radial = np.asarray(radial, float)
    for i in range(len(pts) - 1):
        p0, p1 = pts[i], pts[i + 1]
        ssl = cv.bbox(np.minimum(p0, p1), np.maximum(p0, p1), margin=max(ht[i], hw[i], ht[i + 1], hw[i + 1]))
        if ssl is None:
            continue
        loc = []
        for s, o, n in zip(ssl, off, x.shape):
            lo, hi = max(s.start - o, 0), min(s.stop - o, n)
            if hi <= lo:
                break
            loc.append(slice(lo, hi))
        if len(loc) < 3:
            continue
        loc = tuple(loc)
        seg = p1 - p0
        L = float(np.linalg.norm(seg))
        if L < 1e-6:
            continue
        e = seg / L
        er = radial[i] - np.dot(radial[i], e) * e
        if np.linalg.norm(er) < 1e-6:
            er = np.cross(e, [0.0, 0.0, 1.0])
        er = _unit(er)
        ew = np.cross(e, er)
        qx, qy, qz = x[loc] - F32(p0[0]), y[loc] - F32(p0[1]), z[loc] - F32(p0[2])
        s_al = qx * F32(e[0]) + qy * F32(e[1]) + qz * F32(e[2])
        tau = np.clip(s_al * F32(1.0 / L), 0.0, 1.0)
        along = s_al - tau * F32(L)
        u = qx * F32(er[0]) + qy * F32(er[1]) + qz * F32(er[2])
        w = qx * F32(ew[0]) + qy * F32(ew[1]) + qz * F32(ew[2])
        a = F32(ht[i]) + tau * F32(ht[i + 1] - ht[i])
        b = F32(hw[i]) + tau * F32(hw[i + 1] - hw[i])
        amin = np.minimum(a, b)
        rho = np.sqrt((u / a) ** 2 + (w / b) ** 2 + (along / amin) ** 2)
        r = np.sqrt(u * u + w * w + along * along)
        k = np.minimum(np.maximum(r / np.maximum(rho, F32(1e-6)), amin), np.maximum(a, b))
        d = (rho - F32(1.0)) * k
        np.minimum(D[loc], d, out=D[loc])
    return sl, D


def _profile(sigma, h0, hb, ht, s_peak, s_tendon):
    """Half-thickness along a muscle: origin h0 -> belly hb at s_peak -> tendon ht from s_tendon."""
    sigma = np.asarray(sigma, float)
    out = np.empty_like(sigma)
    rise = sigma <= s_peak
    out[rise] = h0 + (hb - h0) * np.sin(0.5 * np.pi * sigma[rise] / s_peak)
    fall = (sigma > s_peak) & (sigma < s_tendon)
    out[fall] = ht + (hb - ht) * np.cos(0.5 * np.pi * (sigma[fall] - s_peak) / (s_tendon - s_peak)) ** 1.3
    out[sigma >= s_tendon] = ht
    return out


# ---------------------------------------------------------------------------
# The renderer
# ---------------------------------------------------------------------------
#: generator versions of the clinical variety rendered with the old sub-slice count (even counts allowed)
_EVEN_SUBSLICE_CLINICAL_VERSIONS = ("1.0-clinical1",)


def subslice_count(params: PatientParams) -> int:
    """How many point-sampled sub-slices each slice is rendered as (the slice-sensitivity profile).

    A voxel's CT value is the mean over its sub-slices, and its label is the structure whose occupancy, averaged
    over the sub-slices, is more than half (``_image_formation``). The sub-slices are ``ceil(thickness / step)``
    (step 1.3 mm, 1.0 for ``small``). With an even count (1.5-2.5 mm: 2, 4-5 mm: 4) a voxel whose slice a
    structure's surface crosses near its middle has half its sub-slices inside: a tie, which ``> 0.5`` makes
    background, so labels on thick slices are thinner than the anatomy along z (one patient, muscles at 2.5 mm
    25 % below its 0.625 mm volume, at 5 mm 37 %; the nerve at 5 mm 63 %).

    The clinical variety (``params.clinical`` set, version after ``1.0-clinical1``) rounds an even count up to the
    next odd one. Then the middle sub-slice lies on the slice's centre, a surface crossing the slice gives no tie,
    and the label is what most of the slice holds (the surface past the centre: inside, short of it: outside; the
    thick-slice labels agree with the majority of 3 or 5 thin slices of the same patient within 3 % of each
    structure's volume). This rather than breaking ties by ``>= 0.5``, which
    thickens structures instead (2 sub-slices sit a quarter of a slice from the centre, so a tie says nothing about
    which half the structure fills: one patient's muscles +15 % at 2.5 mm where ``> 0.5`` gave -23 %). The CT
    values stay a partial-volume average, over one more sub-slice (rendering up to 50 % slower at those
    thicknesses). Majority labels of thick slices still lose what is less than half a slice deep along z (at 5 mm
    muscles about 20 % below their thin-slice volume), as any truth drawn on such slices would.

    The default variety (``clinical is None``) keeps the old count and so its thinned thick-slice labels: the
    shipped model was trained on it and its renders must stay byte-identical per seed
    (``tests/synth/test_synth_clinical.py``) so that old numbers stay comparable. Clinical params of version
    ``1.0-clinical1`` keep it too, so an earlier clinical cohort can be rendered again as it was.
    """
    sub_step = 1.0 if params.small else 1.3
    n = max(1, int(math.ceil(params.scan.slice_thickness / sub_step - 1e-6)))
    if n % 2 == 0 and params.clinical is not None and params.version not in _EVEN_SUBSLICE_CLINICAL_VERSIONS:
        n += 1
    return n


class _Scene:
    def __init__(self, params: PatientParams):
        self._set_anatomy(params)
        an, sc = self.an, self.sc
        self.rng = np.random.default_rng(sc.texture_seed)
        # grid
        nx, ny = sc.matrix
        nz = sc.n_slices
        spacing = np.array([sc.spacing_xy, sc.spacing_xy, sc.slice_thickness])
        D = np.asarray(sc.direction, float).reshape(3, 3)
        origin = -D @ (spacing * (np.array([nx, ny, nz]) - 1) / 2.0)
        self.geometry = Geometry((nx, ny, nz), tuple(spacing), tuple(origin), D)
        self.n_sub = n = subslice_count(params)
        Rh = head_rotation_matrix(*sc.head_rotation)
        h0 = np.asarray(sc.head_offset, float)
        M = D @ np.diag(spacing)
        A = Rh.T @ M @ np.diag([1.0, 1.0, 1.0 / n])
        b = Rh.T @ (origin + M @ np.array([0.0, 0.0, 0.5 / n - 0.5])) + h0
        dz = sc.slice_thickness / n
        f_xy = max(1, int(round(1.6 / sc.spacing_xy)))
        f_z = max(1, int(round(1.6 / dz)))
        self.spacing_r = (dz, sc.spacing_xy, sc.spacing_xy)  # (z, y, x) of the render grid
        self.cv = Canvas(A, b, (nz * n, ny, nx), edge=sc.spacing_xy, coarse=(f_z, f_xy, f_xy),
                         background=self.hu.air)
        self._tex = None

    def _set_anatomy(self, params: PatientParams) -> None:
        """The head's shapes (orbits, the ``*_sdf`` methods, muscle paths), without a grid."""
        self.p = params
        self.an, self.sc = params.anatomy, params.scan
        self.hu = self.an.hu
        self.orbits = [Orbit(self.an, self.an.left), Orbit(self.an, self.an.right)]
        self.scalp = self.an.skin + self.an.subcut_fat + 0.8

    @classmethod
    def shapes_only(cls, params: PatientParams) -> "_Scene":
        """A scene that knows the anatomy but allocates no grid (for the generator's truth, synth/truth.py)."""
        scene = cls.__new__(cls)
        scene._set_anatomy(params)
        return scene

    def tex(self, sl, amp: float) -> np.ndarray:
        """The scan's smooth texture field (unit std, ~2.5 mm grain) on ``sl``, times ``amp``."""
        if self._tex is None:
            self._tex = self.cv.texture(self.cv.full(), 2.5, self.spacing_r, self.rng, 1.0)
        return self._tex[sl] * F32(amp)

    # ---- big smooth shapes (evaluated coarse) ---------------------------------
    def head_sdf(self, x, y, z, nose: bool = True):
        an = self.an
        sc = an.head_scale
        cx, cy, cz = 0.0, 48.0 * sc, 22.0
        e = _ellipsoid(x - cx, y - cy, z - cz, an.head_width * sc, 92.0 * sc, 100.0 * sc)
        # face: a parabolic front surface, receding above the brows and at the cheeks
        x2 = x * x
        zz = np.maximum(z - 18.0, 0.0)
        yf = F32(an.face_depth) + F32(0.0045) * x2 + F32(9.5e-7) * x2 * x2 + 0.006 * zz * zz
        grad = np.sqrt(1.0 + (F32(0.009) * x + F32(3.8e-6) * x2 * x) ** 2)
        d = np.maximum(e, (yf - y) / grad)
        if self.cl is not None:  # clinical variant: no perfectly smooth head
            d = d + F32(0.6) * self._warp(x, y, z)
        if nose:
            # nose: a triangular prism hanging down from the nasal root
            zr = -6.0
            ridge = F32(an.face_depth) - 0.55 * np.clip(zr - z, 0.0, 40.0)
            dn = (ridge + 1.25 * np.abs(x) - y) / 1.6
            dn = np.maximum(dn, z - zr)
            dn = np.maximum(dn, y - 10.0)
            d = np.minimum(d, dn)
        return d.astype(F32)

    def bone_sdf(self, x, y, z):
        scalp = F32(self.scalp) + F32(6.0) / (1.0 + np.exp((z + 16.0) / 4.0))  # thicker over the cheeks
        if self.cl is not None:  # clinical variant: scalp and skull of uneven thickness
            scalp = scalp + F32(0.6) * self._warp(z, x, y)
        return (self.head_sdf(x, y, z, nose=False) + scalp).astype(F32)

    def temporalis_sdf(self, x, y, z, side):
        s = side
        d = _ellipsoid(x - s * (self.an.head_width * self.an.head_scale - 15.0), y - 24.0, z - 8.0, 12.0, 26.0, 46.0)
        o = self.orbits[0 if s > 0 else 1]
        d = np.maximum(d, F32(o.sp.wall_lateral) - o.sdf(x, y, z))
        d = np.maximum(d, self.head_sdf(x, y, z, nose=False) + F32(self.an.skin + self.an.subcut_fat))
        return d.astype(F32)

    def brain_sdf(self, x, y, z):
        an = self.an
        d = self.head_sdf(x, y, z, nose=False) + F32(self.scalp + an.skull)
        ax = np.abs(x)
        acf = F32(9.0) - z  # anterior cranial fossa above the cribriform plate
        mcf = _smax(-26.0 - z, 18.0 - ax, 22.0 - y)  # middle cranial fossae (temporal lobes)
        cen = _smax(3.0 - z, 28.0 - y)  # above the sella
        pcf = _smax(64.0 - y, -70.0 - z)  # posterior fossa (pons behind the clivus)
        allowed = _smin(acf, mcf, cen, pcf)
        if self.cl is not None:  # clinical variant: an irregular skull base and inner table
            w = self._warp(x, y, z)
            allowed = allowed + w
            d = d + F32(0.5) * w
        d = np.maximum(d, allowed)
        for o in self.orbits:
            d = np.maximum(d, F32(o.sp.wall_roof) - o.sdf(x, y, z))
            d = np.maximum(d, F32(2.5) - self.temporalis_sdf(x, y, z, o.s))
        return d.astype(F32)

    def nasal_sdf(self, x, y, z):
        w = 3.5 + 9.5 * np.clip((-5.0 - z) / 30.0, 0.0, 1.0)
        yfront = -12.0 - 14.0 * np.clip((-12.0 - z) / 15.0, 0.0, 1.0)
        d = _smax(np.abs(x) - w, yfront - y, y - 52.0, z - 6.0, -60.0 - z)
        for o in self.orbits:
            d = np.maximum(d, F32(1.0) - o.sdf(x, y, z))
        d = np.maximum(d, F32(1.5) - self.brain_sdf(x, y, z))
        d = np.maximum(d, self.head_sdf(x, y, z) + F32(self.an.skin + 1.0))
        return d.astype(F32)

    def maxillary_sdf(self, x, y, z, side):
        o = self.orbits[0 if side > 0 else 1]
        d = _ellipsoid(x - side * 27.0, y - 10.0, z + 30.0, 14.0, 17.0, 22.0)
        d = np.maximum(d, F32(o.sp.wall_floor) - o.sdf(x, y, z))
        d = np.maximum(d, F32(1.5) - self.nasal_sdf(x, y, z))
        d = np.maximum(d, self.bone_sdf(x, y, z) + F32(1.5))
        d = np.maximum(d, F32(3.0) - self.temporalis_sdf(x, y, z, side))
        return d.astype(F32)

    def ethmoid_sdf(self, x, y, z):
        d = _smax(np.abs(x) - 17.0, -8.0 - y, y - 33.0, z - 9.0, -13.0 - z, F32(3.9) - np.abs(x))
        if self.cl is not None:  # clinical variant: no straight box faces
            d = d + self._warp(x, y, z)
        for o in self.orbits:
            d = np.maximum(d, F32(o.sp.wall_medial) - o.sdf(x, y, z))
        d = np.maximum(d, F32(1.0) - self.brain_sdf(x, y, z))
        d = np.maximum(d, self.bone_sdf(x, y, z) + F32(2.0))
        return d.astype(F32)

    def frontal_sdf(self, x, y, z):
        an = self.an
        d = _ellipsoid(x, y - (an.face_depth + 10.0), z - 28.0, 20.0, 6.5, 12.0)
        if self.cl is not None:
            d = d + self._warp(x, y, z)
        d = np.maximum(d, F32(1.5) - self.brain_sdf(x, y, z))
        d = np.maximum(d, self.bone_sdf(x, y, z) + F32(1.5))
        for o in self.orbits:
            d = np.maximum(d, F32(1.5) - o.sdf(x, y, z))
        return d.astype(F32)

    def canal_sdf(self, x, y, z):
        d = _BIG
        for o in self.orbits:
            p0 = o.apex + 1.5 * o.e_ax
            p1 = o.apex + np.array([-o.s * 4.0, 9.0, 1.5])
            d = np.minimum(d, _capsule(x, y, z, p0, p1, 2.5))
        return d

    def sphenoid_sdf(self, x, y, z):
        d = _ellipsoid(x, y - 41.0, z + 5.0, 17.0, 16.0, 14.0)
        if self.cl is not None:
            d = d + F32(1.5) * self._warp(x, y, z)
        d = np.maximum(d, F32(1.2) - self.brain_sdf(x, y, z))
        d = np.maximum(d, F32(1.0) - self.canal_sdf(x, y, z))
        d = np.maximum(d, F32(1.5) - self.nasal_sdf(x, y, z))
        for o in self.orbits:
            d = np.maximum(d, F32(1.5) - o.sdf(x, y, z))
        return d.astype(F32)

    # ---- painting helpers ------------------------------------------------------
    def paint_fn(self, fn, lo, hi, value, coarse=True, label=None, texture=None):
        cv = self.cv
        sl = cv.bbox(lo, hi)
        if sl is None:
            return None
        d = cv.sdf(fn, sl, coarse=coarse)
        if texture is not None:
            value = value + self.tex(sl, texture[1])
        cv.paint(sl, d, value, label=label)
        return sl, d

    def paint_tube(self, pts, ht, hw, radial, value, label=None):
        sl, d = tube_sdf(self.cv, pts, ht, hw, radial)
        if sl is not None:
            self.cv.paint(sl, d, value, label=label)

    # ---- the whole head ---------------------------------------------------------
    def render(self):
        cv, hu, an = self.cv, self.hu, self.an
        W = an.head_width * an.head_scale
        # skin and subcutaneous fat
        sl_all = cv.full()
        d_head = cv.sdf(self.head_sdf, sl_all, coarse=True)
        cv.paint(sl_all, d_head, hu.soft)
        d_head += F32(an.skin)
        cv.paint(sl_all, d_head, hu.subcut_fat + self.tex(sl_all, 6.0))
        del d_head
        # skull: cortex with diploe inside where thick enough
        d_bone = cv.sdf(self.bone_sdf, sl_all, coarse=True)
        bone_tex = self.tex(sl_all, 0.12)
        cv.paint(sl_all, d_bone, hu.cortical * (1.0 + bone_tex))
        d_bone += F32(1.6)
        cv.paint(sl_all, d_bone, hu.diploe * (1.0 + bone_tex))
        del d_bone, bone_tex
        # temporalis muscles in the temporal fossae
        for s in (1, -1):
            x0 = s * (W - 15.0)
            self.paint_fn(lambda x, y, z, s=s: self.temporalis_sdf(x, y, z, s),
                          (x0 - 13, -3, -40), (x0 + 13, 51, 55), hu.soft + 4.0, texture=(3.0, 3.0))
        # zygomatic arches
        for s in (1, -1):
            p0 = np.array([s * W * 0.74, -2.0, -19.0])
            p1 = np.array([s * W * 0.86, 26.0, -21.0])
            cap = lambda x, y, z, p0=p0, p1=p1: np.maximum(  # noqa: E731
                _capsule(x, y, z, p0, p1, 4.0), self.head_sdf(x, y, z, nose=False) + F32(self.scalp - 1.0))
            r = self.paint_fn(cap, np.minimum(p0, p1) - 5, np.maximum(p0, p1) + 5, hu.cortical)
            if r is not None:
                cv.paint(r[0], r[1] + F32(1.5), hu.diploe)
        if self.cl is not None:
            self._deep_face()
        # brain: CSF rim, then parenchyma with texture
        r = self.paint_fn(self.brain_sdf, (-W, -40, -75), (W, 160, 125), hu.csf)
        if r is not None:
            sl, d = r
            d += F32(1.5 if self.cl is None else self.cl.csf_rim)
            cv.paint(sl, d, hu.brain + self.tex(sl, 2.5 if self.cl is None else 5.0))
        # pituitary in the sella and the cavernous sinuses beside it (soft tissue)
        for c, ax in (((0.0, 57.0, 0.0), (6.0, 5.0, 4.0)), ((13.0, 50.0, 0.0), (4.5, 9.0, 6.0)),
                      ((-13.0, 50.0, 0.0), (4.5, 9.0, 6.0))):
            c = np.asarray(c)
            e = lambda x, y, z, c=c, ax=ax: _ellipsoid(x - F32(c[0]), y - F32(c[1]), z - F32(c[2]), *ax)  # noqa: E731
            self.paint_fn(e, c - np.asarray(ax), c + np.asarray(ax), hu.soft + self._enhance("vessel"), coarse=False)
        # sinuses: mucosa lining, then air
        muc = an.sinus_mucosa
        self._sinus(self.frontal_sdf, (-22, an.face_depth - 2, 14), (22, an.face_depth + 20, 42), muc[0])
        self._sinus(self.sphenoid_sdf, (-16, 30, -20), (16, 60, 8), muc[3], septum=(an.septum_shift * 1.5, 0.8))
        self._sinus(self.nasal_sdf, (-14, -30, -62), (14, 54, 8), 0.7)
        self._nasal_septum_and_turbinates()
        self._sinus(self.ethmoid_sdf, (-18, -9, -14), (18, 34, 10), muc[1] * 0.5, ethmoid=True)
        for s in (1, -1):
            self._sinus(lambda x, y, z, s=s: self.maxillary_sdf(x, y, z, s),
                        (s * 27 - 15, -8, -55), (s * 27 + 15, 28, -5), muc[2])
        if self.cl is not None:
            self._clinical_extras()
        # orbits
        lab = None
        for o in self.orbits:
            lo, hi = o.bbox(margin=3.0)
            sl = cv.bbox(lo, hi)
            if sl is not None:
                lab = sl if lab is None else tuple(
                    slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(lab, sl))
        if lab is not None:
            n = self.n_sub
            z0, z1 = (lab[0].start // n) * n, min(-(-lab[0].stop // n) * n, cv.shape[0])
            cv.set_label_region((slice(z0, z1), lab[1], lab[2]))
        for o in self.orbits:
            self._orbit_contents(o)
        for o in self.orbits:
            self._labelled(o)
        return self._image_formation()

    def _sinus(self, fn, lo, hi, mucosa, septum=None, ethmoid=False):
        cv, hu = self.cv, self.hu
        r = self.paint_fn(fn, lo, hi, hu.mucosa + self._enhance("mucosa"))
        if r is None:
            return
        sl, d = r
        d += F32(mucosa)
        cv.paint(sl, d, hu.air + 15.0)
        if septum is not None:
            xs, t = septum
            x, y, z = cv.coords(sl)
            ds = np.maximum(np.abs(x - F32(xs)) - F32(t / 2), d)
            cv.paint(sl, ds, hu.cortical * 0.9)
        if ethmoid and self.cl is not None:
            self._honeycomb(sl, d)
        elif ethmoid:
            # air cells: Voronoi cells separated by thin bony septa
            # seeded by the anatomy only, so a follow-up scan shows the same cells
            rng = np.random.default_rng([self.an.ethmoid_cells, int(abs(self.an.septum_shift) * 1e6)])
            n = self.an.ethmoid_cells
            seeds = np.column_stack([
                rng.choice([-1, 1], n) * rng.uniform(6.0, 14.0, n),
                rng.uniform(-7.0, 32.0, n),
                rng.uniform(-12.0, 8.0, n),
            ])
            x, y, z = cv.coords(sl)
            d1 = np.full(x.shape, _BIG, F32)
            d2 = np.full(x.shape, _BIG, F32)
            for sd in seeds:
                dd = np.sqrt((x - F32(sd[0])) ** 2 + (y - F32(sd[1])) ** 2 + (z - F32(sd[2])) ** 2)
                np.minimum(d2, np.maximum(d1, dd), out=d2)
                np.minimum(d1, dd, out=d1)
            wall = (d2 - d1) * F32(0.5) - F32(0.2)
            cv.paint(sl, np.maximum(wall, d - F32(0.3)), hu.cortical * 0.9)

    def _nasal_septum_and_turbinates(self):
        cv, hu, an = self.cv, self.hu, self.an
        sl = cv.bbox((-14, -30, -62), (14, 54, 8))
        if sl is None:
            return
        x, y, z = cv.coords(sl)
        d_nasal = cv.sdf(self.nasal_sdf, sl, coarse=True)
        xs = F32(an.septum_shift) * np.sin(np.pi * np.clip((6.0 - z) / 55.0, 0.0, 1.0))
        if self.cl is not None:  # clinical variant: a septum that bends and spurs
            xs = xs + F32(0.8) * self._warp(F32(0.0) * x, y, z)
        dsep = np.maximum(np.abs(x - xs) - F32(1.0), d_nasal - F32(1.0))
        dsep = np.maximum(dsep, y - F32(45.0))
        bony = z > -28.0
        cv.paint(sl, dsep, np.where(bony, F32(hu.cortical * 0.7), F32(hu.soft + 20.0)))
        w = lambda zz: 3.5 + 9.5 * np.clip((-5.0 - zz) / 30.0, 0.0, 1.0)  # noqa: E731
        for zt, r in ((-16.0, 3.2), (-31.0, 4.5)):
            for s in (1, -1):
                p0 = np.array([s * (w(zt) - 0.6 * r), -6.0, zt])
                p1 = np.array([s * (w(zt) - 0.6 * r), 40.0, zt - 3.0])
                cap = lambda x, y, z, p0=p0, p1=p1, r=r: _capsule(x, y, z, p0, p1, r)  # noqa: E731
                dt = np.maximum(cv.sdf(cap, sl, coarse=True), d_nasal)
                cv.paint(sl, dt, hu.mucosa + 15.0 + self._enhance("mucosa"))

    def _orbit_contents(self, o: Orbit):
        cv, hu, an = self.cv, self.hu, self.an
        s = o.s
        lo, hi = o.bbox(margin=2.0)
        soft = hu.soft
        # the orbital septum: fat behind the rim plane, lids / orbicularis (soft tissue) in front
        ax = o.e_ax.astype(F32)

        def depth(x, y, z):
            return (x - F32(o.apex[0])) * ax[0] + (y - F32(o.apex[1])) * ax[1] + (z - F32(o.apex[2])) * ax[2]

        septum = o.L + 1.0
        fn = lambda x, y, z: _smax(o.sdf(x, y, z), self.head_sdf(x, y, z) + F32(an.skin + 1.0),  # noqa: E731
                                   depth(x, y, z) - F32(septum))
        fn_pre = lambda x, y, z: _smax(o.sdf(x, y, z), self.head_sdf(x, y, z),  # noqa: E731
                                       F32(septum) - depth(x, y, z))
        self.paint_fn(fn_pre, lo, hi, soft - 5.0, texture=(1.5, 8.0))
        self.paint_fn(fn, lo, hi, hu.fat, texture=(1.5, 7.0))
        # optic canal (nerve inside, unlabelled) and superior orbital fissure
        p0 = o.apex - 1.0 * o.e_ax
        p1 = o.apex + np.array([-s * 4.0, 9.0, 1.5])
        p2 = np.array([s * 6.0, 50.0, 8.0])  # towards the chiasm
        self.paint_tube([p0, p1], [2.4, 2.4], [2.4, 2.4], [o.e_up, o.e_up], soft + 8.0)
        self.paint_tube([p0, p1, p2], [1.8, 1.8, 1.7], [1.8, 1.8, 1.7], [o.e_up] * 3, soft + o.sp.nerve_radius)
        f0 = o.apex + 1.5 * o.e_ax + 4.0 * o.e_lat + 3.0 * o.e_up
        f1 = o.apex + np.array([s * 9.0, 9.0, 2.0])
        self.paint_tube([f0, f1], [1.2, 1.2], [3.0, 3.0], [o.e_lat, o.e_lat], soft)
        # eyelids (soft tissue over the front of the globe, open palpebral fissure)
        R = o.R
        gl = (o.G - (R + 6), o.G + (R + 6))
        sl = cv.bbox(*gl)
        if sl is not None:
            u, v, w = cv.coords(sl, frame=(o.G, o.R_g))
            rr = np.sqrt(u * u + v * v + w * w)
            shell = np.maximum(rr - F32(R * o.ar + 3.5), F32(R + 0.2) - rr)
            fis = F32(4.5) - F32(0.015) * u * u - np.abs(v)
            d = _smax(shell, F32(R * 0.2) - w, fis)
            cv.paint(sl, d, soft)
            # medial and lateral canthal tissue
            for side_dir, ang in ((-1.0, 62.0), (1.0, 70.0)):
                c = o.globe_point(ang, side_dir * o.e_glat, R + 1.8)
                c_loc = o.R_g @ (c - o.G)
                de = _ellipsoid(u - F32(c_loc[0]), v - F32(c_loc[1]), w - F32(c_loc[2]), 3.0, 3.5, 3.0)
                cv.paint(sl, de, soft)
        # lacrimal gland: superotemporal, flattened against the wall
        n = _unit(0.65 * o.e_gup + 0.75 * o.e_glat)
        c = o.G + (R + 4.0) * n + 1.0 * o.e_g
        rot = np.stack([n, _unit(np.cross(o.e_g, n)), o.e_g])
        k = o.sp.lacrimal_size
        sl = cv.bbox(c - 12 * k, c + 12 * k)
        if sl is not None:
            u, v, w = cv.coords(sl, frame=(c, rot))
            cv.paint(sl, _ellipsoid(u, v, w, 2.8 * k, 9.0 * k, 6.0 * k), soft + 2.0 + self._enhance("muscle"))
        # superior ophthalmic vein: trochlea region -> under SR -> superior orbital fissure
        v0 = o.point(0.93, 125.0, 5.0)
        v1 = o.point(0.6, 95.0, 6.5)
        v2 = o.point(0.3, 70.0, 3.0)
        v3 = f0
        pts = _catmull_rom([v0, v1, v2, v3], 5)
        r = o.sp.sov_radius
        self.paint_tube(pts, [r] * len(pts), [r] * len(pts), [o.e_up] * len(pts), soft + 5.0 + self._enhance("vessel"))

    def _muscle_path(self, o: Orbit, name: str):
        """Centre line, half-thickness, half-width and radial direction of one muscle."""
        sp = o.sp
        idx = MUSCLES.index(name)
        hb, wb = sp.muscle_belly[idx], sp.muscle_width[idx]
        R = o.R
        phis = {"LR": 0.0, "SR": 90.0, "MR": 180.0, "IR": 270.0}
        gdir = {"LR": o.e_glat, "SR": o.e_gup, "MR": -o.e_glat, "IR": -o.e_gup}
        # insertion distance behind the limbus (Tillaux spiral) and tendon length
        ins = {"MR": 5.5, "IR": 6.5, "LR": 6.9, "SR": 7.7}
        tendon = {"MR": 3.7, "IR": 5.5, "LR": 8.8, "SR": 5.8}
        th_limbus = math.degrees(math.asin(min(5.8 / R, 0.9)))
        gap = 1.0
        if name in phis:
            phi = phis[name]
            ring = o.apex + 2.0 * o.e_ax + 3.8 * (math.cos(math.radians(phi)) * o.e_lat
                                                  + math.sin(math.radians(phi)) * o.e_up)
            b1 = o.point(0.38, phi, hb * 0.8 + gap)
            b2 = o.point(0.68, phi, hb + gap)
            th_ins = th_limbus + math.degrees(ins[name] / R)
            tang = o.globe_point(98.0, gdir[name], R + 0.5)
            wrap = o.globe_point(0.5 * (98.0 + th_ins), gdir[name], R + 0.4)
            insp = o.globe_point(th_ins, gdir[name], R + 0.2)
            ctrl = [ring, b1, b2, tang, wrap, insp]
            pts = _catmull_rom(ctrl, 6)
            sig = _arc_fraction(pts)
            total = float(np.sum(np.linalg.norm(np.diff(pts, axis=0), axis=1)))
            s_t = 1.0 - min(tendon[name] / total, 0.4)
            ht = _profile(sig, 0.9, hb, 0.45, 0.55 * s_t, s_t)
            hw = np.interp(sig, [0.0, 0.3, s_t, 1.0], [2.2, wb, wb, 5.0])
            radial = [math.cos(math.radians(phi)) * o.e_lat + math.sin(math.radians(phi)) * o.e_up] * len(pts)
            return [(pts, ht, np.maximum(hw, ht), radial)]
        if name == "LPS":
            ring = o.apex + 1.5 * o.e_ax + 6.0 * o.e_up
            b1 = o.point(0.5, 92.0, 0.6 + hb)
            b2 = o.point(0.85, 92.0, 0.8)
            lid = o.globe_point(38.0, o.e_gup, R + 3.0)
            pts = _catmull_rom([ring, b1, b2, lid], 6)
            sig = _arc_fraction(pts)
            ht = _profile(sig, 0.6, hb, 0.35, 0.45, 0.8)
            hw = np.interp(sig, [0.0, 0.4, 0.8, 1.0], [2.0, wb, wb + 1.5, wb + 3.0])
            radial = [o.e_up] * len(pts)
            return [(pts, ht, np.maximum(hw, ht), radial)]
        if name == "SO":
            phi = 135.0
            ring = o.apex + 2.0 * o.e_ax + 4.5 * _unit(-o.e_lat + o.e_up)
            b1 = o.point(0.45, phi, hb + 0.8)
            b2 = o.point(0.78, phi, 2.0)
            troch = o.point(0.97, phi, 2.5)
            pts = _catmull_rom([ring, b1, b2, troch], 6)
            sig = _arc_fraction(pts)
            ht = _profile(sig, 0.8, hb, 0.7, 0.45, 0.75)
            hw = np.maximum(_profile(sig, 1.5, wb, 1.1, 0.45, 0.75), ht)
            radial = [_unit(-o.e_lat + o.e_up)] * len(pts)
            # reflected tendon under the superior rectus to the posterior superotemporal globe
            mid = o.globe_point(75.0, _unit(o.e_gup + 0.4 * o.e_glat), R + 1.8)
            insp = o.globe_point(108.0, _unit(0.75 * o.e_gup + 0.65 * o.e_glat), R + 0.2)
            pts2 = _catmull_rom([troch, mid, insp], 6)
            n2 = len(pts2)
            ht2 = np.full(n2, 0.6)
            hw2 = np.linspace(1.0, 2.6, n2)
            rad2 = [o.e_gup] * n2
            return [(pts, ht, hw, radial), (pts2, ht2, hw2, rad2)]
        if name == "IO":
            origin = o.point(0.95, 235.0, 1.5)
            mid = o.globe_point(92.0, -o.e_gup + 0.2 * o.e_glat, R + 1.6 + hb)
            insp = o.globe_point(122.0, _unit(0.9 * o.e_glat - 0.35 * o.e_gup), R + 0.2)
            pts = _catmull_rom([origin, mid, insp], 7)
            sig = _arc_fraction(pts)
            ht = _profile(sig, 0.8, hb, 0.5, 0.5, 0.85)
            hw = np.maximum(_profile(sig, 2.0, wb, 3.0, 0.5, 0.85), ht)
            radial = [-o.e_gup] * len(pts)
            return [(pts, ht, hw, radial)]
        raise KeyError(name)

    def _labelled(self, o: Orbit):
        cv, hu = self.cv, self.hu
        sp = o.sp
        m_hu = hu.soft + hu.muscle_offset + self._enhance("muscle")
        for name in MUSCLES:
            tex = self.rng.normal(0.0, 1.5)
            for pts, ht, hw, radial in self._muscle_path(o, name):
                self.paint_tube(pts, ht, hw, radial, m_hu + tex, label=MUSCLE_LABEL)
        # optic nerve: posterior globe (nasal of the pole) -> apex, S-curved (slack)
        start = o.globe_point(168.0, _unit(-o.e_glat - 0.3 * o.e_gup), o.R - 0.5)
        end = o.apex + 0.3 * o.e_ax
        axis = end - start
        L = float(np.linalg.norm(axis))
        e = axis / L
        h = _unit(np.cross(e, [0.0, 0.0, 1.0]))
        vdir = _unit(np.cross(h, e))
        sig = np.linspace(0.0, 1.0, 25)
        offs = (sp.nerve_slack * np.sin(2 * np.pi * sig + sp.nerve_phase) * np.sin(np.pi * sig))[:, None] * h \
            - (sp.nerve_sag * np.sin(np.pi * sig))[:, None] * vdir
        pts = start + sig[:, None] * axis + offs
        r = sp.nerve_radius * (1.0 + 0.18 * np.clip(1.0 - sig / 0.35, 0.0, 1.0)) * (1.0 - 0.12 * sig)
        self.paint_tube(pts, r, r, [vdir] * len(pts), hu.soft + hu.nerve_offset, label=NERVE)
        # globe: sclera, vitreous/aqueous, lens, cornea (all label 1)
        R, ar = o.R, o.ar
        sl = cv.bbox(o.G - (R + 3), o.G + (R + 3))
        if sl is None:
            return
        u, v, w = cv.coords(sl, frame=(o.G, o.R_g))
        d_sc = _ellipsoid(u, v, w, R, R, R * ar)
        rc = 7.8
        wc = R * ar + 1.0 - rc
        d_co = np.sqrt(u * u + v * v + (w - F32(wc)) ** 2) - F32(rc)
        d_globe = np.minimum(d_sc, d_co)
        cv.paint(sl, d_globe, hu.sclera, label=EYEBALL)
        d_in = np.minimum(d_sc + F32(1.0), d_co + F32(0.6))
        side = 0 if o.s > 0 else 1
        oil = self.cl is not None and self.cl.silicone[side]
        cv.paint(sl, d_in, self.cl.silicone_hu if oil else hu.vitreous, label=EYEBALL)
        wl = R * ar + 1.0 - 3.3 - 2.0
        if self.cl is not None and self.cl.iol[side]:
            # pseudophakia: the capsular bag holds aqueous and a thin dense acrylic disc (still the eyeball)
            cv.paint(sl, _ellipsoid(u, v, w - F32(wl), 4.6, 4.6, 2.0), hu.vitreous, label=EYEBALL)
            cv.paint(sl, _ellipsoid(u, v, w - F32(wl), 3.0, 3.0, 0.5), _IOL_HU, label=EYEBALL)
        else:
            cv.paint(sl, _ellipsoid(u, v, w - F32(wl), 4.6, 4.6, 2.0), hu.lens, label=EYEBALL)

    # ---- the clinical variant (issue 20; PatientParams.clinical) ---------------------------
    @property
    def cl(self):
        """The clinical variant's parameters, or None for the default cohort."""
        return getattr(self.p, "clinical", None)

    def _enhance(self, what: str) -> float:
        """HU that contrast adds to ``what`` ("muscle", "vessel", "mucosa"); 0 without contrast."""
        return 0.0 if self.cl is None else float(getattr(self.cl, f"enhance_{what}"))

    def _warp(self, x, y, z):
        """Low-frequency irregularity (mm, amplitude ``warp_amplitude``) for the skull base surfaces."""
        if getattr(self, "_warp_waves", None) is None:
            rng = np.random.default_rng(self.cl.warp_seed)
            k = rng.standard_normal((7, 3))
            k /= np.linalg.norm(k, axis=1, keepdims=True)
            k *= (2 * np.pi / rng.uniform(12.0, 35.0, 7))[:, None]
            amp = rng.uniform(0.5, 1.0, 7)
            amp *= self.cl.warp_amplitude / amp.sum() * 1.6
            self._warp_waves = (k.astype(F32), rng.uniform(0, 2 * np.pi, 7).astype(F32), amp.astype(F32))
        k, ph, amp = self._warp_waves
        out = np.zeros(np.broadcast(x, y, z).shape, dtype=F32)
        for i in range(len(amp)):
            out += amp[i] * np.sin(x * k[i, 0] + y * k[i, 1] + z * k[i, 2] + ph[i])
        return out

    def _honeycomb(self, sl, d):
        """Ethmoid air cells as a honeycomb: many small Voronoi cells of uneven size, septa of uneven
        thickness, some cells partly filled with mucosa."""
        cv, hu = self.cv, self.hu
        rng = np.random.default_rng(self.cl.ethmoid_seed)
        n = int(rng.integers(30, 55))
        seeds = np.column_stack([
            rng.choice([-1, 1], n) * rng.uniform(4.5, 17.0, n),
            rng.uniform(-8.0, 33.0, n),
            rng.uniform(-13.0, 9.0, n),
        ]).astype(F32)
        thick = rng.uniform(0.12, 0.35, n).astype(F32)
        x, y, z = cv.coords(sl)
        d1 = np.full(x.shape, _BIG, F32)
        d2 = np.full(x.shape, _BIG, F32)
        owner = np.zeros(x.shape, np.int16)
        for i, sd in enumerate(seeds):
            dd = np.sqrt((x - sd[0]) ** 2 + (y - sd[1]) ** 2 + ((z - sd[2]) * F32(0.8)) ** 2)
            np.minimum(d2, np.maximum(d1, dd), out=d2)
            closer = dd < d1
            owner[closer] = i
            np.minimum(d1, dd, out=d1)
        wall = (d2 - d1) * F32(0.5) - thick[owner]
        cv.paint(sl, np.maximum(wall, d - F32(0.3)), hu.cortical * 0.85)
        filled = rng.random(n) < 0.12  # a few cells with thickened mucosa
        if filled.any():
            cv.paint(sl, np.maximum(np.where(filled[owner], F32(-1.0), F32(1.0)) * 2.0, np.maximum(d, -wall - 1.2)),
                     hu.mucosa + self._enhance("mucosa"))

    def _deep_face(self):
        """Soft tissue instead of solid bone below the palate and behind the maxilla (tongue, pterygoid and
        masseter muscles, with parapharyngeal fat): only seen when a scan reaches the teeth."""
        an, hu = self.an, self.hu
        W = an.head_width * an.head_scale

        def inside(x, y, z):
            return self.bone_sdf(x, y, z) + F32(3.0)  # keep 3 mm of cortex under the scalp

        def fn(x, y, z):
            below_palate = z + F32(56.0)
            behind_maxilla = _smax(z + F32(30.0), F32(30.0) - y, y - F32(60.0))
            return np.maximum(inside(x, y, z), np.minimum(below_palate, behind_maxilla))

        self.paint_fn(fn, (-W, -40, -95), (W, 70, -25), hu.soft + 8.0, texture=(3.0, 6.0))
        for s in (1, -1):
            e = lambda x, y, z, s=s: np.maximum(  # noqa: E731
                _ellipsoid(x - F32(s * 20.0), y - F32(42.0), z + F32(48.0), 5.0, 9.0, 14.0), inside(x, y, z))
            self.paint_fn(e, (s * 20 - 6, 32, -63), (s * 20 + 6, 52, -33), hu.fat, texture=(1.5, 7.0))

    def _clinical_extras(self):
        """Dental arch with fillings, and an orbital floor fracture with herniated fat."""
        cv, hu, an, cl = self.cv, self.hu, self.an, self.cl
        k = an.head_scale
        xs = np.linspace(-27.0, 27.0, 12) * k
        arch = np.column_stack([xs, an.face_depth + 12.0 + 0.035 * xs * xs, np.full_like(xs, -55.0)])
        self.paint_tube(arch, [6.0] * len(xs), [5.0] * len(xs), [np.array([0.0, 0.0, 1.0])] * len(xs),
                        hu.cortical * 0.7)
        for p in arch[1:-1]:  # teeth (enamel and dentine)
            cap = lambda x, y, z, p=p: _capsule(x, y, z, p - [0, 0, 6.0], p + [0, 0, 4.0], 2.6)  # noqa: E731
            self.paint_fn(cap, p - 9, p + 9, 1800.0, coarse=False)
        for (x0, y0, z0, r) in cl.metal:
            c = np.array([x0, y0, z0])
            e = lambda x, y, z, c=c, r=r: _ellipsoid(x - F32(c[0]), y - F32(c[1]), z - F32(c[2]),  # noqa: E731
                                                     r, r, 0.7 * r)
            self.paint_fn(e, c - r - 1, c + r + 1, _METAL_HU, coarse=False)
        if cl.fracture:
            o = self.orbits[0 if cl.fracture > 0 else 1]
            sz = cl.fracture_size
            p = o.point(cl.fracture_t, 250.0, 0.0)
            c = p - 1.5 * o.e_up
            R = np.stack([o.e_lat, o.e_up, o.e_ax])
            sl = cv.bbox(c - 2 * sz, c + 2 * sz)
            if sl is not None:
                u, v, w = cv.coords(sl, frame=(c, R))
                dblob = _ellipsoid(u, v + F32(0.3 * sz) * (u / F32(sz)) ** 2, w, sz, 0.8 * sz, 1.3 * sz)
                x, y, z = cv.coords(sl)
                dblob = np.maximum(dblob, self.bone_sdf(x, y, z) + F32(1.0))
                cv.paint(sl, dblob, hu.fat + self.tex(sl, 7.0))

    def _metal_streaks(self, img: np.ndarray) -> None:
        """Radial streaks from metal (values above 3000 HU) in each slice, in place: lines through each
        metal piece at random angles with random signed amplitude (the filtered back-projection of
        inconsistent views), and a dark band along the line joining two pieces (beam hardening)."""
        cl, sp = self.cl, self.sc.spacing_xy
        if not cl.metal:
            return
        rng = np.random.default_rng(self.sc.noise_seed + 1)
        nz, ny, nx = img.shape
        jj = np.arange(ny, dtype=F32)[:, None]
        ii = np.arange(nx, dtype=F32)[None, :]
        for kz in range(nz):
            mask = img[kz] > 3000.0
            if not mask.any():
                continue
            lab, nlab = ndimage.label(mask)
            idx = np.arange(1, nlab + 1)
            cents = ndimage.center_of_mass(mask, lab, idx)
            areas = ndimage.sum(mask, lab, idx) * sp * sp  # mm2
            streak = np.zeros((ny, nx), F32)
            for (cj, ci), area in zip(cents, areas):
                amp = 0.5 * cl.metal_streak * min(1.5, area / 10.0)
                r = np.sqrt((jj - cj) ** 2 + (ii - ci) ** 2) * F32(sp)
                fall = F32(1.0) / (F32(1.0) + r / F32(15.0))
                for th in rng.uniform(0, np.pi, 60):
                    dist = np.abs(-(ii - ci) * F32(np.sin(th)) + (jj - cj) * F32(np.cos(th))) * F32(sp)
                    streak += F32(amp * rng.normal()) * np.exp(-(dist / F32(0.9)) ** 2) * fall
            for a in range(len(cents)):
                for b in range(a + 1, len(cents)):
                    (ja, ia), (jb, ib) = cents[a], cents[b]
                    L = math.hypot(ja - jb, ia - ib)
                    if L < 1e-3:
                        continue
                    dist = np.abs((ii - ia) * F32((ja - jb) / L) - (jj - ja) * F32((ia - ib) / L)) * F32(sp)
                    amp = 0.8 * cl.metal_streak * min(1.0, (areas[a] + areas[b]) / 20.0)
                    ra = np.sqrt((jj - ja) ** 2 + (ii - ia) ** 2) + np.sqrt((jj - jb) ** 2 + (ii - ib) ** 2)
                    fall = F32(1.0) / (F32(1.0) + (ra * F32(sp) - F32(L * sp)) / F32(30.0))
                    streak -= F32(amp) * np.exp(-(dist / F32(2.0)) ** 2) * fall
            img[kz] += streak

    def _reconstruct_clinical(self, img: np.ndarray, labels: np.ndarray):
        """Metal streaks, then the kernel: the image through the kernel's MTF (Gaussian, with an
        unsharp-mask overshoot for sharp kernels) plus white noise filtered to the kernel's noise power
        spectrum (ramp x MTF^2), scaled to ``noise_sigma`` HU; ``(nz, ny, nx)`` int16 and the labels."""
        from scipy import fft as sfft

        cl, sc = self.cl, self.sc
        nz, ny, nx = img.shape
        self._metal_streaks(img)
        sp = sc.spacing_xy
        s2 = 2.0 * np.pi ** 2
        su = 2.2 * cl.mtf_sigma + 0.35

        def filters(fy, fx):
            f2 = fy * fy + fx * fx
            H = np.exp(-s2 * cl.mtf_sigma ** 2 * f2) * (1.0 + cl.overshoot * (1.0 - np.exp(-s2 * su * su * f2)))
            return H, np.sqrt(np.sqrt(f2)) * H

        H, N = filters(np.fft.fftfreq(ny, sp)[:, None], np.fft.rfftfreq(nx, sp)[None, :])
        _, Nfull = filters(np.fft.fftfreq(ny, sp)[:, None], np.fft.fftfreq(nx, sp)[None, :])
        N = N * (sc.noise_sigma / math.sqrt(float(np.mean(Nfull ** 2))))
        H, N = H.astype(np.complex64), N.astype(np.complex64)
        nrng = np.random.default_rng(sc.noise_seed)
        out = np.empty((nz, ny, nx), np.int16)
        for k0 in range(0, nz, 16):
            chunk = img[k0:k0 + 16]
            F = sfft.rfft2(chunk, workers=1)
            F *= H
            F += sfft.rfft2(nrng.standard_normal(chunk.shape, dtype=F32), workers=1) * N
            r = sfft.irfft2(F, s=(ny, nx), workers=1)
            np.clip(r, -1024.0, 3071.0, out=r)
            out[k0:k0 + 16] = np.rint(r)
        if sc.fov_pad != 0.0:
            jj, ii = np.ogrid[:ny, :nx]
            outside = (ii - (nx - 1) / 2.0) ** 2 + (jj - (ny - 1) / 2.0) ** 2 > (min(nx, ny) / 2.0) ** 2
            out[:, outside] = np.int16(sc.fov_pad)
            labels[:, outside] = 0
        return out, labels

    # ---- scanner -------------------------------------------------------------------
    def _image_formation(self):
        cv, sc = self.cv, self.sc
        n = self.n_sub
        nz = sc.n_slices
        _, ny, nx = cv.shape
        tail = self.cl.slice_tail_fwhm if self.cl is not None else 0.0
        if tail > 0:  # clinical4: the slice profile's tails, on the sub-slice grid (labels keep the plain box)
            dz = sc.slice_thickness / n
            cv.hu = ndimage.gaussian_filter1d(cv.hu, sigma=tail / 2.3548 / dz, axis=0, mode="nearest", truncate=3.0)
        img = cv.hu.reshape(nz, n, ny, nx).mean(axis=1, dtype=F32) if n > 1 else cv.hu
        cv.hu = None
        labels = np.zeros((nz, ny, nx), dtype=np.uint8)
        if cv.lab_sl is not None and cv.weights:
            zs, ys, xs = cv.lab_sl
            nzl = (zs.stop - zs.start) // n
            W = np.stack(cv.weights)  # (3, z, y, x)
            W = W[:, : nzl * n].reshape(3, nzl, n, W.shape[2], W.shape[3]).mean(axis=2)
            best = W.argmax(axis=0)
            lab = np.where(W.max(axis=0) > 0.5, best + 1, 0).astype(np.uint8)
            labels[zs.start // n: zs.start // n + nzl, ys, xs] = lab
        if self.cl is not None:
            return self._reconstruct_clinical(img, labels)
        # noise, then the point-spread function (in plane; the slice profile is the sub-slice
        # average above): the reconstruction kernel both blurs the anatomy and correlates the noise
        sig = sc.psf_fwhm / 2.3548 / sc.spacing_xy
        x = np.arange(-int(3.0 * sig + 0.5), int(3.0 * sig + 0.5) + 1)
        k1 = np.exp(-0.5 * (x / sig) ** 2)
        k1 /= k1.sum()
        gain = float(np.sum(k1 ** 2))  # std of blurred unit white noise = gain (2D: gain**0.5 squared)
        nrng = np.random.default_rng(sc.noise_seed)
        noise = nrng.standard_normal(img.shape, dtype=F32)
        noise *= F32(sc.noise_sigma / gain)
        img += noise
        del noise
        img = ndimage.gaussian_filter(img, sigma=(0.0, sig, sig), mode="nearest", truncate=3.0)
        np.clip(img, -1024.0, 3071.0, out=img)
        out = np.rint(img).astype(np.int16)
        if sc.fov_pad != 0.0:
            jj, ii = np.ogrid[:ny, :nx]
            rr = (ii - (nx - 1) / 2.0) ** 2 + (jj - (ny - 1) / 2.0) ** 2
            outside = rr > (min(nx, ny) / 2.0) ** 2
            out[:, outside] = np.int16(sc.fov_pad)
            labels[:, outside] = 0
        return out, labels


def _capsule(x, y, z, p0, p1, r):
    p0 = np.asarray(p0, float)
    p1 = np.asarray(p1, float)
    e = p1 - p0
    L2 = float(e @ e)
    qx, qy, qz = x - F32(p0[0]), y - F32(p0[1]), z - F32(p0[2])
    t = np.clip((qx * F32(e[0]) + qy * F32(e[1]) + qz * F32(e[2])) * F32(1.0 / L2), 0.0, 1.0)
    dx, dy, dz = qx - t * F32(e[0]), qy - t * F32(e[1]), qz - t * F32(e[2])
    return (np.sqrt(dx * dx + dy * dy + dz * dz) - F32(r)).astype(F32)


def render_tilted(params: PatientParams, tilt_deg: float) -> tuple[Volume, Volume, np.ndarray]:
    """The scan as a CT with its gantry tilted ``tilt_deg`` acquires it (for DICOM series): slices whose rows
    run along +x and whose columns are tilted about the left-right axis, stacked along the table (+z), each
    ``slice_thickness`` thick along its normal; the scan's direction kind is ignored (axial).

    Returns
    -------
    (ct, labels, positions) : int16 CT and uint8 labels ``(n_slices, ny, nx)`` on the slices, their Volume
        geometry giving rows, columns and pixel spacing (third axis the slices' normal), and each slice's
        ImagePositionPatient ``(n_slices, 3)``, as ``io.dicom.write_dicom_series(..., positions=)`` takes.
    """
    scene = _Scene(params)
    sc = params.scan
    t = math.radians(tilt_deg)
    row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, math.cos(t), math.sin(t)])
    step = sc.slice_thickness / math.cos(t)  # table feed per slice: contiguous along the slices' normal
    nx, ny = sc.matrix
    nz, n = sc.n_slices, scene.n_sub
    M = np.column_stack([row * sc.spacing_xy, col * sc.spacing_xy, [0.0, 0.0, step]])
    origin = -M @ ((np.array([nx, ny, nz]) - 1) / 2.0)
    Rh = head_rotation_matrix(*sc.head_rotation)
    A = Rh.T @ M @ np.diag([1.0, 1.0, 1.0 / n])
    b = Rh.T @ (origin + M @ np.array([0.0, 0.0, 0.5 / n - 0.5])) + np.asarray(sc.head_offset, float)
    cv = scene.cv
    scene.cv = Canvas(A, b, cv.shape, edge=cv.edge, coarse=cv.coarse, background=scene.hu.air)
    ct, labels = scene.render()
    geom = Geometry((nx, ny, nz), (sc.spacing_xy, sc.spacing_xy, sc.slice_thickness), tuple(origin),
                    np.column_stack([row, col, np.cross(row, col)]))
    positions = origin[None, :] + np.arange(nz)[:, None] * np.array([0.0, 0.0, step])
    return Volume(ct, geom), Volume(labels, geom), positions


def render_patient(params: PatientParams) -> tuple[Volume, Volume]:
    """The CT (int16 HU) and its labels (uint8, 0..3) on the same grid."""
    scene = _Scene(params)
    ct, labels = scene.render()
    geom = scene.geometry
    return Volume(ct, geom), Volume(labels, geom)
