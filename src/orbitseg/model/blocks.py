"""Small MONAI-style 2D building blocks: conv block, encoder, decoder.

All modules here work on plain 4-D image batches ``(N, C, H, W)``.  The
sequence models fold the time axis into the batch axis
(``(B, T, C, H, W) -> (B*T, C, H, W)``) before calling them, so every slice of
every sequence goes through the same weights.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["group_count", "make_norm", "make_act", "ConvBlock", "DoubleConv", "Encoder", "UpStage", "Decoder"]

NORMS = ("batch", "instance", "group", "none")
ACTS = ("elu", "relu", "leakyrelu")


def group_count(channels: int) -> int:
    """Groups of the ``group`` norm for ``channels`` feature maps: 8, or fewer when 8 does not divide it."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


def make_norm(kind: str, channels: int) -> nn.Module:
    """Normalisation layer for ``channels`` feature maps.

    ``batch`` -> BatchNorm2d; ``instance`` -> instance normalisation with a
    per-channel affine, built as ``GroupNorm(channels, channels)`` (the same
    maths as ``InstanceNorm2d(affine=True)``, but it keeps channels-last
    tensors channels-last, which InstanceNorm2d does not: measured faster on
    CPU); ``group`` -> GroupNorm with up to 8 groups (fewer when ``channels`` is
    not divisible); ``none`` -> identity.
    """
    kind = kind.lower()
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.GroupNorm(channels, channels)
    if kind == "group":
        return nn.GroupNorm(group_count(channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {NORMS}")


def make_act(kind: str) -> nn.Module:
    """Activation by name: ``elu``, ``relu`` or ``leakyrelu`` (slope 0.01)."""
    kind = kind.lower()
    if kind == "elu":
        return nn.ELU(inplace=True)
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind in ("leakyrelu", "leaky_relu"):
        return nn.LeakyReLU(0.01, inplace=True)
    raise ValueError(f"unknown activation {kind!r}; choose one of {ACTS}")


class ConvBlock(nn.Sequential):
    """Conv2d (same padding) -> norm -> activation.

    ``(N, in_channels, H, W) -> (N, out_channels, H, W)``.  The convolution has no
    bias when a norm with its own shift follows.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 norm: str = "batch", act: str = "elu") -> None:
        bias = norm.lower() == "none"
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias),
            make_norm(norm, out_channels),
            make_act(act),
        )


class DoubleConv(nn.Sequential):
    """Two :class:`ConvBlock` s, the classic U-Net level.

    ``(N, in_channels, H, W) -> (N, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch", act: str = "elu") -> None:
        super().__init__(
            ConvBlock(in_channels, out_channels, 3, norm, act),
            ConvBlock(out_channels, out_channels, 3, norm, act),
        )


class Encoder(nn.Module):
    """U-Net encoder: one :class:`DoubleConv` level per width, 2x2 max-pool after each.

    ``forward(x: (N, in_channels, H, W)) -> (skips, bottom)`` where
    ``skips[k]`` is ``(N, widths[k], H / 2**k, W / 2**k)`` (the level's output
    before pooling) and ``bottom`` is ``(N, widths[-1], H / 2**L, W / 2**L)``
    with ``L = len(widths)`` poolings.  ``H`` and ``W`` must be divisible by
    ``2**L``.  ``first_level_convs=1`` makes the full-resolution level a single
    :class:`ConvBlock` (it runs on every slice, and on CPU it is the most
    expensive part of training).
    """

    def __init__(self, in_channels: int, widths: Sequence[int], norm: str = "batch", act: str = "elu",
                 first_level_convs: int = 2) -> None:
        super().__init__()
        if first_level_convs not in (1, 2):
            raise ValueError("first_level_convs must be 1 or 2")
        self.widths = tuple(int(w) for w in widths)
        chans = (in_channels,) + self.widths
        self.levels = nn.ModuleList(
            ConvBlock(chans[k], chans[k + 1], 3, norm, act) if k == 0 and first_level_convs == 1
            else DoubleConv(chans[k], chans[k + 1], norm, act)
            for k in range(len(self.widths))
        )
        self.pool = nn.MaxPool2d(2)

    @property
    def depth(self) -> int:
        return len(self.widths)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        skips: list[torch.Tensor] = []
        for level in self.levels:
            x = level(x)
            skips.append(x)
            x = self.pool(x)
        return skips, x


class UpStage(nn.Module):
    """One decoder level: 2x upsampling, concat with the skip, :class:`DoubleConv`.

    ``forward(x: (N, in_channels, h, w), skip: (N, skip_channels, 2h, 2w))
    -> (N, out_channels, 2h, 2w)``.  Upsampling is a 2x2 stride-2 transposed
    convolution to ``out_channels`` (``upsample="transpose"``) or bilinear
    interpolation followed by a 1x1 conv (``"bilinear"``).
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int,
                 norm: str = "batch", act: str = "elu", upsample: str = "transpose") -> None:
        super().__init__()
        if upsample == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        elif upsample == "bilinear":
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                    nn.Conv2d(in_channels, out_channels, 1))
        else:
            raise ValueError(f"unknown upsample {upsample!r}; choose 'transpose' or 'bilinear'")
        self.conv = DoubleConv(out_channels + skip_channels, out_channels, norm, act)
        self.up_channels = out_channels

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))

    def skip_term(self, skip: torch.Tensor) -> torch.Tensor:
        """The skip's share of the first convolution: ``(N, skip_channels, 2h, 2w) -> (N, out_channels, 2h, 2w)``.

        A convolution over ``concat(up, skip)`` is the sum of one over ``up`` and one over ``skip``; the
        second depends on the slice alone, so SEQ-UNET computes it once per slice instead of once per
        sequence that holds the slice.
        """
        first = self.conv[0][0]
        return F.conv2d(skip, first.weight[:, self.up_channels:], None, padding=first.padding)

    def forward_term(self, x: torch.Tensor, skip_term: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` given :meth:`skip_term` of the skip instead of the skip itself (the same
        result up to float rounding): ``x: (N, in_channels, h, w)`` -> ``(N, out_channels, 2h, 2w)``."""
        block = self.conv[0]
        first = block[0]
        y = F.conv2d(self.up(x), first.weight[:, :self.up_channels], first.bias, padding=first.padding) + skip_term
        return self.conv[1](block[2](block[1](y)))


class Decoder(nn.Module):
    """U-Net decoder with skip connections, mirror of :class:`Encoder`.

    ``stages[k]`` brings features from level ``k+1`` to level ``k`` (resolution
    ``H / 2**k``) and outputs ``widths[k]`` channels.  ``forward(bottom, skips,
    stop=0)`` runs from the bottom up to and including level ``stop``:
    ``bottom: (N, bottom_channels, H / 2**L, W / 2**L)``, ``skips`` as returned by
    :class:`Encoder`; result ``(N, widths[stop], H / 2**stop, W / 2**stop)``.

    ``stage_in`` overrides the input channels of some stages (``{k: channels}``),
    used when something (SEQ-UNET's head LSTM at a lower resolution) sits
    between level ``k+1`` and level ``k``.
    """

    def __init__(self, bottom_channels: int, widths: Sequence[int], norm: str = "batch", act: str = "elu",
                 upsample: str = "transpose", stage_in: dict[int, int] | None = None) -> None:
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        ins = list(self.widths[1:]) + [bottom_channels]  # input channels of stage k
        for k, c in (stage_in or {}).items():
            ins[k] = c
        self.stages = nn.ModuleList(
            UpStage(ins[k], self.widths[k], self.widths[k], norm, act, upsample) for k in range(len(self.widths))
        )

    def forward(self, bottom: torch.Tensor, skips: Sequence[torch.Tensor], stop: int = 0) -> torch.Tensor:
        x = bottom
        for k in range(len(self.stages) - 1, stop - 1, -1):
            x = self.stages[k](x, skips[k])
        return x

    def skip_terms(self, skips: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Every stage's :meth:`UpStage.skip_term`: ``skips[k] -> (N, widths[k], H / 2**k, W / 2**k)``."""
        return [stage.skip_term(s) for stage, s in zip(self.stages, skips)]

    def forward_terms(self, bottom: torch.Tensor, terms: Sequence[torch.Tensor], stop: int = 0) -> torch.Tensor:
        """:meth:`forward` from :meth:`skip_terms` instead of the skips (same shapes)."""
        x = bottom
        for k in range(len(self.stages) - 1, stop - 1, -1):
            x = self.stages[k].forward_term(x, terms[k])
        return x
