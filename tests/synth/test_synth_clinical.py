"""The clinical variant of the synthetic cohort (issue 20), and the default cohort left unchanged."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import numpy as np
import pytest

from orbitseg.synth import render_patient, sample_patient
from orbitseg.synth.cohort import plan_cohort

#: sha256 of (ct bytes + label bytes) of ``render_patient(sample_patient(default_rng(seed), small=True))``,
#: computed at commit 3779e16, before the clinical variant existed
DEFAULT_RENDER_SHA256 = {
    0: "bd476571b7a156e09d9fd386aa7c96ebc4f517ac7ad1edba27c13b8b9a6895cb",
    1: "58385f076d8f9b9294514241b578fab2225fe34aea51234220bc5e1ececd2da3",
    2: "7f65b52f59d777c5754b9f157c612c59bd922a982fda0678a7625f55adb2793e",
}
#: sha256 of every drawn parameter of ``plan_cohort(12, seed=3)`` (full-size scans), same commit
DEFAULT_PLAN_SHA256 = "d4d01ad48a89015a584652621d115b4bba85f6627e4f7e4bf8ee0c0c71b9ac87"


@pytest.mark.parametrize("seed", sorted(DEFAULT_RENDER_SHA256))
def test_default_generator_renders_the_same_bytes_as_before(seed):
    ct, lab = render_patient(sample_patient(np.random.default_rng(seed), small=True))
    assert hashlib.sha256(ct.array.tobytes() + lab.array.tobytes()).hexdigest() == DEFAULT_RENDER_SHA256[seed]


def test_default_cohort_plan_draws_the_same_parameters_as_before():
    h = hashlib.sha256()
    for c, pid, prm, fmt in plan_cohort(12, seed=3):
        h.update(json.dumps([c, pid, fmt, prm.version, prm.small, asdict(prm.anatomy), asdict(prm.scan)],
                            sort_keys=True).encode())
    assert h.hexdigest() == DEFAULT_PLAN_SHA256
