"""Thick slices made from thin ones (``train --thick-slabs``, :mod:`orbitseg.train.slabs`): the slice profile,
the thick item's image and target, the dataset's reproducible draw, and the loop and CLI that reach it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from tiny import TINY_TRAINING

from orbitseg.train.slabs import SlabParams, profile_weights, thick_item


def test_profile_weights_is_a_box_whose_tails_widen_it_symmetrically():
    w, first = profile_weights(4, 0.0)
    assert first == 0 and np.allclose(w, 0.25)
    w, first = profile_weights(4, 1.0)
    assert first == -3 and len(w) == 4 + 6
    assert w.sum() == pytest.approx(1.0) and np.allclose(w, w[::-1])
    # the box's own slices keep most of the weight, the tails fall off outwards
    assert w[3:7].sum() > 0.75 and np.all(np.diff(w[:4]) > 0)
    with pytest.raises(ValueError, match="k must"):
        profile_weights(0, 0.0)


def _ramp(n=40, s=6):
    """Thin slices whose value is their index, and a 'nerve' (label 3) filling slices 10-15 fully."""
    image = np.repeat(np.arange(n, dtype=np.float32)[:, None, None], s * s, axis=1).reshape(n, s, s)
    fractions = np.zeros((n, 3, s, s), dtype=np.uint8)
    fractions[10:16, 2] = 255
    return image, fractions


class _Fixed:
    """A stand-in for numpy's Generator that returns chosen draws (thickness, tail, phase)."""

    def __init__(self, thickness, tail, phase):
        self._u = [thickness, tail]
        self._phase = phase

    def uniform(self, lo, hi):
        return self._u.pop(0)

    def integers(self, k):
        assert 0 <= self._phase < k
        return self._phase


def test_thick_item_averages_its_slab_and_labels_by_the_slabs_fractions():
    image, fractions = _ramp()
    # 1 mm thin slices, a 4 mm slab without tails; slice 12 sits at place 2 of its slab -> slab covers 10-13
    x, target = thick_item(image, fractions, 12, 3, 1.0, _Fixed(4.0, 0.0, 2), SlabParams(p=1.0))
    assert x.shape == (3, 6, 6) and target.shape == (3, 6, 6)
    assert np.allclose(x[:, 0, 0], [7.5, 11.5, 15.5])  # means of slices 6-9, 10-13, 14-17
    assert np.allclose(target[2], 1.0) and np.allclose(target[:2], 0.0)
    # slice 15 at place 0: slab 15-18 holds one nerve slice of four
    _, target = thick_item(image, fractions, 15, 3, 1.0, _Fixed(4.0, 0.0, 0), SlabParams(p=1.0))
    assert np.allclose(target[2], 0.25)
    # the tails blur the image, not the truth: the target stays the slab's own four slices
    _, target = thick_item(image, fractions, 15, 3, 1.0, _Fixed(4.0, 0.6, 0), SlabParams(p=1.0))
    assert np.allclose(target[2], 0.25)
    # tails take in the neighbours: on a ramp the mean stays the centre, the edges of the volume replicate
    x, _ = thick_item(image, fractions, 20, 3, 1.0, _Fixed(4.0, 0.6, 0), SlabParams(p=1.0))
    assert np.allclose(x[:, 0, 0], [17.5, 21.5, 25.5], atol=1e-4)
    x, _ = thick_item(image, fractions, 0, 3, 1.0, _Fixed(4.0, 0.0, 0), SlabParams(p=1.0))
    assert x[0, 0, 0] == pytest.approx(0.0) and x[1, 0, 0] == pytest.approx(1.5)


def test_thick_item_declines_slices_already_as_thick_as_the_slab():
    image, fractions = _ramp()
    rng = np.random.default_rng(0)
    assert thick_item(image, fractions, 5, 3, 4.0, rng, SlabParams(p=1.0, mm=(3.0, 5.5))) is None


def test_slab_params_name_the_bad_argument():
    with pytest.raises(ValueError, match="p must"):
        SlabParams(p=1.5)
    with pytest.raises(ValueError, match="mm must"):
        SlabParams(mm=(5.0, 3.0))
    with pytest.raises(ValueError, match="tail must"):
        SlabParams(tail=(-0.1, 0.5))


def test_dataset_makes_an_item_thick_only_when_asked_and_the_same_way_for_the_same_seed(tiny_dataset):
    from orbitseg.train.data import SliceSequences, read_manifest, vois_of_cases

    manifest, pp = read_manifest(tiny_dataset)
    vois = vois_of_cases(tiny_dataset, manifest, sorted(manifest["cases"]))
    thin = [v for v in vois if 1.5 * v.slice_mm <= SlabParams().mm[0]]  # every draw rounds to 2 slices or more
    assert thin, [v.slice_mm for v in vois]
    plain = SliceSequences(thin, pp.seq_len)
    slabs = SliceSequences(thin, pp.seq_len, slabs=SlabParams(p=1.0))
    k = plain.vois[0].n_slices // 2
    x0, y0 = plain[k]
    # an index alone (validation, or the option off) is the plain item
    assert all(np.array_equal(a, b) for a, b in zip(slabs[k], (x0, y0)))
    xa, ya = slabs[(k, 11)]
    xb, yb = slabs[(k, 11)]
    assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    assert xa.shape == x0.shape and ya.shape == y0.shape
    assert not np.array_equal(xa, x0)
    assert ya.sum(dim=0).sub(1.0).abs().max() < 1e-5  # still a partition of each pixel
    # p = 0 is no slabs at all
    assert SliceSequences(thin, pp.seq_len, slabs=SlabParams(p=0.0)).slabs is None


def test_loop_makes_thick_items_with_the_option_and_records_it(tiny_dataset, tmp_path, monkeypatch):
    """The loop fetches items with seeds when ``thick_slabs`` is set (every item of a thin VOI goes through
    thick_item at p = 1, none without the option), and run.json and the recreate command say so."""
    import orbitseg.train.data as data
    from orbitseg.train import train_fold
    from orbitseg.train.export import _recreate

    calls = []
    real = data.thick_item

    def spy(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(data, "thick_item", spy)
    root = tmp_path / "ds"
    shutil.copytree(tiny_dataset, root)
    for p, expect in ((0.0, False), (1.0, True)):
        calls.clear()
        out = tmp_path / f"run_{p}"
        train_fold(root, "full", epochs=1, batch_size=4, seed=0, out=out, progress=False,
                   overrides={**TINY_TRAINING, "thick_slabs": p})
        assert bool(calls) is expect
        info = json.loads((out / "run.json").read_text())
        assert info["options"]["thick_slabs"]["p"] == p
        if expect:
            assert len(calls) == 4 * TINY_TRAINING["max_steps_per_epoch"]  # every item fetched
            assert any(" --thick-slabs 1" in c for c in _recreate(None, info, 1))
