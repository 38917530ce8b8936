"""Training and prediction throughput (sequences/s) and peak memory of SEQ-UNET presets.

Usage (CPU, both presets; the paper preset is slow on CPU, so few iterations)::

    python bench/train_throughput.py                         # paper + default on CPU
    python bench/train_throughput.py --preset default --iters 20 --profile
    python bench/train_throughput.py --device cuda           # when a GPU is there
    python bench/train_throughput.py --preset default --set head_level=0 --set input_size=96

Training = forward + backward + optimiser step on random data, batch ``--batch-size``
sequences of ``seq_len`` slices (the optimiser and loss named by the preset).
Prediction = :func:`orbitseg.model.predict_volume_slices` on a volume of
``--slices`` slices (each slice encoded once), and for comparison the naive
way (every sequence built and run through ``model(x)``).  Each preset is
measured in its own subprocess so that peak memory (``ru_maxrss`` on CPU,
``torch.cuda.max_memory_allocated`` on CUDA) belongs to it alone.  Timings on a
shared machine are noisy: the 1-minute load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict


def _parse_value(v: str):
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for p in pairs:
        k, _, v = p.partition("=")
        val = _parse_value(v)
        out[k] = tuple(val) if isinstance(val, list) else val
    return out


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_one(args: argparse.Namespace) -> dict:
    import torch

    from orbitseg.model import build_model, count_parameters, get_loss, get_preset, predict_volume_slices
    from orbitseg.model.slice_inference import build_sequences

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    preset = get_preset(args.preset)
    overrides = _overrides(args.set)
    model = build_model(preset, **overrides).to(dev)
    cfg = model.config
    mf = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=mf)
    size = cfg.input_size
    b, t = args.batch_size or preset.training.batch_size, cfg.seq_len
    loss_fn = get_loss(preset.training.loss)
    opt_cls = torch.optim.AdamW if preset.training.optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls(model.parameters(), lr=preset.training.lr, weight_decay=preset.training.weight_decay)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    amp = args.amp != "none"
    amp_dtype = torch.bfloat16 if args.amp == "bf16" else torch.float16

    runs = args.runs
    if runs and (b % runs or not hasattr(model, "forward_indexed")):
        raise SystemExit("--runs needs a SeqUNet preset and a batch size divisible by it")

    def batch():
        y = torch.randint(0, cfg.num_classes, (b, size, size), device=dev)
        if runs:  # b // runs runs of `runs` neighbouring centre slices, each slice encoded once
            n_runs, per = b // runs, runs + t - 1
            bank = torch.randn(n_runs * per, cfg.in_channels, size, size, device=dev).contiguous(memory_format=mf)
            idx = (torch.arange(n_runs, device=dev)[:, None, None] * per
                   + torch.arange(runs, device=dev)[None, :, None] + torch.arange(t, device=dev)[None, None, :])
            return (bank, idx.reshape(b, t)), y
        x = torch.randn(b, t, cfg.in_channels, size, size, device=dev)
        x = x.view(b * t, cfg.in_channels, size, size).contiguous(memory_format=mf).view(b, t, cfg.in_channels,
                                                                                         size, size)
        return x, y

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss0 = _rss_mib()
    model.train()

    def train_step(x, y):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp):
            logits = model.forward_indexed(*x) if runs else model(x)
        loss = loss_fn(logits.float(), y)
        loss.backward()
        opt.step()
        return loss

    data = [batch() for _ in range(min(args.iters, 4))]
    for i in range(args.warmup):
        train_step(*data[i % len(data)])
    sync()
    step_times = []
    for i in range(args.iters):
        t0 = time.perf_counter()
        train_step(*data[i % len(data)])
        sync()
        step_times.append(time.perf_counter() - t0)
    train_s = sum(step_times)
    train_peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else _rss_mib()

    # prediction on one volume
    vol = torch.randn(args.slices, cfg.in_channels, size, size, device=dev).contiguous(memory_format=mf)
    model.eval()
    with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp):
        predict_volume_slices(model, vol[: min(8, args.slices)], batch_size=args.predict_batch)  # warm-up
        sync()
        pred_times = []
        for _ in range(args.predict_reps):
            t0 = time.perf_counter()
            predict_volume_slices(model, vol, batch_size=args.predict_batch)
            sync()
            pred_times.append(time.perf_counter() - t0)
        pred_s = statistics.median(pred_times)
        naive_s = None
        if not args.no_naive:
            with torch.inference_mode():
                seqs = build_sequences(vol, t)
                sync()
                t0 = time.perf_counter()
                for s in range(0, args.slices, args.predict_batch):
                    model(seqs[s:s + args.predict_batch])
                sync()
                naive_s = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else _rss_mib()

    result = {
        "preset": args.preset, "overrides": overrides, "device": str(dev), "threads": torch.get_num_threads(),
        "channels_last": args.channels_last, "amp": args.amp, "runs": runs, "params": count_parameters(model),
        "batch": b, "seq_len": t, "input_size": size, "iters": args.iters,
        "train_seq_per_s": b * args.iters / train_s, "train_s_per_batch": train_s / args.iters,
        "train_seq_per_s_median": b / statistics.median(step_times), "train_seq_per_s_best": b / min(step_times),
        "predict_seq_per_s": args.slices / pred_s, "predict_seq_per_s_best": args.slices / min(pred_times),
        "predict_naive_seq_per_s": None if naive_s is None else args.slices / naive_s,
        "peak_mem_mib": peak, "train_peak_mem_mib": train_peak,
        "mem_kind": "cuda max_memory_allocated" if dev.type == "cuda" else "process max RSS",
        "rss_before_training_mib": rss0, "load_avg_1min": os.getloadavg()[0],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "config": asdict(cfg),
    }
    if args.profile:
        result["profile"] = profile(model, loss_fn, opt, data[0], amp, amp_dtype, dev, runs)
    return result


def profile(model, loss_fn, opt, xy, amp, amp_dtype, dev, runs=0) -> str:
    """Forward time per top-level part (hooks) and the top operators of one training step."""
    import torch
    from torch.profiler import ProfilerActivity, profile as tprofile

    times: dict[str, float] = {}
    hooks = []
    parts = [(n, m) for n, m in model.named_children()]
    decoder = getattr(model, "decoder", None)
    if decoder is not None:
        parts += [(f"decoder.stages[{i}]", s) for i, s in enumerate(decoder.stages)]
    for name, mod in parts:
        def pre(_m, _i, name=name):
            times[name + "@start"] = time.perf_counter()

        def post(_m, _i, _o, name=name):
            times[name] = times.get(name, 0.0) + time.perf_counter() - times.pop(name + "@start")
        hooks += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    x, y = xy
    model.train()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with tprofile(activities=acts) as prof:
        opt.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp):
            logits = model.forward_indexed(*x) if runs else model(x)
        t_fwd = time.perf_counter() - t0
        loss = loss_fn(logits.float(), y)
        t1 = time.perf_counter()
        loss.backward()
        t_bwd = time.perf_counter() - t1
        opt.step()
    for h in hooks:
        h.remove()
    lines = [f"forward {t_fwd * 1000:.0f} ms, backward {t_bwd * 1000:.0f} ms (under the profiler)",
             "forward time per part (ms): " + ", ".join(f"{k} {v * 1000:.0f}" for k, v in times.items())]
    sort = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    lines.append(prof.key_averages().table(sort_by=sort, row_limit=15))
    return "\n".join(lines)


def fmt(r: dict) -> str:
    naive = r["predict_naive_seq_per_s"]
    s = (f"{r['preset']:<8} {r['device']:<5} params {r['params'] / 1e6:7.2f} M | train {r['train_seq_per_s']:7.1f} seq/s "
         f"(median {r['train_seq_per_s_median']:.1f}, best {r['train_seq_per_s_best']:.1f}; "
         f"{r['train_s_per_batch']:.3f} s/batch of {r['batch']}) | predict {r['predict_seq_per_s']:7.1f} seq/s "
         f"(best {r['predict_seq_per_s_best']:.1f})"
         + (f" (naive {naive:.1f})" if naive else "")
         + f" | peak {r['peak_mem_mib']:.0f} MiB ({r['mem_kind']}) | threads {r['threads']} | "
         f"load {r['load_avg_1min']:.2f}")
    if r.get("omp_wait_policy"):
        s += f" | OMP_WAIT_POLICY={r['omp_wait_policy']}"
    if r["amp"] != "none":
        s += f" | autocast {r['amp']}"
    if r["runs"]:
        s += f" | training on runs of {r['runs']} neighbouring slices"
    if r["overrides"]:
        s += f" | overrides {r['overrides']}"
    if r.get("profile"):
        s += "\n" + r["profile"]
    return s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", action="append", help="preset name (repeatable); default: paper and default")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=0, help="sequences per training batch (default: the preset's)")
    p.add_argument("--iters", type=int, default=None,
                   help="timed training iterations (default: 10; 1 for the paper preset on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default 2; paper on CPU 1)")
    p.add_argument("--slices", type=int, default=None,
                   help="slices in the predicted volume (default 96; paper on CPU 16, without the naive timing)")
    p.add_argument("--predict-batch", type=int, default=64)
    p.add_argument("--predict-reps", type=int, default=None, help="timed predictions (default 3; paper on CPU 1)")
    p.add_argument("--no-naive", action="store_true", help="skip the naive prediction timing")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave torch's choice)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--runs", type=int, default=0,
                   help="train on runs of this many neighbouring centre slices (SeqUNet.forward_indexed: each "
                        "slice encoded once); 0: independent sequences")
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"], help="autocast dtype")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a ModelConfig field, e.g. --set widths=[8,16,32] --set head_level=0")
    p.add_argument("--omp-passive", action="store_true",
                   help="run with OMP_WAIT_POLICY=PASSIVE: on a CPU shared with other busy processes, spinning "
                        "OpenMP threads otherwise collapse throughput (measured 5x slower at load 5 on 2 cores)")
    p.add_argument("--profile", action="store_true", help="print per-part forward times and top operators")
    p.add_argument("--json", action="store_true", help="print one JSON line per preset")
    p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args._child:
        args.preset = args.preset[0]
        print(json.dumps(run_one(args)))
        return 0

    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            print("CUDA is not available", file=sys.stderr)
            return 2
    presets = args.preset or ["paper", "default"]
    print(f"load average before: {os.getloadavg()}", flush=True)
    for name in presets:
        # the paper preset takes ~1 min per batch of 32 on 2 CPU cores: fewer iterations and slices there
        slow = name == "paper" and args.device == "cpu"
        rest = [sys.executable, os.path.abspath(__file__), "--_child", "--preset", name,
                "--device", args.device, "--batch-size", str(args.batch_size),
                "--iters", str(args.iters if args.iters is not None else (1 if slow else 10)),
                "--warmup", str(args.warmup if args.warmup is not None else (1 if slow else 2)),
                "--slices", str(args.slices if args.slices is not None else (16 if slow else 96)),
                "--predict-batch", str(args.predict_batch),
                "--predict-reps", str(args.predict_reps if args.predict_reps is not None else (1 if slow else 3)),
                "--threads", str(args.threads), "--runs", str(args.runs), "--amp", args.amp,
                "--channels-last" if args.channels_last else "--no-channels-last"]
        rest += [f"--set={kv}" for kv in args.set]
        rest += (["--no-naive"] if args.no_naive or slow else []) + (["--profile"] if args.profile else [])
        env = dict(os.environ)
        if args.omp_passive:
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        proc = subprocess.run(rest, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(r) if args.json else fmt(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
