"""Fixtures of the labeling app's tests: one small synthetic patient as a dataset, built once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

#: the case every app test opens
CASE = "orbit_001"


@pytest.fixture(scope="session")
def app_cohort(tmp_path_factory) -> Path:
    """A one-patient small synthetic dataset (read-only: tests that write copy it, see ``dataset``)."""
    from orbitseg.synth import make_cohort

    root = tmp_path_factory.mktemp("app_cohort") / "ds"
    make_cohort(root, patients=1, seed=0, small=True, workers=1)
    return root


@pytest.fixture()
def dataset(app_cohort, tmp_path) -> Path:
    """A fresh copy of :func:`app_cohort` per test (saves and statuses change it)."""
    root = tmp_path / "ds"
    shutil.copytree(app_cohort, root)
    return root
