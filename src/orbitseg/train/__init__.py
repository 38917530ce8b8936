"""Training SEQ-UNET: patient-wise folds, data from the preprocessed store, augmentation,
soft-target losses and a resumable, reproducible loop that tests each fold at the end.

``orbitseg train DATASET --fold {0,1,2,3,all} ...`` calls :func:`train`.
"""

from orbitseg.train.loop import train, train_fold
from orbitseg.train.splits import make_splits, read_splits

__all__ = ["train", "train_fold", "make_splits", "read_splits"]
