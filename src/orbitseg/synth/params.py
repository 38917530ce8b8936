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

# the cohort variants: "default" (the cohort the shipped model was made from, byte-identical per seed) and
# "clinical" (the variety of clinical head / orbit CT, issue 20; see Clinical); defined with the other facts
from orbitseg.constants import CLINICAL_VERSIONS, VARIETIES

#: bump when the same seed would give different images
GENERATOR_VERSION = "1.0"
#: version of the clinical variant (bump when the same seed would give different images)
#: clinical2 labels thick slices by an odd sub-slice count (anatomy.subslice_count); clinical3 draws the optic
#: nerve's density relative to its muscles' (:data:`CLINICAL3_NERVE_VS_MUSCLE`), all else as clinical2; clinical4
#: gives every slice a profile with tails (:data:`CLINICAL4_SLICE_TAIL`), all else as clinical3
CLINICAL_VERSION = CLINICAL_VERSIONS[-1]
#: clinical3: optic nerve minus extraocular muscle attenuation as painted (HU, uniform), before contrast and
#: partial volume (the thin nerve's partial volume with fat lowers its measured mean by about 5 HU more). The
#: earlier draw, soft + N(-3, 2) against soft + N(3, 2), made the nerve always the darker (-16..+4 HU); the
#: real head CT of shared/realct/ has one nerve 17 HU denser than its muscles and one 3 HU less dense
#: (bench/synth_realism.py), so a model that learnt "the nerve is darker" loses the first.
CLINICAL3_NERVE_VS_MUSCLE = (-12.0, 22.0)
#: clinical4: FWHM of the Gaussian (a fraction of the slice thickness, uniform per scan) that the slice's box of
#: sub-slices is convolved with along z, so that a slice also takes in its neighbours' edges as a real
#: reconstruction's slice profile does (a helical profile's tails; a thick slab of thinner reconstructions). With a
#: box alone the synthetic thick slices flattered the optic nerve: at 5 mm, tails of 2.5 mm cost every model 0.10-0.14
#: nerve Dice (bench/robustness.py, "slices 5 mm, profile with tails"). Labels stay the majority of the slice's own box.
CLINICAL4_SLICE_TAIL = (0.3, 0.6)

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
class Clinical:
    """What the clinical variant adds to a scan (issue 20); ``PatientParams.clinical`` is None by default.

    Patient traits (kept by a follow-up scan): ``age_group``, ``csf_rim``, ``iol``, ``silicone``,
    ``silicone_hu``, ``fracture*``, ``metal``, ``warp_*``, ``ethmoid_seed``.  Scan traits (drawn again):
    the kernel, contrast, metal streak strength, the cut field of view and the gantry tilt.
    """

    kernel: str  # "soft", "standard", "sharp", "bone"
    mtf_sigma: float  # mm, Gaussian part of the kernel's modulation transfer function
    overshoot: float  # edge enhancement of sharp kernels (unsharp-mask gain, 0 = none)
    contrast: bool  # iodinated contrast given
    enhance_muscle: float  # HU added to extraocular muscles and the lacrimal gland (0 without contrast)
    enhance_vessel: float  # HU added to the superior ophthalmic vein and the cavernous sinuses
    enhance_mucosa: float  # HU added to the sinus mucosa and turbinates
    metal: tuple[tuple[float, float, float, float], ...]  # dental fillings (x, y, z, radius) in the head frame
    metal_streak: float  # streak strength (HU) of the fillings
    fov_cut: int  # +1 / -1: the field of view ends close to the left / right orbit; 0: not
    age_group: str  # "child", "adult", "elderly"
    csf_rim: float  # mm of CSF around the brain (wider with atrophy)
    iol: tuple[bool, bool]  # intraocular lens (left, right): a dense disc in place of the lens
    silicone: tuple[bool, bool]  # silicone-oil-filled vitreous (left, right)
    silicone_hu: float
    fracture: int  # +1 / -1: orbital floor fracture on the left / right; 0: none
    fracture_t: float  # depth fraction along the orbit (apex 0 -> rim 1) of the floor gap
    fracture_size: float  # mm, half-length of the gap
    warp_amplitude: float  # mm, low-frequency irregularity of the skull base and cranial fossae
    warp_seed: int
    ethmoid_seed: int  # the honeycomb of ethmoid air cells
    gantry_tilt: float  # degrees, used when the scan is written as a DICOM series
    slice_tail_fwhm: float = 0.0  # mm, Gaussian tails of the slice profile along z (clinical4; 0: a plain box)


