"""The ship rule's pieces (bench/candidate_check.py): the real-CT plausibility criterion and the paired comparisons."""

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bench(load_bench):
    return load_bench("candidate_check")


def _rows(nerve_right=0.20):
    return [{"side": "right", "globe_ml": 7.5, "muscles_ml": 3.0, "nerve_ml": nerve_right},
            {"side": "left", "globe_ml": 7.0, "muscles_ml": 3.2, "nerve_ml": 0.22},
            {"side": "both", "globe_ml": 14.5, "muscles_ml": 6.2, "nerve_ml": 0.42}]


def test_a_plausible_real_ct_segmentation_has_no_problem(bench):
    # fold disagreement alone does not fail a scan: thick real slices make the folds differ
    assert bench.acceptance_problems(_rows(), {"nerve_fold_disagreement", "muscles_fold_disagreement"}) == []


def test_a_thinned_nerve_a_failing_flag_or_a_missing_side_is_named(bench):
    thin = bench.acceptance_problems(_rows(nerve_right=0.08), set())
    assert thin == ["right nerve_ml 0.08 outside 0.14-0.6"]
    assert bench.acceptance_problems(_rows(), {"nerve_asymmetry", "nerve_fold_disagreement"}) == ["nerve_asymmetry"]
    assert bench.acceptance_problems(_rows(), {"cut_by_scan_edge"}) == ["cut_by_scan_edge"]
    one_side = bench.acceptance_problems([r for r in _rows() if r["side"] != "left"], set())
    assert one_side == ["left: no orbit measured"]


def _cv(values: dict[str, tuple[float, float, float, float]]) -> dict[str, dict]:
    """case -> (slice_mm, Dice eyeball, muscles, nerve) as cv_per_case.json rows"""
    return {c: {"case": c, "slice_mm": v[0], "dice_eyeball": v[1], "dice_muscles": v[2], "dice_nerve": v[3]}
            for c, v in values.items()}


def test_cases_are_selected_by_cohort_prefix_and_thickness(bench):
    rows = _cv({"orbit_001": (1.25, 0.98, 0.9, 0.9), "orbit_002": (5.0, 0.95, 0.8, 0.7),
                "clinical_orbit_001": (3.75, 0.96, 0.85, 0.8), "clinical_orbit_002": (0.625, 0.97, 0.9, 0.9)})
    assert bench.select_cases(rows, prefix="orbit_") == ["orbit_001", "orbit_002"]  # not clinical_orbit_*
    assert bench.select_cases(rows, min_slice_mm=3.75) == ["clinical_orbit_001", "orbit_002"]


def test_paired_comparison_and_the_two_cv_criteria(bench):
    base = _cv({"a": (1.0, 0.98, 0.90, 0.90), "b": (1.0, 0.97, 0.80, 0.70), "c": (1.0, 0.96, 0.85, 0.80)})
    cand = _cv({"a": (1.0, 0.98, 0.91, 0.89), "b": (1.0, 0.96, 0.83, 0.74), "c": (1.0, 0.96, 0.86, 0.80)})
    comp = bench.paired(base, cand, ["a", "b", "c"])
    assert comp["muscles"]["diff"] == pytest.approx((0.01 + 0.03 + 0.01) / 3)
    assert comp["muscles"]["better_in"] == 3 and comp["eyeball"]["better_in"] == 0
    assert comp["nerve"]["diff"] == pytest.approx(0.03 / 3) and comp["nerve"]["better_in"] == 1
    assert 0 < comp["muscles"]["p"] <= 1 and comp["eyeball"]["baseline"] == pytest.approx(0.97)
    # eyeball lost 0.0033 on average: within a 0.005 tolerance, not within 0.003
    assert bench.no_loss(comp, 0.005) and not bench.no_loss(comp, 0.003)
    assert bench.thick_gained(comp)
    assert not bench.thick_gained(bench.paired(cand, base, ["a", "b", "c"]))  # the same the other way round
    nerve_lost = _cv({c: (1.0, r["dice_eyeball"], r["dice_muscles"], r["dice_nerve"] - 0.02) for c, r in cand.items()})
    assert bench.paired(base, nerve_lost, ["a", "b", "c"])["muscles"]["diff"] > 0
    assert not bench.thick_gained(bench.paired(base, nerve_lost, ["a", "b", "c"]))  # muscles gained, nerve lost
    with pytest.raises(ValueError, match="cases"):
        bench.paired(base, cand, [])


