"""A small CT-like axial orbit phantom for tests and for the annotation bench
when the synthetic cohort (``orbitseg.synth``) is not available.

Not anatomy: a globe (vitreous ~10 HU inside a denser sclera ring), medial and
lateral recti (~50 HU) as bands from the globe to the apex, an optic nerve
(~35 HU) between them in retrobulbar fat (~-90 HU), bony walls, air in front,
Gaussian blur (partial volume) and noise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def orbit_slice(shape=(512, 512), spacing=(0.45, 0.45), *, seed: int = 0, noise_hu: float = 12.0,
                blur_mm: float = 0.4):
    """Return ``(image_hu float32, labels uint8)`` of one axial slice with two orbits."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    sy, sx = spacing
    yy, xx = np.mgrid[0:ny, 0:nx]
    Y, X = yy * sy, xx * sx  # mm
    H, Wd = ny * sy, nx * sx
    img = np.full(shape, 30.0)  # brain/soft tissue behind
    lab = np.zeros(shape, np.uint8)
    img[Y < 0.12 * H] = -1000.0  # air in front of the face
    for side in (-1, 1):
        cx = Wd / 2 + side * (0.2 * Wd + rng.uniform(-3, 3))
        gy = 0.12 * H + 14 + rng.uniform(-2, 2)
        r = rng.uniform(11, 12.5)
        apex = np.array([H * 0.62 + rng.uniform(-4, 4), Wd / 2 + side * 0.08 * Wd])
        # orbit cone of fat: triangle globe -> apex, walls of bone around
        def in_cone(widen):
            t = np.clip((Y - gy) / (apex[0] - gy), 0, 1)
            cxl = cx + (apex[1] - cx) * t
            half = (r + 4 + widen) * (1 - t) + (2 + widen) * t
            return (Y >= gy - r - 6) & (Y <= apex[0] + widen) & (np.abs(X - cxl) <= half)
        wall = in_cone(3.0) & ~in_cone(0.0) & (Y > gy - 2)
        img[in_cone(0.0)] = -90.0
        img[wall] = 650.0
        # muscles: bands along both cone sides
        t = np.clip((Y - gy) / (apex[0] - gy), 0, 1)
        cxl = cx + (apex[1] - cx) * t
        half = (r + 4) * (1 - t) + 2 * t
        th = rng.uniform(3.0, 4.5)
        mus = (Y >= gy) & (Y <= apex[0] - 1) & (np.abs(X - cxl) <= half - 0.5) & \
              (np.abs(X - cxl) >= half - 0.5 - th * (0.6 + 0.4 * (1 - t)))
        img[mus] = 50.0
        lab[mus] = 2
        # optic nerve: wavy band from the posterior pole to the apex
        wob = 1.5 * np.sin((Y - gy) / 6.0 + rng.uniform(0, 6))
        nerve = (Y >= gy) & (Y <= apex[0] - 12) & (np.abs(X - (cxl + wob * (1 - t))) <= rng.uniform(1.6, 2.1))
        img[nerve] = 35.0
        lab[nerve & ~mus] = 3
        lab[mus] = 2
        # globe: sclera ring + vitreous + lens
        d = np.hypot(Y - gy, X - cx)
        globe = d <= r
        img[globe] = 55.0
        img[d <= r - 1.0] = 10.0
        lens = ((Y - (gy - r + 2.5)) / 1.8) ** 2 + ((X - cx) / 4.0) ** 2 <= 1
        img[lens] = 95.0
        lab[globe] = 1
    img = ndi.gaussian_filter(img, sigma=(blur_mm / sy, blur_mm / sx))
    img += rng.normal(0.0, noise_hu, shape)
    return img.astype(np.float32), lab


def globe_slice(shape=(160, 160), spacing=(0.5, 0.5), *, seed: int = 0, noise_hu: float = 12.0,
                radius_mm: float = 12.0, sclera_mm: float = 1.0):
    """A CT-like globe: a noisy disk of vitreous (~10 HU) inside a ring of sclera (~55 HU,
    ``sclera_mm`` thick) in orbital fat (-90 HU).  The label is the whole globe, sclera included
    (as the eyeball label of orbital CT is)."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    d = np.hypot((yy - ny / 2) * spacing[0], (xx - nx / 2) * spacing[1])
    img = np.full(shape, -90.0)
    img[d <= radius_mm] = 55.0
    img[d <= radius_mm - sclera_mm] = 10.0
    img = ndi.gaussian_filter(img, 0.8)
    img += rng.normal(0, noise_hu, shape)
    return img.astype(np.float32), (d <= radius_mm).astype(np.uint8)
