"""Inference engines behind the Segmenter: PyTorch (the reference), ONNX Runtime and OpenVINO.

An engine turns one VOI's fitted slices ``(n, S, S)`` into class probabilities ``(n, C, S, S)``
averaged over the fold networks (and the mirrored view), exactly as
:func:`orbitseg.predict.core.predict_vois` does; everything around it (orbits, fitting, the way
back to the scan, post-processing) is shared, so engines differ only in the arithmetic.

* ``torch``: the networks as PyTorch modules, float32 or bfloat16 autocast
  (:func:`orbitseg.model.predict_volume_slices`).
* ``onnx``: each fold network exported as ONNX graphs and run by ONNX Runtime's CPU provider in
  float32.  SEQ-UNET keeps the trick of computing each slice's own work once: an *encoder* graph
  runs on every slice (the encoder, the decoder's convolutions of the skips and the bottleneck
  LSTM's input gates: :meth:`SeqUNet.slice_features`), a *sequences* graph gathers them for each
  3-slice sequence by index and runs the LSTMs' recurrences, the decoder's up paths and the head.  The graphs are written by ``orbitseg export`` beside the
  float16 weights (``fold_k.encoder.onnx`` / ``fold_k.sequences.onnx``) or built on first use
  into the cache folder (:func:`cache_dir`); every graph records the SHA-256 of the weights file
  it was made from, and a graph whose record does not match its weights is never used (it is
  rebuilt in the cache, with a line saying so).
* ``openvino``: the same ONNX graphs compiled by OpenVINO's CPU plugin, in float32 or bfloat16 (its
  inference precision set explicitly: OpenVINO would otherwise pick bfloat16 by itself on CPUs with
  AMX).  Compiled graphs are cached (``cache_dir()/openvino``, keyed by OpenVINO on the graph's
  content), so a later process loads them in a fraction of the compile time.
* ``auto``: the fastest on this machine, measured once (every engine on the same slices, each
  accepted only if it agrees with PyTorch float32: :data:`ONNX_TOLERANCE` for float32 engines,
  :data:`BFLOAT16_MEAN_TOLERANCE` for bfloat16 ones) and remembered in the cache folder.
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from orbitseg.constants import ENGINES
from orbitseg.errors import InputError

__all__ = ["ENGINES", "TorchEngine", "OnnxEngine", "make_engine", "export_onnx", "write_engine_files", "onnx_graph_paths",
           "cache_dir", "onnx_available", "openvino_available", "ONNX_TOLERANCE", "BFLOAT16_MEAN_TOLERANCE"]

#: environment variable naming the cache folder (default ~/.cache/orbitseg)
CACHE_ENV = "ORBITSEG_CACHE_DIR"
#: largest difference of a probability between the ONNX and the PyTorch float32 engine that is
#: accepted as "the same network": float32 reassociation in convolutions and LSTM gates moves
#: probabilities by about 1e-5 (measured 1.7e-5 on the shipped fold 0); a wrong graph moves them by 0.1-1
ONNX_TOLERANCE = 1e-3
#: largest *mean* absolute difference of the probabilities between a bfloat16 engine and PyTorch
#: float32: bfloat16 rounding moves single probabilities by up to ~0.06 but their mean by ~3e-4
#: (measured on 24 random slices for PyTorch's and OpenVINO's bfloat16 alike; ~4e-5 on real VOI
#: slices), while a wrong graph moves the mean by several hundredths
BFLOAT16_MEAN_TOLERANCE = 5e-3
#: ``auto`` takes another runtime than PyTorch only where it is at least this fraction faster on the measuring
#: slices, which leave out what a scan also pays for it (the runtime's start-up in each process, its compiled graphs
#: loaded; 0.3-0.45 GB more memory): on a 2-core AMD EPYC with AVX512-BF16 (no AMX), shipped model in bfloat16,
#: OpenVINO measured 0.61 against PyTorch's 0.63 s (4 folds) and 0.15 against 0.17 s (the full network) on the 24
#: slices, yet took 8.7 against 6.8 s and 3.8 against 3.1 s per 512 x 512 x 100 scan; where it wins per scan (a
#: Xeon with AMX: 0.47 against 0.79 s on the slices) it wins by far more than this
AUTO_MIN_GAIN = 0.25
#: sequences per OpenVINO run, by precision: its buffers grow with the batch, and smaller batches were no slower
#: (shipped model, 4 folds x 2 x 72 slices, buffers released after each fold, 3 interleaved runs of 3 on a 2-core
#: Xeon: float32 median 6.9 s / 1.0 GB peak RSS at 8, 6.8 s / 1.35 GB at 16, 7.8 s / 1.55 GB at 32; bfloat16
#: 3.9 s / 0.95 GB at 8, 3.2 s / 1.2 GB at 16, 3.5 s / 1.43 GB at 32)
OPENVINO_BATCH: dict[str, int] = {"float32": 8, "bfloat16": 16}
_META_SHA = "orbitseg_weights_sha256"
_META_GRAPH = "orbitseg_graph"
_META_FORMAT = "orbitseg_graph_format"
#: what the graphs compute at their boundary; graphs of another format are rebuilt, never fed: "2" = the
#: encoder graph gives :meth:`SeqUNet.slice_features` (skip terms, bottleneck gates), not skips and bottom
GRAPH_FORMAT = "2"


def _as_slices(images: np.ndarray) -> np.ndarray:
    """``(n, S, S)`` -> ``(n, 1, S, S)`` float32, rounded through float16 as the training store holds slices."""
    return np.asarray(images, dtype=np.float16).astype(np.float32)[:, None]


def _sequence_index(n: int, seq_len: int) -> np.ndarray:
    from orbitseg.preprocess.fit import sequence_indices

    return np.ascontiguousarray(sequence_indices(n, seq_len), dtype=np.int64)


class TorchEngine:
    """The fold networks as PyTorch modules (the reference engine).

    Parameters
    ----------
    networks : fold networks in eval mode on ``device`` (on the CPU :func:`~orbitseg.predict.core.predict_vois`
        makes their weights channels-last, in place: the same values, faster convolutions)
    device : where they run
    precision : ``"float32"`` or ``"bfloat16"`` (already resolved)
    batch_size : sequences per forward pass
    """

    name = "torch"

    def __init__(self, networks: Sequence[nn.Module], device: torch.device, precision: str, batch_size: int = 64):
        self.networks, self.device, self.precision, self.batch_size = list(networks), device, precision, batch_size

    def vois(self, images: np.ndarray, *, mirror: bool = False,
             per_model: bool = False) -> np.ndarray | tuple[np.ndarray, list[np.ndarray]]:
        """Probabilities ``(n, C, S, S)`` of one VOI's slices ``(n, S, S)``; see
        :func:`orbitseg.predict.core.predict_vois`."""
        from orbitseg.predict.core import predict_vois

        return predict_vois(self.networks, images, self.device, self.batch_size, mirror=mirror,
                            precision=self.precision, per_model=per_model)

    def files(self) -> list[dict]:
        return []


#: ONNX graph runners: engine name -> the runtime that runs the graphs
RUNTIMES = {"onnx": "onnxruntime", "openvino": "openvino"}


def _onnxruntime_runner(path: Path, threads: int) -> Callable[[dict], list[np.ndarray]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # without it each session keeps an arena sized for its largest batch: 8 sessions of the shipped model
    # held 3.2 GB peak on a 512 x 512 x 100 scan (bench/predict_speed.py)
    so.enable_cpu_mem_arena = False
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return lambda feed: session.run(None, feed)


def _openvino_core():
    import openvino as ov

    core = ov.Core()
    blobs = cache_dir() / "openvino"
    try:
        blobs.mkdir(parents=True, exist_ok=True)
        core.set_property({"CACHE_DIR": str(blobs)})  # compiled graphs kept: later processes skip compiling
    except OSError:
        pass  # compiled again next time
    return core


def _openvino_runner(path: Path, threads: int, precision: str, core=None) -> Callable[[dict], list[np.ndarray]]:
    core = core or _openvino_core()
    compiled = core.compile_model(str(path), "CPU", {
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bfloat16" else "f32",
        "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    outputs = list(compiled.outputs)

    def run(feed: dict) -> list[np.ndarray]:
        result = compiled(feed)  # outputs copied out of OpenVINO's buffers (share_outputs=False)
        return [result[o] for o in outputs]

    # each compiled graph keeps buffers sized for its largest input: the shipped model's 8 graphs held
    # 2.9 GB at once; released after each fold network's pass, one fold's buffers are alive at a time
    run.release = compiled.release_memory
    return run


class _OnnxNetwork:
    """One fold network's ONNX graphs run by ONNX Runtime or OpenVINO: ``encoder`` + ``sequences``
    (SEQ-UNET) or ``slices``."""

    def __init__(self, paths: dict[str, Path], seq_len: int, threads: int, batch_size: int, *,
                 runtime: str = "onnxruntime", precision: str = "float32", core=None):
        self.paths = paths
        if runtime == "openvino":
            self.graphs = {k: _openvino_runner(p, threads, precision, core) for k, p in paths.items()}
        else:
            self.graphs = {k: _onnxruntime_runner(p, threads) for k, p in paths.items()}
        self.seq_len, self.batch_size = seq_len, batch_size

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``(n, 1, S, S)`` float32 -> probabilities ``(n, C, S, S)`` float32."""
        n = x.shape[0]
        if "slices" in self.graphs:
            s = self.graphs["slices"]
            out = [s({"slices": x[i:i + self.batch_size]})[0] for i in range(0, n, self.batch_size)]
            self.release()
            return np.concatenate(out)
        enc, seq = self.graphs["encoder"], self.graphs["sequences"]
        feats = []
        for i in range(0, n, self.batch_size * self.seq_len):  # encode each slice once
            feats.append(enc({"slices": x[i:i + self.batch_size * self.seq_len]}))
        feats = [np.concatenate(parts) for parts in zip(*feats)]
        names = [f"f{k}" for k in range(len(feats))]
        index = _sequence_index(n, self.seq_len)
        out = [seq({"index": index[i:i + self.batch_size], **dict(zip(names, feats))})[0]
               for i in range(0, n, self.batch_size)]
        self.release()
        return np.concatenate(out)

    def release(self) -> None:
        """Free the runtime's intermediate buffers (OpenVINO keeps them between calls otherwise)."""
        for graph in self.graphs.values():
            getattr(graph, "release", lambda: None)()


