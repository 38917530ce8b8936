"""Inference engines: ONNX Runtime agrees with PyTorch, graphs never outlive their weights, auto measures."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from orbitseg.cli import main
from orbitseg.io.read import file_sha256, read_label, read_scan
from orbitseg.predict import Segmenter
from orbitseg.predict import engine as E

pytest.importorskip("onnxruntime")

FIXED = Path(__file__).parent / "data" / "fixed_scan.nii.gz"


@pytest.fixture(scope="module")
def scan():
    return read_scan(FIXED)


def test_onnx_agrees_with_torch_on_the_shipped_model(scan):
    """Probabilities within ONNX_TOLERANCE (float32 reassociation moves them by ~1e-5; a wrong graph by
    0.1-1) and the same labels but for a handful of boundary voxels."""
    onnx = Segmenter.load(engine="onnx").segment(scan, probabilities=True)
    ref = Segmenter.load(engine="torch", precision="float32").segment(scan, probabilities=True)
    diff = np.abs(onnx.probabilities.values - ref.probabilities.values)
    assert diff.max() < E.ONNX_TOLERANCE, diff.max()
    assert int((onnx.labels.array != ref.labels.array).sum()) <= 5  # measured: 0 of 950,069 voxels


def test_openvino_agrees_with_torch_on_the_shipped_model(scan):
    """OpenVINO in float32: probabilities within ONNX_TOLERANCE of PyTorch float32 and the same labels but for
    a handful of voxels; in bfloat16: as close to float32 as PyTorch's own bfloat16 is (a few boundary voxels)."""
    ref = Segmenter.load(engine="torch", precision="float32").segment(scan, probabilities=True)
    ov32 = Segmenter.load(engine="openvino", precision="float32")
    assert ov32.engine.name == "openvino" and ov32.precision == "float32"
    out = ov32.segment(scan, probabilities=True)
    diff = np.abs(out.probabilities.values - ref.probabilities.values)
    assert diff.max() < E.ONNX_TOLERANCE, diff.max()
    assert int((out.labels.array != ref.labels.array).sum()) <= 5
    bf16 = Segmenter.load(engine="openvino", precision="bfloat16").segment(scan, probabilities=True)
    torch16 = Segmenter.load(engine="torch", precision="bfloat16").segment(scan, probabilities=True)
    assert np.abs(bf16.probabilities.values - ref.probabilities.values).mean() < E.BFLOAT16_MEAN_TOLERANCE
    moved = int((bf16.labels.array != ref.labels.array).sum())
    assert moved <= max(50, 3 * int((torch16.labels.array != ref.labels.array).sum())), moved


def test_openvino_missing_is_one_clear_error_and_auto_goes_on_without_it(tiny_run, tmp_path, monkeypatch):
    from orbitseg.errors import InputError

    monkeypatch.setattr(E, "openvino_available", lambda: False)
    with pytest.raises(InputError, match="pip install openvino"):
        Segmenter.load(tiny_run, engine="openvino")
    monkeypatch.setenv(E.CACHE_ENV, str(tmp_path / "cache"))
    seen = []
    monkeypatch.setattr(E, "_measure", lambda engines, images: seen.extend(e.name for e in engines) or
                        {e.name: 1.0 for e in engines})
    assert Segmenter.load(tiny_run, engine="auto", precision="float32").engine.name in ("torch", "onnx")
    assert seen == ["torch", "onnx"]


def test_a_plain_unet_runs_as_one_graph(tmp_path, scan):
    """The unet2d preset (no sequences) exports as a single 'slices' graph and agrees too."""
    from tiny import TINY_NETWORKS

    from orbitseg.model import build_model, get_preset
    from orbitseg.preprocess.pipeline import PreprocessConfig
    from orbitseg.runs.checkpoint import save_checkpoint

    torch.manual_seed(0)
    tiny = {k: v for k, v in TINY_NETWORKS["default"].items()}
    net = build_model("unet2d", **tiny)
    preset = asdict(get_preset("unet2d"))
    preset["model"] = asdict(net.config)
    ckpt = tmp_path / "unet.pt"
    save_checkpoint({"model": net.state_dict(), "preset": preset,
                     "preprocess": PreprocessConfig(size=tiny["input_size"]).to_dict()}, ckpt)
    seg = Segmenter.load(ckpt, engine="onnx", postprocess=False)
    assert [Path(p).name for p in seg.engine.networks[0].paths.values()] == ["unet.slices.onnx"]
    a = seg.segment(scan, probabilities=True).probabilities.values
    b = Segmenter.load(ckpt, engine="torch", precision="float32", postprocess=False).segment(
        scan, probabilities=True).probabilities.values
    assert np.abs(a - b).max() < E.ONNX_TOLERANCE


