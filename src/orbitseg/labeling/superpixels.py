"""SmartPencil: superpixel maps of a windowed CT slice, a per-slice cache, and the click.

The paper's SmartPencil shows a superpixel map at a chosen resolution (100, 500,
1000 or 2000 superpixels) and a click assigns the whole superpixel under the
cursor to the active label.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Hashable

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import sobel
from skimage.segmentation import slic, watershed

from ..constants import WINDOW_LEVEL, WINDOW_WIDTH
from ._common import check_bool, check_image, check_label, check_mask, check_spacing, window01

#: superpixel counts offered by the paper's SmartPencil
RESOLUTIONS: tuple[int, ...] = (100, 500, 1000, 2000)
#: SLIC compactness for windowed CT in [0, 1] (intensity distance vs. spatial distance in grid steps)
COMPACTNESS: float = 0.08


def superpixels(image_hu_slice, *, n_segments: int = 1000, spacing=(1.0, 1.0),
                window=(WINDOW_LEVEL, WINDOW_WIDTH), compactness: float = COMPACTNESS,
                sigma_mm: float = 0.0, max_num_iter: int = 5, method: str = "slic") -> np.ndarray:
    """Superpixel label map (int32, labels 0..K-1) of one CT slice in HU.

    SLIC (scikit-image) on the slice windowed to [0, 1] with ``window``
    (level, width); ``spacing`` (sy, sx) in mm makes superpixels square in mm
    on anisotropic pixels.  ``n_segments`` is approximate (SLIC's grid), any
    positive number is allowed.  ``sigma_mm`` pre-smooths (0 = none: CT is
    already smooth enough at the orbit window and SLIC's mean does the rest).

    ``method="watershed"``: compact watershed (scikit-image) of the gradient
    magnitude from a regular grid of ``n_segments`` markers -- exactly the
    requested count on a square grid, and on our synthetic orbit slices a
    higher boundary recall than SLIC at 500-1000 (see bench/annotate.py
    ``--compare-superpixels``); ``compactness`` is then watershed's (default 1e-4).
    """
    img = check_image(image_hu_slice, name="image_hu_slice", ndims=(2,))
    sp = check_spacing(spacing, 2)
    if method == "slic":
        return _slic(img, sp, n_segments, window, compactness, sigma_mm, max_num_iter)
    if method == "watershed":
        return _compact_watershed(img, sp, n_segments, window,
                                  1e-4 if compactness == COMPACTNESS else compactness)
    raise ValueError(f"method must be 'slic' or 'watershed', got {method!r}")


def _compact_watershed(img, sp, n_segments, window, compactness):
    if isinstance(n_segments, bool) or not isinstance(n_segments, (int, np.integer)) or n_segments < 1:
        raise ValueError(f"n_segments must be a positive integer, got {n_segments!r}")
    x = window01(img, window)
    g = sobel(ndi.gaussian_filter(x, 0.35 / sp))  # ~0.35 mm pre-smoothing against noise
    ny, nx = x.shape
    # grid square in mm
    area = ny * sp[0] * nx * sp[1] / n_segments
    step = np.sqrt(area) / sp
    yy = np.arange(step[0] / 2, ny, step[0]).astype(int)
    xx = np.arange(step[1] / 2, nx, step[1]).astype(int)
    markers = np.zeros(x.shape, np.int32)
    markers[np.ix_(yy, xx)] = np.arange(1, yy.size * xx.size + 1, dtype=np.int32).reshape(yy.size, xx.size)
    lab = watershed(g, markers, compactness=float(compactness)) - 1
    return np.ascontiguousarray(lab, dtype=np.int32)


def supervoxels(volume_hu, *, n_segments: int = 20000, spacing=(1.0, 1.0, 1.0),
                window=(WINDOW_LEVEL, WINDOW_WIDTH), compactness: float = COMPACTNESS,
                sigma_mm: float = 0.0, max_num_iter: int = 5) -> np.ndarray:
    """3-D supervoxels (int32, 0..K-1) of a volume ``(nz, ny, nx)`` with ``spacing`` (sz, sy, sx) mm."""
    vol = check_image(volume_hu, name="volume_hu", ndims=(3,))
    sp = check_spacing(spacing, 3)
    return _slic(vol, sp, n_segments, window, compactness, sigma_mm, max_num_iter)


def _slic(img, sp, n_segments, window, compactness, sigma_mm, max_num_iter):
    if isinstance(n_segments, bool) or not isinstance(n_segments, (int, np.integer)) or n_segments < 1:
        raise ValueError(f"n_segments must be a positive integer, got {n_segments!r}")
    if not compactness > 0:
        raise ValueError(f"compactness must be positive, got {compactness!r}")
    x = window01(img, window)
    # skimage measures spatial distance as pixel offsets times ``spacing`` against a grid step in
    # pixels, so pass spacing relative to the finest axis (absolute mm would rescale compactness);
    # it divides sigma by spacing, so sigma is given in the same relative unit.
    rel = sp / sp.min()
    sigma = float(sigma_mm) / sp.min() if sigma_mm > 0 else 0
    lab = slic(x, n_segments=int(n_segments), compactness=float(compactness), channel_axis=None,
               spacing=rel, start_label=0, sigma=sigma, max_num_iter=int(max_num_iter),
               enforce_connectivity=True)
    return np.ascontiguousarray(lab, dtype=np.int32)


def superpixel_borders(spx_map) -> np.ndarray:
    """Map of the borders between superpixels, as the SmartPencil overlay draws them.

    A pixel is a border pixel when its left or upper neighbour belongs to another superpixel
    (so each border is one pixel wide, on the right / lower side of it).

    Parameters
    ----------
    spx_map : (ny, nx) integer array
        Superpixel ids, e.g. from :func:`superpixels`.

    Returns
    -------
    (ny, nx) uint8 array
        1 on borders, 0 elsewhere (row 0 / column 0 are borders only across the other axis).
    """
    spx = np.asarray(spx_map)
    if spx.ndim != 2 or not np.issubdtype(spx.dtype, np.integer):
        raise ValueError(f"spx_map must be a 2-D integer label map, got {spx.ndim}-D {spx.dtype}")
    b = np.zeros(spx.shape, np.uint8)
    b[:, 1:] |= spx[:, 1:] != spx[:, :-1]
    b[1:, :] |= spx[1:, :] != spx[:-1, :]
    return b


class SuperpixelCache:
    """Bounded LRU cache of superpixel maps keyed by (scan_id, axis, slice index, n_segments).

    ``get`` returns the very same (read-only) array for a repeated key, so the
    second click on a slice costs no SLIC.  Thread-safe.  ``scan_id`` must
    change whenever the pixels change (e.g. include a content hash).
    """

    def __init__(self, maxsize: int = 64):
        if isinstance(maxsize, bool) or not isinstance(maxsize, (int, np.integer)) or maxsize < 1:
            raise ValueError(f"maxsize must be a positive integer, got {maxsize!r}")
        self.maxsize = int(maxsize)
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(scan_id: Hashable, axis: int, index: int, n_segments: int) -> tuple:
        return (scan_id, int(axis), int(index), int(n_segments))

    def get(self, scan_id: Hashable, axis: int, index: int, image_hu_slice=None, *,
            n_segments: int = 1000, spacing=(1.0, 1.0), window=(WINDOW_LEVEL, WINDOW_WIDTH),
            **slic_kwargs) -> np.ndarray:
        """Cached map for the key; computed from ``image_hu_slice`` on a miss.

        On a miss without ``image_hu_slice`` raises KeyError.
        """
        k = self.key(scan_id, axis, index, n_segments)
        with self._lock:
            if k in self._d:
                self._d.move_to_end(k)
                self.hits += 1
                return self._d[k]
        if image_hu_slice is None:
            raise KeyError(f"no superpixel map cached for {k} and no image_hu_slice given")
        spx = superpixels(image_hu_slice, n_segments=n_segments, spacing=spacing, window=window, **slic_kwargs)
        spx.setflags(write=False)
        with self._lock:
            if k in self._d:  # another thread won the race: keep one object
                self._d.move_to_end(k)
                return self._d[k]
            self.misses += 1
            self._d[k] = spx
            while len(self._d) > self.maxsize:
                self._d.popitem(last=False)
        return spx

    def __contains__(self, k) -> bool:
        return k in self._d

    def __len__(self) -> int:
        return len(self._d)

    def invalidate(self, scan_id: Hashable) -> int:
        """Drop every map of ``scan_id``; returns how many were dropped."""
        with self._lock:
            ks = [k for k in self._d if k[0] == scan_id]
            for k in ks:
                del self._d[k]
        return len(ks)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()


def pencil_click(mask, spx_map, rc, label: int, *, eraser: bool = False, protected=None) -> np.ndarray:
    """New mask with the superpixel under ``rc = (row, col)`` set to ``label``.

    ``eraser=True`` clears that superpixel to background, but only the pixels
    that hold ``label`` (the active label): erasing muscle never deletes a
    neighbouring eyeball.  Pixels where ``protected`` is True never change.
    The input mask is not modified.
    """
    spx = np.asarray(spx_map)
    if spx.ndim != 2 or not np.issubdtype(spx.dtype, np.integer):
        raise ValueError(f"spx_map must be a 2-D integer label map, got {spx.ndim}-D {spx.dtype}")
    m = check_mask(mask, spx.shape, name="mask")
    label = check_label(label)
    prot = check_bool(protected, spx.shape, name="protected")
    try:
        r, c = (int(v) for v in rc)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"rc must be (row, col), got {rc!r}") from exc
    if not (0 <= r < spx.shape[0] and 0 <= c < spx.shape[1]):
        raise ValueError(f"rc {rc!r} lies outside the slice of shape {spx.shape}")
    region = spx == spx[r, c]
    out = m.copy()
    if eraser:
        region &= m == label
        value = 0
    else:
        value = label
    if prot is not None:
        region &= ~prot
    out[region] = value
    return out
