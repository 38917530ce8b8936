"""AutoCorrection: clean a mask's borders so they follow the image.

Steps, per structure label:

1. remove islands smaller than ``min_island_mm2`` (connected components;
   mm^3 for a 3-D slab) and fill holes (pixels of background enclosed by the
   label) smaller than ``max_hole_mm2``;
2. smooth jagged edges: Gaussian-smoothed label indicators (``smooth_mm``),
   arg-max, applied inside the band only;
3. snap the borders to image edges with a narrow-band multi-label graph cut:
   only pixels within ``band_mm`` of the input mask's border are free; all
   others are fixed to their label.  Data term: intensity models of each label
   estimated from the pixels just outside the band (``-log p``), or, when
   ``probabilities`` (C = 4 channels, background + 3 structures, from a trained
   network) are given, ``-log probabilities``; plus ``stay_weight`` per pixel
   for leaving the current label.  Boundary term as in SmartFill.

The cut proposes, the image decides: a connected piece of change is kept only
if the image evidence for it (data gain, plus the contrast of the edges its new
border lies on minus that of its old border) exceeds the ``stay_weight`` its
pixels pay for leaving their label.
Without this, the Potts term alone shortens a border wherever that is cheaper
than ``stay_weight`` (one-pixel bumps of a digitised circle, partial-volume
pixels that no intensity model has seen), so a mask lying on the image edges
was not a fixed point.  For this evidence an intensity that no label's model
has seen counts the same for every label (no evidence), whereas the cut itself
leans such intensities to background.

A piece of a structure that would lose more than half its pixels in step 3
(thin structures lie wholly inside the band) is restored: snapping moves
borders, it does not delete structures.

Guarantees: pixels farther than ``band_mm`` from the input border change only
in steps 1 (an island removed whole, a small hole filled); a ``protected``
pixel (a user's stroke) never changes; a mask whose borders lie on the image
edges (no islands, no holes, ``smooth_mm`` 0) comes back unchanged.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..constants import STRUCTURES, WINDOW_LEVEL, WINDOW_WIDTH
from ._common import check_bool, check_image, check_labels, check_mask, check_probabilities, check_spacing, window01
from ._graphcut import HARD, alpha_expansion, edge_weights, restrict
from .smartfill import BACKGROUND_MIX, UNIFORM_MIX, intensity_cost


def border_distance(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """mm from every pixel to the nearest pixel that has a neighbour (full connectivity) of another label."""
    st = ndi.generate_binary_structure(mask.ndim, mask.ndim)
    border = ndi.maximum_filter(mask, footprint=st, mode="nearest") != ndi.minimum_filter(mask, footprint=st, mode="nearest")
    if not border.any():
        return np.full(mask.shape, np.inf)
    return ndi.distance_transform_edt(~border, sampling=spacing)


#: default largest hole (mm^2) filled per label: the globe is convex, so anything it encloses (a lens
#: left out, a missed vitreous patch) is globe; muscles and nerve only get pin-holes filled
DEFAULT_MAX_HOLE_MM2: dict[int, float] = {1: float("inf"), 2: 2.0, 3: 2.0}


def _clean_topology(m: np.ndarray, labels, voxel: float, min_island: float, max_hole: dict, protected):
    st = ndi.generate_binary_structure(m.ndim, m.ndim)
    st1 = ndi.generate_binary_structure(m.ndim, 1)
    for l in labels:
        ind = m == l
        if not ind.any():
            continue
        if min_island > 0:
            comp, n = ndi.label(ind, structure=st)
            sizes = np.bincount(comp.ravel())[1:] * voxel
            small = np.nonzero(sizes < min_island)[0] + 1
            if small.size == n:  # never delete a structure entirely: keep its largest piece
                small = small[small != (np.argmax(sizes) + 1)]
            if small.size:
                kill = np.isin(comp, small)
                if protected is not None:
                    kill &= ~protected
                m[kill] = 0
                ind = m == l
        mh = max_hole.get(l, 0.0)
        if mh > 0:
            holes, n = ndi.label(~ind, structure=st1)
            if n > 1:
                sizes = np.bincount(holes.ravel()) * voxel
                # a hole is a background component not touching the array border
                edge = np.unique(np.concatenate([np.unique(np.take(holes, [0, -1], axis=a)) for a in range(m.ndim)]))
                fill = np.zeros(n + 1, bool)
                fill[1:] = sizes[1:] < mh
                fill[edge] = False
                sel = fill[holes] & (m == 0)
                if protected is not None:
                    sel &= ~protected
                m[sel] = l
    return m


def supported_changes(cur: np.ndarray, new: np.ndarray, evidence: np.ndarray, edges, stay_weight: float,
                      shape: tuple[int, ...]) -> np.ndarray:
    """``new`` with every connected piece of change that the image does not pay for set back to ``cur``.

    A piece's image evidence is its data gain ``sum evidence[cur] - evidence[new]`` plus its edge
    gain: the edge strength of the pairs its new border cuts minus that of the pairs its old
    border cut.  The piece (full connectivity) is kept only if that exceeds ``stay_weight`` times
    its size.  What the cut gains from a shorter border alone (the Potts length term) does not
    count, so smoothing never moves a border that lies on the image's edges.

    Parameters
    ----------
    cur, new : (N,) label indices before / after the cut (N = prod(shape))
    evidence : (L, N) data cost of every label index (no stay cost, no boundary term)
    edges : (P, Q, strength), each (E,): neighbour pairs (flat indices) and their edge strength >= 0
    stay_weight : cost per pixel of leaving its label
    shape : grid shape of the N nodes

    Returns
    -------
    (N,) label indices
    """
    out = new.copy()
    changed = (new != cur).reshape(shape)
    comp, n = ndi.label(changed, structure=ndi.generate_binary_structure(len(shape), len(shape)))
    if n == 0:
        return out
    comp = comp.ravel()
    ar = np.arange(cur.size)
    gain = np.bincount(comp, weights=evidence[cur, ar] - evidence[new, ar], minlength=n + 1)
    P, Q, strength = edges
    # a pair touches at most one piece (pieces are maximal connected sets); pairs inside a piece count too
    piece = np.maximum(comp[P], comp[Q])
    edge_gain = strength * ((new[P] != new[Q]).astype(float) - (cur[P] != cur[Q]))
    gain += np.bincount(piece, weights=edge_gain, minlength=n + 1)
    size = np.bincount(comp, minlength=n + 1)
    # a relative tolerance so that a tie keeps the mask
    unpaid = np.nonzero(gain[1:] <= stay_weight * size[1:] * (1 + 1e-9) + 1e-9)[0] + 1
    back = np.isin(comp, unpaid)
    out[back] = cur[back]
    return out


def auto_correct(image, mask, *, spacing, band_mm: float = 1.5, min_island_mm2: float = 2.0,
                 max_hole_mm2: float | dict | None = None, smooth_mm: float = 0.0, protected=None,
                 probabilities=None, labels=STRUCTURES, lam: float = 1.0, stay_weight: float = 3.0,
                 window=(WINDOW_LEVEL, WINDOW_WIDTH), presmooth_mm: float = 0.5,
                 model_ring_mm: float = 3.0) -> np.ndarray:
    """Corrected copy (uint8) of ``mask`` (values 0..3) on ``image`` (2-D slice or 3-D slab, HU).

    Parameters
    ----------
    spacing : (sy, sx) or (sz, sy, sx) in mm
    band_mm : only pixels within this distance of the input mask's border may change
        (except whole small islands / small holes, see ``min_island_mm2``)
    min_island_mm2 : components of a label smaller than this (mm^2, mm^3 in 3-D) are
        removed (the largest piece of a label is always kept); 0 disables
    max_hole_mm2 : background holes inside a label smaller than this are filled; a number
        for every label or a dict label -> mm^2; default ``DEFAULT_MAX_HOLE_MM2`` (every hole
        of the eyeball, pin-holes < 2 mm^2 of muscles and nerve); 0 disables
    smooth_mm : Gaussian sigma of the edge smoothing (0 disables)
    protected : bool array; these pixels (user strokes) never change
    probabilities : optional (4, *image.shape) class probabilities (background, eyeball,
        muscles, nerve) of a trained network, used as the data term
    labels : structures to correct (others are left as they are and stay fixed)
    lam, stay_weight : boundary-term weight; per-pixel cost of leaving the current label (also
        the image evidence a change must bring, see ``supported_changes``)
    """
    img = check_image(image, ndims=(2, 3))
    sp = check_spacing(spacing, img.ndim)
    m0 = check_mask(mask, img.shape).astype(np.uint8)
    prot = check_bool(protected, img.shape, name="protected")
    labs = check_labels(labels)
    for name, v in (("band_mm", band_mm), ("min_island_mm2", min_island_mm2), ("smooth_mm", smooth_mm),
                    ("lam", lam), ("stay_weight", stay_weight)):
        if not (np.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a non-negative number, got {v!r}")
    if max_hole_mm2 is None:
        max_hole = dict(DEFAULT_MAX_HOLE_MM2)
    elif isinstance(max_hole_mm2, dict):
        max_hole = {int(k): float(v) for k, v in max_hole_mm2.items()}
    else:
        max_hole = {l: float(max_hole_mm2) for l in STRUCTURES}
    if any(not v >= 0 for v in max_hole.values()):
        raise ValueError(f"max_hole_mm2 must be non-negative, got {max_hole_mm2!r}")
    prob = check_probabilities(probabilities, img.shape)

    voxel = float(np.prod(sp))
    m = _clean_topology(m0.copy(), labs, voxel, float(min_island_mm2), max_hole, prot)

    dist = border_distance(m0, sp)
    band = dist <= band_mm
    # pixels of labels we do not correct stay as they are, as do protected pixels
    free = band & np.isin(m, (0,) + labs) & np.isin(m0, (0,) + labs)
    if prot is not None:
        free &= ~prot
    if not free.any():
        return m

    classes = (0,) + labs
    if smooth_mm > 0:
        sm = np.stack([ndi.gaussian_filter((m == c).astype(np.float32), smooth_mm / sp) for c in classes])
        sm_lab = np.asarray(classes, np.uint8)[np.argmax(sm, axis=0)]
        m[free] = sm_lab[free]

    if band_mm <= 0 or (lam == 0 and stay_weight == 0 and prob is None):
        return m
    # narrow-band cut on the bounding box of the free pixels (+1 pixel of fixed context)
    idx = np.nonzero(free)
    box = tuple(slice(max(0, int(i.min()) - 2), min(n, int(i.max()) + 3)) for i, n in zip(idx, img.shape))
    x = window01(img[box], window)
    xs = ndi.gaussian_filter(x, presmooth_mm / sp, mode="nearest") if presmooth_mm > 0 else x
    mb = m[box]
    fb = free[box].ravel()
    db = dist[box]
    cand = sorted(set(np.unique(mb).tolist()))
    L = len(cand)
    flat = x.ravel()
    cur = mb.ravel()
    unary = np.zeros((L, flat.size))
    evidence = np.zeros((L, flat.size))
    # intensity samples: a label's pixels whose whole 3x3 neighbourhood has that label (no partial
    # volume), near the structures (within band + model_ring of a border); thin structures keep their core
    near_border = db <= band_mm + model_ring_mm
    foot = np.ones((3,) * x.ndim, bool)
    for i, c in enumerate(cand):
        if prob is not None:
            unary[i] = -np.log(np.clip(prob[(c,) + box].ravel(), 1e-6, 1.0))
            evidence[i] = unary[i]
        else:
            core = ndi.binary_erosion(mb == c, structure=foot, border_value=1)
            smp = x[core & near_border]
            if smp.size < 10:
                smp = x[mb == c]
            unary[i] = intensity_cost(flat, smp, uniform_mix=BACKGROUND_MIX if c == 0 else UNIFORM_MIX)
            # an intensity no model has seen (partial volume) is no evidence for either label
            evidence[i] = intensity_cost(flat, smp, uniform_mix=UNIFORM_MIX)
        unary[i] += stay_weight * (cur != c)
        # a label may only move to pixels within the band of its own region
        near = ndi.distance_transform_edt(mb != c, sampling=sp).ravel() <= band_mm + 1e-6
        unary[i, ~near] = HARD
    P, Q, W, G = edge_weights(xs, sp, lam, geometric=True)
    cur_idx = np.searchsorted(np.asarray(cand), cur)
    # only the band's pixels are variables; fixed neighbours enter as unary terms
    u, P2, Q2, W2 = restrict(unary, P, Q, W, fb, cur_idx)
    assign = cur_idx.copy()
    assign[fb] = alpha_expansion(u, P2, Q2, W2, init=cur_idx[fb], max_cycles=2)
    # edge strength: the part of a pair's boundary cost that the image contrast takes off
    # (geometric weight minus contrast-sensitive weight); the Potts length term is not evidence
    strength = G - W
    assign = supported_changes(cur_idx, assign, evidence, (P, Q, strength), stay_weight, x.shape)
    res = np.asarray(cand, np.uint8)[assign].reshape(x.shape)
    # a structure's pieces that lost contact with its fixed core (partial-volume rims) go to background
    st = ndi.generate_binary_structure(x.ndim, x.ndim)
    core = ~free[box]
    for c in cand:
        if c == 0:
            continue
        comp, n = ndi.label(res == c, structure=st)
        if n:
            keep = np.unique(comp[core & (comp > 0)])
            drop = (comp > 0) & ~np.isin(comp, keep) & (mb != c)
            res[drop] = 0
    # snapping moves borders, it does not delete structures: a piece of a label that lost more
    # than half of its pixels in the cut (thin structures lie wholly inside the band) is restored
    for c in cand:
        if c == 0:
            continue
        comp, n = ndi.label(mb == c, structure=st)
        if n:
            before = np.bincount(comp.ravel(), minlength=n + 1)
            after = np.bincount(comp.ravel(), weights=(res == c).ravel(), minlength=n + 1)
            lost = np.nonzero(after[1:] < 0.5 * before[1:])[0] + 1
            if lost.size:
                sel = np.isin(comp, lost)
                res[sel] = c
    m[box] = res
    if prot is not None:
        m[prot] = m0[prot]
    return m
