"""Every anatomical and acquisition parameter of a synthetic patient, and how they are drawn.

All lengths are millimetres in the *head frame* (LPS axes of a head in
standard position, origin midway between the two globe centres: +x patient's
Left, +y Posterior, +z Superior).  Angles are degrees.  Hounsfield values are
HU.  Everything is a plain float / int / str / tuple so that
``dataclasses.asdict`` gives JSON-serialisable data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

#: bump when the same seed would give different images
GENERATOR_VERSION = "1.0"

#: extraocular muscles, in the order of ``SideParams.muscle_belly``
MUSCLES = ("MR", "LR", "SR", "IR", "SO", "IO", "LPS")


@dataclass(frozen=True)
class HUParams:
    """Tissue attenuations of one patient (all soft tissues share ``soft``)."""

    air: float
    fat: float  # orbital fat
    subcut_fat: float
    soft: float  # skin, muscles, nerve, glands, vessels all sit near this value
    muscle_offset: float  # extraocular muscles relative to soft (small on purpose)
    nerve_offset: float  # optic nerve-sheath complex relative to soft (small on purpose)
    brain: float
    csf: float
    cortical: float
    diploe: float
    vitreous: float
    sclera: float
    lens: float
    mucosa: float


@dataclass(frozen=True)
class SideParams:
    """One orbit and its contents.  ``side`` is +1 for the left (+x), -1 for the right."""

    side: int
    globe_radius: float
    globe_axial_ratio: float  # AP semi-axis / transverse semi-axis
    globe_shift: tuple[float, float, float]  # small offset of the globe centre (x lateral-signed, y, z)
    proptosis: float  # anterior shift of the globe relative to the rim (mm, >= 0)
    gaze: tuple[float, float]  # yaw (positive = towards lateral), pitch (positive = up)
    apex: tuple[float, float, float]  # |x|, y, z of the orbital apex (optic canal entrance)
    rim_halfwidth: float
    rim_halfheight: float
    orbit_length: float  # apex -> rim centre
    wall_medial: float  # lamina papyracea
    wall_floor: float
    wall_roof: float
    wall_lateral: float
    muscle_belly: tuple[float, ...]  # half-thickness of each belly, order MUSCLES
    muscle_width: tuple[float, ...]  # half-width of each belly, order MUSCLES
    ted: float  # thyroid-eye-disease belly enlargement factor (1 = normal)
    nerve_radius: float
    nerve_slack: float  # lateral amplitude of the S-curve
    nerve_sag: float  # vertical sag
    nerve_phase: float
    sov_radius: float
    lacrimal_size: float


@dataclass(frozen=True)
class Anatomy:
    """The patient: skull, face, sinuses, brain and both orbits."""

    head_scale: float
    head_width: float  # half-width of the cranium
    face_depth: float  # y of the nasal bridge skin (negative = anterior)
    skin: float
    subcut_fat: float
    skull: float  # vault thickness
    globe_half_distance: float  # |x| of the globe centres
    ethmoid_cells: int
    septum_shift: float
    sinus_mucosa: tuple[float, float, float, float]  # frontal, ethmoid, maxillary, sphenoid
    hu: HUParams
    left: SideParams
    right: SideParams


@dataclass(frozen=True)
class Acquisition:
    """How the scan was taken and reconstructed."""

    spacing_xy: float
    slice_thickness: float
    matrix: tuple[int, int]  # (nx, ny)
    n_slices: int
    direction_kind: str  # "identity", "ras_flip", "reversed_slices", "flip_all", "oblique"
    direction: tuple[float, ...]  # 9 values, row-major; column c = LPS axis of index c
    head_rotation: tuple[float, float, float]  # yaw, pitch, roll (deg)
    head_offset: tuple[float, float, float]  # scanner position of the grid centre in the head frame (mm)
    psf_fwhm: float  # in-plane
    noise_sigma: float
    fov_pad: float  # value outside the reconstruction circle, or 0 for none
    noise_seed: int
    texture_seed: int


@dataclass(frozen=True)
class PatientParams:
    """Everything that decides one synthetic scan."""

    version: str
    small: bool
    anatomy: Anatomy
    scan: Acquisition


# ---------------------------------------------------------------------------
def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _n(rng: np.random.Generator, mu: float, sd: float, lo: float, hi: float) -> float:
    return float(np.clip(rng.normal(mu, sd), lo, hi))


def _sample_side(rng, side: int, base: dict) -> SideParams:
    """One orbit: shared patient traits in ``base`` plus left/right asymmetry."""
    asym = lambda v, sd: float(v + rng.normal(0, sd))  # noqa: E731
    ted = base["ted"] * (1.0 + (rng.normal(0, 0.15) if base["ted"] > 1 else 0.0))
    ted = float(max(1.0, ted))
    # normal belly half-thicknesses (CT norms: MR 4.2, LR 3.3, SR 3.8, IR 4.8 mm full thickness)
    normal = np.array([2.1, 1.7, 1.9, 2.4, 1.3, 1.2, 0.8]) * base["muscle_scale"]
    belly = normal * np.exp(rng.normal(0, 0.08, len(MUSCLES)))
    width = np.array([4.8, 4.6, 5.2, 4.8, 2.6, 3.2, 4.8]) * np.exp(rng.normal(0, 0.06, len(MUSCLES)))
    if ted > 1:
        # TED: IR and MR most often, then SR/LPS; the levator and obliques less
        weights = np.array([1.0, 0.55, 0.8, 1.0, 0.5, 0.4, 0.7]) * rng.uniform(0.6, 1.0, len(MUSCLES))
        belly = belly * (1 + (ted - 1) * weights)
        width = width * (1 + 0.3 * (ted - 1) * weights)
    return SideParams(
        side=side,
        globe_radius=asym(base["globe_radius"], 0.15),
        globe_axial_ratio=asym(base["axial_ratio"], 0.01),
        globe_shift=(float(rng.normal(0, 0.6)), float(rng.normal(0, 0.5)), float(rng.normal(0, 0.6))),
        proptosis=float(max(0.0, base["proptosis"] + rng.normal(0, 0.8 if ted > 1 else 0.4))),
        gaze=(float(rng.normal(0, 3.0)), float(rng.normal(0, 2.5))),
        apex=(asym(base["apex_x"], 0.6), asym(base["apex_y"], 0.8), asym(base["apex_z"], 0.6)),
        rim_halfwidth=asym(base["rim_w"], 0.4),
        rim_halfheight=asym(base["rim_h"], 0.4),
        orbit_length=asym(base["orbit_len"], 0.8),
        wall_medial=_u(rng, 0.3, 0.5),
        wall_floor=_u(rng, 0.5, 1.0),
        wall_roof=_u(rng, 0.8, 1.6),
        wall_lateral=_u(rng, 2.5, 4.5),
        muscle_belly=tuple(float(v) for v in belly),
        muscle_width=tuple(float(v) for v in width),
        ted=ted,
        nerve_radius=asym(base["nerve_radius"], 0.08),
        nerve_slack=asym(base["nerve_slack"], 0.5),
        nerve_sag=_u(rng, 0.0, 1.5),
        nerve_phase=_u(rng, -0.6, 0.6),
        sov_radius=_u(rng, 0.8, 1.5),
        lacrimal_size=_u(rng, 0.8, 1.2),
    )


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one patient's anatomy."""
    ted_patient = rng.random() < 0.2
    base = {
        "globe_radius": _n(rng, 12.0, 0.5, 11.0, 13.2),
        "axial_ratio": _n(rng, 1.02, 0.02, 0.98, 1.08),
        "proptosis": (_u(rng, 2.0, 6.0) if ted_patient else _u(rng, 0.0, 2.5)),
        "ted": _u(rng, 1.7, 3.0) if ted_patient else 1.0,
        "muscle_scale": _n(rng, 1.0, 0.1, 0.75, 1.3),
        "apex_x": _n(rng, 14.5, 1.0, 12.0, 17.0),
        "apex_y": _n(rng, 37.0, 1.5, 33.0, 41.0),
        "apex_z": _n(rng, 2.0, 1.0, -1.0, 5.0),
        "rim_w": _n(rng, 20.0, 0.8, 18.0, 22.0),
        "rim_h": _n(rng, 17.5, 0.8, 15.5, 19.5),
        "orbit_len": _n(rng, 42.0, 1.5, 38.0, 46.0),
        "nerve_radius": _n(rng, 1.85, 0.15, 1.5, 2.25),
        "nerve_slack": _u(rng, 0.5, 3.0),
    }
    soft = _u(rng, 36.0, 52.0)
    hu = HUParams(
        air=_u(rng, -1005.0, -990.0),
        fat=_u(rng, -110.0, -70.0),
        subcut_fat=_u(rng, -115.0, -85.0),
        soft=soft,
        muscle_offset=_n(rng, 3.0, 2.0, -2.0, 8.0),
        nerve_offset=_n(rng, -3.0, 2.0, -8.0, 2.0),
        brain=_u(rng, 30.0, 40.0),
        csf=_u(rng, 2.0, 12.0),
        cortical=_u(rng, 1000.0, 1500.0),
        diploe=_u(rng, 300.0, 500.0),
        vitreous=_u(rng, 5.0, 15.0),
        sclera=_u(rng, 45.0, 60.0),
        lens=_u(rng, 95.0, 125.0),
        mucosa=_u(rng, 15.0, 35.0),
    )
    gx = _n(rng, 31.5, 1.5, 28.0, 35.0)
    return Anatomy(
        head_scale=_n(rng, 1.0, 0.04, 0.9, 1.1),
        head_width=_n(rng, 72.0, 3.0, 66.0, 80.0),
        face_depth=_n(rng, -21.0, 1.5, -25.0, -17.0),
        skin=_u(rng, 1.5, 2.5),
        subcut_fat=_u(rng, 2.0, 7.0),
        skull=_u(rng, 5.0, 8.0),
        globe_half_distance=gx,
        ethmoid_cells=int(rng.integers(8, 16)),
        septum_shift=_n(rng, 0.0, 1.5, -4.0, 4.0),
        sinus_mucosa=tuple(float(v) for v in rng.choice([0.5, 1.0, 2.0, 4.0], size=4, p=[0.45, 0.3, 0.15, 0.1])),
        hu=hu,
        left=_sample_side(rng, +1, base),
        right=_sample_side(rng, -1, base),
    )


