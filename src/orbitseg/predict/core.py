"""Networks and a scan -> label volume on the scan's own grid (no files: :class:`Segmenter` loads).

``predict_scan(networks, scan, config)``: :func:`prepare_scan` (no labels) finds both orbits and
gives each VOI's windowed, fitted slices; every network predicts every slice
(:func:`orbitseg.model.predict_volume_slices`, each slice encoded once); the networks'
probabilities are averaged (an ensemble, e.g. the four fold models); :func:`labels_to_scan` maps
them back onto the scan's grid.  Slices are rounded through float16 first, exactly as the training
store holds them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from orbitseg.evaluate.quality import fold_agreement_by_side
from orbitseg.io.orient import from_canonical
from orbitseg.io.volume import Volume
from orbitseg.preprocess.pipeline import (BoxProbabilities, PreprocessConfig, box_probabilities, labels_to_scan,
                                         prepare_scan)

__all__ = ["ScanPrediction", "predict_vois", "predict_scan", "finder_midline", "FINDER_MIDLINE", "ONE_GLOBE_MIDLINE"]

#: how a midline from the orbit finder is named (``measurements.csv``'s ``midline_from``): halfway between the two
#: globes it found, or (one globe: the other orbit mirrored) the plane of the head's bony symmetry
FINDER_MIDLINE = "orbit_finder"
ONE_GLOBE_MIDLINE = "head_symmetry"


def finder_midline(scan: Volume) -> tuple[float, str] | None:
    """``(x, how)``: LPS x halfway between the two globe centres the orbit finder gives ``scan`` (``how`` is
    ``"orbit_finder"``, or ``"head_symmetry"`` where it found one globe and mirrored the other orbit), the sides'
    midline where labels hold fewer than two globes; None where it finds no orbits."""
    from orbitseg.errors import InputError
    from orbitseg.io.orient import to_canonical
    from orbitseg.preprocess.voi import locate_orbits

    try:
        right, left = locate_orbits(to_canonical(scan))
    except InputError:
        return None
    return _midline_of(right, left)


def _midline_of(right, left) -> tuple[float, str]:
    # canonical LPS millimetres are the scan's physical ones; a mirrored box is symmetric about the head's midline
    how = ONE_GLOBE_MIDLINE if right.mirrored or left.mirrored else FINDER_MIDLINE
    return float((right.globe_centre[0] + left.globe_centre[0]) / 2.0), how


def _as_slices(images: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.asarray(images, dtype=np.float16).astype(np.float32))[:, None].to(device)


@torch.inference_mode()
def predict_vois(models: list[nn.Module], images: np.ndarray, device: str | torch.device = "cpu",
                 batch_size: int = 64, *, mirror: bool = False, precision: str = "float32",
                 per_model: bool = False) -> np.ndarray | tuple[np.ndarray, list[np.ndarray]]:
    """Average probabilities ``(n, C, S, S)`` of ``models`` for one VOI's slices ``(n, S, S)``.

    ``mirror=True`` also predicts the left-right mirrored slices (training flips them half
    the time, so they are in distribution) and averages the mirrored-back result in:
    twice the network time for a small gain (the shipped 80 x 80 ensemble on 28 new synthetic
    patients: Dice +0.000 / +0.001 / +0.001 for eyeball / muscles / nerve).  ``precision``: float32,
    bfloat16 or auto (:data:`orbitseg.model.PRECISIONS`).  On the CPU the models' weights are made
    channels-last in place (faster; the same values).  ``per_model=True`` returns
    ``(mean, [each model's (n, C, S, S) probabilities])``; the mean is the same either way."""
    from orbitseg.model import predict_volume_slices

    if not models:
        raise ValueError("no models to predict with")
    if torch.device(device).type == "cpu":
        # channels-last weights make oneDNN keep every feature map channels-last (the 1-channel input does not
        # decide it): the shipped networks ran 17-26 % faster in float32 and bfloat16 (2-core Xeon, 3 interleaved
        # rounds), probabilities within 6e-5.  In place, so that every caller runs the same arithmetic.
        for m in models:
            m.to(memory_format=torch.channels_last)
    x = _as_slices(images, device)
    views = [x, torch.flip(x, dims=(-1,))] if mirror else [x]
    acc, each = None, []
    for m in models:
        acc_m = None
        for v, xv in enumerate(views):
            p = predict_volume_slices(m, xv, batch_size=batch_size, precision=precision)
            p = torch.flip(p, dims=(-1,)) if v else p
            acc = p if acc is None else acc + p  # summed in this order so that the mean does not depend on per_model
            if per_model:
                acc_m = p if acc_m is None else acc_m + p
        if per_model:
            each.append((acc_m / len(views)).cpu().numpy())
    mean = (acc / (len(models) * len(views))).cpu().numpy()
    return (mean, each) if per_model else mean


@dataclass(frozen=True)
class ScanPrediction:
    """What the networks say of one scan, before any post-processing.

    ``labels``: the ensemble's argmax on the scan's grid; ``probabilities``: the ensemble's class
    probabilities over the orbits' bounding box of the scan's canonical grid (None unless asked);
    ``member_probabilities``: each network's own, in the order of the networks (None unless asked);
    ``member_agreement``: ``{(side, label): mean pairwise Dice}`` of the networks' labels on each VOI's
    network slices (None unless asked; :func:`orbitseg.evaluate.quality.fold_agreement_by_side`);
    ``orbit_midline``: :func:`finder_midline` of the scan, from the boxes the prediction used.
    """

    labels: Volume
    probabilities: BoxProbabilities | None = None
    member_probabilities: tuple[BoxProbabilities, ...] | None = None
    member_agreement: dict[tuple[str, int], float] | None = None
    orbit_midline: tuple[float, str] | None = None


def predict_scan(models: list[nn.Module] | nn.Module, scan: Volume, config: PreprocessConfig,
                 device: str | torch.device = "cpu", *, batch_size: int = 64, probabilities: bool = False,
                 per_model: bool = False, agreement: bool = False, mirror: bool = False,
                 precision: str = "float32", engine=None) -> ScanPrediction:
    """Segment ``scan`` with ``models`` (averaged): labels on the scan's grid and, when asked, the
    class probabilities as :class:`BoxProbabilities` on the scan's canonical grid, held over the
    orbits' bounding box only (``.region()`` gives any part as a ``(C, nz, ny, nx)`` array).
    ``agreement=True`` also measures how far the networks agree, on each VOI's network slices (no
    resampling: a cubic map back per network would cost about 0.2 s per orbit and 70 MB per network on a
    512 x 512 x 100 scan).  ``mirror``, ``precision``: see :func:`predict_vois`.  ``engine``: an
    :mod:`orbitseg.predict.engine` engine to run instead of ``models`` on ``device`` (its
    ``vois(images, mirror=, per_model=)`` replaces :func:`predict_vois`)."""
    if isinstance(models, nn.Module):
        models = [models]
    if engine is not None:
        models = list(engine.networks)
    parts, member_parts, member_maps = [], [[] for _ in models], {}
    for p in prepare_scan(scan, config):
        out = (engine.vois(p.images, mirror=mirror, per_model=per_model or agreement) if engine is not None else
               predict_vois(models, p.images, device, batch_size, mirror=mirror, precision=precision,
                            per_model=per_model or agreement))
        mean, each = out if per_model or agreement else (out, [])
        parts.append((p.box, p.fit, mean))
        if agreement:  # one VOI is one side
            member_maps[p.box.side] = [e.argmax(axis=1).astype(np.uint8) for e in each]
        for k, e in enumerate(each if per_model else []):
            member_parts[k].append((p.box, p.fit, e))
        del out, each
    members = tuple(box_probabilities(mp, scan.geometry) for mp in member_parts) if per_model else None
    agree = fold_agreement_by_side(member_maps) if agreement else None
    boxes = {box.side: box for box, _, _ in parts}
    midline = _midline_of(boxes["right"], boxes["left"]) if {"right", "left"} <= set(boxes) else None
    if not probabilities:
        return ScanPrediction(scan.like(labels_to_scan(parts, scan.geometry)), None, members, agree, midline)
    probs = box_probabilities(parts, scan.geometry)
    return ScanPrediction(scan.like(from_canonical(probs.argmax(), scan.geometry)), probs, members, agree, midline)
