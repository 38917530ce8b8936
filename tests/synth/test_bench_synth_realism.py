"""bench/synth_realism.py's nerve-against-muscle density: the number the README sets the generator against."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(load_bench):
    return load_bench("synth_realism")


def test_nerve_contrast_is_per_orbit_nerve_minus_the_muscle_beside_it(bench):
    a = np.zeros((6, 40, 60), np.float32)
    lab = np.zeros(a.shape, np.uint8)
    for x0, nerve_hu, muscle_hu in ((10, 45.0, 30.0), (40, 20.0, 35.0)):  # first half of x, then second
        lab[:, 5:10, x0:x0 + 8] = 1  # a globe
        lab[:, 15:30, x0 + 3:x0 + 5] = 3  # the nerve
        a[:, 15:30, x0 + 3:x0 + 5] = nerve_hu
        lab[:, 15:30, x0 + 6:x0 + 8] = 2  # a muscle 2 mm beside it
        a[:, 15:30, x0 + 6:x0 + 8] = muscle_hu
        lab[:, 15:30, x0 + 15:x0 + 17] = 2  # and one too far (10 mm) to count
        a[:, 15:30, x0 + 15:x0 + 17] = 500.0
    assert bench.nerve_contrast(a, lab, (1.0, 1.0, 1.0)) == [15.0, -15.0]
    assert bench.nerve_contrast(a, np.where(lab == 3, 0, lab).astype(np.uint8), (1.0, 1.0, 1.0)) == []
