import pytest


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """The 4-patient synthetic cohort preprocessed at 32 px, built once per session."""
    from orbitseg.preprocess.dataset import preprocess_dataset
    from orbitseg.preprocess.pipeline import PreprocessConfig
    from orbitseg.synth import make_cohort

    root = tmp_path_factory.getbasetemp() / "train_tiny_ds"
    make_cohort(root, patients=4, seed=0, small=True, workers=1)
    preprocess_dataset(root, PreprocessConfig(size=32), progress=False)
    return root
