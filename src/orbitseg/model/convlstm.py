"""Convolutional LSTMs: a cell, a multi-layer unidirectional stack, a bidirectional wrapper.

Shapes: a sequence is ``(B, T, C, H, W)``; a single step is ``(B, C, H, W)``.

Speed note: the cell's gate convolution over ``concat(x_t, h_{t-1})`` is split
into an input convolution (with bias) and a hidden convolution (no bias).  The
two sum to exactly the convolution over the concatenation, but the input part
is computed for all ``T`` steps in one batched call (or given precomputed:
:meth:`BiConvLSTM.input_gates` / :meth:`BiConvLSTM.forward_gates`), and the
hidden part is skipped at ``t = 0`` where ``h = 0``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvLSTMCell", "ConvLSTM", "BiConvLSTM"]

State = tuple[torch.Tensor, torch.Tensor]


class ConvLSTMCell(nn.Module):
    """One ConvLSTM cell (Shi et al. 2015, without peepholes).

    ``i, f, o = sigmoid(.)``, ``g = tanh(.)`` of ``W_x * x_t + W_h * h_{t-1} + b``;
    ``c_t = f c_{t-1} + i g``; ``h_t = o tanh(c_t)``.  Gate order in the
    ``4 * hidden`` output channels: i, f, o, g.  The forget-gate bias starts
    at 1.

    ``forward(x: (B, in_channels, H, W), state=None) -> (h, c)``, both
    ``(B, hidden_channels, H, W)``; ``state=None`` means zeros.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        pad = kernel_size // 2
        self.x2h = nn.Conv2d(in_channels, 4 * hidden_channels, kernel_size, padding=pad, bias=True)
        self.h2h = nn.Conv2d(hidden_channels, 4 * hidden_channels, kernel_size, padding=pad, bias=False)
        with torch.no_grad():
            self.x2h.bias.zero_()
            self.x2h.bias[hidden_channels:2 * hidden_channels].fill_(1.0)

    def input_gates(self, x: torch.Tensor) -> torch.Tensor:
        """Input part of the gate pre-activations: ``(N, in, H, W) -> (N, 4*hidden, H, W)``."""
        return self.x2h(x)

    def step(self, gates_x: torch.Tensor, state: State | None) -> State:
        """Advance one step given precomputed input gates ``(B, 4*hidden, H, W)``."""
        hc = self.hidden_channels
        if state is None:
            gates = gates_x
        else:
            gates = gates_x + self.h2h(state[0])
        sig = torch.sigmoid(gates[:, : 3 * hc])
        i, f, o = sig[:, :hc], sig[:, hc:2 * hc], sig[:, 2 * hc:]
        g = torch.tanh(gates[:, 3 * hc:])
        c = i * g if state is None else f * state[1] + i * g
        h = o * torch.tanh(c)
        return h, c

    def forward(self, x: torch.Tensor, state: State | None = None) -> State:
        return self.step(self.input_gates(x), state)


