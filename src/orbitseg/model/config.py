"""Named presets (frozen dataclasses, ``dataclasses.asdict``-able) and the model factory.

A :class:`Preset` bundles the architecture (:class:`ModelConfig`) with the
training recipe (:class:`TrainingRecipe`) it was designed for, so a run can
record everything with ``asdict(get_preset(name))``.  The training loop reads
the recipe; this package only builds the network and provides the losses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

from torch import nn

from orbitseg.constants import INPUT_SIZE, N_CLASSES, PRESET_NAMES, SEQ_LEN

__all__ = ["ModelConfig", "TrainingRecipe", "Preset", "PRESETS", "get_preset", "preset_names",
           "build_model", "count_parameters", "describe", "asdict"]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture.  ``arch="sequnet"`` -> :class:`SeqUNet`, ``"unet2d"`` -> :class:`UNet2D`.

    These defaults (the paper's network) are also the keyword defaults of ``SeqUNet`` and
    ``UNet2D``, so building a class directly gives the network ``build_model(ModelConfig())`` gives.
    """

    arch: str = "sequnet"
    in_channels: int = 1
    num_classes: int = N_CLASSES
    widths: tuple[int, ...] = (64, 128, 256)
    seq_len: int = SEQ_LEN
    #: in-plane size the data pipeline should resample slices to; must be divisible by 2**len(widths)
    input_size: int = INPUT_SIZE
    norm: str = "batch"
    act: str = "elu"
    upsample: str = "transpose"
    #: conv blocks in the encoder's full-resolution level (2 = classic U-Net, 1 = cheaper)
    first_level_convs: int = 2
    output: str = "sigmoid"
    bottleneck_lstm_hidden: int = 512
    bottleneck_lstm_layers: int = 3
    head_lstm_hidden: int = 64
    head_lstm_layers: int = 3
    lstm_kernel: int = 3
    combine: str = "sum"
    shared_weights: bool = True
    head_reduce: str = "sum"
    head_level: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.arch not in ("sequnet", "unet2d"):
            raise ValueError(f"arch must be 'sequnet' or 'unet2d', got {self.arch!r}")
        if self.input_size % (2 ** len(self.widths)):
            raise ValueError(f"input_size {self.input_size} not divisible by 2**{len(self.widths)}")

    @property
    def bottleneck_channels(self) -> int:
        return self.bottleneck_lstm_hidden * (2 if self.combine == "concat" else 1)


@dataclass(frozen=True)
class TrainingRecipe:
    """Training facts a preset was designed with (read by the training loop)."""

    loss: str = "paper_dice"  # name in orbitseg.model.losses.LOSSES
    optimizer: str = "adam"
    lr: float = 5e-5
    weight_decay: float = 0.0
    schedule: str = "none"  # "none" | "cosine" | "poly"
    warmup_epochs: int = 0
    epochs: int = 500
    batch_size: int = 32


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    model: ModelConfig
    training: TrainingRecipe = field(default_factory=TrainingRecipe)


PAPER = Preset(
    name="paper",
    description=(
        "As close to the authors' code as described: widths 64/128/256, three poolings (64 -> 8 px), "
        "Conv+BatchNorm+ELU; bottleneck ConvLSTM 256 -> 512 hidden, 3 layers, 3x3; post-decoder ConvLSTM "
        "64 hidden, 3 layers at full resolution, outputs summed over time then 1x1 conv; sigmoid per label; "
        "'bidirectional' = one stack with shared weights run both ways and added; per-label weighted soft "
        "Dice w = N/(foreground+1) over the 4 label channels (background included); Adam lr 5e-5, no schedule, "
        "500 epochs, batch 32. GPU-sized (~57 M parameters; ~110 M with shared_weights=False)."
    ),
    model=ModelConfig(),
    training=TrainingRecipe(),
)

DEFAULT = Preset(
    name="default",
    description=(
        "CPU-sized SEQ-UNET: widths 16/32/64/128 (four poolings, 64 -> 4 px), Conv+GroupNorm(8)+LeakyReLU, "
        "one conv block at full resolution in the encoder (two elsewhere); "
        "real bidirectional ConvLSTMs (separate forward/backward weights, concatenated): bottleneck 128 -> 2x64 "
        "hidden, 1 layer; head 2x16 hidden, 1 layer at half resolution on the decoder's level-1 features, "
        "centre step only, then the last decoder stage with the centre slice's full-resolution skip; "
        "softmax over 4 classes; Dice + cross-entropy; AdamW lr 1e-3 with cosine schedule and warm-up, 20 epochs."
    ),
    model=ModelConfig(
        widths=(16, 32, 64, 128), norm="group", act="leakyrelu", output="softmax", first_level_convs=1,
        bottleneck_lstm_hidden=64, bottleneck_lstm_layers=1, head_lstm_hidden=16, head_lstm_layers=1,
        combine="concat", shared_weights=False, head_reduce="centre", head_level=1,
    ),
    # epochs: one epoch of the 46-patient cohort (~2.3k training sequences, then validation) took 42-45 s
    # on 2 quiet cores, so 20 epochs make a 4-fold cross-validation in about an hour (<= 2 h), and
    # 20 epochs on a GPU gave the shipped model (eyeball/muscles/nerve Dice 0.96/0.86/0.85)
    training=TrainingRecipe(loss="dice_ce", optimizer="adamw", lr=1e-3, weight_decay=1e-4, schedule="cosine",
                            warmup_epochs=2, epochs=20, batch_size=32),
)

