"""The tiny networks and training runs the tests share (importable: ``pythonpath = ["tests"]``).

One definition, so a change of the tiny run (say, another width) is made once for every test.
"""

from __future__ import annotations

#: the tiny SEQ-UNET every training test uses (same layout as the default preset, a few channels) and the
#: loop options that keep one epoch to three steps on one thread; tests add what they change
TINY_TRAINING: dict = {"widths": (4, 8), "bottleneck_lstm_hidden": 4, "head_lstm_hidden": 4, "max_steps_per_epoch": 3,
                       "threads": 1, "evaluate_test": False}
#: tiny versions of each preset's network (same layout, small widths) for the model tests
TINY_NETWORKS: dict[str, dict] = {
    "paper": dict(widths=(4, 8, 16), bottleneck_lstm_hidden=8, head_lstm_hidden=4, input_size=16),
    "default": dict(widths=(4, 8, 8, 16), bottleneck_lstm_hidden=8, head_lstm_hidden=4, input_size=32),
}
