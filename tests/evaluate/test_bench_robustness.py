"""The robustness bench's verdicts and the interval it prints beside them (bench/robustness.py)."""

import math

import pytest


@pytest.fixture(scope="module")
def bench(load_bench):
    return load_bench("robustness")


def test_patient_interval_is_the_student_t_interval_of_the_mean(bench):
    lo, hi = bench.patient_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t(0.975, 2) = 4.3027
    assert lo == pytest.approx(2 - 4.3027 / math.sqrt(3), abs=1e-3)
    assert hi == pytest.approx(2 + 4.3027 / math.sqrt(3), abs=1e-3)
    assert bench.patient_interval([0.5, math.nan, 0.7]) == pytest.approx(bench.patient_interval([0.5, 0.7]))
    assert all(math.isnan(v) for v in bench.patient_interval([0.5]))


def _doc(nerve_5mm: list[float]) -> dict:
    rows = []
    for i, nerve in enumerate(nerve_5mm):
        for cond, (eye, mus, ner) in (("base", (0.99, 0.93, 0.94)), ("slices 5 mm", (0.96, 0.81, nerve))):
            rows.append({"condition": cond, "group": cond, "seed": 9600 + i, "render_s": 0.0, "segment_s": 0.0,
                         "dice_eyeball": eye, "dice_muscles": mus, "dice_nerve": ner,
                         **{f"{q}_{k}": 0.0 for q in ("mssd", "vol_true_ml") for k in ("eyeball", "muscles", "nerve")}})
    return {"scans": rows, "seeds": [9600 + i for i in range(len(nerve_5mm))], "model": "m", "cpu": "c",
            "threads": 1, "minutes": 0.0, "conditions": [{"name": "base"}, {"name": "slices 5 mm"}]}


def test_the_5mm_verdict_follows_the_mean_and_its_interval_is_printed(bench, capsys):
    bench.report(_doc([0.6, 0.9, 0.75]))  # mean 0.75: met, though three patients leave it wide open
    out = capsys.readouterr().out
    assert "PASS: at 5 mm slices" in out
    lo, hi = bench.patient_interval([0.6, 0.9, 0.75])
    assert f"slices 5 mm: eyeball 0.960-0.960, muscles 0.810-0.810, nerve {lo:.3f}-{hi:.3f}" in out
    bench.report(_doc([0.5, 0.8, 0.7]))
    assert "miss: at 5 mm slices" in capsys.readouterr().out


def test_slab_profile_box_and_tails(bench):
    import numpy as np

    thin = np.arange(20, dtype=np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32)
    box = bench.slab_profile(thin, 5)
    assert box.shape == (4, 2, 3) and np.allclose(box[:, 0, 0], [2, 7, 12, 17])  # each the mean of its 5
    assert np.allclose(bench.slab_profile(np.full((20, 2, 2), 40.0), 5, 2.5), 40.0)  # a uniform region keeps its HU
    edge = np.zeros((20, 1, 1), np.float32)
    edge[9] = 1.0  # the last thin slice of the second thick slice
    assert bench.slab_profile(edge, 5)[2, 0, 0] == 0.0  # a box does not reach the next slice
    tails = bench.slab_profile(edge, 5, 2.5)[:, 0, 0]
    assert tails[2] > 0.05 and tails[1] < 0.2 and tails.sum() * 5 == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="multiple of m=5"):
        bench.slab_profile(np.zeros((21, 1, 1)), 5)