@dataclass(frozen=True)
class PatientParams:
    """Everything that decides one synthetic scan."""

    version: str
    small: bool
    anatomy: Anatomy
    scan: Acquisition
    clinical: Clinical | None = None  # the clinical variant's additions; None = the default cohort


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


def _draw_direction(rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """How the scanner stored the grid: a direction kind and its (3, 3) matrix (an oblique grid: a tilt
    about x up to 20 deg and z up to 8 deg, half of them with rows and columns reversed)."""
    kind = str(rng.choice(["identity", "ras_flip", "reversed_slices", "flip_all", "oblique"],
                          p=[0.45, 0.2, 0.15, 0.05, 0.15]))
    if kind == "oblique":
        d = _rotation("x", _u(rng, -20.0, 20.0)) @ _rotation("z", _u(rng, -8.0, 8.0))
        if rng.random() < 0.5:
            d = d @ np.diag([-1.0, -1.0, 1.0])
    else:
        d = _DIRECTIONS[kind]
    return kind, d


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
    kind, d = _draw_direction(rng)
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


def sample_patient(rng: np.random.Generator, *, small: bool = False, variety: str = "default",
                   clinical_version: str = CLINICAL_VERSION) -> PatientParams:
    """Draw a patient (anatomy) and the acquisition of its first scan.

    ``variety="clinical"`` draws from the clinical variant (:func:`sample_clinical_patient`, as
    ``clinical_version``); the default draws exactly as before it existed.
    """
    if variety != "default":
        if variety not in VARIETIES:
            raise ValueError(f"unknown cohort variety {variety!r}; choose one of {', '.join(VARIETIES)}")
        return sample_clinical_patient(rng, small=small, version=clinical_version)
    anatomy = sample_anatomy(rng)
    scan = sample_acquisition(rng, small=small)
    return PatientParams(version=GENERATOR_VERSION, small=bool(small), anatomy=anatomy, scan=scan)


def sample_followup(params: PatientParams, rng: np.random.Generator) -> PatientParams:
    """A second scan of the same anatomy: new acquisition, new pose."""
    if params.clinical is not None:
        return _clinical_followup(params, rng)
    return replace(params, scan=sample_acquisition(rng, small=params.small))


# ---------------------------------------------------------------------------
# The clinical variant (issue 20): the variety of clinical head and orbit CT
# ---------------------------------------------------------------------------
#: reconstruction kernels: probability, MTF sigma range (mm), edge overshoot range, noise factor
KERNELS = {
    "soft": (0.35, (0.45, 0.65), (0.0, 0.0), 0.8),
    "standard": (0.35, (0.32, 0.45), (0.0, 0.1), 1.0),
    "sharp": (0.15, (0.22, 0.32), (0.15, 0.35), 1.3),
    "bone": (0.15, (0.14, 0.22), (0.35, 0.7), 1.7),
}
#: slice thicknesses (mm) of the clinical variant and their probabilities
CLINICAL_THICKNESS = ((0.5, 0.625, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0),
                      (0.08, 0.1, 0.06, 0.16, 0.06, 0.06, 0.1, 0.08, 0.12, 0.08, 0.1))


def _scale_side(sp: SideParams, k: float) -> SideParams:
    """One orbit made ``k`` times as large (a child's), muscles and nerve included."""
    return replace(
        sp, globe_radius=sp.globe_radius * (0.45 + 0.55 * k),  # the globe is nearly grown by school age
        apex=tuple(v * k for v in sp.apex), rim_halfwidth=sp.rim_halfwidth * k,
        rim_halfheight=sp.rim_halfheight * k, orbit_length=sp.orbit_length * k,
        wall_lateral=sp.wall_lateral * k, muscle_belly=tuple(v * k for v in sp.muscle_belly),
        muscle_width=tuple(v * k for v in sp.muscle_width), nerve_radius=sp.nerve_radius * (0.5 + 0.5 * k),
        proptosis=sp.proptosis * k)


def _with_ted(sp: SideParams, ted: float, rng: np.random.Generator) -> SideParams:
    """A normal orbit given thyroid eye disease of severity ``ted`` (belly enlargement factor)."""
    weights = np.array([1.0, 0.55, 0.8, 1.0, 0.5, 0.4, 0.7]) * rng.uniform(0.6, 1.0, len(MUSCLES))
    belly = np.asarray(sp.muscle_belly) * (1 + (ted - 1) * weights)
    width = np.asarray(sp.muscle_width) * (1 + 0.3 * (ted - 1) * weights)
    return replace(sp, ted=float(ted), muscle_belly=tuple(float(v) for v in belly),
                   muscle_width=tuple(float(v) for v in width),
                   proptosis=float(sp.proptosis + (ted - 1) * rng.uniform(1.0, 3.0)))


def _clinical_anatomy(rng: np.random.Generator) -> tuple[Anatomy, dict]:
    """A default anatomy widened: children and the elderly, thyroid eye disease mild to severe, pseudophakia,
    silicone oil, a floor fracture, fillings; the patient part of :class:`Clinical` as a dict."""
    an = sample_anatomy(rng)
    age = str(rng.choice(["child", "adult", "elderly"], p=[0.12, 0.6, 0.28]))
    csf = 1.5
    if age == "child":
        k = _u(rng, 0.78, 0.92)
        an = replace(an, head_scale=an.head_scale * k, head_width=an.head_width * (0.3 + 0.7 * k),
                     face_depth=an.face_depth * k, globe_half_distance=an.globe_half_distance * k,
                     skull=an.skull * k, left=_scale_side(an.left, k), right=_scale_side(an.right, k))
    elif age == "elderly":
        csf = _u(rng, 2.5, 4.5)  # cerebral atrophy
        an = replace(an, hu=replace(an.hu, fat=an.hu.fat + _u(rng, -10.0, 0.0)))
    if an.left.ted == 1.0 and rng.random() < 0.2:  # mild thyroid eye disease (the default draws 1.7-3.0)
        sev = _u(rng, 1.15, 1.7)
        an = replace(an, left=_with_ted(an.left, sev * _u(rng, 0.9, 1.1), rng),
                     right=_with_ted(an.right, sev * _u(rng, 0.9, 1.1), rng))
    elif an.left.ted > 1.0 and rng.random() < 0.3:  # severe
        f = _u(rng, 1.1, 1.3)
        an = replace(an, left=_with_ted(replace(an.left, ted=1.0), min(3.8, an.left.ted * f), rng),
                     right=_with_ted(replace(an.right, ted=1.0), min(3.8, an.right.ted * f), rng))
    pseudophakic = rng.random() < (0.35 if age == "elderly" else 0.05)
    iol = (bool(pseudophakic and rng.random() < 0.8), bool(pseudophakic and rng.random() < 0.8))
    if pseudophakic and not any(iol):
        iol = (True, False)
    oil_side = int(rng.choice([0, 1, -1], p=[0.92, 0.04, 0.04]))
    frac = int(rng.choice([0, 1, -1], p=[0.9, 0.05, 0.05]))
    n_metal = int(rng.choice([0, 1, 2, 3, 4], p=[0.6, 0.1, 0.12, 0.1, 0.08]))
    metal = []
    for _ in range(n_metal):  # fillings on the upper dental arch, below the maxillary sinuses
        x = _u(rng, 8.0, 26.0) * float(rng.choice([-1.0, 1.0])) * an.head_scale
        metal.append((x, float(an.face_depth + 12.0 + 0.035 * x * x), _u(rng, -57.0, -52.0), _u(rng, 1.2, 3.0)))
    part = dict(
        age_group=age, csf_rim=float(csf), iol=iol, silicone=(oil_side == 1, oil_side == -1),
        silicone_hu=_u(rng, 100.0, 140.0), fracture=frac, fracture_t=_u(rng, 0.45, 0.75),
        fracture_size=_u(rng, 3.5, 6.0), metal=tuple(metal), warp_amplitude=_u(rng, 0.8, 2.5),
        warp_seed=int(rng.integers(0, 2**31 - 1)), ethmoid_seed=int(rng.integers(0, 2**31 - 1)))
    return an, part


def _clinical_scan(rng: np.random.Generator, an: Anatomy, part: dict, *, small: bool
                   ) -> tuple[Acquisition, Clinical]:
    """Scanner, reconstruction and pose of one clinical-variant scan of anatomy ``an``."""
    names = list(KERNELS)
    kernel = str(rng.choice(names, p=[KERNELS[k][0] for k in names]))
    _, (s_lo, s_hi), (o_lo, o_hi), noise_factor = KERNELS[kernel]
    thickness = float(rng.choice(CLINICAL_THICKNESS[0], p=CLINICAL_THICKNESS[1]))
    if small:
        spacing = _u(rng, 0.8, 1.0)
        n = int(round(_u(rng, 150.0, 175.0) / spacing))
        coverage = _u(rng, 50.0, 62.0)
    else:
        spacing = float(math.exp(_u(rng, math.log(0.25), math.log(1.0))))
        n = 512 if spacing * 512 <= 250.0 else int(round(_u(rng, 200.0, 250.0) / spacing))
        coverage = _u(rng, 45.0, 90.0)
    half_fov = n * spacing / 2.0
    metal = part["metal"]
    z_off = _u(rng, -9.0, 3.0)
    if metal and not small and rng.random() < 0.7:  # the scan reaches down to the teeth
        coverage = _u(rng, 85.0, 110.0)
        z_off = -61.0 + coverage / 2.0 - _u(rng, 0.0, 4.0)
    coverage = min(coverage, 200 * thickness)
    n_slices = max(8, int(round(coverage / thickness)))
    kind, d = _draw_direction(rng)
    rot = (_u(rng, -10.0, 10.0), _u(rng, -25.0, 25.0), _u(rng, -10.0, 10.0))  # yaw, pitch, roll
    # the face must stay in the field: y from about -45 (nose tip) on
    y_off = min(_u(rng, 20.0, 45.0), max(5.0, half_fov - 45.0))
    x_off = _n(rng, 0.0, 4.0, -12.0, 12.0)
    fov_cut = int(rng.choice([0, 1, -1], p=[0.84, 0.08, 0.08]))
    if fov_cut:  # the edge of the field lies within a few mm of one orbit's lateral rim (or cuts it)
        rim = an.globe_half_distance + (an.left if fov_cut > 0 else an.right).rim_halfwidth
        x_off = fov_cut * (rim + _u(rng, -4.0, 6.0) - half_fov)
    sigma = float(np.clip(math.exp(_u(rng, math.log(5.0), math.log(32.0))) * noise_factor, 5.0, 40.0))
    mtf = _u(rng, s_lo, s_hi)
    contrast = bool(rng.random() < 0.35)
    cl = Clinical(
        kernel=kernel, mtf_sigma=mtf, overshoot=_u(rng, o_lo, o_hi), contrast=contrast,
        enhance_muscle=_u(rng, 20.0, 40.0) if contrast else 0.0,
        enhance_vessel=_u(rng, 100.0, 220.0) if contrast else 0.0,
        enhance_mucosa=_u(rng, 30.0, 70.0) if contrast else 0.0,
        metal_streak=_u(rng, 150.0, 600.0), fov_cut=fov_cut,
        gantry_tilt=float(rng.choice([0.0, _u(rng, -30.0, 30.0)], p=[0.6, 0.4])), **part)
    acq = Acquisition(
        spacing_xy=float(spacing), slice_thickness=thickness, matrix=(n, n), n_slices=n_slices,
        direction_kind=kind, direction=tuple(float(v) for v in np.asarray(d, dtype=float).ravel()),
        head_rotation=tuple(float(v) for v in rot), head_offset=(float(x_off), float(y_off), float(z_off)),
        psf_fwhm=float(2.3548 * mtf), noise_sigma=sigma,
        fov_pad=float(rng.choice([0.0, -1024.0, -2048.0, -3024.0], p=[0.55, 0.2, 0.1, 0.15])),
        noise_seed=int(rng.integers(0, 2**31 - 1)), texture_seed=int(rng.integers(0, 2**31 - 1)))
    return acq, cl


_PATIENT_TRAITS = ("age_group", "csf_rim", "iol", "silicone", "silicone_hu", "fracture", "fracture_t",
                   "fracture_size", "metal", "warp_amplitude", "warp_seed", "ethmoid_seed")


def sample_clinical_patient(rng: np.random.Generator, *, small: bool = False,
                            version: str = CLINICAL_VERSION) -> PatientParams:
    """Draw a patient of the clinical variant: head pose pitch -25..25 deg, roll and yaw -10..10; slices
    0.5-5 mm; pixels 0.25-1 mm; kernels soft to bone; noise 5-40 HU; contrast; dental fillings; a field of
    view ending at an orbit; children and the elderly; thyroid eye disease mild to severe; intraocular
    lenses; silicone oil; orbital floor fractures; a honeycomb ethmoid and an irregular skull base.

    ``small`` keeps the grid coarse (0.8-1 mm pixels, ~55 mm coverage) for tests; everything else varies.
    ``version``: one of :data:`CLINICAL_VERSIONS`; the same ``rng`` state gives the same patient under each, but
    for what a later version changed (clinical3: the optic nerve's attenuation; clinical4: the slice profile).
    """
    if version not in CLINICAL_VERSIONS:
        raise ValueError(f"version: {version!r} cannot be drawn; choose one of {', '.join(CLINICAL_VERSIONS)}")
    an, part = _clinical_anatomy(rng)
    acq, cl = _clinical_scan(rng, an, part, small=small)
    if CLINICAL_VERSIONS.index(version) >= CLINICAL_VERSIONS.index("1.0-clinical3"):
        # from a generator of its own (seeded by a patient trait already drawn), so that ``rng`` is left as
        # clinical2 leaves it: the cohort's later draws (follow-ups, file formats) and every other trait stay
        lo, hi = CLINICAL3_NERVE_VS_MUSCLE
        own = np.random.default_rng((part["warp_seed"], 3))
        an = replace(an, hu=replace(an.hu, nerve_offset=an.hu.muscle_offset + _u(own, lo, hi)))
    return PatientParams(version=version, small=bool(small), anatomy=an, scan=acq,
                         clinical=_with_slice_tail(cl, acq, version))


def _with_slice_tail(cl: Clinical, acq: Acquisition, version: str) -> Clinical:
    """``cl`` with clinical4's slice-profile tails for the scan ``acq`` (unchanged before clinical4): drawn from a
    generator of its own, seeded by the patient and the scan, so that every other draw stays as clinical3's."""
    if CLINICAL_VERSIONS.index(version) < CLINICAL_VERSIONS.index("1.0-clinical4"):
        return cl
    lo, hi = CLINICAL4_SLICE_TAIL
    own = np.random.default_rng((cl.warp_seed, 4, acq.noise_seed))
    return replace(cl, slice_tail_fwhm=float(_u(own, lo, hi) * acq.slice_thickness))


def _clinical_followup(params: PatientParams, rng: np.random.Generator) -> PatientParams:
    cl = params.clinical
    part = {k: getattr(cl, k) for k in _PATIENT_TRAITS}
    acq, cl2 = _clinical_scan(rng, params.anatomy, part, small=params.small)
    return replace(params, scan=acq, clinical=_with_slice_tail(cl2, acq, params.version))
