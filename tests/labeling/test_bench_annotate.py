"""The annotation bench's CNN-assisted tools and its held-out check (bench/annotate.py)."""
from collections import defaultdict

import numpy as np
import pytest

from orbitseg.labeling import SuperpixelCache
from orbitseg.synth.phantom import orbit_slice


@pytest.fixture(scope="module")
def bench(load_bench):
    return load_bench("annotate")


def _run(bench, tool, probs):
    img, gt = orbit_slice((256, 256), (0.9, 0.9), seed=2)
    roi = np.zeros(gt.shape, bool)
    roi[:, :128] = True
    timings = defaultdict(list)
    return bench.annotate(tool, "x_z0", img, gt, 1, roi, (0.9, 0.9), SuperpixelCache(), 10, timings, probs=probs), timings


@pytest.mark.parametrize("tool", ["cnn+brush", "cnn+fill", "cnn+fill+ac"])
def test_predict_counts_one_interaction(bench, tool):
    _, gt = orbit_slice((256, 256), (0.9, 0.9), seed=2)
    perfect = np.stack([(gt == c).astype(float) for c in range(4)])
    (k, d, _), timings = _run(bench, tool, perfect)
    assert k == 1 and d == 1.0
    assert timings["Predict -> mask (slice, probabilities cached)"]
    # a useless network (all background) gains nothing from Predict: more interactions follow
    empty = np.zeros_like(perfect)
    empty[0] = 1.0
    (k2, _, hist), _ = _run(bench, tool, empty)
    assert hist[1] == (1, 0.0) and (k2 is None or k2 > 1)
    with pytest.raises(ValueError, match="probabilities"):
        _run(bench, tool, None)


def test_cohort_overlap_detects_a_training_patient(bench):
    from orbitseg.synth.cohort import plan_cohort
    train = plan_cohort(3, seed=0)[0][2]
    assert bench.cohort_overlap([train]) == 1
    from orbitseg.synth import sample_patient
    assert bench.cohort_overlap([sample_patient(np.random.default_rng(0))]) == 0
