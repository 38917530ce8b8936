"""The one owner of orbitseg's checkpoint format.

Two kinds of file hold a network's weights:

* a **training checkpoint** (``checkpoint_best.pt`` / ``checkpoint_last.pt`` of a run folder):
  ``{"format": FORMAT, "epoch", "model" (state_dict), "optimizer", "scheduler", "rng",
  "generators", "best_metric", "best_epoch", "history", "preset" (asdict of the Preset),
  "preset_name", "preprocess" (PreprocessConfig.to_dict()), "seed", "fold", "precision"}``;
* an **exported fold** (``fold_k.pt`` of a model folder, :func:`export_half`): the same
  ``model`` weights as float16 with ``preset``, ``preprocess`` and ``fold`` only.

Both are read with ``weights_only`` loading (tensors and plain Python only), so a checkpoint
cannot run code.  Every file is written atomically (temporary name, then rename).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from orbitseg.errors import InputError
from orbitseg.io.atomic import atomic_path
from orbitseg.preprocess.pipeline import PreprocessConfig

__all__ = ["FORMAT", "load_checkpoint", "read_training_checkpoint", "save_checkpoint", "training_checkpoint",
           "export_half", "average_weights", "recipe_difference", "state_dict_of", "load_network", "preprocess_of"]

#: the ``format`` entry of a training checkpoint
FORMAT = "orbitseg-train-1"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint file as a dict (``weights_only`` loading: tensors and plain Python only).

    Raises
    ------
    InputError
        ``path`` is missing or is not a torch checkpoint (named, with the reason).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint file does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt / foreign files
        raise InputError(path, f"cannot be read as a torch checkpoint ({type(exc).__name__}: {exc})") from None


def read_training_checkpoint(path: str | Path) -> dict:
    """An orbitseg checkpoint (training or exported) as a dict, refused by name unless it holds
    the weights (``model``) and the ``preset`` that rebuilds the network."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "preset" not in ckpt:
        raise InputError(path, "is not an orbitseg training checkpoint (no 'model'/'preset' entries)")
    return ckpt


def save_checkpoint(ckpt: dict, path: str | Path) -> None:
    """Write ``ckpt`` to ``path`` atomically (replacing an older one)."""
    with atomic_path(Path(path), overwrite=True) as tmp:
        torch.save(ckpt, tmp)


def training_checkpoint(*, epoch: int, model: dict, optimizer: dict, scheduler: dict, rng: dict, generators: dict,
                        best_metric: float, best_epoch: int, history: list[dict], preset: dict, preset_name: str,
                        preprocess: dict, seed: int, fold: int, precision: str) -> dict[str, Any]:
    """The dict a training checkpoint holds (see the module docstring); ``model``, ``optimizer``
    and ``scheduler`` are state_dicts, ``preset`` and ``preprocess`` plain dicts."""
    return {"format": FORMAT, "epoch": epoch, "model": model, "optimizer": optimizer, "scheduler": scheduler,
            "rng": rng, "generators": generators, "best_metric": best_metric, "best_epoch": best_epoch,
            "history": history, "preset": preset, "preset_name": preset_name, "preprocess": preprocess,
            "seed": seed, "fold": fold, "precision": precision}


def export_half(src: str | Path, dst: str | Path, *, average_with: str | Path | None = None,
                average_weight: float = 0.5) -> None:
    """Write the weights of checkpoint ``src`` as float16 to ``dst`` with what loading them needs
    (``preset``, ``preprocess``, ``fold``): a quarter of a training checkpoint, no optimiser state.

    ``average_with``: another checkpoint of the same network and preprocessing; the float16 weights written are
    then :func:`average_weights` of ``src``'s (as float16) and its, ``average_weight`` its share (the caller
    checks that ``src`` was fine-tuned from it).

    Raises
    ------
    InputError
        ``average_with`` holds another network or preprocessing (:func:`recipe_difference`), or other tensors.
    """
    ck = read_training_checkpoint(src)
    weights = {k: v.half() if v.is_floating_point() else v for k, v in ck["model"].items()}
    if average_with is not None:
        other = read_training_checkpoint(average_with)
        what = recipe_difference(ck, other)
        if what is not None:
            raise InputError(average_with, f"has another {what} than {src}; weights cannot be averaged")
        try:
            weights = average_weights(weights, other["model"], weight_b=average_weight, name_a=str(src),
                                      name_b=str(average_with))
        except ValueError as exc:
            raise InputError(average_with, str(exc)) from None
    save_checkpoint({"model": weights, "preset": ck["preset"], "preprocess": ck["preprocess"], "fold": ck.get("fold")},
                    dst)