def _fake_predict(calls: list, problems: list[str]):
    def predict(images, labels, **kw):
        calls.append(kw["precision"])
        labels.mkdir(parents=True, exist_ok=True)
        return [], problems
    return predict


def _model_and_scans(root, scan: str):
    """(model, imagesTr, prediction) folders under ``root``: a one-file model and one scan file"""
    model, images = root / "model", root / "imagesTr"
    model.mkdir(), images.mkdir()
    (model / "fold_0.pt").write_bytes(b"weights")
    (images / scan).write_bytes(b"scan")
    return model, images, root / "pred"


def test_fresh_predictions_are_reused_only_for_the_same_model_files_and_scans(bench, tmp_path):
    model, images, pred = _model_and_scans(tmp_path, "orbit_001_0000.nii.gz")
    calls: list = []
    predict = _fake_predict(calls, [])
    assert bench.predict_or_reuse(model, images, pred, predict=predict) == (False, [])
    assert bench.predict_or_reuse(model, images, pred, predict=predict) == (True, [])
    assert calls == ["float32"]
    # other weights, another scan or another precision: predicted again
    (model / "fold_0.pt").write_bytes(b"other weights")
    assert bench.predict_or_reuse(model, images, pred, predict=predict)[0] is False
    (images / "orbit_002_0000.nii.gz").write_bytes(b"scan 2")
    assert bench.predict_or_reuse(model, images, pred, predict=predict)[0] is False
    assert bench.predict_or_reuse(model, images, pred, precision="bfloat16", predict=predict)[0] is False
    assert calls == ["float32"] * 3 + ["bfloat16"]


def test_a_run_with_a_problem_is_never_reused(bench, tmp_path):
    model, images, pred = _model_and_scans(tmp_path, "bad_0000.nii.gz")
    calls: list = []
    predict = _fake_predict(calls, ["bad_0000.nii.gz: cannot be read"])
    assert bench.predict_or_reuse(model, images, pred, predict=predict) == (False, ["bad_0000.nii.gz: cannot be read"])
    assert bench.predict_or_reuse(model, images, pred, predict=predict)[0] is False
    assert len(calls) == 2


def test_the_key_changes_with_orbitseg_source(bench, tmp_path, monkeypatch):
    import orbitseg

    model, images, _ = _model_and_scans(tmp_path, "orbit_001_0000.nii.gz")
    key = bench.prediction_key(model, images, precision="float32")
    # the same version number over other source files (a copy of the package with one module changed)
    copy = tmp_path / "pkg" / "orbitseg"
    shutil.copytree(Path(orbitseg.__file__).resolve().parent, copy, ignore=shutil.ignore_patterns("*.pt", "*.onnx"))
    changed = copy / "predict" / "postprocess.py"
    changed.write_text(changed.read_text() + "\n# changed\n")
    monkeypatch.setattr(orbitseg, "__file__", str(copy / "__init__.py"))
    other = bench.prediction_key(model, images, precision="float32")
    assert other["orbitseg"] == key["orbitseg"] and other["code"] != key["code"]
    assert {k: v for k, v in other.items() if k != "code"} == {k: v for k, v in key.items() if k != "code"}


def test_4mm_bounds_allow_what_the_old_nerve_floor_did_not(bench):
    # at 4 mm the nerve is judged by its band, not by the thin-slice floor; globes and muscles keep their ranges
    at4mm = {c: r for c, r in bench.PLAUSIBLE_ML.items() if c != "nerve_ml"}
    rows = _rows(nerve_right=0.08)
    assert bench.acceptance_problems(rows, {"nerve_volume_low"}, ranges=at4mm,
                                     allowed_codes=frozenset({"nerve_volume_low"})) == []
    assert bench.acceptance_problems(rows, {"nerve_volume_low"}) == ["nerve_volume_low",
                                                                     "right nerve_ml 0.08 outside 0.14-0.6"]
    # a flag that is not allowed still fails, and so does a muscle volume outside its range
    assert bench.acceptance_problems(rows, {"nerve_asymmetry"}, ranges=at4mm,
                                     allowed_codes=frozenset({"nerve_volume_low"})) == ["nerve_asymmetry"]
    few_muscles = [dict(r, muscles_ml=1.0) if r["side"] == "left" else r for r in rows]
    assert bench.acceptance_problems(few_muscles, set(), ranges=at4mm) == ["left muscles_ml 1.00 outside 1.5-5"]