class OnnxEngine:
    """The fold networks' ONNX graphs on the CPU: run by ONNX Runtime (``name="onnx"``, float32) or
    compiled by OpenVINO (``name="openvino"``, float32 or bfloat16).

    Parameters
    ----------
    graphs : per fold network, its graph files (:func:`onnx_graph_paths`)
    seq_len : slices per sequence
    threads : intra-op threads (default: torch's thread count)
    batch_size : sequences per run
    name : ``"onnx"`` or ``"openvino"`` (:data:`RUNTIMES`)
    precision : ``"float32"``, or ``"bfloat16"`` with OpenVINO
    """

    def __init__(self, graphs: Sequence[dict[str, Path]], seq_len: int, threads: int | None = None,
                 batch_size: int = 64, *, name: str = "onnx", precision: str = "float32"):
        if name not in RUNTIMES:
            raise ValueError(f"name must be one of {', '.join(RUNTIMES)}, got {name!r}")
        if precision not in ("float32", "bfloat16") or (name == "onnx" and precision != "float32"):
            raise ValueError(f"the {name} engine cannot compute in {precision!r}")
        threads = threads or torch.get_num_threads()
        self.name, self.precision = name, precision
        core = _openvino_core() if name == "openvino" else None
        self.networks = [_OnnxNetwork(g, seq_len, threads, batch_size, runtime=RUNTIMES[name], precision=precision,
                                      core=core) for g in graphs]
        self._files: list[dict] | None = None

    def vois(self, images: np.ndarray, *, mirror: bool = False,
             per_model: bool = False) -> np.ndarray | tuple[np.ndarray, list[np.ndarray]]:
        """As :meth:`TorchEngine.vois`, summed in the same order."""
        x = _as_slices(images)
        views = [x, np.ascontiguousarray(x[..., ::-1])] if mirror else [x]
        acc, each = None, []
        for net in self.networks:
            acc_m = None
            for v, xv in enumerate(views):
                p = net(xv)
                p = np.ascontiguousarray(p[..., ::-1]) if v else p
                acc = p if acc is None else acc + p
                if per_model:
                    acc_m = p if acc_m is None else acc_m + p
            if per_model:
                each.append(acc_m / len(views))
        mean = acc / (len(self.networks) * len(views))
        return (mean, each) if per_model else mean

    def files(self) -> list[dict]:
        """The graph files (path and SHA-256), for ``prediction.json``; hashed once (``predict`` records
        them for every scan, and the four folds' graphs are about 30 MB)."""
        from orbitseg.io.read import file_sha256

        if self._files is None:
            self._files = [{"path": str(p.resolve()), "sha256": file_sha256(p)} for net in self.networks
                           for p in net.paths.values()]
        return [dict(f) for f in self._files]