def recipe_difference(a: dict, b: dict) -> str | None:
    """What two checkpoints (dicts, :func:`read_training_checkpoint`) differ in that their networks cannot
    stand in for each other: ``"network"`` (the preset's model), ``"preprocessing"``, or None."""
    import json

    for what, x, y in (("network", a["preset"]["model"], b["preset"]["model"]),
                       ("preprocessing", a["preprocess"], b["preprocess"])):
        if json.dumps(x, sort_keys=True) != json.dumps(y, sort_keys=True):
            return what
    return None


def average_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], *, weight_b: float,
                    name_a: str = "a", name_b: str = "b") -> dict[str, torch.Tensor]:
    """``(1 - weight_b) * a + weight_b * b`` tensor by tensor, in ``a``'s dtypes (computed in float32).

    Weight-space averaging of a fine-tuned network with the one it started from (WiSE-FT, Wortsman et al.
    2022): both lie in one basin, so their average is a network too, usually more robust to a shift of the
    data than the fine-tuned one and more accurate on the new data than its start.  Two unrelated networks have
    no such average: the caller checks that one started from the other.

    Parameters
    ----------
    a, b : dict of str to Tensor
        State dicts of the same network (same keys and shapes).
    weight_b : float
        ``b``'s share, in [0, 1].
    name_a, name_b : str
        What the two are, for the error message.

    Raises
    ------
    ValueError
        ``weight_b`` outside [0, 1], the keys or a shape differ, or a non-float tensor (e.g. a counter) differs.
    """
    if not 0.0 <= weight_b <= 1.0:
        raise ValueError(f"weight_b must lie in [0, 1], got {weight_b}")
    if a.keys() != b.keys():
        odd = sorted(set(a) ^ set(b))
        raise ValueError(f"{name_a} and {name_b} are not the same network: {len(odd)} tensor(s) in one only, e.g. "
                         f"{odd[0]}")
    out = {}
    for k, ta in a.items():
        tb = b[k]
        if ta.shape != tb.shape:
            raise ValueError(f"{name_a} and {name_b} are not the same network: {k} is {tuple(ta.shape)} in one, "
                             f"{tuple(tb.shape)} in the other")
        if ta.is_floating_point():
            out[k] = ((1.0 - weight_b) * ta.float() + weight_b * tb.float()).to(ta.dtype)
        elif torch.equal(ta, tb.to(ta.dtype)):
            out[k] = ta.clone()
        else:
            raise ValueError(f"{name_a} and {name_b} differ in {k}, which is no weight (cannot be averaged)")
    return out


def state_dict_of(source: str | Path | dict) -> dict[str, torch.Tensor]:
    """The tensors of an orbitseg checkpoint or a bare state_dict (file or dict), with the
    ``module.`` prefix of DistributedDataParallel removed.

    Raises
    ------
    InputError
        ``source`` holds no state_dict of tensors.
    """
    sd = load_checkpoint(source) if not isinstance(source, dict) else source
    if isinstance(sd, dict) and isinstance(sd.get("model"), dict):
        sd = sd["model"]
    elif isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not any(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError(None if isinstance(source, dict) else source, "holds no state_dict of tensors")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def load_network(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, PreprocessConfig]:
    """The network of checkpoint ``path`` (built from its preset, weights loaded, eval mode, on
    ``device``) and the preprocessing its slices were made with."""
    from orbitseg.model import build_model

    ckpt = read_training_checkpoint(path)
    model = build_model(ckpt["preset"]["model"])
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    return model, PreprocessConfig.from_dict(ckpt["preprocess"])


def preprocess_of(path: str | Path | None) -> PreprocessConfig:
    """The preprocessing the slices of a network were made with: ``path`` is a checkpoint file, or a
    model / run / fold folder (:func:`orbitseg.runs.layout.model_checkpoints`; ``None``: the shipped
    model), whose folds must agree.

    Raises
    ------
    InputError : no checkpoint there, or folds made with different preprocessing.
    """
    from orbitseg.runs.layout import model_checkpoints

    files = model_checkpoints(path)
    configs = [PreprocessConfig.from_dict(read_training_checkpoint(f)["preprocess"]) for f in files]
    if any(c != configs[0] for c in configs[1:]):
        raise InputError(path, "holds folds made with different preprocessing; give one checkpoint file")
    return configs[0]
