"""Narrowing a trained SEQ-UNET to fewer channels (orbitseg.model.narrow)."""

from __future__ import annotations

import pytest
import torch

from orbitseg.model import build_model
from orbitseg.model.config import model_config
from orbitseg.model.narrow import channel_spaces, narrow_state_dict, narrowing_problem

NARROW = dict(widths=(8, 16, 32, 64), bottleneck_lstm_hidden=32, head_lstm_hidden=8)


def _kill_all_but(state: dict, cfg, alive: dict[str, torch.Tensor]) -> dict:
    """``state`` with every channel outside ``alive`` made dead: all its weights (making it and
    reading it, norm scale and shift) zero, so its activations are exactly 0 and nothing reads it."""
    state = {k: v.clone() for k, v in state.items()}
    for name, space in channel_spaces(cfg).items():
        dead = torch.ones(space.size, dtype=torch.bool)
        dead[alive[name]] = False
        for s in space.slots:
            for r in range(s.repeat):
                idx = torch.nonzero(dead).flatten() + s.start + r * s.stride
                state[s.key].index_fill_(s.dim, idx, 0.0)
    return state


@pytest.mark.parametrize("overrides", [
    dict(norm="instance"),                                                  # the default layout, per-channel norm
    dict(norm="batch", head_level=0, first_level_convs=2),                  # head at full resolution
    dict(norm="none", combine="sum"),                                        # summed directions share units
    dict(norm="instance", shared_weights=True, combine="sum", bottleneck_lstm_layers=2, upsample="bilinear"),
    dict(norm="instance", shared_weights=True, head_lstm_layers=2),         # shared weights, concatenated
])
def test_a_network_whose_other_channels_are_dead_narrows_to_the_same_function(overrides):
    """Where every channel outside a chosen set is dead (no weight makes or reads it), narrowing must
    find exactly that set in every channel space and give a network computing the same logits: this
    pins each tensor's slot (gate blocks, concatenated directions, skip half) and the order of the
    gathered indices."""
    torch.manual_seed(0)
    wide_cfg = model_config("default", **overrides)
    narrow_cfg = model_config(wide_cfg, **NARROW)
    wide = build_model(wide_cfg).eval()
    with torch.no_grad():  # non-trivial norm statistics and shifts (batch norm's running stats included)
        for name, buf in wide.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
        for name, p in wide.named_parameters():
            if p.dim() == 1:
                p.normal_(0, 0.3) if name.endswith("bias") else p.uniform_(0.5, 1.5)
    g = torch.Generator().manual_seed(1)
    narrow_spaces = channel_spaces(narrow_cfg)
    alive = {name: torch.randperm(sp.size, generator=g)[:narrow_spaces[name].size].sort().values
             for name, sp in channel_spaces(wide_cfg).items()}
    wide.load_state_dict(_kill_all_but(wide.state_dict(), wide_cfg, alive))

    weights, kept = narrow_state_dict(wide.state_dict(), wide_cfg, narrow_cfg)
    assert {n: list(v) for n, v in kept.items()} == {n: v.tolist() for n, v in alive.items()}
    small = build_model(narrow_cfg).eval()
    small.load_state_dict(weights)
    x = torch.randn(2, wide_cfg.seq_len, 1, 32, 32, generator=g)
    with torch.no_grad():
        ref, got = wide(x), small(x)
    assert ref.abs().max() > 0.1  # the function is not trivially zero
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_group_norm_channels_are_kept_within_their_groups():
    """Under GroupNorm(8) both layouts have 8 groups: each kept channel must come from the old group of
    its new position, so it is normalised with channels it was normalised with, and the kept ones are
    the largest norm scales of their group."""
    cfg = model_config("default")
    narrow_cfg = model_config(cfg, **NARROW)
    torch.manual_seed(3)
    state = build_model(cfg).state_dict()
    state["encoder.levels.3.1.1.weight"] = torch.randn(128)
    _, kept = narrow_state_dict(state, cfg, narrow_cfg)
    idx = torch.tensor(kept["enc3"])  # 128 channels in 8 groups of 16 -> 64 in 8 groups of 8
    assert torch.equal(idx // 16, torch.arange(64) // 8)
    scale = state["encoder.levels.3.1.1.weight"].abs()
    for group in range(8):
        block = scale[group * 16:(group + 1) * 16]
        assert sorted((idx[group * 8:(group + 1) * 8] - group * 16).tolist()) == \
            sorted(torch.topk(block, 8).indices.tolist())


def test_the_paper_layout_narrows():
    cfg = model_config("paper")
    small = model_config(cfg, widths=(32, 64, 128), bottleneck_lstm_hidden=256, head_lstm_hidden=32)
    weights, _ = narrow_state_dict(build_model(cfg).state_dict(), cfg, small)
    build_model(small).load_state_dict(weights)  # every tensor has the narrow shape


@pytest.mark.parametrize("change, words", [
    (dict(head_level=0), "head_level"),
    (dict(widths=(8, 16, 32)), "levels"),
    (dict(widths=(8, 16, 32, 256)), "wider"),
    (dict(head_lstm_hidden=32), "wider"),
    (dict(arch="unet2d"), "SEQ-UNET"),
])
def test_layouts_that_cannot_be_narrowed_are_refused_by_name(change, words):
    cfg = model_config("default")
    target = model_config(cfg, **{**NARROW, **change}) if "widths" not in change or len(change["widths"]) == 4 \
        else model_config(cfg, input_size=64, **{**NARROW, **change})
    assert words in narrowing_problem(cfg, target)
    with pytest.raises(ValueError, match="cannot narrow"):
        narrow_state_dict(build_model(cfg).state_dict(), cfg, target)
    assert narrowing_problem(cfg, model_config(cfg, **NARROW)) is None
