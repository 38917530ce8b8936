import numpy as np
import pytest

from orbitseg.labeling import RESOLUTIONS, SuperpixelCache, pencil_click, superpixels, supervoxels
from orbitseg.synth.phantom import orbit_slice


@pytest.fixture(scope="module")
def slice_():
    return orbit_slice((256, 256), (0.9, 0.9), seed=3)


@pytest.mark.parametrize("n", RESOLUTIONS)
def test_slic_count_near_requested(slice_, n):
    img, _ = slice_
    spx = superpixels(img, n_segments=n, spacing=(0.9, 0.9))
    k = len(np.unique(spx))
    assert spx.dtype == np.int32 and spx.shape == img.shape and spx.min() == 0
    assert n / 2.5 <= k <= n * 2.5, k
    assert k == spx.max() + 1  # labels 0..K-1


def test_click_labels_exactly_one_superpixel(slice_):
    img, _ = slice_
    spx = superpixels(img, n_segments=500, spacing=(0.9, 0.9))
    mask = np.zeros(img.shape, np.uint8)
    out = pencil_click(mask, spx, (100, 120), 2)
    changed = out != mask
    assert np.array_equal(changed, spx == spx[100, 120])
    assert set(np.unique(out[changed])) == {2}
    assert not np.shares_memory(out, mask) and mask.max() == 0


def test_eraser_clears_active_label_only_and_protected_kept(slice_):
    img, _ = slice_
    spx = superpixels(img, n_segments=500, spacing=(0.9, 0.9))
    region = spx == spx[100, 120]
    mask = np.zeros(img.shape, np.uint8)
    mask[region] = 2
    rr, cc = np.nonzero(region)
    mask[rr[0], cc[0]] = 1  # a pixel of another label inside the superpixel
    prot = np.zeros(img.shape, bool)
    prot[rr[-1], cc[-1]] = True
    out = pencil_click(mask, spx, (100, 120), 2, eraser=True, protected=prot)
    assert out[rr[0], cc[0]] == 1
    assert out[rr[-1], cc[-1]] == 2
    assert (out[region] == 2).sum() == 1
    # protected pixel also survives a click of another label
    out2 = pencil_click(mask, spx, (100, 120), 3, protected=prot)
    assert out2[rr[-1], cc[-1]] == 2 and out2[rr[0], cc[0]] == 3


def test_cache_returns_same_object_and_is_bounded(slice_):
    img, _ = slice_
    cache = SuperpixelCache(maxsize=2)
    a = cache.get("scan", 0, 5, img, n_segments=100, spacing=(0.9, 0.9))
    b = cache.get("scan", 0, 5, n_segments=100)
    assert a is b and cache.hits == 1 and cache.misses == 1
    assert not a.flags.writeable
    cache.get("scan", 0, 6, img, n_segments=100, spacing=(0.9, 0.9))
    cache.get("scan", 0, 7, img, n_segments=100, spacing=(0.9, 0.9))
    assert len(cache) == 2 and SuperpixelCache.key("scan", 0, 5, 100) not in cache
    with pytest.raises(KeyError):
        cache.get("scan", 0, 5, n_segments=100)
    assert cache.invalidate("scan") == 2 and len(cache) == 0


def test_supervoxels_3d():
    rng = np.random.default_rng(0)
    vol = rng.normal(0, 10, (8, 40, 40)).astype(np.float32)
    vol[:, 10:30, 10:30] += 100
    sv = supervoxels(vol, n_segments=50, spacing=(2.0, 0.5, 0.5))
    assert sv.shape == vol.shape and sv.dtype == np.int32 and 5 <= len(np.unique(sv)) <= 150
    assert sv.min() == 0 and sv.max() + 1 == len(np.unique(sv))  # labels 0..K-1
    # supervoxels follow the block's faces: each lies (almost) wholly inside or outside it
    block = np.zeros(vol.shape, bool)
    block[:, 10:30, 10:30] = True
    inside = np.bincount(sv.ravel(), weights=block.ravel()) / np.bincount(sv.ravel())
    assert np.all((inside <= 0.1) | (inside >= 0.9)), inside
    # and reach across slices: 3-D, not a stack of 2-D maps
    assert any(len(np.unique(np.nonzero(sv == k)[0])) > 1 for k in range(sv.max() + 1))


def test_supervoxels_bad_inputs():
    vol = np.zeros((4, 10, 10), np.float32)
    with pytest.raises(ValueError, match="volume_hu"):
        supervoxels(vol[0], n_segments=10)
    with pytest.raises(ValueError, match="spacing"):
        supervoxels(vol, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="n_segments"):
        supervoxels(vol, n_segments=0)


def test_bad_inputs_name_the_argument(slice_):
    img, _ = slice_
    spx = superpixels(img, n_segments=100, spacing=(0.9, 0.9))
    m = np.zeros(img.shape, np.uint8)
    with pytest.raises(ValueError, match="mask shape"):
        pencil_click(np.zeros((3, 3), np.uint8), spx, (1, 1), 1)
    with pytest.raises(ValueError, match="label"):
        pencil_click(m, spx, (1, 1), 7)
    with pytest.raises(ValueError, match="rc"):
        pencil_click(m, spx, (1000, 1), 1)
    with pytest.raises(ValueError, match="image_hu_slice"):
        superpixels(img[None], n_segments=100)
    with pytest.raises(ValueError, match="spacing"):
        superpixels(img, spacing=(0.5, -1))
    with pytest.raises(ValueError, match="n_segments"):
        superpixels(img, n_segments=0)
    with pytest.raises(ValueError, match="mask"):
        pencil_click(np.full(img.shape, 9, np.uint8), spx, (1, 1), 1)


def test_superpixel_borders_mark_a_change_to_the_left_or_above():
    from orbitseg.labeling import superpixel_borders

    spx = np.array([[0, 0, 1],
                    [0, 0, 1],
                    [2, 2, 1]], np.int32)
    b = superpixel_borders(spx)
    assert b.dtype == np.uint8 and b.shape == spx.shape
    np.testing.assert_array_equal(b, [[0, 0, 1],
                                      [0, 0, 1],
                                      [1, 1, 1]])
    assert not superpixel_borders(np.zeros((4, 5), np.int32)).any()
    with pytest.raises(ValueError, match="2-D integer"):
        superpixel_borders(np.zeros((2, 4, 5), np.int32))


def test_superpixel_borders_of_a_slic_map(slice_):
    from orbitseg.labeling import superpixel_borders

    img, _ = slice_
    spx = superpixels(img, n_segments=500, spacing=(0.9, 0.9))
    b = superpixel_borders(spx)
    assert set(np.unique(b)) == {0, 1}
    # every pixel off the borders has its left and upper neighbour in the same superpixel
    inner = b[1:, 1:] == 0
    assert np.all(spx[1:, 1:][inner] == spx[1:, :-1][inner]) and np.all(spx[1:, 1:][inner] == spx[:-1, 1:][inner])
    # and every superpixel but the one at the top-left corner starts at a border pixel
    starts = {int(spx[y, x]) for y, x in np.argwhere(b == 1)}
    assert starts >= set(np.unique(spx).tolist()) - {int(spx[0, 0])}
