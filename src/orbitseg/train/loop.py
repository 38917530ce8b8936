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
                          split (train/val/test cases), command line; resumes appended
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
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from orbitseg.constants import CHECKPOINT_BEST, CHECKPOINT_LAST, DEFAULT_PRESET, SHORT_NAMES, STRUCTURES, TRAIN_PRECISIONS
from orbitseg.errors import InputError
from orbitseg.io.atomic import atomic_path, write_text_atomic
from orbitseg.runs.checkpoint import load_checkpoint, save_checkpoint, state_dict_of, training_checkpoint
from orbitseg.runs.layout import (CURVES_PNG, LOG_CSV, RUN_DIRS, RUN_FILES, RUN_JSON, fold_dir_name, fold_init_source,
                                  holds_run, init_split, run_dir_of)
from orbitseg.train.augment import AugmentParams, augment
from orbitseg.train.data import (SliceSequences, derive_seed, epoch_indices, read_manifest, slice_weights,
                                 vois_of_cases)
from orbitseg.model.losses import get_loss
from orbitseg.train.scoring import choose_on_validation, cross_validation_metrics, score_test_fold
from orbitseg.train.splits import N_FOLDS, fold_split, make_splits

__all__ = ["train", "train_fold", "load_init", "validate", "LOOP_OPTIONS"]

#: loop options that ``overrides`` may set besides ModelConfig / TrainingRecipe fields
LOOP_OPTIONS: dict[str, Any] = {
    "max_steps_per_epoch": None,  # cap on optimiser steps per epoch (tests, quick looks)
    "epoch_size": None,  # sequences drawn per epoch (default: one per training slice)
    "sampler_muscle": 1.0,  # sampling weight 1 + a * has_muscle + b * has_nerve
    "sampler_nerve": 2.0,
    "augment": True,  # True, False, or a dict of AugmentParams fields
    "val_batch_size": 64,
    "threads": None,  # torch threads (None: keep torch's setting; it is recorded)
    "evaluate_test": True,  # predict + evaluate the test fold after training
    "surface": True,  # HD95 / ASD in the test metrics
    "postprocess": True,  # choose connected-component post-processing on the validation cases
    # "bfloat16": the training forward pass under bfloat16 autocast (loss, optimiser state and validation stay
    # float32); about 1.9x the steps per second on a CPU with AMX, 1.2x with AVX512-BF16 alone (AMD Zen 4)
    "precision": "float32",
}


# -- small helpers ------------------------------------------------------------------------------
def _dist() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


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


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


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


def _per_fold_init(folder: Path, fold: int, split: dict) -> Path:
    """:func:`fold_init_source`, refused when those weights were trained or validated on a test case
    of this fold (fine-tuning a cross-validation fold by fold must not leak its test patients)."""
    source = fold_init_source(folder, fold)
    seen = init_split(source)
    if seen is None:
        raise InputError(source, "records no split (model.json / run.json), so it cannot be checked that fold "
                                 f"{fold} does not start from weights that saw its test patients; pass one "
                                 "checkpoint file to initialise every fold from it")
    leaked = sorted(set(split["test"]) & set(seen.get("train", []) + seen.get("val", [])))
    if leaked:
        raise InputError(source, f"was trained or validated on {len(leaked)} test case(s) of fold {fold} "
                                 f"({', '.join(leaked[:6])}): its split differs from this dataset's splits.json; "
                                 "pass one checkpoint file to initialise every fold from it")
    return source


