"""Checkpoint -> model, and scan -> label volume on the scan's own grid.

``predict_scan(models, scan, config, device)``: :func:`prepare_scan` (no
labels) finds both orbits and gives each VOI's windowed, fitted slices; every
model predicts every slice (:func:`orbitseg.model.predict_volume_slices`, each
slice encoded once); the models' probabilities are averaged (an ensemble, e.g.
the four fold models); :func:`labels_to_scan` maps them back onto the
scan's grid.  Slices are rounded through float16 first, exactly as the
training store holds them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from orbitseg.errors import InputError
from orbitseg.io.orient import from_canonical
from orbitseg.io.volume import Volume
from orbitseg.preprocess.pipeline import (BoxProbabilities, PreprocessConfig, box_probabilities, labels_to_scan,
                                         prepare_scan)

__all__ = ["load_checkpoint", "load_training_checkpoint", "load_model", "predict_vois", "predict_scan"]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint file as a dict (``weights_only`` loading: tensors and plain Python only)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint file does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt / foreign files
        raise InputError(path, f"cannot be read as a torch checkpoint ({type(exc).__name__}: {exc})") from None


def load_training_checkpoint(path: str | Path) -> dict:
    """An orbitseg training checkpoint as a dict, refused by name unless it holds the
    weights (``model``) and the ``preset`` that rebuilds the network."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "preset" not in ckpt:
        raise InputError(path, "is not an orbitseg training checkpoint (no 'model'/'preset' entries)")
    return ckpt


def load_model(checkpoint_path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, PreprocessConfig]:
    """Model (eval mode, on ``device``) and the preprocessing it was trained with, from an
    orbitseg training checkpoint (``checkpoint_best.pt`` / ``checkpoint_last.pt``)."""
    from orbitseg.model import build_model

    ckpt = load_training_checkpoint(checkpoint_path)
    model = build_model(ckpt["preset"]["model"])
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    config = PreprocessConfig.from_dict(ckpt["preprocess"])
    return model, config


def _as_slices(images: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.asarray(images, dtype=np.float16).astype(np.float32))[:, None].to(device)


@torch.inference_mode()
def predict_vois(models: list[nn.Module], images: np.ndarray, device: str | torch.device = "cpu",
                 batch_size: int = 64, *, mirror: bool = False, precision: str = "float32") -> np.ndarray:
    """Average probabilities ``(n, C, S, S)`` of ``models`` for one VOI's slices ``(n, S, S)``.

    ``mirror=True`` also predicts the left-right mirrored slices (training flips them half
    the time, so they are in distribution) and averages the mirrored-back result in:
    twice the network time for a small gain (the shipped 80 x 80 ensemble on 28 new synthetic
    patients: Dice +0.000 / +0.001 / +0.001 for eyeball / muscles / nerve).  ``precision``: float32,
    bfloat16 or auto (:data:`orbitseg.model.PRECISIONS`)."""
    from orbitseg.model import predict_volume_slices

    if not models:
        raise ValueError("no models to predict with")
    x = _as_slices(images, device)
    views = [x, torch.flip(x, dims=(-1,))] if mirror else [x]
    acc = None
    for m in models:
        for v, xv in enumerate(views):
            p = predict_volume_slices(m, xv, batch_size=batch_size, precision=precision)
            p = torch.flip(p, dims=(-1,)) if v else p
            acc = p if acc is None else acc + p
    return (acc / (len(models) * len(views))).cpu().numpy()


def predict_scan(models: list[nn.Module] | nn.Module, scan: Volume, config: PreprocessConfig,
                 device: str | torch.device = "cpu", *, batch_size: int = 64,
                 return_probabilities: bool = False, mirror: bool = False,
                 precision: str = "float32") -> tuple[Volume, BoxProbabilities | None]:
    """Segment ``scan``: (labels Volume on the scan's grid, the class probabilities when
    ``return_probabilities`` else None).  The probabilities are a :class:`BoxProbabilities` on
    the scan's canonical grid, held over the orbits' bounding box only (``.region()`` gives any
    part as a ``(C, nz, ny, nx)`` array).  ``mirror``, ``precision``: see :func:`predict_vois`."""
    if isinstance(models, nn.Module):
        models = [models]
    preps = prepare_scan(scan, config)
    parts = [(p.box, p.fit, predict_vois(models, p.images, device, batch_size, mirror=mirror,
                                                  precision=precision)) for p in preps]
    if not return_probabilities:
        return scan.like(labels_to_scan(parts, scan.geometry)), None
    probs = box_probabilities(parts, scan.geometry)
    return scan.like(from_canonical(probs.argmax(), scan.geometry)), probs