def test_graphs_made_from_other_weights_are_not_used(tiny_run, tmp_path, scan):
    """Graphs beside a checkpoint record its SHA-256; after the weights change, those graphs are
    refused (a line says so) and the engine is rebuilt from the new weights."""
    ckpt = tmp_path / "fold_0.pt"
    shutil.copy(tiny_run / "fold_0" / "checkpoint_best.pt", ckpt)
    beside = E.write_engine_files(ckpt)
    lines = []
    seg = Segmenter.load(ckpt, engine="onnx", log=lines.append)
    assert [p for p in seg.engine.networks[0].paths.values()] == list(beside.values()) and not lines
    # new weights under the same name: another (perturbed) network
    ck = torch.load(ckpt, weights_only=True)
    ck["model"] = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in ck["model"].items()}
    torch.save(ck, ckpt)
    lines.clear()
    seg = Segmenter.load(ckpt, engine="onnx", log=lines.append)
    assert any("made from other weights" in m for m in lines), lines
    used = list(seg.engine.networks[0].paths.values())
    assert used != list(beside.values()) and all(str(E.cache_dir()) in str(p) for p in used)
    ref = Segmenter.load(ckpt, engine="torch", precision="float32")
    a = seg.segment(scan, probabilities=True).probabilities.values
    b = ref.segment(scan, probabilities=True).probabilities.values
    assert np.abs(a - b).max() < E.ONNX_TOLERANCE  # the new weights' graphs, not the stale ones


