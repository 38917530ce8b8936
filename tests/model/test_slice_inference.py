"""predict_volume_slices (each slice encoded once) equals running every sequence explicitly."""

from __future__ import annotations

import pytest
import torch
from tiny import TINY_NETWORKS

from orbitseg.model import (build_model, build_sequences, native_bfloat16, predict_volume_slices, probabilities,
                           resolve_precision, sequence_indices)

TINY = TINY_NETWORKS["paper"]


def test_sequence_indices_replicate_edges():
    assert sequence_indices(4, 3).tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    assert sequence_indices(1, 3).tolist() == [[0, 0, 0]]


@pytest.mark.parametrize("overrides", [
    dict(),  # paper layout: shared weights, sum over time, full-resolution head
    dict(shared_weights=False, combine="concat", head_reduce="centre", head_level=1, norm="group",
         output="softmax"),  # default layout
    dict(shared_weights=False, combine="concat", head_reduce="mean", head_level=0, norm="instance"),
    dict(arch="unet2d"),
])
def test_predict_volume_slices_matches_explicit_sequences(overrides):
    torch.manual_seed(0)
    model = build_model("paper", **{**TINY, **overrides})
    # give BatchNorm non-trivial running statistics
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, 1, 16, 16))
    model.eval()
    slices = torch.randn(7, 1, 16, 16)
    got = predict_volume_slices(model, slices, batch_size=3)
    with torch.no_grad():
        want = probabilities(model(build_sequences(slices, 3)), model.output)
    assert got.shape == (7, 4, 16, 16)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert not model.training  # mode restored (it was eval)


def test_predict_restores_training_mode():
    model = build_model("default", widths=(4, 8, 8, 16), bottleneck_lstm_hidden=8, head_lstm_hidden=4,
                        input_size=16)
    model.train()
    predict_volume_slices(model, torch.randn(3, 1, 16, 16))
    assert model.training


def test_forward_indexed_matches_forward_and_has_gradients():
    torch.manual_seed(0)
    model = build_model("default", widths=(4, 8, 8, 16), bottleneck_lstm_hidden=8, head_lstm_hidden=4,
                        input_size=32)
    model.train()  # group norm: batch-independent, so exact even in training mode
    slices = torch.randn(6, 1, 32, 32)
    index = sequence_indices(6, 3)[1:5]
    got = model.forward_indexed(slices, index)
    torch.testing.assert_close(got, model(slices[index]), atol=1e-5, rtol=1e-4)
    got.sum().backward()
    assert model.encoder.levels[0][0].weight.grad.abs().sum() > 0


def test_bfloat16_prediction_is_close_to_float32_but_really_bfloat16():
    """precision="bfloat16" runs under autocast: float32 probabilities that differ from float32
    arithmetic (so it did run in bfloat16) by little, with the same labels almost everywhere."""
    torch.manual_seed(0)
    model = build_model("default", widths=(4, 8, 8, 16), bottleneck_lstm_hidden=8, head_lstm_hidden=4,
                        input_size=32)
    slices = torch.randn(6, 1, 32, 32)
    f32 = predict_volume_slices(model, slices)
    bf16 = predict_volume_slices(model, slices, precision="bfloat16")
    assert bf16.dtype == torch.float32 and bf16.shape == f32.shape
    assert not torch.equal(bf16, f32)
    torch.testing.assert_close(bf16, f32, atol=0.05, rtol=0)
    assert (bf16.argmax(1) == f32.argmax(1)).float().mean() > 0.98
    torch.testing.assert_close(bf16.sum(1), torch.ones(6, 32, 32))


def test_resolve_precision(monkeypatch):
    from orbitseg.model import slice_inference as mp

    assert resolve_precision("float32", "cpu") == "float32"
    assert resolve_precision("bfloat16", "cpu") == "bfloat16"
    for native, want in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(mp, "native_bfloat16", lambda: native)
        assert resolve_precision("auto", "cpu") == want
    assert resolve_precision("auto", "cuda") == "float32"  # GPUs are fast enough in float32
    assert isinstance(native_bfloat16(), bool)
    with pytest.raises(ValueError, match="precision must be one of auto, float32, bfloat16, got 'half'"):
        resolve_precision("half", "cpu")
    with pytest.raises(ValueError, match="precision"):
        predict_volume_slices(build_model("unet2d", widths=(4, 8), input_size=8), torch.zeros(1, 1, 8, 8),
                              precision="fp16")
