"""Predict every slice of a volume, encoding each slice once.

A volume of ``N`` slices yields ``N`` centre-slice sequences (edges
replicated: the sequence of slice 0 is ``(0, 0, 1)`` for ``T = 3``).  Naively
each slice is encoded ``T`` times; here everything that depends on one slice
alone (:meth:`SeqUNet.slice_features`: the encoder, the decoder's convolutions of
the skips, the bottleneck LSTM's input gates) runs once per slice and the
sequences gather it by index.  In eval mode that is exact up to float rounding.
The rest (the LSTMs' recurrences, the decoder's up paths, the head) depends on
the sequence and runs per sequence.

``precision="bfloat16"`` runs the network under bfloat16 autocast (convolutions
and matrix products in bfloat16, normalisations and outputs in float32).  On a
CPU that computes bfloat16 in hardware (AMX or AVX512-BF16) that is about twice
as fast; ``"auto"`` picks it there and float32 elsewhere.
"""

from __future__ import annotations

import torch
from torch import nn

from orbitseg.constants import PRECISIONS
from orbitseg.model.seq_unet import SeqUNet, UNet2D, probabilities

__all__ = ["PRECISIONS", "native_bfloat16", "resolve_precision", "sequence_indices", "build_sequences",
           "predict_volume_slices"]



def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AMX tiles or AVX512-BF16).  Elsewhere
    bfloat16 is emulated and slower than float32."""
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # a torch build without these probes
        return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``"float32"`` or ``"bfloat16"`` for ``precision`` (one of :data:`PRECISIONS`) on ``device``:
    ``"auto"`` is bfloat16 on a CPU with :func:`native_bfloat16`, float32 otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    return "bfloat16" if torch.device(device).type == "cpu" and native_bfloat16() else "float32"


def sequence_indices(n: int, seq_len: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``(n, seq_len)`` slice indices of every centre-slice sequence, edges replicated: the
    sequences the training store was cut into (:func:`orbitseg.preprocess.fit.sequence_indices`),
    as a tensor on ``device``."""
    from orbitseg.preprocess.fit import sequence_indices as numpy_indices

    return torch.as_tensor(numpy_indices(n, seq_len), dtype=torch.int64, device=device)


def build_sequences(slices: torch.Tensor, seq_len: int) -> torch.Tensor:
    """``(N, C, H, W)`` slices -> ``(N, seq_len, C, H, W)`` sequences centred on each slice."""
    return slices[sequence_indices(slices.shape[0], seq_len, slices.device)]


@torch.inference_mode()
def predict_volume_slices(model: nn.Module, slices: torch.Tensor, batch_size: int = 64,
                          seq_len: int | None = None, *, precision: str = "float32") -> torch.Tensor:
    """Probabilities for every slice: ``(N, 1, H, W) -> (N, num_classes, H, W)``.

    Puts ``model`` in eval mode (and restores its previous mode).  Works on
    :class:`SeqUNet` (shared encodings), :class:`UNet2D` (slice by slice) and,
    as a fallback, any module taking ``(B, T, C, H, W)`` sequences with an
    ``output`` attribute.  ``batch_size`` is the number of sequences per
    forward pass.  ``slices`` may be in any memory format; work happens on
    ``slices.device``.  ``precision``: one of :data:`PRECISIONS` (see the module
    docstring); the probabilities are float32 whatever it is.
    """
    if slices.dim() != 4:
        raise ValueError(f"expected (N, C, H, W) slices, got {tuple(slices.shape)}")
    bf16 = resolve_precision(precision, slices.device) == "bfloat16"
    was_training = model.training
    model.eval()
    try:
        with torch.autocast(slices.device.type, dtype=torch.bfloat16, enabled=bf16):
            return _predict(model, slices, batch_size, seq_len)
    finally:
        model.train(was_training)


def _predict(model: nn.Module, slices: torch.Tensor, batch_size: int, seq_len: int | None) -> torch.Tensor:
    """:func:`predict_volume_slices` without the mode and precision handling."""
    n = slices.shape[0]
    output = getattr(model, "output", "softmax")
    t = seq_len or getattr(model, "seq_len")
    outs = []
    if isinstance(model, UNet2D):
        for s in range(0, n, batch_size):
            outs.append(probabilities(model.forward_slices(slices[s:s + batch_size]).float(), output))
        return torch.cat(outs)
    idx = sequence_indices(n, t, slices.device)
    if not isinstance(model, SeqUNet):
        for s in range(0, n, batch_size):
            outs.append(probabilities(model(slices[idx[s:s + batch_size]]).float(), output))
        return torch.cat(outs)
    # each slice's own work once (encoder, skip terms, bottleneck input gates), shared by its sequences
    parts = [model.slice_features(slices[s:s + batch_size * t]) for s in range(0, n, batch_size * t)]
    features = [torch.cat(p) for p in zip(*parts)]
    del parts
    for s in range(0, n, batch_size):
        logits = model.forward_features(features, idx[s:s + batch_size])
        outs.append(probabilities(logits.float(), output))  # float32 softmax
    return torch.cat(outs)
