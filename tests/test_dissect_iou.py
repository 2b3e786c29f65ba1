import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recorder.dissect import IoUCounts, TopValues
from recorder.metrics import best_concepts, unique_detectors

# concepts (ids 1-based in seg): object 1-4, part 5-7, color 8-9, scene 10-11 (image-level)
CATEGORY = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
N_CATEGORIES = 4


def random_segs(rng, n, size):
    """(n, 5, H, W): object, two part layers, color, scene; some images lack categories."""
    height, width = size
    seg = np.zeros((n, 5, height, width), dtype=np.int64)
    for i in range(n):
        blobs = rng.integers(0, 5, size=(3, 4))  # coarse object layout, 0 = unlabeled
        seg[i, 0] = np.kron(blobs, np.ones((height // 3 + 1, width // 4 + 1), dtype=np.int64))[:height, :width]
        if i % 3 != 2:  # parts: two layers that overlap and sometimes repeat a label
            seg[i, 1] = np.where(rng.random(size) < 0.3, rng.integers(5, 8, size=size), 0)
            seg[i, 2] = np.where(rng.random(size) < 0.2, rng.integers(5, 8, size=size), 0)
        if i % 4 != 1:
            seg[i, 3] = np.where(rng.random(size) < 0.5, rng.integers(8, 10, size=size), 0)
        if i % 2 == 0:
            seg[i, 4] = 10 + (i // 2) % 2  # image-level scene label covers every pixel
    seg[-1] = 0  # an image without any label
    return seg


def upsample_one(map_hw: np.ndarray, size) -> np.ndarray:
    return F.interpolate(torch.from_numpy(map_hw)[None, None], size=size, mode="bilinear",
                         align_corners=False)[0, 0].numpy()


def brute_force(maps, thresholds, seg, category, n_categories):
    """Loop over images, units and concepts; one map upsampled at a time."""
    n, k = maps.shape[:2]
    p = len(category)
    size = seg.shape[2:]
    inter, active = np.zeros((k, p), np.int64), np.zeros((k, n_categories), np.int64)
    label = np.zeros(p, np.int64)
    for i in range(n):
        labelled = [(seg[i] == c + 1).any(0) for c in range(p)]  # L_c(x): a set of pixels
        carries = [any(labelled[c].any() for c in range(p) if category[c] == g) for g in range(n_categories)]
        for c in range(p):
            label[c] += labelled[c].sum()
        for unit in range(k):
            mask = upsample_one(maps[i, unit], size) > thresholds[unit]
            for g in range(n_categories):
                active[unit, g] += mask.sum() if carries[g] else 0
            for c in range(p):
                inter[unit, c] += (mask & labelled[c]).sum()
    union = active[:, category] + label[None] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    return inter, active, label, iou


def test_bilinear_is_align_corners_false():
    # hand-written bilinear (align_corners=False, edge-clamped) on a tiny map
    rng = np.random.default_rng(0)
    small = rng.normal(size=(3, 4)).astype(np.float32)
    height, width = 7, 10

    def source(out_size, in_size):
        x = np.maximum((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0)
        lo = np.minimum(np.floor(x).astype(int), in_size - 1)
        return lo, np.minimum(lo + 1, in_size - 1), x - lo

    y0, y1, wy = source(height, 3)
    x0, x1, wx = source(width, 4)
    rows = small[y0] * (1 - wy)[:, None] + small[y1] * wy[:, None]
    expected = rows[:, x0] * (1 - wx) + rows[:, x1] * wx
    np.testing.assert_allclose(upsample_one(small, (height, width)), expected, rtol=1e-5, atol=1e-6)


def test_iou_counts_equal_brute_force():
    rng = np.random.default_rng(1)
    n, k, size = 9, 5, (13, 17)
    maps = rng.normal(size=(n, k, 4, 5)).astype(np.float32)
    maps[:, 1] *= 0.01  # a quiet unit
    seg = random_segs(rng, n, size)
    top = TopValues(k, n * 20, q=0.1)
    top.add(torch.from_numpy(maps[:4]))
    top.add(torch.from_numpy(maps[4:]))
    thresholds = top.thresholds()
    expected_t = [np.quantile(maps[:, unit].ravel(), 0.9) for unit in range(k)]
    np.testing.assert_allclose(thresholds.numpy(), expected_t, rtol=1e-6)

    counts = IoUCounts(k, torch.from_numpy(CATEGORY), N_CATEGORIES)
    counts.add(torch.from_numpy(maps[:5]), thresholds, torch.from_numpy(seg[:5]))
    counts.add(torch.from_numpy(maps[5:]), thresholds, torch.from_numpy(seg[5:]))
    inter, active, label, iou = brute_force(maps, thresholds.numpy(), seg, CATEGORY, N_CATEGORIES)
    np.testing.assert_array_equal(counts.intersection.numpy(), inter)
    np.testing.assert_array_equal(counts.active.numpy(), active)
    np.testing.assert_array_equal(counts.label.numpy(), label)
    np.testing.assert_allclose(counts.iou().numpy(), iou, rtol=1e-6, atol=1e-7)
    carried = [sum((seg[i] == c + 1).any() for c in np.flatnonzero(CATEGORY == g)) > 0 for i in range(n)
               for g in range(N_CATEGORIES)]
    np.testing.assert_array_equal(counts.images_with_category.numpy(),
                                  np.array(carried).reshape(n, N_CATEGORIES).sum(0))
    assert inter.sum() > 0 and (counts.images_with_category.numpy() < n).all()


def test_maps_at_the_segmentation_size_equal_brute_force():
    # equal sizes: bilinear upsampling (align_corners=False) is the identity, taken as a shortcut
    rng = np.random.default_rng(2)
    n, k, size = 7, 4, (6, 6)
    maps = rng.normal(size=(n, k, *size)).astype(np.float32)
    seg = random_segs(rng, n, size)
    thresholds = torch.tensor([np.quantile(maps[:, unit].ravel(), 0.8) for unit in range(k)], dtype=torch.float32)
    counts = IoUCounts(k, torch.from_numpy(CATEGORY), N_CATEGORIES)
    counts.add(torch.from_numpy(maps), thresholds, torch.from_numpy(seg))
    inter, active, label, _ = brute_force(maps, thresholds.numpy(), seg, CATEGORY, N_CATEGORIES)
    np.testing.assert_array_equal(counts.intersection.numpy(), inter)
    np.testing.assert_array_equal(counts.active.numpy(), active)
    assert inter.sum() > 0


def dense_counts(maps, thresholds, seg, category, n_categories):
    """Every map upsampled, masks against one-hot labels: the shortcut's reference."""
    n, k = maps.shape[:2]
    p = len(category)
    size = seg.shape[2:]
    up = F.interpolate(maps.reshape(n * k, 1, *maps.shape[2:]), size=size, mode="bilinear",
                       align_corners=False).reshape(n, k, -1)
    masks = (up > thresholds[None, :, None]).to(torch.float64)  # (N, K, HW)
    onehot = (seg.reshape(n, seg.shape[1], 1, -1) == torch.arange(1, p + 1)[None, None, :, None]).any(1)
    inter = torch.einsum("nkx,npx->kp", masks, onehot.to(torch.float64))
    carries = torch.zeros(n, n_categories).index_add_(1, torch.as_tensor(category), onehot.any(-1).float()) > 0
    active = torch.einsum("nk,ng->kg", masks.sum(-1), carries.to(torch.float64))
    return inter.round().long(), active.round().long()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_crossing_maps_shortcut_drops_no_active_pixel(seed, dtype):
    rng = np.random.default_rng(seed)
    n, k = 6, 8
    maps = (rng.normal(size=(n, k, 3, 3)) * rng.choice([1e-3, 1.0, 1e4])).astype(dtype)
    maps[0, [0, 1, 2, 3, 5]] = 0.7  # constant maps; with T = 0.7, rounding lifts a few pixels above T
    maps[1, 2, 1, 1] = maps[1, 2].max() + 1.0  # a single peak
    maps[2, 3] = np.round(maps[2, 3])  # ties
    thresholds = maps.reshape(n, k, -1).max(-1)[rng.integers(0, n, size=k), np.arange(k)]  # exact maxima
    thresholds[:2] = np.nextafter(maps[:, :2].reshape(n, 2, -1).max(-1), -np.inf)[seed % n]  # just below
    thresholds[5] = 0.7
    seg = torch.from_numpy(random_segs(rng, n, (11, 14)))
    maps_t, thresholds_t = torch.from_numpy(maps), torch.from_numpy(thresholds.astype(np.float32))
    counts, given_rows = (IoUCounts(k, torch.from_numpy(CATEGORY), N_CATEGORIES) for _ in range(2))
    counts.add(maps_t, thresholds_t, seg)
    given_rows.add(maps_t, thresholds_t, seg, row_max=maps_t.amax(3))  # (B, K, h) known beforehand
    inter, active = dense_counts(maps_t, thresholds_t, seg, CATEGORY, N_CATEGORIES)
    assert active.sum() > 0
    for result in (counts, given_rows):
        assert torch.equal(result.intersection, inter)
        assert torch.equal(result.active, active)


@pytest.mark.parametrize("size", [(6, 6), (5, 9), (1, 7), (7, 1), (64, 64)])
def test_maps_at_the_segmentation_size_row_filter_equals_dense(size):
    # rows whose max is not above T are skipped: ties at T, NaN maps and images without labels
    rng = np.random.default_rng(sum(size))
    n, k = 5, 6
    maps = np.round(rng.normal(size=(n, k, *size)) * 2).astype(np.float32)  # ties everywhere
    maps[1, 2, 0, 0] = np.nan
    maps[3, 4] = np.nan
    thresholds = np.array([0.0, 1.0, 2.0, -1.0, 0.5, np.inf], dtype=np.float32)
    seg = torch.from_numpy(random_segs(rng, n, size))
    maps_t, thresholds_t = torch.from_numpy(maps), torch.from_numpy(thresholds)
    counts, given_rows = (IoUCounts(k, torch.from_numpy(CATEGORY), N_CATEGORIES) for _ in range(2))
    counts.add(maps_t, thresholds_t, seg)
    given_rows.add(maps_t, thresholds_t, seg, row_max=maps_t.amax(3))  # (B, K, h) known beforehand
    inter, active = dense_counts(maps_t, thresholds_t, seg, CATEGORY, N_CATEGORIES)
    assert active.sum() > 0
    for result in (counts, given_rows):
        assert torch.equal(result.intersection, inter)
        assert torch.equal(result.active, active)


def test_runs_in_chunks_of_images_equal_one_chunk(monkeypatch):
    rng = np.random.default_rng(7)
    n, k = 7, 3
    maps = torch.from_numpy(rng.normal(size=(n, k, 5, 4)).astype(np.float32))
    thresholds = torch.from_numpy(np.quantile(maps.numpy(), 0.9, axis=(0, 2, 3)).astype(np.float32))
    seg = torch.from_numpy(random_segs(rng, n, (17, 12)))
    whole = IoUCounts(k, torch.from_numpy(CATEGORY), N_CATEGORIES)
    whole.add(maps, thresholds, seg)
    monkeypatch.setattr("recorder.dissect.iou._CHUNK_VALUES", 2 * k * 5 * 4)  # two images per chunk
    chunked = IoUCounts(k, torch.from_numpy(CATEGORY), N_CATEGORIES)
    chunked.add(maps, thresholds, seg)
    inter, active = dense_counts(maps, thresholds, seg, CATEGORY, N_CATEGORIES)
    assert inter.sum() > 0
    for counts in (whole, chunked):
        assert torch.equal(counts.intersection, inter)
        assert torch.equal(counts.active, active)


@pytest.mark.parametrize("seed", range(4))
def test_runs_equal_interpolate_on_random_geometries(seed):
    # up- and downsampling, 1-pixel maps and segmentations, non-integer scales, ties
    rng = np.random.default_rng(10 + seed)
    category = torch.tensor([0, 0, 1, 1, 1])
    n_runs_maps = 0
    for trial in range(25):
        n, k = int(rng.integers(1, 4)), int(rng.integers(1, 5))
        h, w = (int(v) for v in rng.integers(1, 9, size=2))
        height, width = (int(v) for v in rng.integers(1, 40, size=2))
        x = rng.normal(size=(n, k, h, w)) * rng.choice([1e-3, 1.0, 1e3])
        if trial % 3 == 0:
            x = np.round(x)  # plateaus and thresholds equal to map values
        if trial % 5 == 1:  # NaN values: the cells they touch have no active pixel
            x.reshape(-1)[rng.choice(x.size, size=max(1, x.size // 8), replace=False)] = np.nan
        maps = torch.from_numpy(x.astype(np.float32))
        level = rng.uniform(0.5, 0.99)
        thresholds = torch.from_numpy(np.nanquantile(x, level, axis=(0, 2, 3)).astype(np.float32))
        seg = torch.from_numpy(rng.integers(0, 6, size=(n, 2, height, width)))
        runs, reference = IoUCounts(k, category, 2), IoUCounts(k, category, 2, method="interpolate")
        given_rows = IoUCounts(k, category, 2)
        runs.add(maps, thresholds, seg)
        reference.add(maps, thresholds, seg)
        given_rows.add(maps, thresholds, seg, row_max=maps.amax(3))  # (B, K, h) known beforehand
        for key, value in reference.state_dict().items():
            assert torch.equal(runs.state_dict()[key], value), (trial, key)
            assert torch.equal(given_rows.state_dict()[key], value), (trial, key)
        if trial % 5 == 1:  # maps with NaN: their other pixels count, as in a dense upsampling
            inter, active = dense_counts(maps, thresholds, seg, category, 2)
            assert torch.equal(runs.intersection, inter) and torch.equal(runs.active, active), trial
        n_runs_maps += int((maps.flatten(2).amax(2) > thresholds).sum())
    assert n_runs_maps > 40


def test_runs_rarely_fall_back_to_interpolate(monkeypatch):
    rng = np.random.default_rng(5)
    maps = torch.from_numpy(rng.normal(size=(16, 64, 7, 7)).astype(np.float32))
    thresholds = torch.from_numpy(np.quantile(maps.numpy(), 0.99, axis=(0, 2, 3)).astype(np.float32))
    seg = torch.from_numpy(rng.integers(0, 6, size=(16, 1, 56, 56)))
    sent = []
    original = IoUCounts._count_interpolated

    def spy(self, maps, thresholds, seg, carried, images, units):
        sent.append(images.numel())
        return original(self, maps, thresholds, seg, carried, images, units)

    monkeypatch.setattr(IoUCounts, "_count_interpolated", spy)
    counts = IoUCounts(64, torch.tensor([0, 0, 1, 1, 1]), 2)
    counts.add(maps, thresholds, seg)
    crossing = int((maps.flatten(2).amax(2) > thresholds).sum())
    assert crossing > 100 and sum(sent) < 0.05 * crossing


def test_detector_unit_and_noise_units():
    rng = np.random.default_rng(2)
    n, cell, side = 24, 8, 7  # 7x7 maps, 56x56 segmentations
    blocks = np.zeros((n, side, side), dtype=np.int64)  # concept 1 on 3x3 blocks of cells
    for i in range(n):
        r, c = rng.integers(0, side - 2, size=2)
        blocks[i, r:r + 3, c:c + 3] = 1
    seg = np.zeros((n, 2, side * cell, side * cell), dtype=np.int64)
    seg[:, 0] = np.kron(blocks, np.ones((cell, cell), dtype=np.int64))
    seg[:, 0] += 2 * (seg[:, 0] == 0) * (rng.random((n, 1, 1)) < 0.5)  # concept 2: the background, sometimes
    seg[:, 1] = rng.integers(3, 5, size=(n, 1, 1))  # concepts 3, 4: image-level
    detector = blocks.astype(np.float32)  # concept 1's mask at layer resolution
    noise = rng.normal(size=(n, 3, side, side)).astype(np.float32)
    maps = torch.from_numpy(np.concatenate([detector[:, None], noise], axis=1))
    # T = 0.5 for the detector: q puts the quantile halfway between its 0s and 1s
    ones, total = int(blocks.sum()), blocks.size
    q_detector = (ones - 0.5) / (total - 1)
    t_detector = TopValues(1, total, q_detector)
    t_detector.add(maps[:, :1])
    t_noise = TopValues(3, total, 0.005)
    t_noise.add(maps[:, 1:])
    thresholds = torch.cat([t_detector.thresholds(), t_noise.thresholds()])
    assert abs(float(thresholds[0]) - 0.5) < 1e-5
    counts = IoUCounts(4, torch.tensor([0, 0, 1, 1]), 2)
    counts.add(maps, thresholds, torch.from_numpy(seg))
    best = best_concepts(counts.iou().numpy(), [0, 0, 1, 1])
    assert best["concept"][0] == 0 and best["iou"][0] > 0.9
    assert (best["iou"][1:] < 0.04).all() and not best["is_detector"][1:].any()


def test_streaming_splits_and_two_ranks_equal_one_pass():
    rng = np.random.default_rng(3)
    n, k = 10, 4
    maps = torch.from_numpy(rng.normal(size=(n, k, 3, 4)).astype(np.float32))
    seg = torch.from_numpy(random_segs(rng, n, (9, 12)))
    thresholds = torch.from_numpy(np.quantile(maps.numpy(), 0.8, axis=(0, 2, 3)).astype(np.float32))
    whole = IoUCounts(k, CATEGORY, N_CATEGORIES)
    whole.add(maps, thresholds, seg)
    split = IoUCounts(k, CATEGORY, N_CATEGORIES)
    for part in (slice(0, 1), slice(1, 7), slice(7, 10)):
        split.add(maps[part], thresholds, seg[part])
    ranks = [IoUCounts(k, CATEGORY, N_CATEGORIES) for _ in range(2)]
    ranks[0].add(maps[:4], thresholds, seg[:4])
    ranks[1].add(maps[4:], thresholds, seg[4:])
    merged = {key: ranks[0].state_dict()[key] + ranks[1].state_dict()[key] for key in whole.state_dict()}
    for key, value in whole.state_dict().items():
        assert torch.equal(split.state_dict()[key], value), key
        assert torch.equal(merged[key], value), key
    assert whole.intersection.sum() > 0


def test_iou_counts_validation():
    counts = IoUCounts(3, torch.tensor([0, 1]), 2)
    maps, thresholds = torch.zeros(2, 3, 4, 4), torch.zeros(3)
    with pytest.raises(ValueError, match=r"seg ids must be in \[0, 2\]"):
        counts.add(maps, thresholds, torch.full((2, 1, 8, 8), 3))
    with pytest.raises(ValueError, match=r"maps must have shape \(B, 3, h, w\)"):
        counts.add(maps[:, :2], thresholds, torch.zeros(2, 1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"thresholds must have shape \(3,\)"):
        counts.add(maps, thresholds[:2], torch.zeros(2, 1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"concept_category values must be in \[0, 2\)"):
        IoUCounts(3, torch.tensor([0, 2]), 2)
    with pytest.raises(ValueError, match=r"method 'fast' is not one of \('runs', 'interpolate'\)"):
        IoUCounts(3, torch.tensor([0, 1]), 2, method="fast")
    with pytest.raises(ValueError, match="seg must hold integer concept ids"):
        counts.add(maps, thresholds, torch.zeros(2, 1, 8, 8))
    assert counts.iou().abs().sum() == 0  # nothing counted: IoU 0, not NaN


def test_best_concepts_and_unique_detectors_by_hand():
    # two checkpoints x 3 units x 4 concepts; categories: object (0, 1), color (2, 3)
    iou = np.array([[[0.50, 0.10, 0.00, 0.00],    # unit 0: object 0
                     [0.05, 0.30, 0.00, 0.01],    # unit 1: object 1
                     [0.00, 0.00, 0.02, 0.03]],   # unit 2: best 0.03, no detector
                    [[0.50, 0.10, 0.00, 0.00],    # unit 0: object 0
                     [0.45, 0.00, 0.00, 0.00],    # unit 1: object 0 again (not unique)
                     [0.00, 0.00, np.nan, 0.06]]])  # unit 2: color 3; NaN ignored
    category = [0, 0, 1, 1]
    best = best_concepts(iou, category)
    np.testing.assert_array_equal(best["concept"], [[0, 1, -1], [0, 0, 3]])
    np.testing.assert_array_equal(best["category"], [[0, 0, -1], [0, 0, 1]])
    np.testing.assert_allclose(best["iou"], [[0.5, 0.3, 0.03], [0.5, 0.45, 0.06]])
    np.testing.assert_array_equal(best["is_detector"], [[True, True, False], [True, True, True]])
    unique = unique_detectors(iou, category, ["object", "color"])
    np.testing.assert_array_equal(unique["object"], [2, 1])
    np.testing.assert_array_equal(unique["color"], [0, 1])
    strict = unique_detectors(iou, category, ["object", "color"], min_iou=0.4)
    np.testing.assert_array_equal(strict["object"], [1, 1])
    nothing = best_concepts(np.full((2, 3), np.nan), [0, 1, 1])
    assert np.isnan(nothing["iou"]).all() and (nothing["concept"] == -1).all()
    with pytest.raises(ValueError, match="iou must have shape"):
        best_concepts(iou, [0, 1])
