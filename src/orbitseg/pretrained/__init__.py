"""Models shipped inside the package, so `orbitseg predict` works on a new scan at once.

``default/``: the four fold models of the 'default' SEQ-UNET preset trained with
``orbitseg train --fold all`` on the default synthetic cohort (``model.json``
says how to re-create them; ``cv_summary.json`` and ``cv_per_case.json`` hold
their 4-fold cross-validation metrics on held-out patients).
"""

from __future__ import annotations

from pathlib import Path

SHIPPED = "default"


def shipped_model_dir(name: str = SHIPPED) -> Path:
    """Folder of a shipped model (fold_k.pt files, model.json, cross-validation metrics)."""
    return Path(__file__).resolve().parent / name
