"""The Segmenter: one model object, loaded once from a model folder, a run folder or a checkpoint."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from orbitseg.errors import InputError
from orbitseg.io.orient import to_canonical
from orbitseg.io.read import read_scan
from orbitseg.predict import Segmentation, Segmenter
from orbitseg.predict.postprocess import keep_largest_per_orbit, write_postprocessing
from orbitseg.pretrained import shipped_model_dir

FIXED = Path(__file__).parent / "data" / "fixed_scan.nii.gz"


@pytest.fixture(scope="module")
def scan():
    return read_scan(FIXED)


def test_shipped_model_per_fold_probabilities_average_to_the_ensemble(scan):
    seg = Segmenter.load(folds="0,2", precision="float32")
    assert len(seg.networks) == 2 and [c.name for c in seg.checkpoints] == ["fold_0.pt", "fold_2.pt"]
    out = seg.segment(scan, probabilities=True, per_fold=True)
    assert isinstance(out, Segmentation) and out.labels.shape == scan.shape
    assert len(out.fold_probabilities) == 2
    # each fold's probabilities go through the same (non-linear: cubic, clipped, renormalised) map back to the
    # scan as the ensemble's, so their mean is the ensemble up to that: measured mean |diff| 1.5e-5, 0.04 % of
    # values off by more than 0.01, the same argmax everywhere
    mean = (out.fold_probabilities[0].values + out.fold_probabilities[1].values) / 2
    diff = np.abs(mean - out.probabilities.values)
    assert mean.shape == out.probabilities.values.shape and diff.mean() < 1e-4 and (diff > 0.01).mean() < 0.002
    assert (mean.argmax(0) != out.probabilities.values.argmax(0)).sum() <= 5
    assert {fp.start for fp in out.fold_probabilities} == {out.probabilities.start}
    # the two folds are different networks: their probabilities differ somewhere
    assert np.abs(out.fold_probabilities[0].values - out.fold_probabilities[1].values).max() > 0.05
    # labels before post-processing are the ensemble's argmax, on the scan's grid
    np.testing.assert_array_equal(to_canonical(out.network_labels).array, out.probabilities.argmax())
    # asking for probabilities changes no label
    np.testing.assert_array_equal(seg.segment(scan).labels.array, out.labels.array)


def test_per_model_probabilities_average_exactly_to_the_ensemble_on_the_slices():
    """Below the mapping back to the scan (on the network's own slices) the mean is exact."""
    from orbitseg.predict.core import predict_vois

    seg = Segmenter.load(folds="1,3", precision="float32")
    images = np.random.default_rng(0).uniform(0, 1, (4, seg.preprocess.size, seg.preprocess.size))
    mean, each = predict_vois(seg.networks, images, per_model=True, mirror=True)
    assert len(each) == 2
    np.testing.assert_allclose((each[0] + each[1]) / 2, mean, atol=1e-6)
    np.testing.assert_array_equal(mean, predict_vois(seg.networks, images, mirror=True))


def test_settings_name_the_files_by_hash_and_what_decides_the_labels():
    seg = Segmenter.load(precision="float32", mirror=True)
    s = seg.settings()
    assert [Path(c["path"]).name for c in s["checkpoints"]] == [f"fold_{k}.pt" for k in range(4)]
    first = shipped_model_dir() / "fold_0.pt"
    assert s["checkpoints"][0]["sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()
    assert s["mirror"] is True and s["preprocess"]["size"] == seg.preprocess.size
    assert s["postprocess"] == seg.postprocess["rules"]
    assert Segmenter.load(postprocess=False).settings()["postprocess"] is None
    assert "network in float32" in seg.describe() and "4 networks averaged" in seg.describe()
    # one fold: the line says the fold-disagreement check cannot be made
    assert "fold-disagreement check is not made" in Segmenter.load(folds="0", precision="float32").describe()


def test_speed_note_only_where_an_ensemble_runs_in_float32_for_want_of_bfloat16_hardware(monkeypatch):
    """Without AMX / AVX512-BF16 the four networks run in float32 and the user is told of --folds 0; not on a
    CPU with bfloat16 hardware, not for one network, not when bfloat16 is asked for."""
    import orbitseg.model as model
    import orbitseg.model.slice_inference as si

    for where in (model, si):  # "auto" resolves through slice_inference; the note asks orbitseg.model
        monkeypatch.setattr(where, "native_bfloat16", lambda: False)
    note = Segmenter.load(precision="auto").speed_note()
    assert note is not None and "--folds 0 " in note and "--folds 0,1 " in note and "4 networks run in float32" in note
    assert "--folds full runs the one network" in note  # the shipped folder holds one
    assert "--folds full runs" in Segmenter.load("shipped", precision="auto").speed_note()  # named as on the CLI
    assert Segmenter.load(folds="0", precision="auto").speed_note() is None
    assert Segmenter.load(precision="bfloat16").speed_note() is None
    for where in (model, si):
        monkeypatch.setattr(where, "native_bfloat16", lambda: True)
    assert Segmenter.load(precision="float32").speed_note() is None


def test_postprocessing_true_false_or_given(tiny_run, scan, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    write_postprocessing(run / "fold_0", {"rules": {"eyeball": "largest", "muscles": "largest", "nerve": "largest"},
                                          "cases": ["x"]})
    stored = Segmenter.load(run, precision="float32").segment(scan)
    off = Segmenter.load(run, precision="float32", postprocess=False).segment(scan)
    np.testing.assert_array_equal(off.labels.array, off.network_labels.array)
    np.testing.assert_array_equal(stored.network_labels.array, off.network_labels.array)
    np.testing.assert_array_equal(stored.labels.array, keep_largest_per_orbit(off.network_labels).array)
    assert (stored.labels.array != off.labels.array).any()  # the tiny network leaves islands to remove
    given = Segmenter.load(run, precision="float32", postprocess={"rules": {"eyeball": "none", "muscles": "none",
                                                                             "nerve": "none"}})
    np.testing.assert_array_equal(given.segment(scan).labels.array, off.labels.array)


def test_a_checkpoint_a_fold_folder_and_a_run_folder_are_the_same_model(tiny_run, scan):
    ckpt = tiny_run / "fold_0" / "checkpoint_best.pt"
    labels = [Segmenter.load(m, precision="float32").segment(scan).labels.array
              for m in (ckpt, tiny_run / "fold_0", tiny_run)]
    np.testing.assert_array_equal(labels[0], labels[1])
    np.testing.assert_array_equal(labels[0], labels[2])


def test_folds_trained_on_other_slices_are_refused(tiny_run, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(tiny_run / "fold_0" / "checkpoint_best.pt", mixed / "fold_0.pt")  # 32 x 32 slices
    shutil.copy(shipped_model_dir() / "fold_1.pt", mixed / "fold_1.pt")  # 80 x 80
    with pytest.raises(InputError, match="different preprocessing"):
        Segmenter.load(mixed)
    assert len(Segmenter.load(mixed, folds="1").networks) == 1


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        Segmenter.load(tmp_path / "nope")
    with pytest.raises(InputError, match="folds must be"):
        Segmenter.load(folds="first")
    with pytest.raises(ValueError, match="precision"):
        Segmenter.load(precision="float8")


def test_fold_agreement_on_the_network_slices_matches_the_scan_grid_and_keeps_the_sides(scan):
    """predict and the app measure the folds' agreement on each VOI's network slices (one VOI, one side) instead of
    mapping every fold's probabilities back onto the scan: the same figures, and each orbit's under its own side."""
    from orbitseg.evaluate.quality import fold_agreement, quality_flags
    from orbitseg.predict.core import predict_scan

    seg = Segmenter.load(folds="0,2", precision="float32")
    pred = predict_scan(seg.networks, scan, seg.preprocess, per_model=True, agreement=True, engine=seg.engine)
    on_scan = fold_agreement(pred.labels, fold_probabilities=pred.member_probabilities)
    assert set(pred.member_agreement) == set(on_scan)
    for key, d in pred.member_agreement.items():
        assert 0.6 < d <= 1.0 and d == pytest.approx(on_scan[key], abs=0.02), key
    # the Segmenter gives the same figures without the per-fold probabilities
    out = seg.segment(scan, fold_agreement=True)
    assert out.fold_probabilities is None and out.fold_agreement == pytest.approx(pred.member_agreement)
    assert seg.segment(scan).fold_agreement is None
    # one network has nothing to agree with: the callers (predict, pacs, the app) need not check
    assert Segmenter.load(folds="0", precision="float32").segment(scan, fold_agreement=True).fold_agreement is None

    class LeftBlind:
        """The second fold network sees nothing in the second VOI, which prepare_scan gives for the left orbit."""

        def __init__(self, inner):
            self.inner, self.networks, self.calls = inner, inner.networks, 0

        def vois(self, images, *, mirror=False, per_model=False):
            mean, each = self.inner.vois(images, mirror=mirror, per_model=True)
            self.calls += 1
            if self.calls == 2:
                each[1] = np.zeros_like(each[1])
                each[1][:, 0] = 1.0
            return (mean, each) if per_model else mean

    blind = predict_scan(seg.networks, scan, seg.preprocess, agreement=True, engine=LeftBlind(seg.engine))
    assert all(blind.member_agreement[("left", s)] == 0.0 for s in (1, 2, 3))
    assert all(blind.member_agreement[("right", s)] == pytest.approx(pred.member_agreement[("right", s)])
               for s in (1, 2, 3))
    flags = quality_flags(blind.labels, scan, agreement=blind.member_agreement)
    assert {(f["code"], f["side"]) for f in flags if "fold" in f["code"]} == {
        ("eyeball_fold_disagreement", "left"), ("muscles_fold_disagreement", "left"), ("nerve_fold_disagreement", "left")}


def test_the_models_record_is_read_once_per_segmenter(monkeypatch):
    """The training range and the fold limits (asked for each Predict in the app, each scan of a batch) come
    from model.json read on the first ask, and they are that file's records."""
    import json

    import orbitseg.runs.layout as layout
    from orbitseg.predict.segmenter import fold_limits, training_acquisition

    seg = Segmenter.load(None, folds="0")
    reads = []
    real = layout.read_model_json
    monkeypatch.setattr(layout, "read_model_json", lambda folder: reads.append(folder) or real(folder))
    record = json.loads((shipped_model_dir() / "model.json").read_text())
    for _ in range(3):
        assert training_acquisition(seg) == record["training_acquisition"]
        assert fold_limits(seg) == record["fold_agreement_min"]
    assert len(reads) == 1
