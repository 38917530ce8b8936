"""Segment scans with trained SEQ-UNET checkpoints (one model or an ensemble)."""

from orbitseg.predict.core import load_model, predict_scan, predict_vois

__all__ = ["load_model", "predict_scan", "predict_vois"]
