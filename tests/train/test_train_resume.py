"""Kill a seeded CPU run with SIGKILL mid-epoch, resume it, and reach the same weights and metrics."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from tiny import TINY_TRAINING

from orbitseg.train import train_fold

TINY = TINY_TRAINING
ARGS = dict(epochs=3, batch_size=4, seed=7, split_seed=0)  # the shared dataset keeps split seed 0


def _history(path):
    ck = torch.load(path, weights_only=True)
    return ck, [{k: v for k, v in h.items() if k != "seconds"} for h in ck["history"]]


@pytest.mark.parametrize("slabs", [0.0, 0.5], ids=["plain", "thick_slabs"])
def test_sigkill_mid_epoch_then_resume_is_exact(tiny_dataset, tmp_path, slabs):
    """Also with half the items made thick (``thick_slabs``): their draws are seeded per item and epoch."""
    root = tiny_dataset
    TINY = {**TINY_TRAINING, "thick_slabs": slabs}
    ref = train_fold(root, 0, out=tmp_path / "ref", overrides=TINY, progress=False, **ARGS)

    killed = tmp_path / "killed"
    code = (f"from orbitseg.train import train_fold; "
            f"train_fold({str(root)!r}, 0, out={str(killed)!r}, overrides={TINY!r}, progress=False, **{ARGS!r})")
    env = {**os.environ, "ORBITSEG_TRAIN_KILL_AT": "2:2"}  # before step 2 of epoch 2
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    rows = list(csv.DictReader(open(killed / "log.csv")))
    assert [r["epoch"] for r in rows] == ["1"]  # epoch 1 done, epoch 2 interrupted
    assert torch.load(killed / "checkpoint_last.pt", weights_only=True)["epoch"] == 1
    assert not list(killed.glob(".*tmp*"))  # no half-written files left visible

    train_fold(root, 0, out=killed, overrides=TINY, progress=False, resume=True, **ARGS)
    a, ha = _history(ref / "checkpoint_last.pt")
    b, hb = _history(killed / "checkpoint_last.pt")
    assert a["epoch"] == b["epoch"] == 3
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert ha == hb
    assert a["best_metric"] == b["best_metric"] and a["best_epoch"] == b["best_epoch"]
    ra = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(open(ref / "log.csv"))]
    rb = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(open(killed / "log.csv"))]
    assert ra == rb and len(ra) == 3
    # the accounting of the cases read keeps the epoch done before the kill and adds the resumed ones
    da, db = (json.load(open(r / "data_access.json")) for r in (ref, killed))
    assert da == db and [e["epoch"] for e in db["epochs"]] == [1, 2, 3]
    assert sum(db["trained"].values()) == sum(h["sequences"] for h in hb)
    # the training time counts the epochs run before the kill too, not only the resumed part
    result = json.load(open(killed / "run.json"))["result"]
    assert result["train_seconds"] == pytest.approx(sum(h["seconds"] for h in b["history"]), abs=0.1)
    assert result["train_seconds"] > sum(h["seconds"] for h in b["history"][1:]) > 0