# -- graphs ----------------------------------------------------------------------------------------
class _Encoder(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, slices: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(N, 1, S, S)`` -> each slice's own features (:meth:`SeqUNet.slice_features`: the skip terms
        ``(N, w_k, S/2^k, S/2^k)`` and the bottleneck's input gates)."""
        return tuple(self.net.slice_features(slices))


class _Sequences(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, index: torch.Tensor, *feats: torch.Tensor) -> torch.Tensor:
        """``index (B, T)`` into the encoded slices ``feats`` -> centre-slice probabilities ``(B, C, S, S)``."""
        from orbitseg.model.seq_unet import probabilities

        return probabilities(self.net.forward_features(feats, index), self.net.output)


class _Slices(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        """``(N, 1, S, S)`` -> probabilities ``(N, C, S, S)`` (a U-Net on single slices)."""
        from orbitseg.model.seq_unet import probabilities

        return probabilities(self.net.forward_slices(slices), self.net.output)


def onnx_graph_paths(folder: Path, stem: str, network: nn.Module) -> dict[str, Path]:
    """The graph files of ``network`` named ``{stem}.{graph}.onnx`` in ``folder``."""
    from orbitseg.model import UNet2D

    kinds = ("slices",) if isinstance(network, UNet2D) else ("encoder", "sequences")
    return {k: Path(folder) / f"{stem}.{k}.onnx" for k in kinds}


def _installed(*packages: str) -> bool:
    """Whether every package is installed, found without importing it (``onnx`` alone takes ~0.9 s to import,
    which ``auto`` would pay on every start even when it runs PyTorch)."""
    from importlib.util import find_spec

    try:
        return all(find_spec(p) is not None for p in packages)
    except (ImportError, ValueError):  # a package set to None in sys.modules, or without a spec
        return False


def onnx_available() -> bool:
    """Whether ONNX Runtime and the ONNX exporter's ``onnx`` package are installed."""
    return _installed("onnx", "onnxruntime")


def openvino_available() -> bool:
    """Whether OpenVINO (and the ``onnx`` package that writes its input graphs) are installed."""
    return _installed("onnx", "openvino")


def _graph_record(path: Path) -> dict[str, str]:
    """What graph ``path`` records in its metadata (weights' SHA-256, graph kind, format); empty if unreadable.
    Read by OpenVINO where installed (about 10 ms a graph), else by ``onnx`` (whose import alone takes ~0.9 s)."""
    keys = (_META_SHA, _META_GRAPH, _META_FORMAT)
    try:
        if _installed("openvino"):
            import openvino as ov

            model = ov.Core().read_model(str(path))
            return {k: model.get_rt_info(["framework", k]).astype(str) for k in keys
                    if model.has_rt_info(["framework", k])}
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return {p.key: p.value for p in model.metadata_props if p.key in keys}
    except Exception:  # noqa: BLE001 - a damaged graph is simply not used
        return {}


def _recorded_sha(path: Path) -> str | None:
    """The weights' SHA-256 that graph ``path`` records, None if none or unreadable."""
    return _graph_record(path).get(_META_SHA)


def _stale(path: Path, sha: str) -> str | None:
    """Why graph ``path`` must not run the weights whose SHA-256 is ``sha`` (None: it may)."""
    record = _graph_record(path)
    if record.get(_META_SHA) != sha:
        return "was made from other weights"
    if record.get(_META_FORMAT) != GRAPH_FORMAT:
        return f"was made by an older orbitseg (graph format {record.get(_META_FORMAT, '1')}, now {GRAPH_FORMAT})"
    return None


def export_onnx(network: nn.Module, folder: Path, stem: str, weights_sha256: str, *,
                overwrite: bool = False) -> dict[str, Path]:
    """Export ``network`` (eval mode, CPU, float32) as ONNX graphs ``{stem}.{graph}.onnx`` in
    ``folder``, each recording ``weights_sha256`` (the weights file it was made from).  Written
    atomically; existing files are kept unless ``overwrite``.  Returns graph name -> path."""
    import onnx

    from orbitseg.io.atomic import atomic_path

    paths = onnx_graph_paths(folder, stem, network)
    net = network.float().cpu().eval()
    size, t = net.config.input_size if hasattr(net, "config") else 64, getattr(net, "seq_len", 3)
    x = torch.zeros(2 * t, 1, size, size)
    with torch.no_grad():
        feats = _Encoder(net)(x) if "encoder" in paths else ()
    index = torch.as_tensor(_sequence_index(2 * t, t)[:2])
    nf = len(feats)
    specs = {
        "slices": (_Slices(net), (x,), ["slices"], ["probabilities"], {"slices": {0: "n"}, "probabilities": {0: "n"}}),
        "encoder": (_Encoder(net), (x,), ["slices"], [f"f{k}" for k in range(nf)],
                    {"slices": {0: "n"}, **{f"f{k}": {0: "n"} for k in range(nf)}}),
        "sequences": (_Sequences(net), (index, *feats), ["index"] + [f"f{k}" for k in range(nf)], ["probabilities"],
                      {"index": {0: "b"}, "probabilities": {0: "b"}, **{f"f{k}": {0: "n"} for k in range(nf)}}),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for kind, path in paths.items():
        module, args, inputs, outputs, dynamic = specs[kind]
        with atomic_path(path, overwrite=overwrite) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(module.eval(), args, str(tmp), dynamo=False, opset_version=17, input_names=inputs,
                              output_names=outputs, dynamic_axes=dynamic)
            model = onnx.load(str(tmp))
            for key, value in ((_META_SHA, weights_sha256), (_META_GRAPH, kind), (_META_FORMAT, GRAPH_FORMAT)):
                entry = model.metadata_props.add()
                entry.key, entry.value = key, value
            onnx.save(model, str(tmp))
    return paths


def write_engine_files(checkpoint: Path, *, overwrite: bool = False) -> dict[str, Path]:
    """Write the ONNX graphs of ``checkpoint``'s network beside it (``orbitseg export`` does this for
    every ``fold_k.pt``), recording the checkpoint's SHA-256.  Returns graph name -> path."""
    from orbitseg.io.read import file_sha256
    from orbitseg.runs.checkpoint import load_network

    network, _ = load_network(checkpoint)
    return export_onnx(network, Path(checkpoint).parent, Path(checkpoint).stem, file_sha256(checkpoint),
                       overwrite=overwrite)


def cache_dir() -> Path:
    """Where engine graphs built on first use and the ``auto`` measurements are kept:
    ``$ORBITSEG_CACHE_DIR``, else ``~/.cache/orbitseg``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "orbitseg"


def _graphs_for(checkpoint: Path, network: nn.Module, sha: str, log: Callable[[str], None]) -> dict[str, Path]:
    """The graphs of ``checkpoint``'s network: beside the weights when they record its SHA-256
    (``orbitseg export`` writes them), else in the cache (built on first use)."""
    beside = onnx_graph_paths(checkpoint.parent, checkpoint.stem, network)
    if all(p.is_file() for p in beside.values()):
        why = next((f"{p.name} {w}" for p in beside.values() if (w := _stale(p, sha))), None)
        if why is None:
            return beside
        log(f"warning: beside {checkpoint}, {why}; not used (building the engine from the weights instead)")
    cached = onnx_graph_paths(cache_dir() / "engines" / sha[:24], checkpoint.stem, network)
    if all(p.is_file() and _stale(p, sha) is None for p in cached.values()):
        return cached
    log(f"building the ONNX engine for {checkpoint} (once; cached in {cache_dir()})")
    try:
        return export_onnx(network, next(iter(cached.values())).parent, checkpoint.stem, sha, overwrite=True)
    except OSError as exc:
        raise InputError(cache_dir(), f"cannot hold the ONNX engine's files ({exc.strerror or exc}); set "
                                      f"{CACHE_ENV} to a writable folder or use --engine torch") from None


def _cpu_signature() -> str:
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("model name", "flags")):
                    flags += line
                if line.startswith("flags"):
                    break
    except OSError:
        flags = platform.processor()
    import hashlib

    return hashlib.sha256(flags.encode()).hexdigest()[:16]


def _measure(engines: list, images: np.ndarray, repeats: int = 2) -> dict[str, float]:
    """Median seconds of each engine on the same slices (after one warm-up run)."""
    out = {}
    for e in engines:
        e.vois(images[:4])
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            e.vois(images)
            times.append(time.perf_counter() - t0)
        out[e.name] = float(np.median(times))
    return out


def _agrees(candidate, images: np.ndarray, ref32: np.ndarray) -> bool:
    """Whether ``candidate``'s probabilities on ``images`` are PyTorch float32's ``ref32`` up to its arithmetic."""
    diff = np.abs(candidate.vois(images) - ref32)
    if candidate.precision == "bfloat16":
        return float(diff.mean()) <= BFLOAT16_MEAN_TOLERANCE
    return float(diff.max()) <= ONNX_TOLERANCE


def make_engine(engine: str, networks: Sequence[nn.Module], checkpoints: Sequence[Path], *, size: int,
                device: torch.device, precision: str, batch_size: int = 64,
                log: Callable[[str], None] = print) -> TorchEngine | OnnxEngine:
    """The engine ``engine`` (one of :data:`ENGINES`) for ``networks`` loaded from ``checkpoints``.

    ``auto``: on a CPU, the fastest of ``torch`` (in ``precision``, already resolved), ``onnx``
    (float32; ONNX Runtime installed) and ``openvino`` (in ``precision``; OpenVINO installed) on these
    networks, measured once on this machine (24 random slices) and remembered in the cache; an ONNX
    engine is taken only if it agrees with PyTorch float32 (:func:`_agrees`) and is faster by
    :data:`AUTO_MIN_GAIN` at least.  Elsewhere ``torch``.

    Raises
    ------
    InputError
        ``onnx`` or ``openvino`` asked for where it cannot run (runtime not installed, a GPU device,
        bfloat16 with ONNX Runtime, or networks not loaded from files).
    """
    from orbitseg.io.read import file_sha256

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    reference = TorchEngine(networks, device, precision, batch_size)
    if engine == "torch":
        return reference
    from_files = device.type == "cpu" and len(checkpoints) == len(networks)
    installed = {"onnx": from_files and onnx_available(), "openvino": from_files and openvino_available()}
    if engine in RUNTIMES and not installed[engine]:
        package = {"onnx": "ONNX Runtime (pip install onnxruntime onnx)", "openvino": "OpenVINO (pip install openvino onnx)"}
        raise InputError(None, f"the {engine} engine needs {package[engine]}, the CPU and a model loaded from files; "
                               "use --engine torch")
    if engine == "onnx" and precision != "float32":
        raise InputError(None, "the onnx engine computes in float32; drop --precision bfloat16 or use --engine torch")
    names = [engine] if engine != "auto" else [n for n in RUNTIMES
                                               if installed[n] and (n != "onnx" or precision == "float32")]
    if not names:
        return reference
    shas = [file_sha256(c) for c in checkpoints]
    seq_len = getattr(networks[0], "seq_len", 3)
    graphs: list[dict[str, Path]] = []

    def build(name: str) -> OnnxEngine:
        """The engine ``name``, its graphs found or exported on first need (not when PyTorch was chosen)."""
        if not graphs:
            graphs.extend(_graphs_for(Path(c), n, s, log) for c, n, s in zip(checkpoints, networks, shas))
        arithmetic = "float32" if name == "onnx" else precision
        return OnnxEngine(graphs, seq_len, name=name, precision=arithmetic,
                          batch_size=batch_size if name == "onnx" else min(batch_size, OPENVINO_BATCH[arithmetic]))

    if engine != "auto":
        return build(engine)
    key = (f"{_cpu_signature()}-{torch.get_num_threads()}t-{precision}-" + "-".join(s[:12] for s in shas)
           + "-" + "+".join(names) + f"-g{GRAPH_FORMAT}-m{AUTO_MIN_GAIN:g}")  # again with another runtime, graphs or margin
    record_path = cache_dir() / "engine_choice.json"
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    if key in record:  # remembered: only the chosen engine is built (sessions and compiled graphs cost start-up)
        choice = record[key]["choice"]
        return build(choice) if choice in names else reference
    candidates = {n: build(n) for n in names}
    images = np.random.default_rng(0).uniform(0, 1, (24, size, size)).astype(np.float32)
    ref32 = TorchEngine(networks, device, "float32", batch_size).vois(images)
    agree = {n: _agrees(e, images, ref32) for n, e in candidates.items()}
    seconds = _measure([reference] + [e for n, e in candidates.items() if agree[n]], images)
    fastest = min(seconds, key=seconds.get)
    if seconds[fastest] > (1 - AUTO_MIN_GAIN) * seconds[reference.name]:
        fastest = reference.name  # a near tie: PyTorch, the reference
    record[key] = {"seconds": seconds, "agrees": agree, "choice": fastest}
    try:
        from orbitseg.io.atomic import write_text_atomic

        record_path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(record_path, json.dumps(record, indent=1) + "\n")
    except OSError:
        pass  # measured again next time
    wrong = [n for n, ok in agree.items() if not ok]
    log("engine auto: measured " + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()) + " on 24 slices"
        + (f" ({', '.join(wrong)} disagreed with torch: not used)" if wrong else ""))
    return candidates.get(record[key]["choice"], reference)
