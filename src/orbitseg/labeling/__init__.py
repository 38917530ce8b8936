"""Semi-automatic labeling aids of the paper's MediLabel workflow, as plain functions.

* SmartPencil: :func:`superpixels` / :func:`supervoxels`, :class:`SuperpixelCache`, :func:`pencil_click`
* SmartFill: :func:`smart_fill` (Boykov-Jolly graph cut, several labels by alpha-expansion)
* AutoCorrection: :func:`auto_correct` (islands, holes, smoothing, narrow-band snapping)

NumPy arrays in, masks out; geometry is passed explicitly as ``spacing`` in mm
((sy, sx) for a slice, (sz, sy, sx) for a slab).  No files, no server.
"""

from ._common import BACKGROUND_STROKE
from .superpixels import RESOLUTIONS, SuperpixelCache, pencil_click, superpixels, supervoxels
from .smartfill import smart_fill
from .autocorrect import auto_correct

__all__ = [
    "BACKGROUND_STROKE",
    "RESOLUTIONS",
    "SuperpixelCache",
    "pencil_click",
    "superpixels",
    "supervoxels",
    "smart_fill",
    "auto_correct",
]