UNET2D = Preset(
    name="unet2d",
    description=(
        "Ablation baseline: the default preset's encoder and decoder as a plain 2D U-Net on the centre slice "
        "(a conv block where the bottleneck LSTM was, no head LSTM, neighbouring slices unused); same recipe."
    ),
    model=replace(DEFAULT.model, arch="unet2d"),
    training=DEFAULT.training,
)

FAST = Preset(
    name="fast",
    description=(
        "The default preset at half the channels: widths 8/16/32/64, bottleneck 2x32 and head 2x8 hidden, "
        "everything else the same (a quarter of the arithmetic: about 4 s a scan estimated on a 2-core CPU "
        "without AVX-512, against 12-13 s).  Not yet trained to the default's accuracy (on fold 0 of the default "
        "cohort, 40-80 CPU epochs left its muscle Dice 0.01-0.02 short; README); `--distill-from shipped` lets "
        "the default model teach it.  Default recipe, 40 epochs."
    ),
    model=replace(DEFAULT.model, widths=(8, 16, 32, 64), bottleneck_lstm_hidden=32, head_lstm_hidden=8),
    training=replace(DEFAULT.training, epochs=40),
)

PRESETS: dict[str, Preset] = {p.name: p for p in (PAPER, DEFAULT, UNET2D, FAST)}
if tuple(PRESETS) != PRESET_NAMES:  # the CLI offers constants.PRESET_NAMES without importing this module
    raise AssertionError(f"PRESETS {tuple(PRESETS)} differ from orbitseg.constants.PRESET_NAMES {PRESET_NAMES}")


def preset_names() -> tuple[str, ...]:
    return tuple(PRESETS)


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (``paper``, ``default``, ``unet2d`` or ``fast``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; choose one of {preset_names()}") from None


def model_config(spec: str | Preset | ModelConfig | Mapping[str, Any], **overrides: Any) -> ModelConfig:
    """Resolve a preset name, :class:`Preset`, :class:`ModelConfig` or dict (e.g. a recorded
    ``asdict``) to a :class:`ModelConfig`, with field ``overrides`` applied."""
    if isinstance(spec, str):
        cfg = get_preset(spec).model
    elif isinstance(spec, Preset):
        cfg = spec.model
    elif isinstance(spec, ModelConfig):
        cfg = spec
    elif isinstance(spec, Mapping):
        d = dict(spec.get("model", spec))  # a whole Preset dict or just the model part
        names = {f.name for f in fields(ModelConfig)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        cfg = ModelConfig(**d)
    else:
        raise TypeError(f"cannot make a ModelConfig from {type(spec).__name__}")
    return replace(cfg, **overrides) if overrides else cfg


def build_model(spec: str | Preset | ModelConfig | Mapping[str, Any], **overrides: Any) -> nn.Module:
    """Build the network for a preset name / :class:`Preset` / :class:`ModelConfig` / dict.

    ``overrides`` replace config fields (``build_model("default", widths=(8, 16))``).
    The returned module has ``.config`` (the :class:`ModelConfig` used).
    """
    from orbitseg.model.seq_unet import SeqUNet, UNet2D  # here: seq_unet takes its defaults from ModelConfig

    cfg = model_config(spec, **overrides)
    model: nn.Module
    if cfg.arch == "sequnet":
        model = SeqUNet(
            in_channels=cfg.in_channels, num_classes=cfg.num_classes, widths=cfg.widths, seq_len=cfg.seq_len,
            bottleneck_lstm_hidden=cfg.bottleneck_lstm_hidden, bottleneck_lstm_layers=cfg.bottleneck_lstm_layers,
            head_lstm_hidden=cfg.head_lstm_hidden, head_lstm_layers=cfg.head_lstm_layers,
            lstm_kernel=cfg.lstm_kernel, norm=cfg.norm, act=cfg.act, output=cfg.output, combine=cfg.combine,
            shared_weights=cfg.shared_weights, head_reduce=cfg.head_reduce, head_level=cfg.head_level,
            upsample=cfg.upsample, first_level_convs=cfg.first_level_convs,
        )
    else:
        model = UNet2D(
            in_channels=cfg.in_channels, num_classes=cfg.num_classes, widths=cfg.widths, seq_len=cfg.seq_len,
            norm=cfg.norm, act=cfg.act, output=cfg.output, bottleneck_channels=cfg.bottleneck_channels,
            upsample=cfg.upsample, first_level_convs=cfg.first_level_convs,
        )
    model.config = cfg  # type: ignore[assignment]
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of distinct parameters (a shared tensor counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def describe(model: nn.Module) -> str:
    """Multi-line summary: class, total parameters, parameters per top-level part, config."""
    total = count_parameters(model)
    lines = [f"{type(model).__name__}: {total:,} parameters ({total / 1e6:.2f} M)"]
    for name, child in model.named_children():
        n = count_parameters(child)
        lines.append(f"  {name:<16} {n:>13,}  ({100.0 * n / max(total, 1):5.1f} %)")
    cfg = getattr(model, "config", None)
    if cfg is not None:
        lines.append("  config: " + ", ".join(f"{k}={v}" for k, v in asdict(cfg).items()))
    return "\n".join(lines)
