"""Multi-label graph cut (alpha-expansion, Boykov-Veksler-Zabih 2001) with a
contrast-sensitive Potts smoothness term, built on PyMaxflow.

Energy (Boykov-Jolly):  E(L) = sum_p D_p(L_p) + sum_{p~q} w_pq [L_p != L_q]
with ``w_pq = lam * c_k * exp(-(I_p - I_q)^2 / (2 sigma^2)) / dist_pq``, ``dist_pq``
in mm (spacing-aware), 8-neighbourhood in 2-D, 26 (or 6) in 3-D.

``c_k`` are Cauchy-Crofton factors (Boykov & Kolmogorov, ICCV 2003): the share of
directions (in mm space) that the neighbour offset ``k`` stands for, scaled so that
the cut of a region costs ``lam * (8 / pi)`` times its boundary length in mm per
pixel area in 2-D, and the same per unit of surface per voxel volume in 3-D.  Hence
a structure that does not change along z costs the same per slice in a 3-D slab as
in a 2-D slice, whatever the slice thickness or neighbourhood.  With plain
``lam / dist`` weights, the 26-neighbourhood counted an in-plane boundary about
twice (the 8 out-of-plane diagonals cross it too), so fills in 3-D from small
strokes collapsed to the strokes.  On square pixels with 8 neighbours every
``c_k`` is 1 (the classical ``lam / dist`` weights).
"""

from __future__ import annotations

import functools

import numpy as np
import maxflow

from ._common import half_offsets, neighbour_pairs

#: unary cost that stands for "forbidden" (hard constraint)
HARD = 1e7