# -- validation --------------------------------------------------------------------------------
@torch.no_grad()
def validate(model: nn.Module, data: SliceSequences, device, batch_size: int = 64) -> dict[int, float]:
    """3D Dice per structure (hard argmax vs argmax of the fractions) per VOI, averaged over VOIs
    (a structure absent from both prediction and truth of a VOI is left out)."""
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
    device: str = "cpu",
    seed: int = 0,
    workers: int = 0,
    out: str | Path | None = None,
    overrides: dict | None = None,
    progress: bool = True,
    overwrite_splits: bool = False,
    split_seed: int | None = None,
) -> Path:
    """Train fold ``fold`` (0..3) of ``dataset``, then predict and evaluate its test cases.

    Parameters
    ----------
    preset : ``"default"`` or ``"paper"`` (:mod:`orbitseg.model.config`)
    epochs, batch_size : override the preset recipe's (``batch_size`` is global across GPUs)
    resume : continue from ``checkpoint_last.pt`` (a finished run only redoes the test evaluation)
    overwrite : delete an existing run in the folder and start again
    init_from : checkpoint or state_dict to initialise matching layers from (ignored when resuming), or a
        model / run folder: fold ``fold`` then starts from that folder's own fold ``fold``, refused if
        those weights saw one of this fold's test cases (:func:`fold_init_source`)
    device : ``"cpu"``, ``"cuda"`` or ``"cuda:N"``
    seed : drives the initial weights, the sample draws, augmentation and (unless ``split_seed``)
        the split
    split_seed : seed of ``splits.json`` when it should differ from ``seed`` (same split, other
        training seed)
    overwrite_splits : replace a ``splits.json`` made with another seed / other cases
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
    from orbitseg.model import build_model, describe, get_preset

    t_start = time.time()
    root = Path(dataset)
    world, rank, local_rank = _dist()
    is_main = rank == 0

    def log(msg: str) -> None:
        if progress and is_main:
            print(msg, flush=True)

    # ---- configuration
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
    recipe = cfg.training
    if opts["precision"] not in TRAIN_PRECISIONS:
        raise ValueError(f"precision must be {' or '.join(TRAIN_PRECISIONS)} for training, got {opts['precision']!r}")
    aug_params = (AugmentParams(**opts["augment"]) if isinstance(opts["augment"], dict)
                  else AugmentParams() if opts["augment"] else AugmentParams.none())
    if opts["threads"]:
        torch.set_num_threads(int(opts["threads"]))
    threads = torch.get_num_threads()

    # ---- distributed
    ddp = world > 1
    if device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    if ddp:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        if device.startswith("cuda"):
            device = f"cuda:{local_rank}"
            torch.cuda.set_device(local_rank)
    dev = torch.device(device)
    torch.use_deterministic_algorithms(True, warn_only=True)

    # ---- split and data
    splits = make_splits(root, seed=seed if split_seed is None else split_seed,
                                  overwrite=overwrite_splits) if is_main else None
    if ddp:
        import torch.distributed as dist

        holder = [splits]
        dist.broadcast_object_list(holder, src=0)
        splits = holder[0]
    split = fold_split(splits, fold)
    if init_from is not None and Path(init_from).is_dir():  # a model or run folder: each fold from its own fold
        init_from = _per_fold_init(Path(init_from), fold, split)
    missing = [c for c in split["train"] + split["val"] + split["test"] if c not in manifest["cases"]]
    if missing:
        log(f"warning: {len(missing)} case(s) of the split are not preprocessed and are left out: {missing[:8]}")
    train_data = SliceSequences(vois_of_cases(root, manifest, split["train"]), pp.seq_len)
    val_data = SliceSequences(vois_of_cases(root, manifest, split["val"]), pp.seq_len)
    weights = slice_weights(train_data.presence(), opts["sampler_muscle"], opts["sampler_nerve"])

    # ---- run folder
    run = Path(out) if out is not None else run_dir_of(root, preset, fold)
    last, best_path = run / CHECKPOINT_LAST, run / CHECKPOINT_BEST
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

    # ---- model, optimiser, schedule
    _seed_all(seed)
    model = build_model(cfg.model).to(dev)
    log(f"fold {fold} of {root} - preset {preset!r}, device {dev}, {threads} thread(s)"
        + (f", {world} processes" if ddp else ""))
    log(describe(model))
    optimizer = _make_optimizer(model, recipe)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(recipe.schedule, recipe.warmup_epochs, recipe.epochs))
    loss_fn = get_loss(recipe.loss)

    start_epoch, best_metric, best_epoch, history = 0, -math.inf, 0, []
    init_report = None
    resumed = resume and last.exists()
    if resumed:
        ck = load_checkpoint(last, map_location="cpu")
        if ck.get("preset", {}).get("model") != asdict(cfg)["model"]:
            raise InputError(last, "was trained with another model configuration; resume with the same preset "
                                   "and overrides, or start a new run (overwrite / another out folder)")
        if ck.get("precision", "float32") != opts["precision"]:
            raise InputError(last, f"was trained in {ck.get('precision', 'float32')}; resume with that precision "
                                   "(a run keeps one arithmetic, so that its record says how it was made)")
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        _set_rng_state(ck["rng"])
        start_epoch, best_metric, best_epoch = int(ck["epoch"]), float(ck["best_metric"]), int(ck["best_epoch"])
        history = list(ck["history"])
        # the schedule is a pure function of the epoch: recompute it for the (possibly longer) recipe
        scheduler.lr_lambdas = [_lr_lambda(recipe.schedule, recipe.warmup_epochs, recipe.epochs)]
        for grp, base_lr in zip(optimizer.param_groups, scheduler.base_lrs):
            grp["lr"] = base_lr * scheduler.lr_lambdas[0](start_epoch)
        log(f"resuming from {last} after epoch {start_epoch}")
    elif init_from is not None:
        init_report = load_init(model, init_from, log=log)
    elif resume:
        log(f"nothing to resume in {run}; starting a new run")

    # ---- run.json
    if is_main:
        rj = run / RUN_JSON
        entry = {"argv": list(sys.argv), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "from_epoch": start_epoch,
                 "epochs": recipe.epochs}  # a resume with more epochs re-shapes the schedule: export's recreate needs it
        if resumed and rj.exists():
            info = json.loads(rj.read_text(encoding="utf-8"))
            info.setdefault("resumes", []).append(entry)
            info["recipe_now"] = asdict(recipe)
        else:
            info = {
                "dataset": str(root.resolve()), "fold": fold, "preset_name": preset, "preset": asdict(cfg),
                "preprocess": pp.to_dict(), "seed": seed, "split_seed": splits["seed"],
                "options": {**opts, "augment": aug_params.to_dict(), "workers": workers, "device": str(dev),
                            "world_size": world, "threads": threads,
                            "deterministic": True},
                "overrides": {k: (list(v) if isinstance(v, tuple) else v) for k, v in (overrides or {}).items()},
                "init_from": None if init_from is None else str(init_from), "init_report": init_report,
                "versions": _versions(), "git_commit": _git_commit(),
                "split": {k: split[k] for k in ("train", "val", "test", "train_patients", "val_patients",
                                                 "test_patients")},
                "command": list(sys.argv), "started": entry["time"], "parameters": sum(
                    p.numel() for p in model.parameters()),
            }
        write_text_atomic(rj, json.dumps(info, indent=1, default=str) + "\n")

    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    net = _unwrap(model)

    # ---- epochs
    n_draw = int(opts["epoch_size"] or len(train_data))
    per_rank_batch = max(1, recipe.batch_size // world)
    kill_at = os.environ.get("ORBITSEG_TRAIN_KILL_AT")
    kill = tuple(int(v) for v in kill_at.split(":")) if kill_at else None
    epoch_times: list[float] = []
    log(f"{len(split['train'])} training cases ({len(train_data)} slices), {len(split['val'])} validation cases "
        f"({len(val_data)} slices), {len(split['test'])} test cases; {recipe.epochs} epochs of {n_draw} sequences, "
        f"batch {recipe.batch_size}")
    for epoch in range(start_epoch, recipe.epochs):
        t0 = time.time()
        idx = epoch_indices(weights, n_draw, seed, epoch, rank=rank, world_size=world)
        n_steps = max(1, len(idx) // per_rank_batch)
        if opts["max_steps_per_epoch"]:
            n_steps = min(n_steps, int(opts["max_steps_per_epoch"]))
        idx = idx[:n_steps * per_rank_batch]
        loader = torch.utils.data.DataLoader(train_data, batch_size=per_rank_batch, sampler=idx,
                                             num_workers=workers, pin_memory=dev.type == "cuda",
                                             persistent_workers=False)
        gen = torch.Generator().manual_seed(derive_seed(seed, epoch, 2))
        model.train()
        total, count = 0.0, 0
        bar = None
        if progress and is_main:
            from tqdm import tqdm

            bar = tqdm(total=n_steps, desc=f"epoch {epoch + 1}", unit="batch", leave=False)
        for step, (x, y) in enumerate(loader):
            if kill is not None and kill == (epoch + 1, step + 1):
                os.kill(os.getpid(), signal.SIGKILL)
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            x, y = augment(x, y, gen, aug_params)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=opts["precision"] == "bfloat16"):
                logits = model(x)
            loss = loss_fn(logits.float(), y)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * x.shape[0]
            count += x.shape[0]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{total / count:.4f}")
        if bar is not None:
            bar.close()
        if ddp:
            import torch.distributed as dist

            t = torch.tensor([total, count], dtype=torch.float64, device=dev)
            dist.all_reduce(t)
            total, count = float(t[0]), int(t[1])
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        val = validate(net, val_data, dev, opts["val_batch_size"])
        vals = [v for v in val.values() if not math.isnan(v)]
        mean = float(np.mean(vals)) if vals else 0.0
        is_best = mean > best_metric
        if is_best:
            best_metric, best_epoch = mean, epoch + 1
        sec = time.time() - t0
        epoch_times.append(sec)
        history.append({"epoch": epoch + 1, "train_loss": total / max(count, 1), "lr": lr,
                        **{f"val_dice_{SHORT_NAMES[s]}": val[s] for s in STRUCTURES}, "val_dice_mean": mean,
                        "best": int(is_best), "steps": n_steps, "sequences": count, "seconds": round(sec, 3)})
        if is_main:
            ck = training_checkpoint(
                epoch=epoch + 1, model=net.state_dict(), optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(), rng=_rng_state(),
                generators={"sample_seed": derive_seed(seed, epoch, 1), "augment_seed": derive_seed(seed, epoch, 2),
                            "rule": "per epoch e: derive_seed(seed, e, 1) sampling, derive_seed(seed, e, 2) augment"},
                best_metric=best_metric, best_epoch=best_epoch, history=history, preset=asdict(cfg),
                preset_name=preset, preprocess=pp.to_dict(), seed=seed, fold=fold, precision=opts["precision"])
            if is_best:
                save_checkpoint(ck, best_path)
            save_checkpoint(ck, last)
            _write_log(run, history)
            try:
                _write_curves(run, history, f"{preset} fold {fold}")
            except Exception as exc:  # noqa: BLE001 - a plot must never stop training
                log(f"warning: curves.png not written ({type(exc).__name__}: {exc})")
        left = (recipe.epochs - epoch - 1) * float(np.mean(epoch_times[-5:]))
        dice_txt = "  ".join(f"{SHORT_NAMES[s]} {val[s]:.3f}" for s in STRUCTURES)
        log(f"epoch {epoch + 1:>4}/{recipe.epochs}  loss {total / max(count, 1):.4f}  val Dice {dice_txt}  "
            f"mean {mean:.3f}{' *' if is_best else '  '}  {sec:6.1f} s/epoch ({count / sec:.1f} seq/s)  "
            f"ETA {_fmt_time(left)}")
    if ddp:
        import torch.distributed as dist

        dist.barrier()

    # ---- test fold
    if is_main:
        # train_seconds: every epoch's time, summed across resumes; session_seconds: this call only
        result = {"best_epoch": best_epoch, "best_val_dice": best_metric, "epochs": len(history),
                  "train_seconds": round(sum(float(h["seconds"]) for h in history), 1),
                  "session_seconds": round(time.time() - t_start, 1)}
        choice = None
        if opts["postprocess"] and split["val"] and best_path.exists():
            choice = choose_on_validation(root, run, split["val"], dev, log)
            result["postprocess"] = choice["rules"]
        if opts["evaluate_test"] and split["test"] and best_path.exists():
            result["test"] = score_test_fold(root, run, split["test"], dev, opts["surface"], log, choice)
        rj = run / RUN_JSON
        info = json.loads(rj.read_text(encoding="utf-8"))
        info["result"] = result
        write_text_atomic(rj, json.dumps(info, indent=1, default=str) + "\n")
    if ddp:
        import torch.distributed as dist

        dist.barrier()
    return run


def train(
    dataset: str | Path,
    fold: int | str = "all",
    **kwargs: Any,
) -> list[Path]:
    """Train one fold (0..3) or ``"all"`` of them in turn; same keyword arguments as
    :func:`train_fold`.  With ``"all"`` and a default run folder, the four test folds'
    segmentations are also scored together into ``DATASET/runs/{preset}/metrics/``
    (per-fold rows and a cross-validation summary).  Returns the run folders."""
    if isinstance(fold, str) and fold != "all":
        fold = int(fold)
    folds = list(range(N_FOLDS)) if fold == "all" else [int(fold)]
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
    world, rank, _ = _dist()
    opts = kwargs.get("overrides") or {}
    if len(folds) > 1 and rank == 0 and opts.get("evaluate_test", True):
        cross_validation_metrics(Path(dataset), runs, kwargs.get("progress", True), opts.get("surface", True))
    if world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    return runs
