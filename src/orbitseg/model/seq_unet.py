"""SEQ-UNET (Suh et al. 2022) and a plain 2D U-Net baseline.

Input of both: a batch of slice sequences ``x: (B, T, in_channels, H, W)``
(``T = seq_len`` consecutive axial slices, the target is the centre one,
index ``T // 2``).  Output of both: logits for the centre slice
``(B, num_classes, H, W)``; channel ``k`` is label ``k`` (0 background,
1 eyeball, 2 muscles, 3 nerve).  Turn logits into probabilities with
:func:`probabilities` (softmax over channels, or a sigmoid per channel for
``output="sigmoid"``).

The classes' keyword defaults are :class:`~orbitseg.model.config.ModelConfig`'s (the
paper's network), so ``SeqUNet()`` is the network ``build_model(ModelConfig())`` builds.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from orbitseg.model.blocks import DoubleConv, Decoder, Encoder
from orbitseg.model.config import ModelConfig
from orbitseg.model.convlstm import BiConvLSTM

__all__ = ["SeqUNet", "UNet2D", "probabilities"]

OUTPUTS = ("softmax", "sigmoid")
HEAD_REDUCE = ("sum", "mean", "centre")
#: the one source of both classes' keyword defaults
_D = ModelConfig()


def probabilities(logits: torch.Tensor, output: str) -> torch.Tensor:
    """Logits ``(B, C, H, W)`` -> probabilities: softmax over ``C`` or sigmoid per channel."""
    if output == "softmax":
        return torch.softmax(logits, dim=1)
    if output == "sigmoid":
        return torch.sigmoid(logits)
    raise ValueError(f"unknown output {output!r}; choose one of {OUTPUTS}")


def _check_input(x: torch.Tensor, in_channels: int, depth: int) -> None:
    if x.dim() != 5:
        raise ValueError(f"expected (B, T, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[2] != in_channels:
        raise ValueError(f"expected {in_channels} channel(s) per slice, got {x.shape[2]}")
    f = 2 ** depth
    if x.shape[-1] % f or x.shape[-2] % f:
        raise ValueError(f"H and W must be divisible by {f} ({depth} poolings), got {tuple(x.shape[-2:])}")


class SeqUNet(nn.Module):
    """SEQ-UNET: shared-weight 2D U-Net per slice + bidirectional ConvLSTMs across slices.

    Data flow for ``x: (B, T, 1, H, W)``, ``L = len(widths)`` poolings:

    1. Encoder on every slice (``B*T`` images): skips ``(B*T, widths[k], H/2^k, W/2^k)``,
       bottom ``(B*T, widths[-1], H/2^L, W/2^L)``; and what of the later steps depends on
       one slice alone (:meth:`slice_features`).
    2. Bottleneck :class:`BiConvLSTM` over ``T``: ``(B, T, widths[-1], .) -> (B, T, Cb, .)``
       with ``Cb = bottleneck_lstm_hidden`` (sum) or twice that (concat).
    3. Decoder on every slice with that slice's skips, up to level ``k = head_level``:
       ``(B, T, widths[k], H/2^k, W/2^k)``.
    4. Head :class:`BiConvLSTM` over ``T``, reduced over time to one map
       ``(B, Ch, ., .)``: ``head_reduce="sum"`` (paper: outputs summed over time),
       ``"mean"``, or ``"centre"`` (the step of the centre slice, which has seen
       both directions; computed with the cheaper :meth:`BiConvLSTM.forward_centre`).
    5. If ``k > 0``: the remaining decoder stages ``k-1 .. 0`` bring the head output to
       full resolution with the centre slice's skips (run for the centre slice only).
       Then a 1x1 conv gives ``(B, num_classes, H, W)`` logits.

    ``head_level=0`` is the paper's layout (head ConvLSTM at full resolution);
    ``head_level=1`` puts it at half resolution, 4x cheaper, and runs the
    full-resolution decoder stage once per sequence instead of ``T`` times.
    """

    def __init__(self, in_channels: int = _D.in_channels, num_classes: int = _D.num_classes,
                 widths: Sequence[int] = _D.widths, seq_len: int = _D.seq_len,
                 bottleneck_lstm_hidden: int = _D.bottleneck_lstm_hidden,
                 bottleneck_lstm_layers: int = _D.bottleneck_lstm_layers,
                 head_lstm_hidden: int = _D.head_lstm_hidden, head_lstm_layers: int = _D.head_lstm_layers,
                 lstm_kernel: int = _D.lstm_kernel, norm: str = _D.norm, act: str = _D.act,
                 output: str = _D.output, combine: str = _D.combine, shared_weights: bool = _D.shared_weights,
                 head_reduce: str = _D.head_reduce, head_level: int = _D.head_level,
                 upsample: str = _D.upsample, first_level_convs: int = _D.first_level_convs) -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if head_reduce not in HEAD_REDUCE:
            raise ValueError(f"head_reduce must be one of {HEAD_REDUCE}, got {head_reduce!r}")
        widths = tuple(int(w) for w in widths)
        if not 0 <= head_level < len(widths):
            raise ValueError(f"head_level must be in 0..{len(widths) - 1}, got {head_level}")
        self.in_channels, self.num_classes, self.widths = in_channels, num_classes, widths
        self.seq_len, self.output, self.head_reduce, self.head_level = seq_len, output, head_reduce, head_level
        self.centre = seq_len // 2

        self.encoder = Encoder(in_channels, widths, norm, act, first_level_convs)
        self.bottleneck_lstm = BiConvLSTM(widths[-1], bottleneck_lstm_hidden, bottleneck_lstm_layers, lstm_kernel,
                                          combine, shared_weights)
        self.head_lstm = BiConvLSTM(widths[head_level], head_lstm_hidden, head_lstm_layers, lstm_kernel,
                                    combine, shared_weights)
        head_out = self.head_lstm.out_channels
        self.decoder = Decoder(self.bottleneck_lstm.out_channels, widths, norm, act, upsample,
                               stage_in={head_level - 1: head_out} if head_level > 0 else None)
        self.out = nn.Conv2d(widths[0] if head_level > 0 else head_out, num_classes, 1)

    # -- pieces, used by predict_volume_slices and the ONNX graphs to share per-slice work ---------
    def slice_features(self, slices: torch.Tensor) -> list[torch.Tensor]:
        """Everything that depends on one slice alone, computed once per slice and shared by every
        sequence that holds it: ``(N, in_channels, H, W)`` -> ``[term_0, .., term_{L-1}, gates]``.

        ``term_k: (N, widths[k], H/2^k, W/2^k)`` is decoder stage ``k``'s convolution of the slice's
        skip (:meth:`Decoder.skip_terms`) and ``gates: (N, G, H/2^L, W/2^L)`` the bottleneck LSTM's
        input gates of the slice's bottom (:meth:`BiConvLSTM.input_gates`).  Both are linear maps
        that would otherwise run ``T`` times per slice, once in each of its sequences (about 15 % of
        the default network's arithmetic).
        """
        skips, bottom = self.encoder(slices)
        return [*self.decoder.skip_terms(skips), self.bottleneck_lstm.input_gates(bottom)]

    def forward_features(self, features: Sequence[torch.Tensor], index: torch.Tensor) -> torch.Tensor:
        """Sequences given as indices into a bank of :meth:`slice_features`.

        ``features``: as returned by :meth:`slice_features` for ``N`` slices; ``index: (B, T)``
        long, row ``b`` the slices of sequence ``b`` -> logits ``(B, num_classes, H, W)``.
        """
        *terms, gates = features
        flat, centre = index.reshape(-1), index[:, index.shape[1] // 2]
        hl = self.head_level
        return self._decode(gates[flat], [f[flat] for f in terms[hl:]], [f[centre] for f in terms[:hl]],
                            index.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, T, in_channels, H, W)`` -> centre-slice logits ``(B, num_classes, H, W)``."""
        _check_input(x, self.in_channels, len(self.widths))
        b, t = x.shape[:2]
        skips, bottom = self.encoder(x.flatten(0, 1))
        stages, hl = self.decoder.stages, self.head_level
        # the stages below the head run on the centre slice only: their terms for it alone
        centre = [stages[k].skip_term(skips[k].view(b, t, *skips[k].shape[1:])[:, t // 2]) for k in range(hl)]
        seq = [stages[k].skip_term(skips[k]) for k in range(hl, len(stages))]
        return self._decode(self.bottleneck_lstm.input_gates(bottom), seq, centre, b)

    def _decode(self, gates: torch.Tensor, terms: Sequence[torch.Tensor], centre_terms: Sequence[torch.Tensor],
                batch: int) -> torch.Tensor:
        """Everything after the per-slice work, for ``batch`` sequences of ``T`` slices, sequence-major
        (row ``b*T + t`` is slice ``t`` of sequence ``b``).

        ``gates: (batch*T, G, H/2^L, W/2^L)``; ``terms``: the skip terms of stages ``head_level ..
        L-1``, ``(batch*T, widths[k], H/2^k, W/2^k)``; ``centre_terms``: those of stages ``0 ..
        head_level-1`` for the centre slices alone, ``(batch, widths[k], H/2^k, W/2^k)`` -> logits
        ``(batch, num_classes, H, W)``.
        """
        t = gates.shape[0] // batch
        c = t // 2
        seq = self.bottleneck_lstm.forward_gates(gates.view(batch, t, *gates.shape[1:]))
        dec = self.decoder.forward_terms(seq.flatten(0, 1), [None] * self.head_level + list(terms),
                                         stop=self.head_level)
        dec = dec.view(batch, t, *dec.shape[1:])
        if self.head_reduce == "centre":
            h = self.head_lstm.forward_centre(dec, c)
        else:
            hs = self.head_lstm(dec)
            h = hs.sum(1) if self.head_reduce == "sum" else hs.mean(1)
        for k in range(self.head_level - 1, -1, -1):  # below the head: the centre slice only
            h = self.decoder.stages[k].forward_term(h, centre_terms[k])
        return self.out(h)

    def forward_indexed(self, slices: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Sequences given as indices into a bank of slices, each slice's features computed once.

        ``slices: (N, in_channels, H, W)``, ``index: (B, T)`` long -> logits
        ``(B, num_classes, H, W)``, equal to ``forward(slices[index])`` (exactly
        with a batch-independent norm or in eval mode).  Differentiable: a
        training loop that draws runs of neighbouring centre slices can use it
        to encode ``N`` slices instead of ``B*T``.
        """
        return self.forward_features(self.slice_features(slices), index)


class UNet2D(nn.Module):
    """Plain 2D U-Net baseline for ablation: same encoder/decoder, no LSTMs.

    ``forward(x: (B, T, in_channels, H, W)) -> (B, num_classes, H, W)`` looks at the
    centre slice ``x[:, T // 2]`` only (so neighbouring slices cannot change the
    output).  A :class:`DoubleConv` at the bottleneck (``widths[-1] ->
    bottleneck_channels``) stands where SEQ-UNET has its bottleneck LSTM, so
    the decoder has the same shapes (and can share weights by name with it);
    ``bottleneck_channels=None`` leaves it out.
    """

    def __init__(self, in_channels: int = _D.in_channels, num_classes: int = _D.num_classes,
                 widths: Sequence[int] = _D.widths, seq_len: int = _D.seq_len, norm: str = _D.norm,
                 act: str = _D.act, output: str = _D.output,
                 bottleneck_channels: int | None = _D.bottleneck_channels, upsample: str = _D.upsample,
                 first_level_convs: int = _D.first_level_convs) -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        widths = tuple(int(w) for w in widths)
        self.in_channels, self.num_classes, self.widths = in_channels, num_classes, widths
        self.seq_len, self.output, self.centre = seq_len, output, seq_len // 2
        self.encoder = Encoder(in_channels, widths, norm, act, first_level_convs)
        if bottleneck_channels is None:
            self.bottleneck: nn.Module = nn.Identity()
            bottom = widths[-1]
        else:
            self.bottleneck = DoubleConv(widths[-1], bottleneck_channels, norm, act)
            bottom = bottleneck_channels
        self.decoder = Decoder(bottom, widths, norm, act, upsample)
        self.out = nn.Conv2d(widths[0], num_classes, 1)

    def forward_slices(self, slices: torch.Tensor) -> torch.Tensor:
        """Independent slices ``(N, in_channels, H, W)`` -> logits ``(N, num_classes, H, W)``."""
        skips, bottom = self.encoder(slices)
        return self.out(self.decoder(self.bottleneck(bottom), skips))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, T, in_channels, H, W)`` -> centre-slice logits ``(B, num_classes, H, W)``."""
        _check_input(x, self.in_channels, len(self.widths))
        return self.forward_slices(x[:, x.shape[1] // 2])
