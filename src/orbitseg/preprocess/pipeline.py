"""Preprocess scans into per-orbit slice stacks for SEQ-UNET, and map predictions back.

Forward, per scan: canonical orientation -> find both orbits -> crop one VOI
per orbit -> window -> fit every axial slice into ``size x size`` keeping the
aspect ratio (labels as soft per-class fractions).  Slices keep their native
thickness (as the paper, which skipped interpolation); sequences are built
from consecutive slices with edge replication.

Backward: per-slice class probabilities in the fitted space are unfitted,
pasted into the canonical scan grid and reoriented onto the original grid
(:func:`probabilities_to_scan`).  With the identity fit the round trip is
exact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from orbitseg.constants import INPUT_SIZE, N_CLASSES, SEQ_LEN, WINDOW_LEVEL, WINDOW_WIDTH
from orbitseg.io.orient import from_canonical, to_canonical
from orbitseg.io.volume import Geometry, Volume
from orbitseg.preprocess.fit import SliceFit, fit_image, fit_label_fractions, plan_fit, unfit_probabilities
from orbitseg.preprocess.voi import OrbitBox, VOIMargins, locate_orbits
from orbitseg.preprocess.window import apply_window



@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that decides what the network sees; recorded in the manifest."""

    size: int = INPUT_SIZE
    seq_len: int = SEQ_LEN
    level: float = WINDOW_LEVEL
    width: float = WINDOW_WIDTH
    margins: VOIMargins = field(default_factory=VOIMargins)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessConfig:
        d = dict(d)
        d["margins"] = VOIMargins(**d.get("margins", {}))
        return cls(**d)


@dataclass
class PreparedVOI:
    """One orbit of one scan, ready for the network.

    Attributes
    ----------
    box : where the VOI sits (canonical index box and LPS mm box)
    fit : in-plane map between VOI pixels and network pixels
    voi : cropped HU volume (canonical grid; overlays the scan in any viewer)
    images : (nz, size, size) float32 windowed slices in [0, 1]
    voi_labels : cropped label volume, or None
    fractions : (nz, C, size, size) float32 soft label fractions, or None
    """

    box: OrbitBox
    fit: SliceFit
    voi: Volume
    images: np.ndarray
    voi_labels: Volume | None = None
    fractions: np.ndarray | None = None


def crop(volume: Volume, box: OrbitBox) -> Volume:
    """Crop a canonical volume to ``box``; the result keeps its place in patient space."""
    sl = box.slices()
    origin = volume.geometry.index_to_physical(np.asarray(box.index_min, dtype=float))
    size = tuple(int(b - a) for a, b in zip(box.index_min, box.index_max))
    geom = Geometry(size, volume.geometry.spacing, tuple(origin), volume.geometry.matrix)
    return Volume(np.ascontiguousarray(volume.array[sl]), geom, volume.path, dict(volume.meta))


def prepare_scan(
    scan: Volume, config: PreprocessConfig = PreprocessConfig(), labels: Volume | None = None
) -> list[PreparedVOI]:
    """Forward preprocessing of one scan (and its labels): one :class:`PreparedVOI` per orbit, right first."""
    canon = to_canonical(scan)
    boxes = locate_orbits(canon, margins=config.margins)
    canon_lab = to_canonical(labels) if labels is not None else None
    out = []
    for box in boxes:
        voi = crop(canon, box)
        sx, sy, _ = voi.spacing
        fit = plan_fit(voi.shape[1:], (sy, sx), config.size)
        images = fit_image(apply_window(voi.array, level=config.level, width=config.width), fit)
        prep = PreparedVOI(box, fit, voi, images)
        if canon_lab is not None:
            prep.voi_labels = crop(canon_lab, box)
            prep.fractions = fit_label_fractions(prep.voi_labels.array, fit, N_CLASSES)
        out.append(prep)
    return out


def probabilities_to_scan(
    parts: list[tuple[OrbitBox, SliceFit | None, np.ndarray]], scan_geometry: Geometry
) -> np.ndarray:
    """Map per-slice class probabilities of each VOI back onto the scan's own grid.

    Parameters
    ----------
    parts : (box, fit, probs) per VOI; probs of shape (nz_voi, C, size, size) in the
        fitted space, or, with ``fit=None``, (nz_voi, C, ny_voi, nx_voi) on the VOI grid
    scan_geometry : geometry of the original scan (any direction matrix)

    Returns
    -------
    (C, nz, ny, nx) float32 probabilities on the original grid; background
    probability 1 outside every VOI.  Where VOIs overlap, the VOI that is
    more confident of a structure wins per voxel.
    """
    from orbitseg.io.orient import canonical_geometry

    cgeom = canonical_geometry(scan_geometry)
    c = parts[0][2].shape[1] if parts else N_CLASSES
    full = np.zeros((c,) + cgeom.shape, dtype=np.float32)
    full[0] = 1.0
    for box, fit, probs in parts:
        on_voi = probs if fit is None else unfit_probabilities(probs, fit)
        voi_probs = np.moveaxis(on_voi, 1, 0)  # (C, nz, ny, nx)
        sl = (slice(None),) + box.slices()
        current = full[sl]
        take = voi_probs[0] < current[0]  # more confident of some structure than what is there
        current[:, take] = voi_probs[:, take]
        full[sl] = current
    return from_canonical(full, scan_geometry)


def labels_to_scan(parts: list[tuple[OrbitBox, SliceFit | None, np.ndarray]], scan_geometry: Geometry) -> np.ndarray:
    """Hard labels ``(nz, ny, nx)`` uint8 on the scan's grid from per-VOI probabilities.

    The same labels as ``probabilities_to_scan(...).argmax(0)`` without holding
    a full-size probability volume: only a uint8 label volume and a
    foreground-confidence map over the VOIs' union are kept (for a
    512x512x100 scan, ~30 MB instead of ~0.8 GB).
    """
    from orbitseg.io.orient import canonical_geometry

    labels = np.zeros(canonical_geometry(scan_geometry).shape, dtype=np.uint8)
    if parts:
        lo = np.min([b.index_min for b, _, _ in parts], axis=0)  # (i, j, k)
        hi = np.max([b.index_max for b, _, _ in parts], axis=0)
        conf = np.zeros(tuple((hi - lo)[::-1]), dtype=np.float32)  # foreground confidence so far
        for box, fit, probs in parts:
            on_voi = probs if fit is None else unfit_probabilities(probs, fit)  # (nz, C, ny, nx)
            fg = 1.0 - on_voi[:, 0]
            sl = box.slices()
            local = tuple(slice(s.start - o, s.stop - o) for s, o in zip(sl, lo[::-1]))
            take = fg > conf[local]  # more confident of some structure than what is there
            conf[local][take] = fg[take]
            labels[sl][take] = on_voi.argmax(axis=1).astype(np.uint8)[take]
    return from_canonical(labels, scan_geometry)
