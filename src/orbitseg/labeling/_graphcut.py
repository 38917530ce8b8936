"""Multi-label graph cut (alpha-expansion, Boykov-Veksler-Zabih 2001) with a
contrast-sensitive Potts smoothness term, built on PyMaxflow.

Energy (Boykov-Jolly):  E(L) = sum_p D_p(L_p) + sum_{p~q} w_pq [L_p != L_q]
with ``w_pq = lam * exp(-(I_p - I_q)^2 / (2 sigma^2)) / dist_pq``, ``dist_pq``
in mm (spacing-aware), 8-neighbourhood in 2-D, 26 (or 6) in 3-D.
"""

from __future__ import annotations

import numpy as np
import maxflow

from ._common import half_offsets, neighbour_pairs

#: unary cost that stands for "forbidden" (hard constraint)
HARD = 1e7


def edge_weights(img01: np.ndarray, spacing: np.ndarray, lam: float, connectivity: int | None = None,
                 sigma: float | None = None):
    """Neighbour pairs of ``img01`` with Boykov-Jolly weights ``(p, q, w)`` as flat arrays."""
    pairs = neighbour_pairs(img01.shape, half_offsets(img01.ndim, connectivity), spacing)
    flat = img01.ravel().astype(np.float64)
    if not pairs:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0)
    diffs = [flat[p] - flat[q] for p, q, _ in pairs]
    if sigma is None:
        # GrabCut's beta: sigma^2 = mean squared neighbour difference (floored so flat images still work)
        sq = np.concatenate([d * d for d in diffs])
        sigma2 = max(float(sq.mean()), 1e-4)
    else:
        sigma2 = float(sigma) ** 2
    P = np.concatenate([p for p, _, _ in pairs])
    Q = np.concatenate([q for _, q, _ in pairs])
    W = np.concatenate([lam * np.exp(-(d * d) / (2.0 * sigma2)) / dist for d, (_, _, dist) in zip(diffs, pairs)])
    return P, Q, W


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
