"""The CT window: clip to [level - width/2, level + width/2] HU and scale to [0, 1] with fixed bounds."""

from __future__ import annotations

import numpy as np

from orbitseg.constants import WINDOW_LEVEL, WINDOW_WIDTH, window_bounds


def apply_window(hu: np.ndarray, *, level: float = WINDOW_LEVEL, width: float = WINDOW_WIDTH) -> np.ndarray:
    """Map Hounsfield units to [0, 1] through a fixed window.

    Unlike a per-sequence min-max (what the paper's code did), the same tissue
    gets the same value in every scan: with the default window (level 48,
    width 400) -152 HU maps to 0, 248 HU to 1, water (0 HU) to 0.38.

    Parameters
    ----------
    hu : array of any shape, Hounsfield units
    level, width : window centre and width in HU

    Returns
    -------
    float32 array of the same shape, values in [0, 1]
    """
    lo, hi = window_bounds(level, width)
    out = (np.asarray(hu, dtype=np.float32) - np.float32(lo)) / np.float32(hi - lo)
    return np.clip(out, 0.0, 1.0, out=out)
