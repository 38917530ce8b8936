"""Train SEQ-UNET on one cross-validation fold (or all four), resumably, and test it.

::

    from orbitseg.train import train, train_fold
    train_fold("DATASET", 0)                       # DATASET/runs/default/fold_0/
    train("DATASET", "all", preset="paper", epochs=500, batch_size=32)

Per fold ``k`` (``DATASET/splits.json``, made by :func:`make_splits`): the model
trains on the fold's ``train`` cases, picks its best epoch by the mean 3D Dice
of eyeball / muscles / nerve on the ``val`` cases, and after the last epoch the
best checkpoint segments the held-out ``test`` cases from their original scans
(``segmented/{case}.nii.gz`` on each scan's grid) which are scored against
``labelsTr`` (``metrics/``).  The test fold is never used for any choice.

Run folder (default ``DATASET/runs/{preset}/fold_{k}/``)::

    run.json              preset (all fields), preprocess config, seeds, options, versions, git commit,
                          split (train/val/test cases), command line; resumes appended; result at the end
    data_access.json      what the loop read, from the items it fetched rather than the split: the cases of
                          every epoch's training batches and validation pass, the cases the post-processing
                          was chosen on (:class:`~orbitseg.train.data.DataAccess`; written before each
                          epoch's checkpoint and at the end, kept across resumes)
    checkpoint_last.pt    written atomically after every epoch: model, optimiser, scheduler, RNG states,
    checkpoint_best.pt    epoch, best metric, history (best = highest mean validation Dice)
    log.csv, curves.png   one row per epoch: train loss, lr, validation Dice per structure, seconds
    segmented/, metrics/  test-fold predictions and their evaluation

Reproducible and resumable: the epoch's sample draw and its augmentation come
from generators seeded by ``(seed, epoch)``, the global RNG states are stored in
every checkpoint, and the run uses deterministic algorithms with a fixed
number of threads.  ``resume=True`` restarts from ``checkpoint_last.pt``: a run
killed mid-epoch redoes that epoch and ends with weights and metrics identical
to an uninterrupted run (same machine, same thread count).

Multi-GPU (DistributedDataParallel, one process per GPU; ``batch_size`` is the
global batch, split over the processes; each rank trains on an interleaved shard
of the epoch's draw; only rank 0 writes)::

    torchrun --nproc_per_node=4 -m orbitseg.cli train DATASET --fold 0 --device cuda

Without ``torchrun`` (``WORLD_SIZE`` unset or 1) it is one plain process.

Testing hook: ``ORBITSEG_TRAIN_KILL_AT="E:S"`` makes the process SIGKILL itself
before step ``S`` of epoch ``E`` (1-based), to test resuming.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from orbitseg.constants import (CHECKPOINT_BEST, CHECKPOINT_LAST, DEFAULT_PRESET, FULL_FOLD, SHORT_NAMES, STRUCTURES,
                                TRAIN_PRECISIONS)
from orbitseg.errors import InputError
from orbitseg.io.atomic import atomic_path, exclusive_lock, write_text_atomic
from orbitseg.io.layout import read_dataset_json
from orbitseg.runs.checkpoint import (load_checkpoint, read_training_checkpoint, save_checkpoint, state_dict_of,
                                     training_checkpoint)
from orbitseg.runs.layout import (CURVES_PNG, DATA_ACCESS_JSON, LOG_CSV, RUN_DIRS, RUN_FILES, RUN_JSON, TRAIN_LOCK,
                                  dataset_identity, fold_dir_name, fold_init_source, full_checkpoint,
                                  model_checkpoints, holds_run, init_dataset_identity, init_split,
                                  run_dir_of)
from orbitseg.train.augment import AugmentParams, augment
from orbitseg.train.slabs import SlabParams
from orbitseg.train.data import (DataAccess, SliceSequences, derive_seed, epoch_indices, read_manifest,
                                 slice_weights, vois_of_cases)
from orbitseg.model.losses import distillation_loss, get_loss
from orbitseg.train.scoring import choose_on_validation, cross_validation_metrics, score_test_fold
from orbitseg.train.splits import N_FOLDS, fold_split, full_split, make_splits

if TYPE_CHECKING:
    from orbitseg.model.config import Preset, TrainingRecipe
    from orbitseg.preprocess.pipeline import PreprocessConfig

__all__ = ["train", "train_fold", "load_init", "validate", "LOOP_OPTIONS"]

#: loop options that ``overrides`` may set besides ModelConfig / TrainingRecipe fields
LOOP_OPTIONS: dict[str, Any] = {
    "max_steps_per_epoch": None,  # cap on optimiser steps per epoch (tests, quick looks)
    "epoch_size": None,  # sequences drawn per epoch (default: one per training slice)
    "sampler_muscle": 1.0,  # sampling weight 1 + a * has_muscle + b * has_nerve
    "sampler_nerve": 2.0,
    # sampling weight also times the slice's thickness (mm): cases count by anatomy covered, not slice count
    "sampler_thickness": False,
    "augment": True,  # True, False, or a dict of AugmentParams fields
    # probability that a training item of a thin VOI comes as 3-5.5 mm slices made from its own (train.slabs),
    # or a dict of SlabParams fields; 0: never
    "thick_slabs": 0.0,
    "val_batch_size": 64,
    "threads": None,  # torch threads (None: keep torch's setting; it is recorded)
    "evaluate_test": True,  # predict + evaluate the test fold after training
    "surface": True,  # HD95 / ASD in the test metrics
    "postprocess": True,  # choose connected-component post-processing on the validation cases
    # "bfloat16": the training forward pass under bfloat16 autocast (loss, optimiser state and validation stay
    # float32); about 1.9x the steps per second on a CPU with AMX, 1.2x with AVX512-BF16 alone (AMD Zen 4)
    "precision": "float32",
    # weight of the distillation term (KL to the teacher's probabilities) when train_fold has distill_from
    "distill_weight": 1.0,
}


# -- small helpers ------------------------------------------------------------------------------
def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict:
    import orbitseg

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "orbitseg": getattr(orbitseg, "__version__", None), "platform": platform.platform()}


def _split_overrides(overrides: dict | None) -> tuple[dict, dict, dict]:
    from orbitseg.model import ModelConfig, TrainingRecipe

    mnames = {f.name for f in fields(ModelConfig)}
    tnames = {f.name for f in fields(TrainingRecipe)}
    model, recipe, loop = {}, {}, dict(LOOP_OPTIONS)
    for k, v in (overrides or {}).items():
        if k in mnames:
            model[k] = tuple(v) if isinstance(v, list) else v
        elif k in tnames:
            recipe[k] = v
        elif k in LOOP_OPTIONS:
            loop[k] = v
        else:
            raise ValueError(f"unknown override {k!r}: not a ModelConfig or TrainingRecipe field nor a loop option "
                             f"({sorted(LOOP_OPTIONS)})")
    return model, recipe, loop


def _rng_state() -> dict:
    st = np.random.get_state()
    return {"python": random.getstate(), "numpy": (st[0], st[1].tolist(), int(st[2]), int(st[3]), float(st[4])),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(st: dict) -> None:
    random.setstate(st["python"])
    n = st["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(st["torch"])
    if st.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def _lr_lambda(schedule: str, warmup: int, epochs: int):
    def f(epoch: int) -> float:  # factor for the epoch about to run (0-based)
        if warmup > 0 and epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        if schedule == "none":
            return 1.0
        span = max(1, epochs - warmup)
        t = min(1.0, (epoch - warmup) / span)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t))
        if schedule == "poly":
            return (1.0 - t) ** 0.9
        raise ValueError(f"unknown schedule {schedule!r} (none, cosine, poly)")
    return f


def _make_optimizer(model: nn.Module, recipe) -> torch.optim.Optimizer:
    name = recipe.optimizer.lower()
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.99, nesterov=True,
                               weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r} (adam, adamw, sgd)")


def load_init(model: nn.Module, source: str | Path | dict, log=print) -> dict:
    """Load every tensor of ``source`` (an orbitseg checkpoint or a bare state_dict, file or
    dict) whose name AND shape match a tensor of ``model``; report the rest.

    Returns ``{"loaded": [...], "shape_mismatch": [...], "missing": [...], "unexpected": [...]}``
    (names); ``missing`` = in the model but not in the source, ``unexpected`` the other way.
    """
    sd = state_dict_of(source)
    own = model.state_dict()
    take, mismatch = {}, []
    for k, v in sd.items():
        if k in own:
            if tuple(own[k].shape) == tuple(v.shape):
                take[k] = v
            else:
                mismatch.append(k)
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    own.update({k: v.to(own[k].dtype) for k, v in take.items()})
    model.load_state_dict(own)
    report = {"loaded": sorted(take), "shape_mismatch": sorted(mismatch), "missing": sorted(missing),
              "unexpected": sorted(unexpected)}

    def names(xs: list[str], n: int = 8) -> str:
        return ", ".join(xs[:n]) + (f", ... ({len(xs)} in all)" if len(xs) > n else "")

    n_own = len(own)
    log(f"init-from: loaded {len(take)} of {n_own} tensors "
        f"({sum(v.numel() for v in take.values()):,} values); shape mismatch {len(mismatch)}, "
        f"not in checkpoint {len(missing)}, not in model {len(unexpected)}")
    for key, title in (("shape_mismatch", "shape mismatch"), ("missing", "not in checkpoint"),
                       ("unexpected", "not in model")):
        if report[key]:
            log(f"  {title}: {names(report[key])}")
    return report


def _per_fold_init(folder: Path, fold: int | str, split: dict, log: Callable[[str], None] = print,
                   root: Path | None = None, role: str = "init-from") -> Path:
    """:func:`fold_init_source`, refused when those weights were trained or validated on a test case
    of this fold (fine-tuning a cross-validation fold by fold must not leak its test patients; a folder's
    ``full`` network, trained on every case, leaks them all on its own dataset).  The ``full`` model (no test
    case) starts from the folder's full network, else its fold 0.  Case names are compared only when
    the weights' dataset may be this one (``root``): a synthetic cohort of another seed or generator
    version, or real scans against a synthetic cohort, shares names (``orbit_001``) but no scan.  ``role``
    names the option in the lines and errors (``init-from``, or ``distill-from`` for a teacher, checked alike:
    a teacher that saw a test case would pass it on)."""
    source = fold_init_source(folder, fold)
    verb, base = ("starts from", "start") if role == "init-from" else ("learns from", "learn")
    if fold == FULL_FOLD:
        log(f"{role}: the {FULL_FOLD} model {verb} {source.relative_to(folder)} of {folder}")
        return source
    seen = init_split(source)
    if seen is None:
        raise InputError(source, "records no split (model.json / run.json), so it cannot be checked that fold "
                                 f"{fold} does not {base} from weights that saw its test patients; pass one "
                                 f"checkpoint file (--{role}) for every fold")
    leaked = sorted(set(split["test"]) & set(seen.get("train", []) + seen.get("val", [])))
    theirs = init_dataset_identity(source) if leaked else None
    ours = dataset_identity(read_dataset_json(root)) if theirs is not None and root is not None else None
    if theirs is not None and ours is not None and theirs != ours:
        log(f"{role}: fold {fold} {verb} {source}, trained on another dataset ({_identity_text(theirs)}) "
            f"than this one ({_identity_text(ours)}): {len(leaked)} shared case name(s), no shared scan")
        return source
    if leaked and not seen.get("val") and not seen.get("test"):  # a full model: no case held out
        raise InputError(source, f"is a {FULL_FOLD} model: it was trained on every case of its dataset, among them "
                                 f"the {len(leaked)} test case(s) of fold {fold} here ({', '.join(leaked[:6])}), so "
                                 f"no cross-validation fold of this dataset may {base} from it (--fold {FULL_FOLD} may)")
    if leaked:
        raise InputError(source, f"was trained or validated on {len(leaked)} test case(s) of fold {fold} "
                                 f"({', '.join(leaked[:6])}): its split differs from this dataset's splits.json; "
                                 f"pass one checkpoint file (--{role}) for every fold")
    return source


def _fold_source(source: str | Path | dict | None, fold: int | str, split: dict, conf: _Config, root: Path,
                 log: Callable[[str], None], role: str) -> str | Path | dict | list[Path] | None:
    """The weights ``--init-from`` / ``--distill-from`` (``role``) gives fold ``fold``: a model or run folder's
    own fold (:func:`_per_fold_init`, refused if they saw a test case), else ``source`` as given; refused when
    the dataset was preprocessed otherwise than their data (:func:`_check_init_preprocessing`).  The ``full``
    model distils from every fold of a folder without a full network (a list of checkpoints)."""
    if source is None:
        return None
    if (role == "distill-from" and fold == FULL_FOLD and not isinstance(source, dict) and Path(source).is_dir()
            and full_checkpoint(Path(source)) is None):
        # the network trained on every case learns from the whole ensemble (no case is held out to leak)
        members = model_checkpoints(Path(source))
        log(f"{role}: the {FULL_FOLD} model learns from the mean of the {len(members)} network(s) of {source}")
        for m in members:
            _check_init_preprocessing(m, conf.pp, root)
        return members
    if not isinstance(source, dict) and Path(source).is_dir():
        source = _per_fold_init(Path(source), fold, split, log, root, role=role)
    _check_init_preprocessing(source, conf.pp, root)
    return source


def _identity_text(identity: tuple) -> str:
    if identity[0] != "synthetic":
        return "scans not made by orbitseg's generator"
    _, seed, version, small = identity
    return f"synthetic, seed {seed}, generator {version or '?'}" + (", small" if small else "")


def _check_init_preprocessing(source: str | Path | dict, pp: PreprocessConfig, root: Path) -> None:
    """Refuse to fine-tune weights on slices made otherwise than the slices they learnt from (another
    input size, window, VOI margins or fit: the layers would load and then see other pixels).  A bare
    state_dict records no preprocessing and is not checked."""
    from orbitseg.preprocess.pipeline import PreprocessConfig

    if isinstance(source, dict):
        return
    ck = load_checkpoint(source)
    if not isinstance(ck, dict) or "preprocess" not in ck:
        return
    theirs = PreprocessConfig.from_dict(ck["preprocess"]).to_dict()
    ours = pp.to_dict()
    diff = [f"{k} {ours[k]} here, {theirs[k]} there" for k in ours if ours[k] != theirs.get(k)]
    if diff:
        raise InputError(root / "preprocessed", f"was made with other preprocessing than the weights it would "
                         f"fine-tune ({source}): {'; '.join(diff)}; preprocess the dataset as they were made: "
                         f"orbitseg preprocess {root} --like {source} --overwrite")


# -- validation --------------------------------------------------------------------------------
@torch.no_grad()
def validate(model: nn.Module, data: SliceSequences, device, batch_size: int = 64,
             scored: list[str] | None = None) -> dict[int, float]:
    """3D Dice per structure (hard argmax vs argmax of the fractions) per VOI, averaged over VOIs
    (a structure absent from both prediction and truth of a VOI is left out).

    ``scored``, when given, gets the case id of every VOI scored appended (the loop's accounting).
    """
    from orbitseg.evaluate.metrics import dice_per_structure
    from orbitseg.model import predict_volume_slices

    per: dict[int, list[float]] = {s: [] for s in STRUCTURES}
    for i in range(len(data.vois)):
        img, frac = data.arrays(i)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32))[:, None].to(device)
        pred = predict_volume_slices(model, x, batch_size=batch_size).argmax(1).cpu().numpy()
        fr = np.asarray(frac, dtype=np.float32) / 255.0
        truth = np.concatenate([np.clip(1.0 - fr.sum(1, keepdims=True), 0, 1), fr], axis=1).argmax(1)
        for s, d in dice_per_structure(pred, truth).items():
            per[s].append(d)
        if scored is not None:
            scored.append(data.vois[i].case)
    out = {}
    for s in STRUCTURES:
        vals = [v for v in per[s] if not math.isnan(v)]
        out[s] = float(np.mean(vals)) if vals else float("nan")
    return out


# -- logging -----------------------------------------------------------------------------------
LOG_COLUMNS = ["epoch", "train_loss", "lr", "val_dice_eyeball", "val_dice_muscles", "val_dice_nerve",
               "val_dice_mean", "best", "steps", "sequences", "seconds"]


def _write_log(run: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for h in history:
        w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in h.items()})
    write_text_atomic(run / LOG_CSV, buf.getvalue())


def _write_curves(run: Path, history: list[dict], title: str) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state touched

    from orbitseg.report.pictures import plot_training_history

    fig = Figure(figsize=(10, 3.8))
    plot_training_history(*fig.subplots(1, 2), history)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(run / CURVES_PNG, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=90)


def _fmt_time(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# -- distributed set-up: every torch.distributed call of the loop is in this section --------------
def _dist() -> tuple[int, int, int]:
    """``(world size, rank, local rank)`` as ``torchrun`` sets them; ``(1, 0, 0)`` for one plain process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


@dataclass(frozen=True)
class _Distributed:
    """The processes of a run and this process's device.

    One plain process (``world == 1``) never touches ``torch.distributed``: every collective
    below is then the identity.
    """

    world: int
    rank: int
    local_rank: int
    device: torch.device

    @property
    def ddp(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0, the only process that writes files and prints."""
        return self.rank == 0

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.ddp:
            return obj
        import torch.distributed as dist

        holder = [obj]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` (on :attr:`device`) summed over the ranks, in place."""
        if self.ddp:
            import torch.distributed as dist

            dist.all_reduce(values)
        return values

    def barrier(self) -> None:
        if self.ddp:
            import torch.distributed as dist

            dist.barrier()

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` under DistributedDataParallel (``model`` itself in one process)."""
        if not self.ddp:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)


def _setup_distributed(device: str) -> _Distributed:
    """Join the process group when ``torchrun`` started several processes, pick this rank's GPU,
    and make the device's algorithms deterministic.

    Parameters
    ----------
    device : ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (``"cuda"`` becomes ``cuda:LOCAL_RANK`` under DDP)
    """
    world, rank, local_rank = _dist()
    if device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        if device.startswith("cuda"):
            device = f"cuda:{local_rank}"
            torch.cuda.set_device(local_rank)
    dev = torch.device(device)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return _Distributed(world, rank, local_rank, dev)


def _teardown_distributed() -> None:
    """Leave the process group :func:`_setup_distributed` joined (once, after the last fold)."""
    if _dist()[0] > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


# -- the state passed between the steps of a fold ----------------------------------------------
@dataclass(frozen=True)
class _Config:
    """What a fold trains with: the preprocessing it reads, the preset with its overrides, the loop options."""

    manifest: dict
    pp: PreprocessConfig
    cfg: Preset  # model and training recipe, overrides applied
    opts: dict[str, Any]  # LOOP_OPTIONS with overrides applied
    aug_params: AugmentParams
    threads: int  # torch threads this process trains with
    slabs: SlabParams = SlabParams()  # thick slices made from thin ones (p 0: none)

    @property
    def recipe(self) -> TrainingRecipe:
        return self.cfg.training


@dataclass(frozen=True)
class _Fold:
    """The fixed facts of one fold's run, known once its folder is ready."""

    root: Path
    fold: int
    preset: str
    seed: int
    run: Path
    conf: _Config
    dist: _Distributed
    log: Callable[[str], None]


@dataclass(frozen=True)
class _Data:
    """The fold's training and validation sequences; its test cases are not among them."""

    train: SliceSequences
    val: SliceSequences
    weights: np.ndarray  # sampling weight per training item


@dataclass(frozen=True)
class _Training:
    """The network (never DDP-wrapped here) and what trains it."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    teacher: nn.Module | None = None  # distill_from's network (eval mode, frozen)


@dataclass
class _Progress:
    """Where the fold stands: what a resume restores and every epoch updates."""

    start_epoch: int = 0  # epochs done before this call
    best_metric: float = -math.inf  # best mean validation Dice so far
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)  # one log.csv row per epoch, every session
    resumed: bool = False
    init_report: dict | None = None  # load_init's report when the weights came from init_from
    epoch_times: list[float] = field(default_factory=list)  # this call's epochs, for the time left


@dataclass(frozen=True)
class _EpochStats:
    """One training epoch, summed over the ranks."""

    loss: float  # mean loss per sequence
    lr: float  # the learning rate the epoch ran with
    steps: int
    sequences: int
    trained: dict[str, int]  # case -> sequences its batches held, from the items fetched


# -- the steps of a fold -----------------------------------------------------------------------
def _configure(root: Path, preset: str, epochs: int | None, batch_size: int | None,
               overrides: dict | None) -> _Config:
    """The preset with the overrides and ``epochs`` / ``batch_size`` applied, the loop options, and the
    augmentation; checked against the preprocessed data.  Sets torch's thread count when asked."""
    from orbitseg.model import get_preset

    manifest, pp = read_manifest(root)
    base = get_preset(preset)
    m_over, r_over, opts = _split_overrides(overrides)
    m_over.setdefault("input_size", pp.size)
    m_over.setdefault("seq_len", pp.seq_len)
    if m_over["input_size"] != pp.size or m_over["seq_len"] != pp.seq_len:
        raise InputError(root / "preprocessed", f"was made with size {pp.size}, seq_len {pp.seq_len}; the model "
                         f"asks {m_over['input_size']}, {m_over['seq_len']}")
    if epochs is not None:
        r_over["epochs"] = int(epochs)
    if batch_size is not None:
        r_over["batch_size"] = int(batch_size)
    cfg = replace(base, model=replace(base.model, **m_over), training=replace(base.training, **r_over))
    if opts["precision"] not in TRAIN_PRECISIONS:
        raise ValueError(f"precision must be {' or '.join(TRAIN_PRECISIONS)} for training, got {opts['precision']!r}")
    aug_params = (AugmentParams(**opts["augment"]) if isinstance(opts["augment"], dict)
                  else AugmentParams() if opts["augment"] else AugmentParams.none())
    slabs = (SlabParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in opts["thick_slabs"].items()})
             if isinstance(opts["thick_slabs"], dict) else SlabParams(p=float(opts["thick_slabs"] or 0.0)))
    if opts["threads"]:
        torch.set_num_threads(int(opts["threads"]))
    return _Config(manifest, pp, cfg, opts, aug_params, torch.get_num_threads(), slabs)


def _read_split(root: Path, fold: int | str, split_seed: int, overwrite_splits: bool, extend_splits: bool,
                dist: _Distributed) -> tuple[dict, dict]:
    """``splits.json`` (made or checked by rank 0 alone, then sent to every rank) and fold ``fold``'s entry;
    for the ``full`` model, every labelled case trains and no ``splits.json`` is read or written."""
    if fold == FULL_FOLD:
        return {"seed": split_seed, "n_folds": 0}, full_split(root)
    splits = (make_splits(root, seed=split_seed, overwrite=overwrite_splits, extend=extend_splits) if dist.is_main
              else None)
    splits = dist.broadcast(splits)
    return splits, fold_split(splits, fold)


def _prepare_data(root: Path, conf: _Config, split: dict, log: Callable[[str], None]) -> _Data:
    """The sequences of the split's ``train`` and ``val`` cases (the test cases are not read) and the
    training items' sampling weights; split cases that were not preprocessed are named and left out."""
    missing = [c for c in split["train"] + split["val"] + split["test"] if c not in conf.manifest["cases"]]
    if missing:
        log(f"warning: {len(missing)} case(s) of the split are not preprocessed and are left out: {missing[:8]}")
    train_data = SliceSequences(vois_of_cases(root, conf.manifest, split["train"]), conf.pp.seq_len,
                                slabs=conf.slabs)
    val_data = SliceSequences(vois_of_cases(root, conf.manifest, split["val"]), conf.pp.seq_len,
                              allow_empty=not split["val"])
    weights = slice_weights(train_data.presence(), conf.opts["sampler_muscle"], conf.opts["sampler_nerve"],
                            train_data.slice_mm() if conf.opts["sampler_thickness"] else None)
    return _Data(train_data, val_data, weights)


def _prepare_run_folder(run: Path, resume: bool, overwrite: bool, is_main: bool) -> None:
    """Create the run folder; one that holds a run is refused unless resuming, and emptied for ``overwrite``."""
    exists = holds_run(run)
    if exists and not (resume or overwrite):
        raise InputError(run, "already holds a training run (checkpoint_*.pt); pass resume to continue it or "
                              "overwrite to start it again")
    if is_main and exists and overwrite and not resume:
        for name in RUN_FILES:
            (run / name).unlink(missing_ok=True)
        for name in RUN_DIRS:
            shutil.rmtree(run / name, ignore_errors=True)
    run.mkdir(parents=True, exist_ok=True)


def _check_resumed_split(run: Path, split: dict) -> None:
    """Refuse to resume a run on other cases than it started with (its ``run.json`` split): the dataset's
    ``splits.json`` was extended or remade meanwhile, and the run's record would no longer say what trained it."""
    rj = run / RUN_JSON
    if not (holds_run(run) and rj.exists()):
        return
    started = json.loads(rj.read_text(encoding="utf-8")).get("split") or {}
    changed = [k for k in ("train", "val", "test") if k in started and sorted(started[k]) != sorted(split[k])]
    if changed:
        raise InputError(rj, f"this run started with other {'/'.join(changed)} cases than the dataset's split "
                             "now holds (splits.json extended or remade since); start the fold again (overwrite) "
                             "or train into another folder (out)")


def _build_training(conf: _Config, seed: int, device: torch.device, log: Callable[[str], None]) -> _Training:
    """Seed every RNG, then build the network on ``device``, its optimiser, learning-rate schedule and loss."""
    from orbitseg.model import build_model, describe

    _seed_all(seed)  # the initial weights depend on the seed alone
    model = build_model(conf.cfg.model).to(device)
    log(describe(model))
    recipe = conf.recipe
    optimizer = _make_optimizer(model, recipe)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(recipe.schedule, recipe.warmup_epochs, recipe.epochs))
    return _Training(model, optimizer, scheduler, get_loss(recipe.loss))


def _teacher(sources: str | Path | list[Path], conf: _Config, device: torch.device,
             log: Callable[[str], None]) -> nn.Module:
    """The network of checkpoint ``sources`` (or the mean of several: :class:`~orbitseg.model.losses.EnsembleTeacher`),
    frozen in eval mode, to distil from; refused unless every one and the trained network give softmax
    probabilities."""
    from orbitseg.model import build_model
    from orbitseg.model.losses import EnsembleTeacher

    members = []
    for source in sources if isinstance(sources, list) else [sources]:
        ck = read_training_checkpoint(source)  # built here, as training builds its own network (not a Segmenter's)
        net = build_model(ck["preset"]["model"])
        net.load_state_dict(state_dict_of(ck))  # (float16 weights of an exported fold are copied into float32)
        for name, output in (("teacher", net.config.output), ("network", conf.cfg.model.output)):
            if output != "softmax":
                raise InputError(source, f"cannot distil: the {name} gives {output} outputs (distillation compares "
                                         "softmax probabilities)")
        members.append(net)
    teacher = members[0] if len(members) == 1 else EnsembleTeacher(members)
    teacher.to(device).eval()
    teacher.requires_grad_(False)
    log(f"distilling from {sources} ({sum(p.numel() for p in teacher.parameters()):,} parameters), weight "
        f"{conf.opts['distill_weight']}")
    return teacher


def _resume_or_init(tr: _Training, conf: _Config, run: Path, resume: bool, init_from: str | Path | None,
                    log: Callable[[str], None]) -> _Progress:
    """Restore ``checkpoint_last.pt`` (weights, optimiser, schedule, RNG states, history) when resuming
    and there is one; else load ``init_from``'s matching tensors when given; else keep the seeded weights.

    Raises
    ------
    InputError : the checkpoint was trained with another model configuration or precision.
    """
    last = run / CHECKPOINT_LAST
    state = _Progress()
    if resume and last.exists():
        ck = load_checkpoint(last, map_location="cpu")
        if ck.get("preset", {}).get("model") != asdict(conf.cfg)["model"]:
            raise InputError(last, "was trained with another model configuration; resume with the same preset "
                                   "and overrides, or start a new run (overwrite / another out folder)")
        if ck.get("precision", "float32") != conf.opts["precision"]:
            raise InputError(last, f"was trained in {ck.get('precision', 'float32')}; resume with that precision "
                                   "(a run keeps one arithmetic, so that its record says how it was made)")
        tr.model.load_state_dict(ck["model"])
        tr.optimizer.load_state_dict(ck["optimizer"])
        tr.scheduler.load_state_dict(ck["scheduler"])
        _set_rng_state(ck["rng"])
        state.start_epoch, state.best_metric, state.best_epoch = (int(ck["epoch"]), float(ck["best_metric"]),
                                                                  int(ck["best_epoch"]))
        state.history = list(ck["history"])
        state.resumed = True
        # the schedule is a pure function of the epoch: recompute it for the (possibly longer) recipe
        recipe = conf.recipe
        tr.scheduler.lr_lambdas = [_lr_lambda(recipe.schedule, recipe.warmup_epochs, recipe.epochs)]
        for grp, base_lr in zip(tr.optimizer.param_groups, tr.scheduler.base_lrs):
            grp["lr"] = base_lr * tr.scheduler.lr_lambdas[0](state.start_epoch)
        log(f"resuming from {last} after epoch {state.start_epoch}")
    elif init_from is not None:
        state.init_report = load_init(tr.model, init_from, log=log)
    elif resume:
        log(f"nothing to resume in {run}; starting a new run")
    return state


def _open_data_access(ctx: _Fold, data: _Data, state: _Progress) -> DataAccess:
    """The fold's record of the cases it reads: a resumed run's earlier epochs kept, and the cases
    the training items come from (from the data built, not from the split)."""
    path = ctx.run / DATA_ACCESS_JSON
    access = DataAccess.read(path, ctx.fold) if state.resumed else DataAccess(ctx.fold)
    access.add_pool(data.train.cases())
    return access


def _record_source(source: str | Path | list[Path] | None) -> str | list[str] | None:
    """A teacher for ``run.json``: its path, the paths of an ensemble's members, or None."""
    if isinstance(source, list):
        return [str(p) for p in source]
    return None if source is None else str(source)


def _write_run_json(ctx: _Fold, splits: dict, split: dict, state: _Progress, model: nn.Module, *, workers: int,
                    overrides: dict | None, init_from: str | Path | None,
                    distill_from: str | Path | list[Path] | None) -> None:
    """Write ``run.json`` for a new run, or append this call to a resumed run's ``resumes``."""
    conf = ctx.conf
    rj = ctx.run / RUN_JSON
    # "epochs": a resume with more epochs re-shapes the schedule, and export's recreate needs it
    entry = {"argv": list(sys.argv), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "from_epoch": state.start_epoch,
             "epochs": conf.recipe.epochs}
    if state.resumed and rj.exists():
        info = json.loads(rj.read_text(encoding="utf-8"))
        info.setdefault("resumes", []).append(entry)
        info["recipe_now"] = asdict(conf.recipe)
    else:
        info = {
            "dataset": str(ctx.root.resolve()), "fold": ctx.fold, "preset_name": ctx.preset,
            "preset": asdict(conf.cfg), "preprocess": conf.pp.to_dict(), "seed": ctx.seed,
            "split_seed": splits["seed"],
            "options": {**conf.opts, "augment": conf.aug_params.to_dict(), "thick_slabs": conf.slabs.to_dict(),
                        "workers": workers,
                        "device": str(ctx.dist.device), "world_size": ctx.dist.world, "threads": conf.threads,
                        "deterministic": True},
            "overrides": {k: (list(v) if isinstance(v, tuple) else v) for k, v in (overrides or {}).items()},
            "init_from": None if init_from is None else str(init_from), "init_report": state.init_report,
            "distill_from": _record_source(distill_from),
            "versions": _versions(), "git_commit": _git_commit(),
            "split": {k: split[k] for k in ("train", "val", "test", "train_patients", "val_patients",
                                             "test_patients")},
            "command": list(sys.argv), "started": entry["time"], "parameters": sum(
                p.numel() for p in model.parameters()),
        }
    write_text_atomic(rj, json.dumps(info, indent=1, default=str) + "\n")


def _kill_point() -> tuple[int, int] | None:
    """``(epoch, step)`` of the ``ORBITSEG_TRAIN_KILL_AT="E:S"`` testing hook, 1-based, or None."""
    kill_at = os.environ.get("ORBITSEG_TRAIN_KILL_AT")
    return tuple(int(v) for v in kill_at.split(":")) if kill_at else None


def _train_epoch(ctx: _Fold, model: nn.Module, tr: _Training, data: _Data, epoch: int, *, workers: int,
                 progress: bool) -> _EpochStats:
    """Train epoch ``epoch`` (0-based) on this rank's shard of the epoch's draw of training items,
    then step the schedule.

    The draw and the augmentation come from generators seeded by ``(seed, epoch)``, so a resumed
    run redoes an interrupted epoch exactly.  ``model`` is the DDP-wrapped network under DDP.
    """
    conf, dist, dev = ctx.conf, ctx.dist, ctx.dist.device
    opts, recipe = conf.opts, conf.recipe
    per_rank_batch = max(1, recipe.batch_size // dist.world)
    idx = epoch_indices(data.weights, int(opts["epoch_size"] or len(data.train)), ctx.seed, epoch,
                        rank=dist.rank, world_size=dist.world)
    n_steps = max(1, len(idx) // per_rank_batch)
    if opts["max_steps_per_epoch"]:
        n_steps = min(n_steps, int(opts["max_steps_per_epoch"]))
    idx = idx[:n_steps * per_rank_batch]
    # the batches as index lists, so each step knows which items (hence which cases) it trains on
    batches = [idx[i:i + per_rank_batch] for i in range(0, len(idx), per_rank_batch)]
    fetch = batches
    if data.train.slabs is not None:  # each item with its own seed, so the thick slabs are redone on a resume
        seeds = np.random.default_rng(derive_seed(ctx.seed, epoch, 3, dist.rank)).integers(2**62, size=len(idx))
        keyed = list(zip(idx, seeds.tolist()))
        fetch = [keyed[i:i + per_rank_batch] for i in range(0, len(keyed), per_rank_batch)]
    loader = torch.utils.data.DataLoader(data.train, batch_sampler=fetch, num_workers=workers,
                                         pin_memory=dev.type == "cuda", persistent_workers=False)
    gen = torch.Generator().manual_seed(derive_seed(ctx.seed, epoch, 2))
    kill = _kill_point()
    model.train()
    total, count = 0.0, 0
    voi_counts = np.zeros(len(data.train.vois), dtype=np.int64)
    bar = None
    if progress and dist.is_main:
        from tqdm import tqdm

        bar = tqdm(total=n_steps, desc=f"epoch {epoch + 1}", unit="batch", leave=False)
    for step, ((x, y), batch) in enumerate(zip(loader, batches)):
        if kill is not None and kill == (epoch + 1, step + 1):
            os.kill(os.getpid(), signal.SIGKILL)
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        x, y = augment(x, y, gen, conf.aug_params)
        tr.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=opts["precision"] == "bfloat16"):
            logits = model(x)
            if tr.teacher is not None:
                with torch.no_grad():
                    teacher_logits = tr.teacher(x)
        loss = tr.loss_fn(logits.float(), y)
        if tr.teacher is not None:
            loss = loss + opts["distill_weight"] * distillation_loss(logits.float(), teacher_logits.float())
        loss.backward()
        tr.optimizer.step()
        total += float(loss.detach()) * x.shape[0]
        count += x.shape[0]
        voi_counts += data.train.voi_counts(batch)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{total / count:.4f}")
    if bar is not None:
        bar.close()
    # one collective for the loss, the count and every rank's items (float64 holds the counts exactly)
    summed = dist.sum(torch.tensor([total, count, *voi_counts.tolist()], dtype=torch.float64, device=dev))
    total, count = float(summed[0]), int(summed[1])
    trained = data.train.per_case(summed[2:].round().long().tolist())
    lr = tr.optimizer.param_groups[0]["lr"]
    tr.scheduler.step()
    return _EpochStats(total / max(count, 1), lr, n_steps, count, trained)


def _validate_and_checkpoint(ctx: _Fold, tr: _Training, data: _Data, state: _Progress, stats: _EpochStats,
                             access: DataAccess, epoch: int, t0: float) -> None:
    """Score the validation cases, keep the best epoch by their mean Dice, and (rank 0) write the
    epoch's accounting, the checkpoints, ``log.csv`` and ``curves.png``; print the epoch's line.
    Only validation metrics choose the checkpoint."""
    conf, dev = ctx.conf, ctx.dist.device
    scored: list[str] = []
    val = validate(tr.model, data.val, dev, conf.opts["val_batch_size"], scored=scored)
    # no validation cases (the full model): nothing to choose by, so every epoch is kept as the best and
    # the model is the last epoch's, as nnU-Net's -f all does
    unvalidated = len(data.val.vois) == 0
    validated: dict[str, int] = {}
    for case in scored:
        validated[case] = validated.get(case, 0) + 1
    access.add_epoch(epoch + 1, stats.trained, validated)
    vals = [v for v in val.values() if not math.isnan(v)]
    mean = float(np.mean(vals)) if vals else 0.0
    is_best = mean > state.best_metric or unvalidated
    if is_best:
        state.best_metric, state.best_epoch = mean, epoch + 1
    sec = time.time() - t0
    state.epoch_times.append(sec)
    state.history.append({"epoch": epoch + 1, "train_loss": stats.loss, "lr": stats.lr,
                          **{f"val_dice_{SHORT_NAMES[s]}": val[s] for s in STRUCTURES}, "val_dice_mean": mean,
                          "best": int(is_best), "steps": stats.steps, "sequences": stats.sequences,
                          "seconds": round(sec, 3)})
    if ctx.dist.is_main:
        # before the checkpoints: a kill in between leaves an epoch accounted that the resume redoes
        # identically, never a checkpointed epoch unaccounted
        access.write(ctx.run / DATA_ACCESS_JSON)
        seed = ctx.seed
        ck = training_checkpoint(
            epoch=epoch + 1, model=tr.model.state_dict(), optimizer=tr.optimizer.state_dict(),
            scheduler=tr.scheduler.state_dict(), rng=_rng_state(),
            generators={"sample_seed": derive_seed(seed, epoch, 1), "augment_seed": derive_seed(seed, epoch, 2),
                        "rule": "per epoch e: derive_seed(seed, e, 1) sampling, derive_seed(seed, e, 2) augment, "
                                "derive_seed(seed, e, 3, rank) the thick slabs' item seeds"},
            best_metric=state.best_metric, best_epoch=state.best_epoch, history=state.history,
            preset=asdict(conf.cfg), preset_name=ctx.preset, preprocess=conf.pp.to_dict(), seed=seed, fold=ctx.fold,
            precision=conf.opts["precision"])
        if is_best:
            save_checkpoint(ck, ctx.run / CHECKPOINT_BEST)
        save_checkpoint(ck, ctx.run / CHECKPOINT_LAST)
        _write_log(ctx.run, state.history)
        try:
            _write_curves(ctx.run, state.history, f"{ctx.preset} fold {ctx.fold}")
        except Exception as exc:  # noqa: BLE001 - a plot must never stop training
            ctx.log(f"warning: curves.png not written ({type(exc).__name__}: {exc})")
    epochs = conf.recipe.epochs
    left = (epochs - epoch - 1) * float(np.mean(state.epoch_times[-5:]))
    dice_txt = "  ".join(f"{SHORT_NAMES[s]} {val[s]:.3f}" for s in STRUCTURES)
    ctx.log(f"epoch {epoch + 1:>4}/{epochs}  loss {stats.loss:.4f}  val Dice {dice_txt}  "
            f"mean {mean:.3f}{' *' if is_best else '  '}  {sec:6.1f} s/epoch ({stats.sequences / sec:.1f} seq/s)  "
            f"ETA {_fmt_time(left)}")


def _finish(ctx: _Fold, split: dict, state: _Progress, access: DataAccess, t_start: float) -> None:
    """Rank 0, after the last epoch: choose the post-processing on the *validation* cases, segment and
    score the *test* cases with the best checkpoint (:mod:`orbitseg.train.scoring`), and write
    ``run.json``'s ``result`` and the accounting (which cases the choice read)."""
    opts, run, dev = ctx.conf.opts, ctx.run, ctx.dist.device
    best_path = run / CHECKPOINT_BEST
    # train_seconds: every epoch's time, summed across resumes; session_seconds: this call only
    result = {"best_epoch": state.best_epoch, "best_val_dice": state.best_metric, "epochs": len(state.history),
              "train_seconds": round(sum(float(h["seconds"]) for h in state.history), 1),
              "session_seconds": round(time.time() - t_start, 1)}
    choice = None
    if opts["postprocess"] and split["val"] and best_path.exists():
        choice = choose_on_validation(ctx.root, run, split["val"], dev, ctx.log)
        result["postprocess"] = choice["rules"]
        access.postprocess = list(choice.get("cases", []))  # the cases it segmented and read labels of
    access.write(run / DATA_ACCESS_JSON)
    if opts["evaluate_test"] and split["test"] and best_path.exists():
        result["test"] = score_test_fold(ctx.root, run, split["test"], dev, opts["surface"], ctx.log, choice)
    rj = run / RUN_JSON
    info = json.loads(rj.read_text(encoding="utf-8"))
    info["result"] = result
    write_text_atomic(rj, json.dumps(info, indent=1, default=str) + "\n")


# -- the fold ----------------------------------------------------------------------------------
def train_fold(
    dataset: str | Path,
    fold: int,
    *,
    preset: str = DEFAULT_PRESET,
    epochs: int | None = None,
    batch_size: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    init_from: str | Path | None = None,
    distill_from: str | Path | None = None,
    device: str = "cpu",
    seed: int = 0,
    workers: int = 0,
    out: str | Path | None = None,
    overrides: dict | None = None,
    progress: bool = True,
    overwrite_splits: bool = False,
    extend_splits: bool = False,
    split_seed: int | None = None,
) -> Path:
    """Train fold ``fold`` (0..3) of ``dataset``, then predict and evaluate its test cases.

    Parameters
    ----------
    preset : ``"default"`` or ``"paper"`` (:mod:`orbitseg.model.config`)
    epochs, batch_size : override the preset recipe's (``batch_size`` is global across GPUs)
    resume : continue from ``checkpoint_last.pt`` (a finished run only redoes the test evaluation)
    overwrite : delete an existing run in the folder and start again
    fold : 0..3, or ``"full"`` (:data:`~orbitseg.constants.FULL_FOLD`): one model on every labelled case,
        without validation (the last epoch is kept), post-processing choice or test scoring
    init_from : checkpoint or state_dict to initialise matching layers from (ignored when resuming), or a
        model / run folder: fold ``fold`` then starts from that folder's own fold ``fold``, refused if
        those weights saw one of this fold's test cases (:func:`fold_init_source`; a folder holding only a
        full network starts every fold from it); the ``full`` model starts from the folder's full network,
        else its fold 0.  Refused when the dataset was preprocessed otherwise than those weights' data
    distill_from : a checkpoint, or a model / run folder (its fold ``fold``, checked as for ``init_from``), whose
        network teaches: the loss adds ``distill_weight`` (:data:`LOOP_OPTIONS`) times the KL divergence from
        its probabilities on the same augmented batch (:func:`~orbitseg.model.losses.distillation_loss`);
        for a narrower layout (the ``fast`` preset) learning from a trained wide network.  The ``full`` model
        learns from a folder's full network, else from the mean probabilities of all its folds (one network
        taught by the ensemble: no case is held out, so none can leak)
    device : ``"cpu"``, ``"cuda"`` or ``"cuda:N"``
    seed : drives the initial weights, the sample draws, augmentation and (unless ``split_seed``)
        the split
    split_seed : seed of ``splits.json`` when it should differ from ``seed`` (same split, other
        training seed)
    overwrite_splits : replace a ``splits.json`` made with another seed / other cases
    extend_splits : a dataset that gained cases keeps its ``splits.json`` folds, the new patients dealt
        among them (:func:`~orbitseg.train.splits.extend_splits`), so that each fold of a model trained
        on the old split can seed the same fold (``init_from``) without having seen its test patients
    workers : DataLoader worker processes
    out : run folder (default ``DATASET/runs/{preset}/fold_{fold}``)
    overrides : ModelConfig fields (``widths``...), TrainingRecipe fields (``lr``...) or
        :data:`LOOP_OPTIONS` (``max_steps_per_epoch``...)

    Returns
    -------
    the run folder

    Raises
    ------
    InputError : no preprocessed data, a run already in ``out`` (without resume/overwrite),
        a resumed run with another model configuration, a splits.json made otherwise
    """
    t_start = time.time()
    root = Path(dataset)
    is_main = _dist()[1] == 0

    def log(msg: str) -> None:
        if progress and is_main:
            print(msg, flush=True)

    conf = _configure(root, preset, epochs, batch_size, overrides)
    dist = _setup_distributed(device)
    splits, split = _read_split(root, fold, seed if split_seed is None else split_seed, overwrite_splits,
                                extend_splits, dist)
    init_from = _fold_source(init_from, fold, split, conf, root, log, "init-from")
    distill_from = _fold_source(distill_from, fold, split, conf, root, log, "distill-from")
    data = _prepare_data(root, conf, split, log)
    run = Path(out) if out is not None else run_dir_of(root, preset, fold)
    with ExitStack() as held:
        if dist.is_main:  # a second process training into this folder is refused, not interleaved
            held.enter_context(exclusive_lock(run / TRAIN_LOCK, what="training"))
        _prepare_run_folder(run, resume, overwrite, dist.is_main)
        if resume:
            _check_resumed_split(run, split)
        ctx = _Fold(root, fold, preset, seed, run, conf, dist, log)

        log(f"fold {fold} of {root} - preset {preset!r}, device {dist.device}, {conf.threads} thread(s)"
            + (f", {dist.world} processes" if dist.ddp else ""))
        tr = _build_training(conf, seed, dist.device, log)
        if distill_from is not None:
            tr = replace(tr, teacher=_teacher(distill_from, conf, dist.device, log))
        state = _resume_or_init(tr, conf, run, resume, init_from, log)
        access = _open_data_access(ctx, data, state)
        if dist.is_main:
            _write_run_json(ctx, splits, split, state, tr.model, workers=workers, overrides=overrides,
                            init_from=init_from, distill_from=distill_from)

        model = dist.wrap(tr.model)
        recipe = conf.recipe
        log(f"{len(split['train'])} training cases ({len(data.train)} slices), {len(split['val'])} validation cases "
            f"({len(data.val)} slices), {len(split['test'])} test cases; {recipe.epochs} epochs of "
            f"{int(conf.opts['epoch_size'] or len(data.train))} sequences, batch {recipe.batch_size}")
        for epoch in range(state.start_epoch, recipe.epochs):
            t0 = time.time()
            stats = _train_epoch(ctx, model, tr, data, epoch, workers=workers, progress=progress)
            _validate_and_checkpoint(ctx, tr, data, state, stats, access, epoch, t0)
        dist.barrier()

        if dist.is_main:
            _finish(ctx, split, state, access, t_start)
        dist.barrier()
        return run


def train(
    dataset: str | Path,
    fold: int | str = "all",
    **kwargs: Any,
) -> list[Path]:
    """Train one fold (0..3), ``"all"`` of them in turn, or the ``"full"`` model on every labelled case;
    same keyword arguments as
    :func:`train_fold`.  With ``"all"`` and a default run folder, the four test folds'
    segmentations are also scored together into ``DATASET/runs/{preset}/metrics/``
    (per-fold rows and a cross-validation summary).  Returns the run folders."""
    if isinstance(fold, str) and fold not in ("all", FULL_FOLD):
        fold = int(fold)
    folds = list(range(N_FOLDS)) if fold == "all" else [fold]
    out = kwargs.pop("out", None)
    outs = [None if out is None else (Path(out) / fold_dir_name(k) if len(folds) > 1 else Path(out)) for k in folds]
    if not (kwargs.get("resume") or kwargs.get("overwrite")):
        # say it before hours of training, not when the loop reaches a fold trained elsewhere (e.g. in parallel)
        held = [o if o is not None else run_dir_of(dataset, kwargs.get("preset", DEFAULT_PRESET), k)
                for k, o in zip(folds, outs)]
        held = [r for r in held if holds_run(r)]
        if held:
            raise InputError(held[0], f"already holds a training run ({len(held)} of the {len(folds)} fold folder(s) "
                             f"do: {', '.join(r.name for r in held)}); pass resume to continue them (finished folds "
                             "are only re-evaluated) or overwrite to start them again")
    runs = []
    for k, o in zip(folds, outs):
        runs.append(train_fold(dataset, k, out=o, **kwargs))
    opts = kwargs.get("overrides") or {}
    if len(folds) > 1 and _dist()[1] == 0 and opts.get("evaluate_test", True):
        cross_validation_metrics(Path(dataset), runs, kwargs.get("progress", True), opts.get("surface", True))
    _teardown_distributed()
    return runs
