"""Narrow a trained SEQ-UNET to a layout with fewer channels (structured pruning), to fine-tune from.

A network of half the widths has a quarter of the arithmetic, but trained from random weights it
needs many more epochs to come near the wide one (80 epochs on the default cohort left its muscle
Dice 0.011 short).  Starting it from the wide network's own channels instead - in every layer the
channels the trained network weights most, with each kept channel's incoming and outgoing weights -
gives it most of what the wide network learnt, and a short fine-tuning recovers the rest.

Which channels: each *channel space* (the output channels of one convolution, the hidden units of
one ConvLSTM direction, ...) is a set of indices shared by the tensor that produces it and every
tensor that reads it (:func:`channel_spaces`).  Where a normalisation follows, a channel's
importance is the magnitude of its learnt scale (``|gamma|``: what the network multiplies it by
before the next layer); elsewhere (LSTM hidden units, the decoder's upsampling) the mean magnitude
of the weights that make and read it.  Under ``GroupNorm`` with the same number of groups in both
layouts the top channels are taken within each group, so a kept channel stays normalised with the
kept channels of its own group.

Only the widths and the LSTM hidden sizes may differ (:func:`narrowing_problem` names anything
else).  The narrowed network is not the wide one: it is a starting point for ``orbitseg train
--init-from``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from orbitseg.model.blocks import group_count
from orbitseg.model.config import ModelConfig

__all__ = ["Slot", "Space", "channel_spaces", "narrowing_problem", "narrow_state_dict"]

#: ModelConfig fields a narrower layout may change; every other one must be equal
SIZE_FIELDS = ("widths", "bottleneck_lstm_hidden", "head_lstm_hidden")


@dataclass(frozen=True)
class Slot:
    """Where a channel space lies in one tensor: along ``dim``, channel ``i`` of the space is
    index ``start + r * stride + i`` for each ``r < repeat`` (an LSTM's four gate blocks repeat it)."""

    key: str
    dim: int
    start: int = 0
    repeat: int = 1
    stride: int = 0


@dataclass
class Space:
    """One set of channel indices shared by the tensors in ``slots``.  ``score`` names the norm scale
    that ranks its channels (``None``: the slots' mean weight magnitude); ``groups`` is the number of
    normalisation groups (1: none, or selection across the whole space)."""

    size: int
    score: str | None = None
    groups: int = 1
    slots: list[Slot] = field(default_factory=list)


def _norm_keys(prefix: str, norm: str) -> list[str]:
    keys = {"batch": ["weight", "bias", "running_mean", "running_var"], "group": ["weight", "bias"],
            "instance": ["weight", "bias"], "none": []}[norm]
    return [f"{prefix}.{k}" for k in keys]


def channel_spaces(cfg: ModelConfig) -> dict[str, Space]:
    """The channel spaces of a SEQ-UNET of layout ``cfg``, each with every tensor slot it occupies.

    Names: ``enc{k}`` / ``enc{k}m`` (encoder level ``k``'s output / middle), ``dec{k}u`` / ``dec{k}m``
    / ``dec{k}`` (decoder stage ``k``'s upsampling / middle / output), ``bottleneck_lstm.fwd`` ...
    (hidden units of a direction; one space for both when their outputs are summed).
    """
    if cfg.arch != "sequnet":
        raise ValueError(f"only SEQ-UNET layouts can be narrowed, not arch {cfg.arch!r}")
    w, n_lev, norm = cfg.widths, len(cfg.widths), cfg.norm
    spaces: dict[str, Space] = {}

    def conv_space(name: str, size: int, conv: str, norm_prefix: str) -> Space:
        slots = [Slot(f"{conv}.weight", 0)]
        if norm == "none":
            slots.append(Slot(f"{conv}.bias", 0))
        slots += [Slot(k, 0) for k in _norm_keys(norm_prefix, norm)]
        grouped = group_count(size) if norm == "group" else 1
        space = Space(size, None if norm == "none" else f"{norm_prefix}.weight", grouped, slots)
        spaces[name] = space
        return space

    # encoder: level k is one ConvBlock (conv, norm, act) at k = 0 with first_level_convs=1, else two
    enc_out: list[str] = []
    feeding: str | None = None
    for k in range(n_lev):
        blocks = [f"encoder.levels.{k}"] if k == 0 and cfg.first_level_convs == 1 else \
            [f"encoder.levels.{k}.0", f"encoder.levels.{k}.1"]
        for j, block in enumerate(blocks):
            name = f"enc{k}" if j == len(blocks) - 1 else f"enc{k}m"
            if feeding is not None:
                spaces[feeding].slots.append(Slot(f"{block}.0.weight", 1))
            conv_space(name, w[k], f"{block}.0", f"{block}.1")
            feeding = name
        enc_out.append(feeding)

    # decoder stage k: up (transposed conv: weight (in, out, 2, 2); bilinear: a 1x1 conv (out, in)),
    # then DoubleConv over concat(up, skip of encoder level k)
    up_key, up_out_dim, up_in_dim = (("up", 1, 0) if cfg.upsample == "transpose" else ("up.1", 0, 1))
    for k in range(n_lev):
        st = f"decoder.stages.{k}"
        spaces[f"dec{k}u"] = Space(w[k], None, 1, [Slot(f"{st}.{up_key}.weight", up_out_dim),
                                                   Slot(f"{st}.{up_key}.bias", 0), Slot(f"{st}.conv.0.0.weight", 1)])
        spaces[enc_out[k]].slots.append(Slot(f"{st}.conv.0.0.weight", 1, start=w[k]))
        conv_space(f"dec{k}m", w[k], f"{st}.conv.0.0", f"{st}.conv.0.1").slots.append(
            Slot(f"{st}.conv.1.0.weight", 1))
        conv_space(f"dec{k}", w[k], f"{st}.conv.1.0", f"{st}.conv.1.1")

    def lstm(prefix: str, source: str, hidden: int, readers: list[tuple[str, int]]) -> None:
        """A BiConvLSTM (one layer or more) reading space ``source``; ``readers``: (key, dim) of the
        tensors that read its combined output (concat: forward then backward halves)."""
        dirs = ["fwd"] if cfg.shared_weights else ["fwd", "bwd"]
        layers = cfg.bottleneck_lstm_layers if prefix == "bottleneck_lstm" else cfg.head_lstm_layers
        joint = cfg.combine == "sum"  # summed outputs: both directions must keep the same units
        # where each direction's last hidden states lie in the combined output
        if cfg.combine == "concat":
            starts = [[0, hidden]] if cfg.shared_weights else [[0], [hidden]]
        else:
            starts = [[0], []]
        for d_i, d in enumerate(dirs):
            spaces[source].slots.append(Slot(f"{prefix}.{d}.cells.0.x2h.weight", 1))
            for layer in range(layers):
                cell = f"{prefix}.{d}.cells.{layer}"
                suffix = f".{layer}" if layers > 1 else ""
                name = f"{prefix}{suffix}" if joint else f"{prefix}.{d}{suffix}"
                space = spaces.setdefault(name, Space(hidden))
                space.slots += [Slot(f"{cell}.x2h.weight", 0, 0, 4, hidden), Slot(f"{cell}.x2h.bias", 0, 0, 4, hidden),
                                Slot(f"{cell}.h2h.weight", 0, 0, 4, hidden), Slot(f"{cell}.h2h.weight", 1)]
                if layer + 1 < layers:
                    space.slots.append(Slot(f"{prefix}.{d}.cells.{layer + 1}.x2h.weight", 1))
                else:
                    space.slots += [Slot(key, dim, start) for key, dim in readers for start in starts[d_i]]

    hl = cfg.head_level
    lstm("bottleneck_lstm", enc_out[-1], cfg.bottleneck_lstm_hidden,
         [(f"decoder.stages.{n_lev - 1}.{up_key}.weight", up_in_dim)])
    for k in range(n_lev - 1, 0, -1):
        if k != hl:  # stage k's output feeds stage k-1's upsampling, except at the head's level
            spaces[f"dec{k}"].slots.append(Slot(f"decoder.stages.{k - 1}.{up_key}.weight", up_in_dim))
    lstm("head_lstm", f"dec{hl}", cfg.head_lstm_hidden,
         [(f"decoder.stages.{hl - 1}.{up_key}.weight", up_in_dim)] if hl > 0 else [("out.weight", 1)])
    if hl > 0:
        spaces["dec0"].slots.append(Slot("out.weight", 1))
    return spaces


def narrowing_problem(source: ModelConfig, target: ModelConfig) -> str | None:
    """Why ``source``'s weights cannot be narrowed to ``target`` (one line), or ``None`` when they can:
    both SEQ-UNETs, equal in every field but the sizes, no size of ``target`` larger."""
    if source.arch != "sequnet" or target.arch != "sequnet":
        return "only SEQ-UNET layouts can be narrowed"
    other = [f.name for f in fields(ModelConfig) if f.name not in SIZE_FIELDS
             and getattr(source, f.name) != getattr(target, f.name)]
    if other:
        return "the layouts differ in " + ", ".join(f"{n} ({getattr(source, n)} vs {getattr(target, n)})"
                                                    for n in other)
    if len(source.widths) != len(target.widths):
        return f"the layouts have {len(source.widths)} and {len(target.widths)} levels"
    pairs = list(zip(source.widths, target.widths)) + [
        (source.bottleneck_lstm_hidden, target.bottleneck_lstm_hidden),
        (source.head_lstm_hidden, target.head_lstm_hidden)]
    if any(t > s for s, t in pairs):
        return (f"the target is wider somewhere (widths {list(source.widths)} -> {list(target.widths)}, LSTM hidden "
                f"{source.bottleneck_lstm_hidden}/{source.head_lstm_hidden} -> "
                f"{target.bottleneck_lstm_hidden}/{target.head_lstm_hidden})")
    return None


def _importance(space: Space, state: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(space.size,)``: the norm scale's magnitude, else the mean weight magnitude over the slots."""
    if space.score is not None:
        return state[space.score].detach().float().abs()
    total = torch.zeros(space.size)
    for s in space.slots:
        t = state[s.key].detach().float().abs()
        for r in range(s.repeat):
            part = t.narrow(s.dim, s.start + r * s.stride, space.size).movedim(s.dim, 0)
            total += part.reshape(space.size, -1).mean(1)
    return total


def _select(score: torch.Tensor, keep: int, groups_old: int, groups_new: int) -> torch.Tensor:
    """Indices (ascending) of the ``keep`` best channels; within each normalisation group when both
    layouts have the same number of groups."""
    if groups_old > 1 and groups_old == groups_new:
        per_old, per_new = score.numel() // groups_old, keep // groups_new
        return torch.cat([torch.topk(score[g * per_old:(g + 1) * per_old], per_new).indices.sort().values
                          + g * per_old for g in range(groups_old)])
    return torch.topk(score, keep).indices.sort().values


def narrow_state_dict(state: dict[str, torch.Tensor], source: ModelConfig,
                      target: ModelConfig) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """``source``-layout weights -> ``target``-layout weights made of their most important channels.

    Parameters
    ----------
    state : the ``source`` network's state_dict (any float dtype).
    source, target : layouts; :func:`narrowing_problem` must find nothing.

    Returns
    -------
    (weights, kept): the ``target`` network's state_dict (float32, loadable with ``load_state_dict``)
    and, per channel space, the ``source`` channel indices kept.

    Raises
    ------
    ValueError
        The layouts cannot be narrowed one to the other (the reason), or ``state`` lacks a tensor.
    """
    problem = narrowing_problem(source, target)
    if problem:
        raise ValueError(f"cannot narrow the weights: {problem}")
    old, new = channel_spaces(source), channel_spaces(target)
    kept = {name: _select(_importance(sp, state), new[name].size, sp.groups, new[name].groups)
            for name, sp in old.items()}
    # per (tensor, dim): the old indices to gather, in the new layout's order (slots sorted by start)
    gather: dict[tuple[str, int], list[tuple[int, torch.Tensor]]] = {}
    for name, sp in old.items():
        for s in sp.slots:
            idx = torch.cat([kept[name] + s.start + r * s.stride for r in range(s.repeat)])
            gather.setdefault((s.key, s.dim), []).append((s.start, idx))
    missing = sorted({k for k, _ in gather} - set(state))
    if missing:
        raise ValueError(f"the weights lack {len(missing)} tensor(s) of the layout: {', '.join(missing[:4])}")
    out: dict[str, torch.Tensor] = {}
    for key, t in state.items():
        t = t.detach()
        if t.is_floating_point():
            t = t.float()
        for dim in range(t.dim()):
            parts = gather.get((key, dim))
            if parts:
                t = t.index_select(dim, torch.cat([i for _, i in sorted(parts, key=lambda p: p[0])]))
        out[key] = t.contiguous()
    return out, {name: idx.tolist() for name, idx in kept.items()}