def test_slab_majority_strict_and_lenient(bench):
    import numpy as np

    thin = np.zeros((5, 1, 4), dtype=np.uint8)
    thin[0, 0] = [3, 3, 2, 0]   # slab 0 = thin slices 0 and 1
    thin[1, 0] = [3, 0, 3, 0]
    thin[2, 0] = [1, 1, 1, 1]   # slab 1 = thin slices 2 and 3
    thin[3, 0] = [1, 1, 1, 1]
    thin[4, 0] = [3, 3, 3, 3]   # left over: not a whole slab, dropped as realct_check.slab_average drops it
    strict = bench.slab_majority(thin, 2, strict=True)
    lenient = bench.slab_majority(thin, 2, strict=False)
    assert strict.shape == lenient.shape == (2, 1, 4)
    assert strict[0, 0].tolist() == [3, 0, 0, 0]      # only where both thin slices agree
    assert lenient[0, 0].tolist() == [3, 3, 3, 0]     # where either is; nerve wins its tie with muscle
    assert strict[1, 0].tolist() == lenient[1, 0].tolist() == [1, 1, 1, 1]
    # an odd slab has one majority
    three = np.array([[[2]], [[2]], [[0]]], dtype=np.uint8)
    assert bench.slab_majority(three, 3, strict=True)[0, 0, 0] == 2
    assert bench.slab_majority(three, 3, strict=False)[0, 0, 0] == 2
    with pytest.raises(ValueError, match="k must"):
        bench.slab_majority(thin, 0, strict=True)


def test_nerve_band_measures_each_side_of_a_thin_labelling(bench):
    import numpy as np

    from orbitseg.io.volume import Geometry, Volume

    # two globes 40 mm apart, a nerve behind each: right (low x) 4 thin slices tall, left only 1
    thin = np.zeros((8, 40, 80), dtype=np.uint8)
    zz, yy, xx = np.mgrid[:8, :40, :80]
    for cx in (20, 60):
        thin[((xx - cx) ** 2 + (yy - 12) ** 2 <= 36) & (zz >= 1) & (zz <= 6)] = 1
    thin[2:6, 25:35, 19:22] = 3        # right: thin slices 2-5, whole 4 mm slabs 1 and 2
    thin[3, 25:35, 59:62] = 3          # left: thin slice 3 only, half of slab 1
    geom = Geometry(size=(80, 40, 8), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0), direction=np.eye(3))
    thick = Geometry(size=(80, 40, 4), spacing=(1.0, 1.0, 4.0), origin=(0.0, 0.0, 1.0), direction=np.eye(3))
    band = bench.nerve_band(Volume(thin, geom), thick, 2)
    voxel = 1.0 * 1.0 * 4.0 / 1000
    assert band["right"] == pytest.approx((2 * 30 * voxel, 2 * 30 * voxel))
    assert band["left"] == pytest.approx((0.0, 30 * voxel))


def test_real_ct_problems_judge_the_4mm_nerve_by_its_band(bench):
    band = {"right": (0.06, 0.25), "left": (0.10, 0.45)}
    rows = _rows(nerve_right=0.08)  # left 0.22
    assert bench.real_ct_problems(rows, {"nerve_volume_low"}, band) == []
    assert bench.real_ct_problems(rows, {"nerve_volume_low"}) == ["nerve_volume_low",
                                                                 "right nerve_ml 0.08 outside 0.14-0.6"]
    tight = {"right": (0.09, 0.25), "left": (0.10, 0.20)}
    assert bench.real_ct_problems(rows, set(), tight) == ["right nerve_ml 0.080 outside its 4 mm band 0.090-0.250",
                                                          "left nerve_ml 0.220 outside its 4 mm band 0.100-0.200"]
    assert bench.real_ct_problems(rows, {"nerve_asymmetry"}, band) == ["nerve_asymmetry"]