_DIRECTIONS = {
    "identity": np.eye(3),
    "ras_flip": np.diag([-1.0, -1.0, 1.0]),  # NIfTI-from-RAS exporters
    "reversed_slices": np.diag([1.0, 1.0, -1.0]),
    "flip_all": np.diag([-1.0, -1.0, -1.0]),
}


def _rotation(axis: str, deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def head_rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Head frame -> scanner LPS: yaw about z, pitch about x, roll about y."""
    return _rotation("z", yaw) @ _rotation("x", pitch) @ _rotation("y", roll)


def sample_acquisition(rng: np.random.Generator, *, small: bool = False) -> Acquisition:
    """Draw scanner, reconstruction grid and head pose."""
    if small:
        spacing = _u(rng, 0.8, 1.0)
        thickness = 2.0
        fov = _u(rng, 150.0, 175.0)
        n = int(round(fov / spacing))
        coverage = _u(rng, 50.0, 60.0)
    else:
        thickness = float(rng.choice([0.625, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0],
                                     p=[0.12, 0.08, 0.2, 0.12, 0.08, 0.18, 0.1, 0.12]))
        n = int(rng.choice([512, 384, 320], p=[0.6, 0.25, 0.15]))
        fov = _u(rng, 150.0, 220.0)
        spacing = float(np.clip(fov / n, 0.3, 0.6))
        coverage = _u(rng, 50.0, 80.0)
    n_slices = max(8, int(round(coverage / thickness)))
    kind = str(rng.choice(["identity", "ras_flip", "reversed_slices", "flip_all", "oblique"],
                          p=[0.45, 0.2, 0.15, 0.05, 0.15]))
    if kind == "oblique":
        d = _rotation("x", _u(rng, -20.0, 20.0)) @ _rotation("z", _u(rng, -8.0, 8.0))
        if rng.random() < 0.5:
            d = d @ np.diag([-1.0, -1.0, 1.0])
    else:
        d = _DIRECTIONS[kind]
    rot = tuple(_n(rng, 0.0, sd, -10.0, 10.0) for sd in (3.5, 4.0, 2.5))
    offset = (_n(rng, 0.0, 4.0, -12.0, 12.0), _u(rng, 20.0, 45.0), _u(rng, -9.0, 3.0))
    sigma1 = _u(rng, 9.0, 17.0)  # noise at 1 mm slices
    return Acquisition(
        spacing_xy=float(spacing),
        slice_thickness=float(thickness),
        matrix=(n, n),
        n_slices=n_slices,
        direction_kind=kind,
        direction=tuple(float(v) for v in np.asarray(d, dtype=float).ravel()),
        head_rotation=tuple(float(v) for v in rot),
        head_offset=tuple(float(v) for v in offset),
        psf_fwhm=_u(rng, 0.6, 1.0),
        noise_sigma=float(np.clip(sigma1 / math.sqrt(thickness), 8.0, 25.0)),
        fov_pad=float(rng.choice([0.0, -1024.0, -2048.0, -3024.0], p=[0.55, 0.2, 0.1, 0.15])),
        noise_seed=int(rng.integers(0, 2**31 - 1)),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


def sample_patient(rng: np.random.Generator, *, small: bool = False) -> PatientParams:
    """Draw a patient (anatomy) and the acquisition of its first scan."""
    anatomy = sample_anatomy(rng)
    scan = sample_acquisition(rng, small=small)
    return PatientParams(version=GENERATOR_VERSION, small=bool(small), anatomy=anatomy, scan=scan)


def sample_followup(params: PatientParams, rng: np.random.Generator) -> PatientParams:
    """A second scan of the same anatomy: new acquisition, new pose."""
    return replace(params, scan=sample_acquisition(rng, small=params.small))
