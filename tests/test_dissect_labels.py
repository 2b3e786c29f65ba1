import numpy as np
import pytest
import torch

from recorder.dissect import ConceptLabels, IoUCounts
from test_dissect_iou import CATEGORY, N_CATEGORIES, random_segs


def test_concept_labels_equal_sets_of_pixels_by_hand():
    rng = np.random.default_rng(0)
    seg = random_segs(rng, 6, (9, 7))
    labels = ConceptLabels(torch.from_numpy(seg), torch.from_numpy(CATEGORY), N_CATEGORIES)
    for i in range(6):
        for c in range(len(CATEGORY)):
            pixels = (seg[i] == c + 1).any(0)  # L_c(x): a set of pixels, however many layers say c
            assert labels.per_image[i, c] == pixels.sum()
            assert ((labels.seg[i] == c + 1).sum(0) == pixels).all()  # each pixel once
        for g in range(N_CATEGORIES):
            assert labels.carried[i, g] == any((seg[i] == c + 1).any() for c in np.flatnonzero(CATEGORY == g))
    assert labels.seg.dtype == torch.int32 and labels.carried[-1].sum() == 0  # the unlabelled image


def test_shared_labels_count_the_same_as_seg_for_every_layer():
    rng = np.random.default_rng(1)
    seg = torch.from_numpy(random_segs(rng, 5, (12, 12)))
    category = torch.from_numpy(CATEGORY)
    labels = ConceptLabels(seg, category, N_CATEGORIES)
    for size in [(3, 3), (12, 12), (5, 7)]:  # run lengths, same size, odd scale
        maps = torch.from_numpy(rng.normal(size=(5, 4, *size)).astype(np.float32))
        thresholds = torch.from_numpy(np.quantile(maps.numpy(), 0.8, axis=(0, 2, 3)).astype(np.float32))
        shared, own = IoUCounts(4, category, N_CATEGORIES), IoUCounts(4, category, N_CATEGORIES)
        shared.add(maps, thresholds, labels)
        own.add(maps, thresholds, seg)
        assert own.intersection.sum() > 0
        for key, value in own.state_dict().items():
            assert torch.equal(shared.state_dict()[key], value), (size, key)


def test_labels_for_other_concepts_are_refused():
    seg = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    labels = ConceptLabels(seg, torch.tensor([0, 1]), 2)
    counts = IoUCounts(3, torch.tensor([0, 0, 1]), 2)
    with pytest.raises(ValueError, match="ConceptLabels were prepared for other concepts than these counts' 3"):
        counts.add(torch.zeros(2, 3, 2, 2), torch.zeros(3), labels)
    with pytest.raises(ValueError, match=r"seg must have shape \(B, L, H, W\), got \(4, 4\)"):
        ConceptLabels(seg[0, 0], torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match=r"seg ids must be in \[0, 2\]"):
        ConceptLabels(seg + 3, torch.tensor([0, 1]), 2)


def test_packed_ids_equal_the_seg_and_count_the_same_as_ids_side_by_side():
    rng = np.random.default_rng(2)
    seg = torch.from_numpy(random_segs(rng, 5, (12, 12)))
    category = torch.from_numpy(CATEGORY)
    labels = ConceptLabels(seg, category, N_CATEGORIES)
    assert labels.packed is not None and labels.bits == 4  # ids 0..11
    every = torch.arange(5 * 12 * 12)
    n_layers = seg.shape[1]
    assert torch.equal(labels.ids(every), labels.seg.permute(1, 0, 2, 3).reshape(n_layers, -1).to(torch.int64))
    side_by_side = ConceptLabels(seg, category, N_CATEGORIES)
    side_by_side.packed = None  # as when the ids of a pixel need more than 62 bits
    side_by_side.pixels = side_by_side.seg.permute(0, 2, 3, 1).reshape(-1, n_layers)
    assert torch.equal(side_by_side.ids(every), labels.ids(every))
    maps = torch.from_numpy(rng.normal(size=(5, 4, 4, 4)).astype(np.float32))
    thresholds = torch.from_numpy(np.quantile(maps.numpy(), 0.8, axis=(0, 2, 3)).astype(np.float32))
    packed_counts, row_counts = IoUCounts(4, category, N_CATEGORIES), IoUCounts(4, category, N_CATEGORIES)
    packed_counts.add(maps, thresholds, labels)
    row_counts.add(maps, thresholds, side_by_side)
    assert row_counts.intersection.sum() > 0
    assert torch.equal(packed_counts.intersection, row_counts.intersection)


def test_ids_too_wide_to_pack_are_read_side_by_side():
    seg = torch.randint(0, 1200, (2, 6, 4, 4))  # 6 layers of ids up to 1199: 11 bits each, 66 in all
    labels = ConceptLabels(seg, torch.zeros(1199, dtype=torch.int64), 1)
    assert labels.packed is None and labels.pixels.shape == (32, 6)
    assert torch.equal(labels.ids(torch.arange(32)), labels.seg.permute(1, 0, 2, 3).reshape(6, -1).to(torch.int64))
