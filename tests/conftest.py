"""Shared fixtures: tiny CT-like volumes on a choice of grids.

``make_ct(direction=...)`` builds a small int16 volume in Hounsfield units -
air around an elliptic head of soft tissue with a bone rim and two darker
eyeballs in front - on one of the :data:`DIRECTIONS` (identity, flipped as
NIfTI exporters in RAS write it, reversed slices, oblique).  Spacing is
anisotropic so that axis mix-ups show.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from orbitseg.io.volume import Geometry, Volume
from dicom_cases import rotation
from tiny import TINY_TRAINING


#: name -> direction matrix (columns: LPS unit vectors of index axes i, j, k)
DIRECTIONS: dict[str, np.ndarray] = {
    "identity": np.eye(3),
    "flipped": np.diag([-1.0, -1.0, 1.0]),  # RAS-style NIfTI seen in LPS
    "reversed": np.diag([1.0, 1.0, -1.0]),  # k axis points inferior
    "oblique": rotation(0.25, -0.15, 0.4),
}

SPACING = (0.6, 0.5, 1.5)
ORIGIN = (-12.3, 40.7, -81.25)


def ct_array(shape=(8, 14, 16), seed: int = 0) -> np.ndarray:
    """int16 HU array (nz, ny, nx): air, soft tissue, bone rim, eyeballs, a little noise."""
    nz, ny, nx = shape
    z, y, x = np.meshgrid(
        np.linspace(-1, 1, nz), np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij"
    )
    r = (x / 0.85) ** 2 + (y / 0.8) ** 2 + (z / 1.5) ** 2
    a = np.full(shape, -1000.0)
    a[r < 1.0] = 1000.0  # bone rim
    a[r < 0.75] = 40.0  # soft tissue
    for cx in (-0.35, 0.35):
        a[((x - cx) ** 2 + (y + 0.4) ** 2) / 0.06 + z**2 / 0.8 < 1] = 10.0  # eyeballs
    a += np.random.default_rng(seed).integers(-20, 21, size=shape)
    return a.astype(np.int16)


def ct_volume(direction: str = "identity", shape=(8, 14, 16), spacing=SPACING, origin=ORIGIN, seed: int = 0) -> Volume:
    """A CT-like :class:`Volume` on the grid named ``direction``."""
    geom = Geometry(size=shape[::-1], spacing=spacing, origin=origin, direction=DIRECTIONS[direction])
    return Volume(ct_array(shape, seed), geom, None, {})


def label_array(shape=(8, 14, 16)) -> np.ndarray:
    """uint8 labels with every structure present, asymmetric so flips show."""
    a = np.zeros(shape, np.uint8)
    nz, ny, nx = shape
    a[1 : nz - 2, 2:5, 2:6] = 1
    a[2 : nz - 1, 6:9, 3:5] = 2
    a[nz // 2, 9:12, 4:7] = 3
    return a


@pytest.fixture
def make_ct():
    """Factory fixture: ``make_ct(direction="identity", shape=..., spacing=..., origin=...)``."""
    return ct_volume


@pytest.fixture(params=list(DIRECTIONS))
def direction(request) -> str:
    """Each direction name of :data:`DIRECTIONS` in turn."""
    return request.param


@pytest.fixture
def make_labels():
    """Factory fixture: ``make_labels(shape)`` -> uint8 array with labels 1, 2 and 3."""
    return label_array


@pytest.fixture(scope="session")
def load_bench():
    """``load_bench("annotate")``: the module ``bench/annotate.py`` (the benches are scripts, not a package)."""
    import importlib.util
    from pathlib import Path

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """The 4-patient synthetic cohort (small variant) preprocessed at 32 px, built once per session."""
    from orbitseg.preprocess.dataset import preprocess_dataset
    from orbitseg.preprocess.pipeline import PreprocessConfig
    from orbitseg.synth import make_cohort

    root = tmp_path_factory.getbasetemp() / "train_tiny_ds"
    make_cohort(root, patients=4, seed=0, small=True, workers=1)
    preprocess_dataset(root, PreprocessConfig(size=32), progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_run(tiny_dataset, tmp_path_factory):
    """A one-epoch tiny training run of fold 0 of :func:`tiny_dataset` (a real checkpoint, ~5 s),
    laid out as a cross-validation run: ``RUN/fold_0/checkpoint_best.pt``.  Returns RUN."""
    from orbitseg.train import train_fold

    out = tmp_path_factory.getbasetemp() / "tiny_run" / "fold_0"
    train_fold(tiny_dataset, 0, epochs=1, batch_size=4, seed=0, out=out, overrides=TINY_TRAINING, progress=False)
    return out.parent


#: set by ``.ci/run``: every component a test needs must be there (missing ones fail, never skip)
REQUIRE_ALL_ENV = "ORBITSEG_REQUIRE_ALL"


def components_required() -> bool:
    """True where a missing component must fail its tests: ``ORBITSEG_REQUIRE_ALL=1`` (set by ``.ci/run``),
    or ``CI=true`` when ORBITSEG_REQUIRE_ALL is not set (``ORBITSEG_REQUIRE_ALL=0`` allows skips anywhere)."""
    value = os.environ.get(REQUIRE_ALL_ENV)
    if value is None:
        value = os.environ.get("CI", "")
    return value.strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def require():
    """``require(ok, what)``: stop the test when a component it needs is missing (``ok`` false).

    Locally the test is skipped with ``what`` as the printed reason; in CI (:func:`components_required`)
    it fails with that message, so a browser or an entry point that could not be installed turns CI red
    instead of silently removing the only tests that use it."""

    def _require(ok: bool, what: str) -> None:
        if ok:
            return
        if components_required():
            pytest.fail(f"{what}; {REQUIRE_ALL_ENV}=1 (or CI=true) requires every test's components, "
                        "so this fails instead of skipping", pytrace=False)
        pytest.skip(what)

    return _require


@pytest.fixture(scope="session", autouse=True)
def engine_cache(tmp_path_factory):
    """ONNX graphs built on first use and the engine measurements go to a folder of this test session,
    never the user's ~/.cache (subprocesses inherit the variable)."""
    import os

    from orbitseg.predict.engine import CACHE_ENV

    folder = tmp_path_factory.getbasetemp() / "engine_cache"
    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(folder)
    yield folder
    if old is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = old