class ConvLSTM(nn.Module):
    """Multi-layer unidirectional ConvLSTM running over ``T`` from first to last.

    ``forward(x: (B, T, in_channels, H, W)) -> (B, T, hidden_channels, H, W)``: the
    last layer's hidden state at every step.  Layer ``l > 0`` reads layer
    ``l-1``'s hidden states.  Initial states are zero.
    """

    def __init__(self, in_channels: int, hidden_channels: int, num_layers: int = 1, kernel_size: int = 3) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        self.hidden_channels = hidden_channels
        self.cells = nn.ModuleList(
            ConvLSTMCell(in_channels if layer == 0 else hidden_channels, hidden_channels, kernel_size)
            for layer in range(num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        gx = self.cells[0].input_gates(x.flatten(0, 1))
        return self.run_gates(gx.view(b, t, *gx.shape[1:]))

    def run_gates(self, gates: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` given the first layer's input gates ``(B, T, 4*hidden, H, W)`` (its
        ``input_gates`` of each step) instead of the input -> ``(B, T, hidden_channels, H, W)``."""
        b, t = gates.shape[:2]
        gx = gates
        for layer, cell in enumerate(self.cells):
            if layer:  # a later layer's gates come from the layer below's hidden states
                gx = cell.input_gates(x.flatten(0, 1))
                gx = gx.view(b, t, *gx.shape[1:])
            state: State | None = None
            outs = []
            for step in range(t):
                state = cell.step(gx[:, step], state)
                outs.append(state[0])
            x = torch.stack(outs, dim=1)
        return x


class BiConvLSTM(nn.Module):
    """Bidirectional multi-layer ConvLSTM.

    Two independent stacks of ``num_layers`` :class:`ConvLSTM` layers: the
    forward stack reads the sequence from first to last slice, the backward
    stack from last to first; the backward outputs are flipped back so that
    step ``t`` of both refers to slice ``t``.  They are combined per step by
    ``combine="concat"`` (``2 * hidden_channels`` out) or ``"sum"``
    (``hidden_channels`` out).

    ``shared_weights=True`` reproduces the authors' "bidirectional": one stack,
    with one parameter set, run both ways, outputs added (use with
    ``combine="sum"``).

    ``forward(x: (B, T, in_channels, H, W)) -> (B, T, out_channels, H, W)``.
    ``forward_centre(x, c) -> (B, out_channels, H, W)`` gives only step ``c``,
    running the forward stack over steps ``0..c`` and the backward stack over
    ``T-1..c`` (the steps after ``c`` cannot influence the forward direction's
    output at ``c``, so this is exact and cheaper).
    """

    def __init__(self, in_channels: int, hidden_channels: int, num_layers: int = 1, kernel_size: int = 3,
                 combine: str = "concat", shared_weights: bool = False) -> None:
        super().__init__()
        if combine not in ("concat", "sum"):
            raise ValueError(f"combine must be 'concat' or 'sum', got {combine!r}")
        self.combine = combine
        self.shared_weights = shared_weights
        self.hidden_channels = hidden_channels
        self.out_channels = 2 * hidden_channels if combine == "concat" else hidden_channels
        self.fwd = ConvLSTM(in_channels, hidden_channels, num_layers, kernel_size)
        self.bwd = None if shared_weights else ConvLSTM(in_channels, hidden_channels, num_layers, kernel_size)

    @property
    def backward_lstm(self) -> ConvLSTM:
        """The stack run from last to first slice (the forward one when weights are shared)."""
        return self.fwd if self.bwd is None else self.bwd

    def _combine(self, f: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
        return torch.cat([f, b], dim=dim) if self.combine == "concat" else f + b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        g = self.input_gates(x.flatten(0, 1))
        return self.forward_gates(g.view(b, t, *g.shape[1:]))

    def input_gates(self, x: torch.Tensor) -> torch.Tensor:
        """The first layers' input gates of independent steps: ``(N, in_channels, H, W) -> (N, G, H, W)``
        with ``G = 4 * hidden`` per direction that has its own weights, the forward stack's then the
        backward stack's.  A step's gates depend on that step's input alone, so SEQ-UNET computes them
        once per slice and shares them between the sequences holding it."""
        gf = self.fwd.cells[0].input_gates(x)
        return gf if self.bwd is None else torch.cat([gf, self.bwd.cells[0].input_gates(x)], dim=1)

    def forward_gates(self, gates: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` given :meth:`input_gates` of every step ``(B, T, G, H, W)``."""
        gf = gb = gates
        if self.bwd is not None:
            gf, gb = gates.split(gates.shape[2] // 2, dim=2)
        f = self.fwd.run_gates(gf)
        b = self.backward_lstm.run_gates(gb.flip(1)).flip(1)
        return self._combine(f, b, dim=2)

    def forward_centre(self, x: torch.Tensor, centre: int) -> torch.Tensor:
        f = self.fwd(x[:, : centre + 1])[:, -1]
        b = self.backward_lstm(x[:, centre:].flip(1))[:, -1]
        return self._combine(f, b, dim=1)
