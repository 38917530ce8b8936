"""Segment scans with trained SEQ-UNET models: the :class:`Segmenter` (one model object used by
``orbitseg predict``, the labeling app, training's test-fold scoring and export) and
``orbitseg predict``'s folder runner (:mod:`orbitseg.predict.run`)."""

from orbitseg.predict.segmenter import Segmentation, Segmenter

__all__ = ["Segmenter", "Segmentation"]
