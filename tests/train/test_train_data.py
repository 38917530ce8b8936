"""Dataset over the preprocessed store, weighted sampling, soft-target losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from orbitseg.model.losses import dice_ce_loss, paper_dice_loss
from orbitseg.preprocess.fit import sequence_indices
from orbitseg.train.data import SliceSequences, epoch_indices, read_manifest, slice_weights, vois_of_cases


@pytest.fixture(scope="module")
def data(tiny_dataset):
    root = tiny_dataset
    manifest, pp = read_manifest(root)
    vois = vois_of_cases(root, manifest, sorted(manifest["cases"]))
    return SliceSequences(vois, pp.seq_len), pp


def test_items(data):
    ds, pp = data
    assert len(ds) == sum(v.n_slices for v in ds.vois)
    img = np.load(ds.vois[1].image)
    n = img.shape[0]
    for k in (0, 5, n - 1):
        x, y = ds[ds.vois[0].n_slices + k]
        assert x.shape == (pp.seq_len, 1, 32, 32) and x.dtype == torch.float32
        assert y.shape == (4, 32, 32) and y.dtype == torch.float32
        np.testing.assert_array_equal(x[:, 0].numpy(), img[sequence_indices(n, pp.seq_len)[k]].astype(np.float32))
        torch.testing.assert_close(y.sum(0), torch.ones(32, 32), atol=0.02, rtol=0)
        assert float(y.min()) >= 0


def test_sampler_weights_rare_structures(data):
    ds, _ = data
    pres = ds.presence()
    w = slice_weights(pres, muscle=1.0, nerve=2.0)
    assert pres[:, 2].any() and (~pres.any(1)).any()  # some nerve slices and some empty ones
    assert w[pres[:, 2]].min() > w[~pres.any(1)].max() == 1.0
    a = epoch_indices(w, 500, seed=0, epoch=3)
    assert a == epoch_indices(w, 500, seed=0, epoch=3) and a != epoch_indices(w, 500, seed=0, epoch=4)
    a = np.array(a)
    empty = ~pres.any(1)
    assert empty[a].any()  # empty slices are still drawn
    assert pres[a, 2].mean() > pres[:, 2].mean()  # nerve slices more often than their share
    shards = [epoch_indices(w, 500, 0, 3, rank=r, world_size=2) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == sorted(a.tolist())


def test_soft_losses_match_hard_losses_on_one_hot():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 16, 16, generator=g)
    labels = torch.randint(0, 4, (3, 16, 16), generator=g)
    onehot = torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(dice_ce_loss(logits, onehot), dice_ce_loss(logits, labels))
    torch.testing.assert_close(paper_dice_loss(logits, onehot), paper_dice_loss(logits, labels))
    soft = 0.5 * onehot + 0.5 * onehot.roll(1, dims=-1)
    assert torch.isfinite(dice_ce_loss(logits, soft)) and torch.isfinite(paper_dice_loss(logits, soft))
    # the cross-entropy part is PyTorch's, weighted or not
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(dice_ce_loss(logits, labels, dice_weight=0.0), ce(logits, labels))
    w = torch.tensor([0.2, 1.0, 2.0, 4.0])
    torch.testing.assert_close(dice_ce_loss(logits, labels, dice_weight=0.0, class_weights=w), ce(logits, labels, weight=w))
    # soft cross-entropy: mean over pixels of -sum_c g_c log p_c
    expected = -(soft * logits.log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(dice_ce_loss(logits, soft, dice_weight=0.0), expected)


def test_items_are_accounted_to_their_cases(data):
    """voi_counts / per_case name the case of every item fetched (what data_access.json records)."""
    ds, _ = data
    first, second = ds.vois[0], ds.vois[1]
    idx = [0, 1, first.n_slices - 1, first.n_slices, first.n_slices]  # 3 items of VOI 0, 2 of VOI 1
    counts = ds.voi_counts(idx)
    assert counts.tolist()[:2] == [3, 2] and counts.sum() == len(idx)
    expected: dict[str, int] = {}
    for v, n in ((first, 3), (second, 2)):
        expected[v.case] = expected.get(v.case, 0) + n
    assert ds.per_case(counts) == expected
    assert ds.cases() == sorted({v.case for v in ds.vois})


def test_thickness_weights_count_cases_by_anatomy_covered(data):
    """With ``slice_mm``, an item's weight is its structure weight times its slice thickness: a VOI of 5 mm
    slices is drawn per item four times as often as one of 1.25 mm, so both count by the millimetres they cover."""
    from dataclasses import replace

    ds, pp = data
    assert all(v.slice_mm is not None and v.slice_mm > 0 for v in ds.vois)  # read from the manifest
    thick = SliceSequences([replace(v, slice_mm=5.0 if i == 0 else 1.25) for i, v in enumerate(ds.vois)],
                           pp.seq_len)
    mm = thick.slice_mm()
    n0 = ds.vois[0].n_slices
    assert mm.shape == (len(thick),) and (mm[:n0] == 5.0).all() and (mm[n0:] == 1.25).all()
    pres = thick.presence()
    plain, weighted = slice_weights(pres), slice_weights(pres, slice_mm=mm)
    np.testing.assert_allclose(weighted, plain * mm)
    first = np.arange(len(thick)) < ds.vois[0].n_slices
    draw = np.array(epoch_indices(weighted, 4000, seed=0, epoch=0))
    share, expected = first[draw].mean(), weighted[first].sum() / weighted.sum()
    assert abs(share - expected) < 0.03 and share > 1.5 * first[np.array(epoch_indices(plain, 4000, 0, 0))].mean()
    with pytest.raises(ValueError, match="slice_mm"):
        slice_weights(pres, slice_mm=mm[:-1])
    with pytest.raises(ValueError, match="slice_mm"):
        slice_weights(pres, slice_mm=np.zeros_like(mm))
    # a manifest written before the spacing was recorded: named, not silently unweighted
    old = SliceSequences([replace(v, slice_mm=None) for v in ds.vois], pp.seq_len)
    with pytest.raises(Exception, match="slice spacing"):
        old.slice_mm()
