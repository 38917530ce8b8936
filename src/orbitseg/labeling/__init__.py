"""Semi-automatic labeling aids of the paper's MediLabel workflow, as plain functions.

* SmartPencil: :func:`superpixels` / :func:`supervoxels`, :class:`SuperpixelCache`, :func:`pencil_click`,
  :func:`superpixel_borders` (the overlay)
* SmartFill: :func:`smart_fill` (Boykov-Jolly graph cut, several labels by alpha-expansion)
* AutoCorrection: :func:`auto_correct` (islands, holes, smoothing, narrow-band snapping)
* where the page looks: :func:`orbit_frame` (the slices through the orbits and the region to frame, from
  the orbit finder's boxes or :func:`extents_from_labels`), :meth:`OrbitFrame.border_region` and
  :func:`visible_borders` (superpixel borders in the orbits only, not in air, bone or brain)
* on a slab of slices as the labeling page sends it: :func:`smart_fill_slab` (a fill per group of
  strokes), :func:`auto_correct_slab` (on the labels' bounding box)

NumPy arrays in, masks out; geometry is passed explicitly as ``spacing`` in mm
((sy, sx) for a slice, (sz, sy, sx) for a slab).  No files, no server.
"""

from ._common import BACKGROUND_STROKE
from .superpixels import RESOLUTIONS, SuperpixelCache, pencil_click, superpixel_borders, superpixels, supervoxels
from .smartfill import smart_fill
from .autocorrect import auto_correct
from .slab import NoStrokesError, auto_correct_slab, smart_fill_slab
from .orbit_view import OrbitExtent, OrbitFrame, extents_from_labels, orbit_frame, soft_tissue, visible_borders

__all__ = [
    "BACKGROUND_STROKE",
    "RESOLUTIONS",
    "SuperpixelCache",
    "pencil_click",
    "superpixel_borders",
    "superpixels",
    "supervoxels",
    "smart_fill",
    "auto_correct",
    "smart_fill_slab",
    "auto_correct_slab",
    "NoStrokesError",
    "OrbitExtent",
    "OrbitFrame",
    "orbit_frame",
    "extents_from_labels",
    "visible_borders",
    "soft_tissue",
]
