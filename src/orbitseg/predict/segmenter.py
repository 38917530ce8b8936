"""The trained model as one object: every place that runs a trained network goes through it.

::

    from orbitseg.predict import Segmenter
    seg = Segmenter.load()                               # the shipped model (its four folds averaged)
    seg = Segmenter.load("RUN_DIR", folds="0,2")         # a cross-validation run, a model folder, one checkpoint
    result = seg.segment(scan)                           # a Volume in, labels on the scan's grid out
    result.labels, result.network_labels                 # post-processed / as the networks gave them
    seg.segment(scan, probabilities=True, per_fold=True) # + class probabilities over the orbit boxes
    seg.segment(scan, fold_agreement=True)               # + how far the folds agree, per orbit and structure

A :class:`Segmenter` holds the fold networks (loaded once, on one device), the preprocessing they
were trained with, the post-processing stored with them, the arithmetic (float32 or bfloat16) and
mirrored test-time augmentation.  ``orbitseg predict``, the labeling app's Predict button, the
training loop's validation and test-fold scoring, ``orbitseg export``'s re-scoring and the demo all
use it; nothing else loads a checkpoint to segment a scan.  (A later inference engine or new
outputs plug in here.)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from orbitseg.constants import FULL_FOLD
from orbitseg.errors import InputError
from orbitseg.io.volume import Volume
from orbitseg.predict.core import predict_scan
from orbitseg.preprocess.pipeline import BoxProbabilities, PreprocessConfig
from orbitseg.runs.layout import network_name

__all__ = ["Segmenter", "Segmentation", "model_postprocessing"]


@dataclass(frozen=True)
class Segmentation:
    """One scan segmented by a :class:`Segmenter`.

    Attributes
    ----------
    labels : uint8 label Volume on the scan's own grid (values 0..3), post-processed
    network_labels : the same before post-processing (the ensemble's argmax)
    probabilities : the ensemble's class probabilities ``(C, ...)`` over the orbits' bounding box of the
        scan's canonical grid, or None unless asked
    fold_probabilities : each fold network's own probabilities (same box), in fold order, or None
    fold_agreement : ``{(side, label): mean pairwise Dice}`` between the fold networks' labels, measured on
        each orbit's network slices (the quality flags' fold-disagreement check), or None unless asked
    orbit_midline : :func:`~orbitseg.predict.core.finder_midline` of the scan, from the boxes the prediction used:
        the sides' midline where the labels hold fewer than two globes (``midline_fallback`` of the measurements)
    """

    labels: Volume
    network_labels: Volume
    probabilities: BoxProbabilities | None = None
    fold_probabilities: tuple[BoxProbabilities, ...] | None = None
    fold_agreement: dict[tuple[str, int], float] | None = None
    orbit_midline: tuple[float, str] | None = None


def model_postprocessing(checkpoints: Sequence[Path]) -> tuple[dict, str]:
    """The post-processing stored with ``checkpoints`` and a line saying what it is.

    Each checkpoint's folder may hold ``postprocess.json`` (chosen on that run's validation
    cases; the shipped model's folder holds one pooled over its four folds).  One folder:
    its choice; several (a cross-validation run's folds): their validation cases pooled.  A
    model without the file (trained before orbitseg chose post-processing) gets none."""
    from orbitseg.predict.postprocess import NO_POSTPROCESSING, pool_choices, read_postprocessing

    folders = list(dict.fromkeys(Path(c).parent for c in checkpoints))
    choices = [read_postprocessing(f) for f in folders]
    if any(c is None for c in choices):
        lacking = [str(f) for f, c in zip(folders, choices) if c is None]
        return dict(NO_POSTPROCESSING), f"no post-processing ({', '.join(lacking)} hold(s) no postprocess.json)"
    choice = choices[0] if len(choices) == 1 else pool_choices(choices)
    rules = ", ".join(f"{k} {v}" for k, v in choice["rules"].items())
    cases = f"{len(choice.get('cases', []))} validation case(s)"
    if any(network_name(c) == FULL_FOLD for c in checkpoints):  # `orbitseg export --full` pools the folds' choice
        cases += (f" of the cross-validation folds trained with it (the {FULL_FOLD} model held no case out to "
                  "choose on)")
    return choice, f"post-processing chosen on {cases}: {rules}"


def _model_json(checkpoints: Sequence[Path]) -> dict:
    """``model.json`` of the one model folder ``checkpoints`` come from, or {} (several folders, or none)."""
    from orbitseg.runs.layout import read_model_json

    folders = {Path(c).parent for c in checkpoints}
    return (read_model_json(folders.pop()) or {}) if len(folders) == 1 else {}


def training_acquisition(segmenter: Segmenter) -> dict | None:
    """The acquisition range the segmenter's model was trained on (``model.json``'s ``training_acquisition``,
    written by ``orbitseg export``: :func:`orbitseg.evaluate.quality.quality_flags` compares each scan with it),
    or None when its checkpoints are not one model folder or that folder records none."""
    from orbitseg.evaluate.quality import TRAINING_ACQUISITION_KEY

    return segmenter.model_info.get(TRAINING_ACQUISITION_KEY)


def fold_limits(segmenter: Segmenter) -> dict | None:
    """The fold-agreement limits the segmenter's model records (``model.json``'s ``fold_agreement_min``, chosen
    for that model's folds by ``bench/quality_flags.py``), or None: the quality flags then use
    :data:`orbitseg.evaluate.quality.FOLD_AGREEMENT_MIN`."""
    from orbitseg.evaluate.quality import FOLD_AGREEMENT_KEY

    return segmenter.model_info.get(FOLD_AGREEMENT_KEY)


class Segmenter:
    """Fold networks loaded once, and everything their checkpoints imply.

    Parameters
    ----------
    networks : the fold networks (eval mode, on ``device``); their probabilities are averaged
    preprocess : the preprocessing the networks' slices were made with
    checkpoints : the files the networks came from (recorded in ``prediction.json``); may be empty
    postprocess : the connected-component post-processing choice (``{"rules": {...}}``), or None for
        none at all (labels as the networks give them)
    postprocess_note : a line saying where the post-processing came from
    device : where the networks run
    precision : ``"auto"``, ``"float32"`` or ``"bfloat16"`` (resolved once for ``device``)
    mirror : also predict the left-right mirrored slices and average (twice the network time)
    batch_size : sequences per forward pass
    engine : ``"torch"`` (the reference), ``"onnx"`` (ONNX Runtime), ``"openvino"`` or ``"auto"`` (the fastest on this
        machine, measured once): see :mod:`orbitseg.predict.engine`
    log : where a line about building or choosing the engine goes
    full_network : the checkpoint of a network trained on every case beside these folds (``--folds full``), which
        the speed note offers; None where the model has none
    """

    def __init__(self, networks: Sequence[nn.Module], preprocess: PreprocessConfig, *,
                 checkpoints: Sequence[Path] = (), postprocess: dict | None = None, postprocess_note: str = "",
                 device: str | torch.device = "cpu", precision: str = "auto", mirror: bool = False,
                 batch_size: int = 64, engine: str = "torch", log=print, full_network: Path | None = None) -> None:
        from orbitseg.model import resolve_precision
        from orbitseg.predict.engine import make_engine

        if not networks:
            raise ValueError("a Segmenter needs at least one network")
        self.networks = list(networks)
        self.preprocess = preprocess
        self.checkpoints = [Path(c) for c in checkpoints]
        self.full_network = None if full_network is None else Path(full_network)
        self.postprocess = postprocess
        self.postprocess_note = postprocess_note or ("no post-processing" if postprocess is None else "")
        self.device = torch.device(device)
        self.mirror = bool(mirror)
        self.batch_size = int(batch_size)
        # ONNX Runtime computes in float32, and "auto" asks for no particular arithmetic
        resolved = "float32" if engine == "onnx" and precision == "auto" else resolve_precision(precision, self.device)
        self.engine = make_engine(engine, self.networks, self.checkpoints, size=preprocess.size, device=self.device,
                                  precision=resolved, batch_size=self.batch_size, log=log)

    @functools.cached_property
    def model_info(self) -> dict:
        """``model.json`` of the model folder the checkpoints come from, read on first use and kept (a Predict
        in the app and each scan of a batch ask it for the training range and fold limits), or {}."""
        return _model_json(self.checkpoints)

    @property
    def precision(self) -> str:
        """The arithmetic the networks run in: the engine's (``auto`` may have chosen float32 ONNX)."""
        return self.engine.precision

    @classmethod
    def load(cls, model: str | Path | None = None, *, folds: str = "all", device: str | torch.device = "cpu",
             precision: str = "auto", mirror: bool = False, postprocess: bool | dict = True,
             batch_size: int = 64, engine: str = "torch", log=print) -> Segmenter:
        """A Segmenter from a model folder (``fold_k.pt``), a cross-validation run folder
        (``fold_k/checkpoint_best.pt``), a fold folder or one checkpoint file; None is the shipped
        model.  ``folds``: ``"all"`` or e.g. ``"0,2"``.  ``postprocess``: True takes the choice
        stored with the checkpoints (:func:`model_postprocessing`), False none, a dict that choice.
        ``engine``: see the class.

        Raises
        ------
        InputError
            ``model`` holds no usable checkpoint, or its folds were trained with different
            preprocessing (they cannot be averaged).
        """
        from orbitseg.runs.checkpoint import load_network
        from orbitseg.runs.layout import full_checkpoint, model_checkpoints, resolve_model

        ckpts = model_checkpoints(model, folds)
        source = resolve_model(model)  # None or `shipped`: the shipped model's folder
        full = full_checkpoint(source) if source.is_dir() else None
        loaded = [load_network(c, device) for c in ckpts]
        if len({repr(c.to_dict()) for _, c in loaded}) > 1:
            raise InputError(Path(model) if model is not None else ckpts[0].parent,
                             "the fold models were trained with different preprocessing; cannot ensemble")
        if postprocess is True:
            choice, note = model_postprocessing(ckpts)
        elif postprocess is False:
            choice, note = None, "no post-processing (turned off)"
        else:
            choice, note = dict(postprocess), "post-processing given by the caller"
        return cls([m for m, _ in loaded], loaded[0][1], checkpoints=ckpts, postprocess=choice,
                   postprocess_note=note, device=device, precision=precision, mirror=mirror, batch_size=batch_size,
                   engine=engine, log=log, full_network=full if full not in ckpts else None)

    def segment(self, scan: Volume, *, probabilities: bool = False, per_fold: bool = False,
                fold_agreement: bool = False) -> Segmentation:
        """Segment ``scan`` (a CT :class:`Volume`, any direction matrix): labels on its own grid.

        ``probabilities=True`` also returns the ensemble's class probabilities over the orbits'
        bounding box; ``per_fold=True`` each fold network's own (for uncertainty maps);
        ``fold_agreement=True`` how far the fold networks agree per orbit and structure (for the quality
        flags; far cheaper than ``per_fold``, which maps every fold's probabilities back onto the scan; None
        with a single network, which has nothing to agree with).

        Raises
        ------
        InputError
            no orbit can be found in ``scan`` (e.g. not a head CT).
        """
        from orbitseg.predict.postprocess import apply_postprocessing

        pred = predict_scan(self.networks, scan, self.preprocess, self.device, probabilities=probabilities,
                            per_model=per_fold, agreement=fold_agreement and len(self.networks) > 1,
                            mirror=self.mirror, engine=self.engine)
        labels = (pred.labels if self.postprocess is None else
                  apply_postprocessing(pred.labels, self.postprocess, midline_fallback=pred.orbit_midline))
        return Segmentation(labels, pred.labels, pred.probabilities, pred.member_probabilities, pred.member_agreement,
                            pred.orbit_midline)

    def settings(self) -> dict:
        """What decides this Segmenter's labels, for ``prediction.json``: the model files (path and
        SHA-256), the preprocessing they were trained with, the post-processing rules (None when
        turned off) and mirrored test-time augmentation.  (The precision is recorded per scan: it
        moves Dice by about 1e-4 and ``auto`` depends on the machine.)"""
        from orbitseg.io.read import file_sha256

        return {"checkpoints": [{"path": str(c.resolve()), "sha256": file_sha256(c)} for c in self.checkpoints],
                "preprocess": self.preprocess.to_dict(),
                "postprocess": None if self.postprocess is None else self.postprocess["rules"],
                "mirror": self.mirror}

    def describe(self) -> str:
        """One line: engine, arithmetic, how many networks, post-processing."""
        n = len(self.networks)
        nets = (f"{n} networks averaged" if n > 1
                else "1 network (no second one to compare: the fold-disagreement check is not made)")
        return f"engine {self.engine.name}, network in {self.precision}, {nets}; {self.postprocess_note}"

    def speed_note(self) -> str | None:
        """A hint for a CPU that runs an ensemble in float32 because it lacks bfloat16 hardware (most
        workstations and laptops: no AMX or AVX512-BF16), where the networks take most of the time per scan;
        None elsewhere, and for one network."""
        from orbitseg.model import native_bfloat16

        n = len(self.networks)
        if self.device.type != "cpu" or n < 2 or self.precision != "float32" or native_bfloat16():
            return None
        full = (f"--folds {FULL_FOLD} runs the one network this model trained on every case (about 1/{n} of the "
                "network time; the shipped one matched the ensemble's Dice on new synthetic patients; no "
                "fold-disagreement check); " if self.full_network is not None else "")
        return (f"note: this CPU has no bfloat16 arithmetic in hardware (AMX, AVX512-BF16), so the {n} networks run "
                f"in float32, most of the time per scan. Faster: {full}fewer folds, at some cost in accuracy: "
                "--folds 0,1 about half the network time, --folds 0 about a quarter without the fold-disagreement "
                "check (README: Speed)")

    def __repr__(self) -> str:
        return (f"Segmenter({len(self.networks)} network(s), size {self.preprocess.size}, device {self.device}, "
                f"{self.engine.name} {self.precision}, mirror={self.mirror}, postprocess={None if self.postprocess is None else self.postprocess['rules']})")
