"""SEQ-UNET / UNet2D: shapes, gradients through both LSTM directions, slice context, presets."""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest
import torch
from tiny import TINY_NETWORKS

from orbitseg.model import (BiConvLSTM, ConvLSTM, SeqUNet, UNet2D, build_model, count_parameters, describe,
                            get_preset, model_config)

# tiny versions of both presets' architecture (same layout, small widths)
TINY = TINY_NETWORKS  # tiny versions of each preset (same layout, small widths)


def tiny(preset: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(preset, **{**TINY[preset], **kw})


SIZE = {"paper": 16, "default": 32}


def seq(b=2, t=3, size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, 1, size, size, generator=g)


@pytest.mark.parametrize("preset", ["paper", "default"])
def test_output_shape(preset):
    m, s = tiny(preset), SIZE[preset]
    assert m(seq(size=s)).shape == (2, 4, s, s)
    assert m(seq(b=1, t=5, size=s)).shape == (1, 4, s, s)  # other sequence lengths work too
    u = tiny(preset, arch="unet2d")
    assert isinstance(u, UNet2D) and u(seq(size=s)).shape == (2, 4, s, s)


def test_bad_input_rejected():
    m = tiny("default")
    with pytest.raises(ValueError):
        m(torch.randn(2, 1, 16, 16))
    with pytest.raises(ValueError):
        m(torch.randn(2, 3, 1, 20, 20))  # not divisible by 2**4


def _lstm_grads(lstm: BiConvLSTM) -> dict[str, float]:
    out = {}
    for direction, stack in (("fwd", lstm.fwd), ("bwd", lstm.bwd)):
        for i, cell in enumerate(stack.cells):
            for name in ("x2h", "h2h"):
                g = getattr(cell, name).weight.grad
                out[f"{direction}.{i}.{name}"] = 0.0 if g is None else g.abs().sum().item()
    return out


@pytest.mark.parametrize("preset", ["paper", "default"])
def test_gradients_reach_both_directions_of_both_lstms(preset):
    # real bidirectional (separate weights) in both layouts, 2 layers so every cell is checked
    m = tiny(preset, shared_weights=False, bottleneck_lstm_layers=2, head_lstm_layers=2)
    m.train()
    m(seq(size=SIZE[preset])).square().mean().backward()
    for lstm in (m.bottleneck_lstm, m.head_lstm):
        grads = _lstm_grads(lstm)
        assert len(grads) == 8
        assert all(v > 0 for v in grads.values()), grads


def test_shared_weights_really_share():
    lstm = BiConvLSTM(3, 5, num_layers=2, combine="sum", shared_weights=True)
    single = ConvLSTM(3, 5, num_layers=2)
    assert lstm.bwd is None and lstm.backward_lstm is lstm.fwd
    assert count_parameters(lstm) == count_parameters(single)
    assert count_parameters(BiConvLSTM(3, 5, 2, combine="sum")) == 2 * count_parameters(single)
    # both directions use the one parameter set: reversing the sequence of a shared-weight
    # sum-combined BiConvLSTM just reverses its output
    x = torch.randn(1, 3, 3, 6, 6)
    y = lstm(x)
    torch.testing.assert_close(lstm(x.flip(1)), y.flip(1))
    m = tiny("paper")
    assert m.bottleneck_lstm.bwd is None and m.head_lstm.bwd is None
    m(seq()).sum().backward()
    assert m.bottleneck_lstm.fwd.cells[0].h2h.weight.grad.abs().sum() > 0


def test_forward_centre_is_exact():
    torch.manual_seed(0)
    for combine in ("concat", "sum"):
        lstm = BiConvLSTM(3, 4, num_layers=2, combine=combine)
        x = torch.randn(2, 5, 3, 6, 6)
        for c in range(5):
            torch.testing.assert_close(lstm.forward_centre(x, c), lstm(x)[:, c])


@pytest.mark.parametrize("preset", ["paper", "default"])
@pytest.mark.parametrize("neighbour", [0, 2])
def test_neighbouring_slice_changes_centre_prediction(preset, neighbour):
    x = seq(size=SIZE[preset])
    x2 = x.clone()
    x2[:, neighbour] = torch.randn_like(x2[:, neighbour])
    m = tiny(preset).eval()
    u = tiny(preset, arch="unet2d").eval()
    with torch.no_grad():
        assert not torch.allclose(m(x), m(x2), atol=1e-6)
        assert torch.equal(u(x), u(x2))


def test_presets_build_and_count():
    paper = build_model("paper")
    n = count_parameters(paper)
    assert n > 50_000_000, n  # ~57 M with the authors' shared-weight LSTMs
    text = describe(paper)
    assert "SeqUNet" in text and f"{n:,}" in text
    del paper
    default = build_model("default")
    assert 100_000 < count_parameters(default) < 10_000_000
    assert isinstance(default, SeqUNet)
    # the ablation preset: the default's encoder/decoder without LSTMs, same recipe
    from orbitseg.model import UNet2D

    plain = build_model("unet2d")
    assert isinstance(plain, UNet2D) and count_parameters(plain) < count_parameters(default)
    assert get_preset("unet2d").training == get_preset("default").training
    assert [n for n, _ in plain.encoder.named_parameters()] == [n for n, _ in default.encoder.named_parameters()]
    # the fast preset: the default layout at half the channels, the default recipe for 40 epochs
    fast = get_preset("fast")
    assert replace(fast.model, widths=(16, 32, 64, 128), bottleneck_lstm_hidden=64,
                   head_lstm_hidden=16) == get_preset("default").model
    assert fast.training == replace(get_preset("default").training, epochs=40)
    assert count_parameters(build_model("fast")) < count_parameters(default) / 3
    for name in ("paper", "default", "unet2d", "fast"):
        p = get_preset(name)
        d = asdict(p)
        assert d["name"] == name and "lr" in d["training"] and "widths" in d["model"]
        assert model_config(d) == p.model  # a recorded dict rebuilds the same config
    assert get_preset("paper").training.lr == 5e-5 and get_preset("paper").training.batch_size == 32
    with pytest.raises(KeyError):
        get_preset("nope")


def test_paper_real_bidirectional_size():
    # separate forward/backward weights double the bottleneck LSTM: ~110 M, the estimate
    cfg = model_config("paper", shared_weights=False)
    lstm = BiConvLSTM(cfg.widths[-1], cfg.bottleneck_lstm_hidden, cfg.bottleneck_lstm_layers, combine="sum")
    assert 100_000_000 < count_parameters(lstm) < 110_000_000


def test_instance_norm_is_instance_norm():
    from orbitseg.model import make_norm
    torch.manual_seed(0)
    x = torch.randn(3, 6, 8, 8) * 4 + 2
    ours = make_norm("instance", 6)
    ref = torch.nn.InstanceNorm2d(6, affine=True)
    torch.testing.assert_close(ours(x), ref(x))
    ours.eval()
    torch.testing.assert_close(ours(x), ref(x))  # no running statistics: same in eval


@pytest.mark.parametrize("preset", ["paper", "default"])
def test_a_few_steps_fit_a_toy_problem(preset):
    from orbitseg.model import get_loss
    torch.manual_seed(0)
    s = SIZE[preset]
    m = tiny(preset, bottleneck_lstm_layers=1, head_lstm_layers=1)
    # label = bright disc in the centre slice; the neighbours hold the same disc, dimmer
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    disc = ((yy - s / 2) ** 2 + (xx - s / 2) ** 2 < (s / 4) ** 2).float()
    x = torch.randn(2, 3, 1, s, s) * 0.1 + disc * torch.tensor([0.5, 1.0, 0.5]).view(1, 3, 1, 1, 1)
    y = disc.long().expand(2, s, s)
    loss_fn = get_loss(get_preset(preset).training.loss)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(m(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def _structure(m: torch.nn.Module) -> dict:
    """What makes two networks the same: every tensor's name and shape, each module's type and settings."""
    modules = {n: (type(x).__name__, x.extra_repr()) for n, x in m.named_modules()}
    attrs = {a: getattr(m, a, None) for a in ("output", "head_reduce", "head_level", "num_classes", "seq_len",
                                              "widths", "in_channels")}
    return {"state": {k: tuple(v.shape) for k, v in m.state_dict().items()}, "modules": modules, "attrs": attrs}


@pytest.mark.parametrize("cls,arch", [(SeqUNet, "sequnet"), (UNet2D, "unet2d")])
def test_class_defaults_are_the_model_configs(cls, arch):
    """Building a class directly gives the network build_model gives for ModelConfig's defaults
    (SeqUNet() once defaulted to softmax, concat, unshared LSTMs and a centre head: another network)."""
    import inspect

    from orbitseg.model import ModelConfig

    cfg = ModelConfig(arch=arch)
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name != "self":
            assert p.default == getattr(cfg, name), name  # every keyword's default is the config's
    torch.manual_seed(0)
    direct = cls()
    assert _structure(direct) == _structure(build_model(cfg))
    assert (direct.output, getattr(direct, "head_reduce", cfg.head_reduce)) == (cfg.output, cfg.head_reduce)


def _textbook(m: SeqUNet, x: torch.Tensor) -> torch.Tensor:
    """SEQ-UNET's data flow written out plainly: concatenated skips (``UpStage.forward``) and LSTM cells
    stepped on their inputs, nothing computed once per slice; ``x: (B, T, 1, H, W)`` -> logits."""
    b, t = x.shape[:2]
    c = t // 2
    skips, bottom = m.encoder(x.flatten(0, 1))

    def run(stack: ConvLSTM, seq: torch.Tensor) -> torch.Tensor:  # (B, T', C, h, w) -> last layer's h per step
        for cell in stack.cells:
            state, outs = None, []
            for step in range(seq.shape[1]):
                state = cell(seq[:, step], state)
                outs.append(state[0])
            seq = torch.stack(outs, 1)
        return seq

    def bi(lstm: BiConvLSTM, seq: torch.Tensor) -> torch.Tensor:
        f, r = run(lstm.fwd, seq), run(lstm.backward_lstm, seq.flip(1)).flip(1)
        return torch.cat([f, r], 2) if lstm.combine == "concat" else f + r

    y = bi(m.bottleneck_lstm, bottom.view(b, t, *bottom.shape[1:])).flatten(0, 1)
    for k in range(len(m.widths) - 1, m.head_level - 1, -1):
        y = m.decoder.stages[k](y, skips[k])
    hs = bi(m.head_lstm, y.view(b, t, *y.shape[1:]))
    h = {"sum": hs.sum(1), "mean": hs.mean(1), "centre": hs[:, c]}[m.head_reduce]
    for k in range(m.head_level - 1, -1, -1):
        h = m.decoder.stages[k](h, skips[k].view(b, t, *skips[k].shape[1:])[:, c])
    return m.out(h)


@pytest.mark.parametrize("overrides", [
    dict(preset="paper"),  # shared weights, 3-layer LSTMs, sum over time, head at full resolution
    dict(preset="default"),  # separate directions, concat, centre step, head at half resolution
    dict(preset="default", norm="none", head_reduce="mean", head_level=2),  # convolutions with biases
])
def test_per_slice_sharing_is_the_textbook_network(overrides):
    """What SEQ-UNET computes once per slice (skip terms, bottleneck input gates) gives the network written
    out plainly, by every path that uses it: forward, forward_indexed and whole-volume prediction."""
    from orbitseg.model import predict_volume_slices
    from orbitseg.model.seq_unet import probabilities
    from orbitseg.model.slice_inference import sequence_indices

    overrides = dict(overrides)
    preset = overrides.pop("preset")
    m = tiny(preset, bottleneck_lstm_layers=2 if preset == "paper" else 1, **overrides).eval()
    s = SIZE[preset]
    x = seq(b=3, size=s)
    with torch.no_grad():
        want = _textbook(m, x)
        torch.testing.assert_close(m(x), want, atol=1e-5, rtol=1e-4)
        slices = torch.randn(6, 1, s, s, generator=torch.Generator().manual_seed(3))
        index = sequence_indices(6, 3)
        ref = _textbook(m, slices[index])
        torch.testing.assert_close(m.forward_indexed(slices, index), ref, atol=1e-5, rtol=1e-4)
    got = predict_volume_slices(m, slices, batch_size=2)
    torch.testing.assert_close(got, probabilities(ref, m.output), atol=1e-5, rtol=1e-4)
