"""Synthetic orbital CT cohort: realistic anatomy, scanner blur and noise, varied geometry.

>>> import numpy as np
>>> from orbitseg.synth import sample_patient, render_patient
>>> ct, labels = render_patient(sample_patient(np.random.default_rng(0), small=True))
"""

from orbitseg.synth.anatomy import render_patient
from orbitseg.synth.params import (
    GENERATOR_VERSION,
    Acquisition,
    Anatomy,
    HUParams,
    PatientParams,
    SideParams,
    sample_followup,
    sample_patient,
)

__all__ = [
    "GENERATOR_VERSION",
    "Acquisition",
    "Anatomy",
    "HUParams",
    "PatientParams",
    "SideParams",
    "make_cohort",
    "render_patient",
    "sample_followup",
    "sample_patient",
]


def __getattr__(name):  # make_cohort imports the writers lazily
    if name == "make_cohort":
        from orbitseg.synth.cohort import make_cohort

        return make_cohort
    raise AttributeError(name)
