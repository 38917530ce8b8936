"""Fixtures of the io tests: synthetic patients written as DICOM series on chosen grids, built once."""

from __future__ import annotations

import functools

import pytest


@pytest.fixture(scope="session")
def series_cases(tmp_path_factory):
    """``series_cases(name)`` -> (root, series folder, scan, truth on the rendered grid, truth on the
    scan's grid) for a case of :data:`dicom_cases.SEEDS`, written once per session."""
    from dicom_cases import series_case

    @functools.cache
    def make(name: str):
        root = tmp_path_factory.mktemp(f"series_{name}")
        return (root, *series_case(root, name))

    return make