def test_auto_takes_the_faster_correct_engine_and_remembers(tiny_run, tmp_path, monkeypatch):
    ckpt = tiny_run / "fold_0" / "checkpoint_best.pt"
    monkeypatch.setenv(E.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(E, "_measure", lambda engines, images: {e.name: (1.0 if e.name == "onnx" else 2.0)
                                                                  for e in engines})
    assert Segmenter.load(ckpt, engine="auto", precision="float32").engine.name == "onnx"
    record = json.loads((tmp_path / "cache" / "engine_choice.json").read_text())
    assert [v["choice"] for v in record.values()] == ["onnx"]

    def no_second_measurement(engines, images):
        raise AssertionError("measured again")

    monkeypatch.setattr(E, "_measure", no_second_measurement)
    assert Segmenter.load(ckpt, engine="auto", precision="float32").engine.name == "onnx"  # remembered
    # torch faster (another machine: a new cache) -> torch
    monkeypatch.setenv(E.CACHE_ENV, str(tmp_path / "cache2"))
    monkeypatch.setattr(E, "_measure", lambda engines, images: {e.name: (3.0 if e.name == "onnx" else 2.0)
                                                                  for e in engines})
    assert Segmenter.load(ckpt, engine="auto", precision="float32").engine.name == "torch"
    # a near tie (faster by less than AUTO_MIN_GAIN) -> torch, the reference; clearly faster -> the runtime
    for gain, chosen in ((E.AUTO_MIN_GAIN / 2, "torch"), (E.AUTO_MIN_GAIN * 1.5, "onnx")):
        monkeypatch.setenv(E.CACHE_ENV, str(tmp_path / f"cache_gain_{chosen}"))
        monkeypatch.setattr(E, "_measure", lambda engines, images: {e.name: (2.0 * (1 - gain) if e.name == "onnx"
                                                                             else 2.0) for e in engines})
        assert Segmenter.load(ckpt, engine="auto", precision="float32").engine.name == chosen
    # an ONNX engine that disagrees with PyTorch is never chosen, however fast
    monkeypatch.setenv(E.CACHE_ENV, str(tmp_path / "cache3"))
    monkeypatch.setattr(E, "_measure", lambda engines, images: {e.name: (2.0 if e.name == "torch" else 0.1)
                                                                  for e in engines})
    monkeypatch.setattr(E.OnnxEngine, "vois", lambda self, images, **kw: np.zeros((len(images), 4, 32, 32)))
    assert Segmenter.load(ckpt, engine="auto", precision="float32").engine.name == "torch"
    monkeypatch.setenv(E.CACHE_ENV, str(tmp_path / "cache4"))  # nor a wrong bfloat16 one
    assert Segmenter.load(ckpt, engine="auto", precision="bfloat16").engine.name == "torch"
    # OpenVINO faster than both -> openvino, in the precision asked for
    for precision in ("float32", "bfloat16"):
        monkeypatch.setenv(E.CACHE_ENV, str(tmp_path / f"cache_ov_{precision}"))
        monkeypatch.setattr(E, "_measure", lambda engines, images: {e.name: (0.5 if e.name == "openvino" else 2.0)
                                                                      for e in engines})
        monkeypatch.setattr(E.OnnxEngine, "vois", ONNX_VOIS)
        chosen = Segmenter.load(ckpt, engine="auto", precision=precision).engine
        assert (chosen.name, chosen.precision) == ("openvino", precision)


ONNX_VOIS = E.OnnxEngine.vois


def test_onnx_with_bfloat16_is_refused(tiny_run):
    from orbitseg.errors import InputError

    with pytest.raises(InputError, match="float32"):
        Segmenter.load(tiny_run, engine="onnx", precision="bfloat16")


def test_predict_says_the_engine_first_and_records_its_files(tiny_run, tmp_path, capsys):
    assert main(["predict", str(FIXED), str(tmp_path / "o"), "--model", str(tiny_run), "--engine", "onnx"]) == 0
    out = capsys.readouterr().out
    said = [line for line in out.splitlines() if not line.startswith(("building the ONNX", "engine auto: measured"))]
    assert said[0].startswith("engine onnx, network in float32"), out  # after building the graphs, first: which engine
    record = json.loads((tmp_path / "o" / "prediction.json").read_text())
    case = record["cases"]["fixed_scan"]
    assert case["engine"] == "onnx" and case["precision"] == "float32"
    files = case["engine_files"]
    assert [Path(f["path"]).name for f in files] == ["checkpoint_best.encoder.onnx", "checkpoint_best.sequences.onnx"]
    assert all(f["sha256"] == file_sha256(f["path"]) for f in files)
    read_label(tmp_path / "o" / "fixed_scan.nii.gz", reference=read_scan(FIXED))


def test_the_recorded_weights_hash_reads_the_same_without_the_onnx_package(tiny_run, tmp_path, monkeypatch):
    """The SHA-256 a graph records is read through OpenVINO where installed (importing ``onnx`` costs ~0.9 s at
    every start) and through ``onnx`` elsewhere: both give the weights' hash; a damaged graph gives None."""
    from orbitseg.io.read import file_sha256

    ckpt = tmp_path / "fold_0.pt"
    shutil.copy(tiny_run / "fold_0" / "checkpoint_best.pt", ckpt)
    graph = next(iter(E.write_engine_files(ckpt).values()))
    assert E._recorded_sha(graph) == file_sha256(ckpt)  # OpenVINO is installed here
    monkeypatch.setattr(E, "_installed", lambda *p: "openvino" not in p)
    assert E._recorded_sha(graph) == file_sha256(ckpt)  # the onnx package's reader
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(graph.read_bytes()[:200])
    monkeypatch.undo()
    assert E._recorded_sha(damaged) is None


def test_graphs_of_an_older_format_are_rebuilt_not_fed(tiny_run, tmp_path, scan):
    """A model folder exported by an older orbitseg holds graphs whose encoder gives other features (format 1:
    skips and bottom).  Their weights' hash still matches, but they must not run: a line names the format and
    the engine is rebuilt in the cache, agreeing with PyTorch."""
    import onnx

    ckpt = tmp_path / "fold_0.pt"
    shutil.copy(tiny_run / "fold_0" / "checkpoint_best.pt", ckpt)
    beside = E.write_engine_files(ckpt)
    for path in beside.values():  # what an older orbitseg wrote: no format entry
        model = onnx.load(str(path))
        keep = [(p.key, p.value) for p in model.metadata_props if p.key != "orbitseg_graph_format"]
        del model.metadata_props[:]
        for key, value in keep:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, str(path))
    lines = []
    seg = Segmenter.load(ckpt, engine="onnx", log=lines.append)
    assert any("older orbitseg (graph format 1" in m for m in lines), lines
    used = list(seg.engine.networks[0].paths.values())
    assert used != list(beside.values()) and all(E._stale(p, E._recorded_sha(p)) is None for p in used)
    ref = Segmenter.load(ckpt, engine="torch", precision="float32")
    a = seg.segment(scan, probabilities=True).probabilities.values
    b = ref.segment(scan, probabilities=True).probabilities.values
    assert np.abs(a - b).max() < E.ONNX_TOLERANCE


def test_the_torch_engine_runs_channels_last_with_the_same_probabilities():
    """On the CPU the PyTorch engine (through ``predict_vois``) keeps its networks' weights channels-last (faster
    oneDNN convolutions); the probabilities are those of the same networks in the default layout."""
    import copy

    from orbitseg.model import build_model, predict_volume_slices

    torch.manual_seed(0)
    net = build_model("default", widths=(4, 8, 8, 16), bottleneck_lstm_hidden=8, head_lstm_hidden=4,
                      input_size=32).eval()
    plain = copy.deepcopy(net)
    images = np.random.default_rng(1).uniform(0, 1, (7, 32, 32)).astype(np.float16).astype(np.float32)  # as stored
    got = E.TorchEngine([net], torch.device("cpu"), "float32").vois(images)
    convs = [m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs
                         if w.shape[1] > 1 and w.shape[-1] > 1)
    want = predict_volume_slices(plain, torch.from_numpy(images)[:, None])
    assert all(m.weight.is_contiguous() for m in plain.modules() if isinstance(m, torch.nn.Conv2d))  # the default layout
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
