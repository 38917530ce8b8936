"""Preprocess scans into per-orbit slice stacks for SEQ-UNET, and map predictions back.

Forward, per scan: canonical orientation -> find both orbits -> crop one VOI
per orbit -> window -> fit every axial slice into ``size x size`` (stretched,
or padded to keep the aspect ratio; labels as soft per-class fractions).
Slices keep their native thickness (as the paper, which skipped
interpolation); sequences are built from consecutive slices with edge
replication.

Backward: per-slice class probabilities in the fitted space are unfitted,
pasted into the canonical scan grid and reoriented onto the original grid
(:func:`probabilities_to_scan`, or only over the VOIs' bounding box:
:func:`box_probabilities`).  With the identity fit the round trip is
exact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from orbitseg.constants import FIT_ASPECT, FIT_ASPECTS, INPUT_SIZE, N_CLASSES, SEQ_LEN, WINDOW_LEVEL, WINDOW_WIDTH
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
    #: in-plane fit into ``size x size`` (orbitseg.constants.FIT_ASPECTS)
    aspect: str = FIT_ASPECT

    def __post_init__(self) -> None:
        if self.aspect not in FIT_ASPECTS:
            raise ValueError(f"aspect must be one of {FIT_ASPECTS}, got {self.aspect!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessConfig:
        d = dict(d)
        d["margins"] = VOIMargins(**d.get("margins", {}))
        d.setdefault("aspect", "pad")  # what every manifest and checkpoint written before the option used
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
    return volume.crop(box.slices())


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
        fit = plan_fit(voi.shape[1:], (sy, sx), config.size, aspect=config.aspect)
        images = fit_image(apply_window(voi.array, level=config.level, width=config.width), fit)
        prep = PreparedVOI(box, fit, voi, images)
        if canon_lab is not None:
            prep.voi_labels = crop(canon_lab, box)
            prep.fractions = fit_label_fractions(prep.voi_labels.array, fit, N_CLASSES)
        out.append(prep)
    return out


@dataclass(frozen=True)
class BoxProbabilities:
    """Class probabilities on a scan's canonical grid, held only over the VOIs' bounding box.

    Outside the box every voxel is background with probability 1, so the box is all
    that needs memory: for a 512x512x300 scan a few tens of MB instead of ~1.2 GB.

    Attributes
    ----------
    shape : canonical (nz, ny, nx) of the whole scan
    start : canonical (z, y, x) index of the box's first voxel
    values : (C, bz, by, bx) float32 probabilities, or uint8 in 1/255 steps (:meth:`quantized`)
    """

    shape: tuple[int, int, int]
    start: tuple[int, int, int]
    values: np.ndarray

    def region(self, z: slice = slice(None), y: slice = slice(None), x: slice = slice(None)) -> np.ndarray:
        """Float32 probabilities ``(C, nz', ny', nx')`` of the canonical sub-array ``[z, y, x]``
        (step-1 slices; background 1 outside the box)."""
        rng = [sl.indices(n)[:2] for sl, n in zip((z, y, x), self.shape)]
        out = np.zeros((self.values.shape[0],) + tuple(max(0, b - a) for a, b in rng), dtype=np.float32)
        out[0] = 1.0
        src, dst = [], []
        for (a, b), s0, n in zip(rng, self.start, self.values.shape[1:]):
            lo, hi = max(a, s0), min(b, s0 + n)
            if hi <= lo:
                return out
            src.append(slice(lo - s0, hi - s0))
            dst.append(slice(lo - a, hi - a))
        v = self.values[(slice(None), *src)]
        out[(slice(None), *dst)] = v / np.float32(255.0) if v.dtype == np.uint8 else v
        return out

    def argmax(self) -> np.ndarray:
        """Canonical uint8 labels ``(nz, ny, nx)``: the most probable class (0 outside the box)."""
        out = np.zeros(self.shape, dtype=np.uint8)
        out[tuple(slice(s, s + n) for s, n in zip(self.start, self.values.shape[1:]))] = self.values.argmax(axis=0)
        return out

    def quantized(self) -> BoxProbabilities:
        """The same probabilities as uint8 (1/255 steps, a quarter of the memory)."""
        if self.values.dtype == np.uint8:
            return self
        return BoxProbabilities(self.shape, self.start, np.round(self.values * 255.0).astype(np.uint8))


def box_probabilities(
    parts: list[tuple[OrbitBox, SliceFit | None, np.ndarray]], scan_geometry: Geometry
) -> BoxProbabilities:
    """Map per-slice class probabilities of each VOI back onto the canonical grid of the scan,
    over the VOIs' bounding box only.

    Parameters
    ----------
    parts : (box, fit, probs) per VOI; probs of shape (nz_voi, C, size, size) in the
        fitted space, or, with ``fit=None``, (nz_voi, C, ny_voi, nx_voi) on the VOI grid
    scan_geometry : geometry of the original scan (any direction matrix)

    Returns
    -------
    :class:`BoxProbabilities` (float32).  Where VOIs overlap, the VOI that is more
    confident of a structure wins per voxel.
    """
    from orbitseg.io.orient import canonical_geometry

    shape = canonical_geometry(scan_geometry).shape
    c = parts[0][2].shape[1] if parts else N_CLASSES
    if not parts:
        return BoxProbabilities(shape, (0, 0, 0), np.zeros((c, 0, 0, 0), dtype=np.float32))
    lo = np.min([b.index_min for b, _, _ in parts], axis=0)[::-1]  # (z, y, x)
    hi = np.max([b.index_max for b, _, _ in parts], axis=0)[::-1]
    values = np.zeros((c,) + tuple(int(n) for n in hi - lo), dtype=np.float32)
    values[0] = 1.0
    for box, fit, probs in parts:
        on_voi = probs if fit is None else unfit_probabilities(probs, fit)
        voi_probs = np.moveaxis(on_voi, 1, 0)  # (C, nz, ny, nx)
        local = (slice(None),) + tuple(slice(s.start - o, s.stop - o) for s, o in zip(box.slices(), lo))
        current = values[local]  # a view: written in place
        take = voi_probs[0] < current[0]  # more confident of some structure than what is there
        np.copyto(current, voi_probs, where=take[None])  # 10x faster than boolean-mask assignment
    return BoxProbabilities(tuple(shape), tuple(int(v) for v in lo), values)


def probabilities_to_scan(
    parts: list[tuple[OrbitBox, SliceFit | None, np.ndarray]], scan_geometry: Geometry
) -> np.ndarray:
    """Per-slice class probabilities of each VOI on the scan's own grid: (C, nz, ny, nx)
    float32, background probability 1 outside every VOI (see :func:`box_probabilities`,
    which holds only the VOIs' bounding box)."""
    return from_canonical(box_probabilities(parts, scan_geometry).region(), scan_geometry)


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
            np.copyto(conf[local], fg, where=take)  # views written in place (faster than mask assignment)
            np.copyto(labels[sl], on_voi.argmax(axis=1).astype(np.uint8), where=take)
    return from_canonical(labels, scan_geometry)