@functools.lru_cache(maxsize=64)
def _crofton_factors(spacing: tuple[float, ...], offsets: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """Cauchy-Crofton factor ``c_k`` of every offset (see the module docstring).

    ``f_k``: the fraction of unit directions (in mm) closer to the line of offset ``k``
    than to any other offset's line (its Voronoi cell on the circle / sphere, both
    signs).  ``c_k = 4 f_k`` in 2-D (1 for each of the 4 offsets of square pixels),
    ``c_k = 16 f_k / pi`` in 3-D: then sum_k c_k |n . u_k| / |e_k| per pixel area /
    voxel volume integrates to ``8 / pi`` times the boundary measure.
    """
    vec = np.asarray(offsets, float) * np.asarray(spacing, float)
    u = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    ndim = u.shape[1]
    if ndim == 2:
        t = (np.arange(20000) + 0.5) * (np.pi / 20000)  # half circle: lines have no sign
        dirs = np.stack([np.sin(t), np.cos(t)], axis=1)
        scale = 4.0
    else:
        # Fibonacci lattice: near-uniform directions on the sphere
        k = np.arange(20000) + 0.5
        z = 1.0 - 2.0 * k / k.size
        phi = np.pi * (1.0 + 5**0.5) * k
        r = np.sqrt(1.0 - z * z)
        dirs = np.stack([z, r * np.sin(phi), r * np.cos(phi)], axis=1)
        scale = 16.0 / np.pi
    nearest = np.argmax(np.abs(dirs @ u.T), axis=1)
    f = np.bincount(nearest, minlength=len(offsets)) / dirs.shape[0]
    return scale * f


def edge_weights(img01: np.ndarray, spacing: np.ndarray, lam: float, connectivity: int | None = None,
                 sigma: float | None = None, geometric: bool = False):
    """Neighbour pairs of ``img01`` with Boykov-Jolly weights ``(p, q, w)`` as flat arrays.

    Parameters
    ----------
    img01 : (ny, nx) or (nz, ny, nx) image in [0, 1]
    spacing : (sy, sx) or (sz, sy, sx) in mm
    lam : weight of the boundary term
    connectivity : 8 (default) or 4 in 2-D, 26 (default) or 6 in 3-D
    sigma : contrast scale; default: root mean squared neighbour difference within the
        slices (through-plane differences of thick slices would blunt the in-plane contrast)
    geometric : also return the weights without the contrast factor (``lam * c_k / dist``)

    Returns
    -------
    P, Q : (E,) int64 flat node indices; W : (E,) float64 weights; with ``geometric``,
    G : (E,) float64 weights without the contrast factor (``W <= G``)
    """
    offsets = half_offsets(img01.ndim, connectivity)
    sp = np.asarray(spacing, float)
    pairs = neighbour_pairs(img01.shape, offsets, sp)
    flat = img01.ravel().astype(np.float64)
    if not pairs:
        z = np.zeros(0, np.int64)
        return (z, z, np.zeros(0), np.zeros(0)) if geometric else (z, z, np.zeros(0))
    crofton = _crofton_factors(tuple(float(v) for v in sp), tuple(map(tuple, offsets)))
    diffs = [flat[p] - flat[q] for p, q, _, _ in pairs]
    if sigma is None:
        # GrabCut's beta: sigma^2 = mean squared neighbour difference (floored so flat images still work),
        # from in-plane pairs of a slab so that a slab's slice gets the contrast scale of that 2-D slice
        inplane = [d for d, (_, _, _, k) in zip(diffs, pairs) if img01.ndim == 2 or offsets[k][0] == 0]
        sq = np.concatenate([d * d for d in (inplane or diffs)])
        sigma2 = max(float(sq.mean()), 1e-4)
    else:
        sigma2 = float(sigma) ** 2
    P = np.concatenate([p for p, _, _, _ in pairs])
    Q = np.concatenate([q for _, q, _, _ in pairs])
    W = np.concatenate([lam * crofton[k] * np.exp(-(d * d) / (2.0 * sigma2)) / dist
                        for d, (_, _, dist, k) in zip(diffs, pairs)])
    if not geometric:
        return P, Q, W
    G = np.concatenate([np.full(p.size, lam * crofton[k] / dist) for p, _, dist, k in pairs])
    return P, Q, W, G


def alpha_expansion(unary: np.ndarray, P: np.ndarray, Q: np.ndarray, W: np.ndarray,
                    init: np.ndarray | None = None, max_cycles: int = 3) -> np.ndarray:
    """Minimise ``sum_p unary[L_p, p] + sum_e W_e [L_P != L_Q]`` over label indices.

    ``unary`` has shape (L, N) (flat nodes).  Returns label indices (N,).
    With L == 2 this is a single exact binary cut.
    """
    L, N = unary.shape
    cur = np.argmin(unary, axis=0) if init is None else init.astype(np.int64).copy()
    ar = np.arange(N)
    if L == 2:
        return _binary(unary[0], unary[1], P, Q, W).astype(np.int64)
    for _ in range(max_cycles):
        changed = False
        for alpha in range(L):
            lp, lq = cur[P], cur[Q]
            A = W * (lp != lq)
            B = W * (lp != alpha)
            C = W * (lq != alpha)
            # E(xp,xq) = A + (C-A) xp - C xq + (B+C-A) (1-xp) xq   (x = 1: switch to alpha)
            u1 = unary[alpha].astype(np.float64) + np.bincount(P, weights=C - A, minlength=N) \
                - np.bincount(Q, weights=C, minlength=N)
            u0 = unary[cur, ar].astype(np.float64)
            cap = B + C - A
            keep = cap > 0
            x = _cut(u0, u1, P[keep], Q[keep], cap[keep])
            x &= cur != alpha
            if x.any():
                cur[x] = alpha
                changed = True
        if not changed:
            break
    return cur


def _binary(u0, u1, P, Q, W):
    """Exact binary cut: x=1 (label index 1) where cheaper; Potts edges W."""
    return _cut(np.asarray(u0, np.float64), np.asarray(u1, np.float64), P, Q, W, symmetric=True)


def _cut(u0, u1, P, Q, cap, symmetric=False):
    """Minimise sum u0 [x=0] + u1 [x=1] + sum cap [x_P=0, x_Q=1] (+ reverse if symmetric)."""
    N = u0.size
    g = maxflow.Graph[float](N, P.size)
    nodes = g.add_nodes(N)
    m = np.minimum(u0, u1)
    # source cap is paid when the node ends in the sink segment (x = 1)
    g.add_grid_tedges(nodes, u1 - m, u0 - m)
    if P.size:
        g.add_edges(P, Q, cap, cap if symmetric else np.zeros_like(cap))
    g.maxflow()
    return g.get_grid_segments(nodes)


def restrict(unary: np.ndarray, P: np.ndarray, Q: np.ndarray, W: np.ndarray, free: np.ndarray,
             fixed_index: np.ndarray):
    """Drop fixed nodes from the problem: their edges to free nodes become unary terms.

    ``free`` (N,) bool; ``fixed_index`` (N,) label index of every fixed node.
    Returns ``unary[:, free]`` (+ Potts costs against fixed neighbours) and the
    free-free edges re-indexed to 0..n_free-1.
    """
    L = unary.shape[0]
    n_free = int(free.sum())
    new_id = np.full(free.size, -1, np.int64)
    new_id[free] = np.arange(n_free)
    u = unary[:, free].astype(np.float64, copy=True)
    fp, fq = free[P], free[Q]
    for a, b in ((P, Q), (Q, P)):
        sel = free[a] & ~free[b]
        if sel.any():
            ids, lab, w = new_id[a[sel]], fixed_index[b[sel]], W[sel]
            # cost w for every label except the fixed neighbour's
            tot = np.bincount(ids, weights=w, minlength=n_free)
            u += tot[None, :]
            for l in range(L):
                s = lab == l
                if s.any():
                    u[l] -= np.bincount(ids[s], weights=w[s], minlength=n_free)
    both = fp & fq
    return u, new_id[P[both]], new_id[Q[both]], W[both]
