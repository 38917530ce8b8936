"""Where the labeling page looks: the orbits of a scan as slice indices and a frame to zoom onto.

The page opens a case at the orbits (not the middle slice, which in a head CT is the brain) and draws
SmartPencil borders only around them.  The orbits come from the orbit finder of prediction
(:func:`orbitseg.preprocess.voi.locate_orbits`, boxes converted to :class:`OrbitExtent` by the caller,
which knows the geometry) or, when the finder fails, from labelled structures
(:func:`extents_from_labels`).  :func:`orbit_frame` turns them into the slices to open and the region to
frame.  Indices are those of the canonical (LPS) array ``(k, j, i)``: ``k`` axial slice (inferior ->
superior), ``j`` row (anterior -> posterior), ``i`` column (patient right -> left).  No files, no server.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ._common import check_spacing

#: HU below which a pixel is air: no superpixel borders are drawn there
AIR_HU: float = -500.0
#: HU above which a pixel is bone (or metal): no borders there either (no structure to label is that dense;
#: the edge of the orbit wall is still drawn, on the soft-tissue side)
BONE_HU: float = 500.0
#: HU range of orbital fat: the orbit's contents (muscles, nerve, globe) all lie next to it, the brain does not
FAT_HU: tuple[float, float] = (-200.0, -30.0)
#: superpixel borders are drawn up to this far (mm) from orbital fat ...
NEAR_FAT_MM: float = 6.0
#: ... and inside a ball of this radius (mm) around each orbit's centre (the globe: radius 8.5-15 mm)
GLOBE_BALL_MM: float = 15.0
#: frame margin (mm) around the orbit finder's boxes (they already hold the whole orbit and a margin)
FINDER_MARGIN_MM: float = 3.0
#: frame margin (mm) around labelled structures (tight boxes: leave room for what is not labelled yet)
LABEL_MARGIN_MM: float = 10.0
#: a gap of at least this many mm between labelled columns separates the right orbit from the left
SIDE_GAP_MM: float = 5.0


@dataclass(frozen=True)
class OrbitExtent:
    """One orbit in canonical index space.

    Attributes
    ----------
    side : "right" or "left" (the patient's)
    centre : (k, j, i) float index of the orbit's landmark (the globe centre)
    lo, hi : (k, j, i) int index range of the orbit, ``hi`` exclusive
    """

    side: str
    centre: tuple[float, float, float]
    lo: tuple[int, int, int]
    hi: tuple[int, int, int]


@dataclass(frozen=True)
class OrbitFrame:
    """The view of the orbits of one scan.

    Attributes
    ----------
    source : "finder" (the orbit finder of prediction) or "labels" (labelled structures)
    centre : (k, j, i) int: the axial slice through the orbits, the coronal slice through the globes,
        the sagittal slice through the right globe (the left one when only that side is known)
    lo, hi : (k, j, i) int: the region to frame (every orbit plus a margin, clipped to the scan;
        ``hi`` exclusive)
    orbits : the orbits it was made from, right first, each grown by the margin and clipped to the scan:
        superpixel borders are drawn inside them (:meth:`border_boxes`)
    """

    source: str
    centre: tuple[int, int, int]
    lo: tuple[int, int, int]
    hi: tuple[int, int, int]
    orbits: tuple[OrbitExtent, ...]

    def crosses(self, k: int) -> bool:
        """Whether axial slice ``k`` passes through an orbit."""
        return any(o.lo[0] <= k < o.hi[0] for o in self.orbits)

    def border_region(self, image_hu_slice, k: int, spacing) -> np.ndarray:
        """Where superpixel borders help on axial slice ``k``: inside an orbit's box, within
        :data:`NEAR_FAT_MM` of orbital fat or inside the ball of :data:`GLOBE_BALL_MM` around the orbit's
        centre (so not in the brain behind a box's front), and in soft tissue (:func:`soft_tissue`).

        Parameters
        ----------
        image_hu_slice : (ny, nx) HU of canonical axial slice ``k``
        spacing : (sz, sy, sx) mm

        Returns
        -------
        (ny, nx) bool
        """
        img = np.asarray(image_hu_slice)
        sp = check_spacing(spacing, 3)
        ny, nx = img.shape
        box = np.zeros(img.shape, bool)
        ball = np.zeros(img.shape, bool)
        rr = np.arange(ny)[:, None] * sp[1]
        cc = np.arange(nx)[None, :] * sp[2]
        for o in self.orbits:
            if not o.lo[0] <= k < o.hi[0]:
                continue
            box[o.lo[1]:o.hi[1], o.lo[2]:o.hi[2]] = True
            dz = (k - o.centre[0]) * sp[0]
            ball |= (rr - o.centre[1] * sp[1]) ** 2 + (cc - o.centre[2] * sp[2]) ** 2 + dz ** 2 <= GLOBE_BALL_MM ** 2
        if not box.any():
            return box
        fat = box & (img >= FAT_HU[0]) & (img <= FAT_HU[1])
        near = ndi.distance_transform_edt(~fat, sampling=sp[1:]) <= NEAR_FAT_MM if fat.any() else fat
        return box & (near | ball) & soft_tissue(img)

    def to_dict(self) -> dict:
        """JSON-ready: ``{"source", "centre", "lo", "hi", "orbits": [{"side", "centre", "lo", "hi"}]}``."""
        return {"source": self.source, "centre": list(self.centre), "lo": list(self.lo), "hi": list(self.hi),
                "orbits": [{"side": o.side, "centre": [round(float(v), 2) for v in o.centre],
                            "lo": list(o.lo), "hi": list(o.hi)} for o in self.orbits]}



def orbit_frame(orbits, shape, spacing, *, margin_mm: float = FINDER_MARGIN_MM, source: str = "finder") -> OrbitFrame:
    """The slices and the region that show ``orbits`` (one or two :class:`OrbitExtent`).

    Parameters
    ----------
    orbits : sequence of OrbitExtent
        One per side found (at least one).
    shape : (nz, ny, nx)
        The canonical array's shape.
    spacing : (sz, sy, sx)
        Voxel size in mm (the margin is in mm).
    margin_mm : float
        Added on every side of the union of the orbits before clipping to the scan.
    """
    orbits = tuple(sorted(orbits, key=lambda o: o.side != "right"))
    if not orbits:
        raise ValueError("orbit_frame needs at least one orbit")
    shape = np.asarray(shape, dtype=int).reshape(-1)
    if shape.size != 3 or np.any(shape < 1):
        raise ValueError(f"shape must be (nz, ny, nx) of a non-empty volume, got {tuple(shape)}")
    sp = check_spacing(spacing, 3)
    if not margin_mm >= 0:
        raise ValueError(f"margin_mm must be >= 0, got {margin_mm!r}")
    m = np.ceil(margin_mm / sp).astype(int)

    def grown(lo, hi):
        lo, hi = np.clip(np.asarray(lo) - m, 0, shape - 1), np.clip(np.asarray(hi) + m, 1, shape)
        return tuple(int(v) for v in lo), tuple(int(v) for v in np.maximum(hi, lo + 1))

    boxes = [grown(o.lo, o.hi) for o in orbits]
    lo, hi = np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)
    centres = np.array([o.centre for o in orbits], dtype=float)
    k, j = np.round(centres[:, :2].mean(axis=0)).astype(int)
    i = int(round(centres[0, 2]))  # right globe first
    centre = np.clip([k, j, i], 0, shape - 1)
    return OrbitFrame(source, tuple(int(v) for v in centre), tuple(int(v) for v in lo), tuple(int(v) for v in hi),
                      tuple(OrbitExtent(o.side, o.centre, *b) for o, b in zip(orbits, boxes)))


def extents_from_labels(labels, spacing) -> list[OrbitExtent]:
    """The orbits a canonical label volume ``(nz, ny, nx)`` shows (empty when it holds no structure).

    Labelled columns are split into the two sides at the widest gap of unlabelled columns when it is
    at least :data:`SIDE_GAP_MM` wide (canonical columns run patient right -> left); one block of columns
    is one orbit, on the side of the image half its centre lies in.  Each orbit's centre is the centroid
    of its eyeball (label 1), or of all its labels when it has no eyeball.
    """
    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise ValueError(f"labels must be a 3-D (nz, ny, nx) array, got {lab.ndim}-D")
    sp = check_spacing(spacing, 3)
    fg = lab > 0
    cols = np.flatnonzero(fg.any(axis=(0, 1)))
    if cols.size == 0:
        return []
    gaps = np.diff(cols)
    w = int(np.argmax(gaps)) if gaps.size else 0
    if gaps.size and (gaps[w] - 1) * sp[2] >= SIDE_GAP_MM:
        blocks = [(cols[0], cols[w]), (cols[w + 1], cols[-1])]
        sides = ["right", "left"]
    else:
        blocks = [(cols[0], cols[-1])]
        sides = ["right" if (cols[0] + cols[-1]) / 2 < lab.shape[2] / 2 else "left"]
    out = []
    for (c0, c1), side in zip(blocks, sides):
        part = np.zeros_like(fg)
        part[:, :, c0:c1 + 1] = fg[:, :, c0:c1 + 1]
        box = ndi.find_objects(part.astype(np.uint8))[0]
        eye = part & (lab == 1)
        centre = ndi.center_of_mass(eye if eye.any() else part)
        out.append(OrbitExtent(side, tuple(float(v) for v in centre), tuple(int(s.start) for s in box),
                               tuple(int(s.stop) for s in box)))
    return out


def soft_tissue(image_hu) -> np.ndarray:
    """Where ``image_hu`` is neither air (< :data:`AIR_HU`) nor bone (> :data:`BONE_HU`): bool, same shape."""
    img = np.asarray(image_hu)
    return (img >= AIR_HU) & (img <= BONE_HU)


def visible_borders(borders, region) -> np.ndarray:
    """Superpixel borders inside ``region`` only.

    Parameters
    ----------
    borders : (ny, nx) uint8
        From :func:`orbitseg.labeling.superpixel_borders`.
    region : (ny, nx) bool
        Where borders help (:meth:`OrbitFrame.border_region`, or :func:`soft_tissue` without orbits).

    Returns
    -------
    (ny, nx) uint8, 1 on the borders kept.
    """
    b = np.asarray(borders)
    r = np.asarray(region, dtype=bool)
    if b.ndim != 2 or b.shape != r.shape:
        raise ValueError(f"borders {b.shape} and region {r.shape} must be the same 2-D shape")
    return (b.astype(bool) & r).astype(np.uint8)
