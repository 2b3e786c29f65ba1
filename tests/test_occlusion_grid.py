"""The occluder grid: corners, cut squares, fills and pixel maps against plain slicing."""

from __future__ import annotations

import math

import pytest
import torch

from recorder.occlusion import OcclusionGrid, grid_shape, pixel_map


@pytest.mark.parametrize(("size", "patch", "stride"), [(14, 4, 3), (11, 4, 3), (64, 8, 4), (10, 10, 1), (9, 2, 5)])
def test_grid_shape_counts_corners(size, patch, stride):
    corners = list(range(0, size - patch + stride, stride))  # 0, s, 2s, ... < H - p + s
    assert grid_shape(size, size, patch, stride) == (len(corners), len(corners))
    assert len(corners) == math.ceil((size - patch) / stride) + 1


def test_masks_equal_slices_cut_by_the_border():
    grid = OcclusionGrid.of(14, 11, patch=4, stride=3)  # (5, 4): last row and column squares are cut
    assert grid.shape == (5, 4)
    masks = grid.masks(torch.arange(grid.cells))  # (20, 14, 11)
    for cell in range(grid.cells):
        r, c = cell // 4 * 3, cell % 4 * 3
        want = torch.zeros(14, 11, dtype=torch.bool)
        want[r:r + 4, c:c + 4] = True
        assert torch.equal(masks[cell], want), cell
    assert masks[-1].sum() == 2 * 2  # rows 12..13, columns 9..10
    assert masks.any(0).all()  # every pixel covered


def test_mean_fill_uses_the_cut_square_only():
    x = torch.arange(2 * 14 * 11, dtype=torch.float32).reshape(1, 2, 14, 11)
    grid = OcclusionGrid.of(14, 11, patch=4, stride=3)
    out = grid.occlude(x, torch.tensor([0]), torch.tensor([19]), "mean")[0]
    want = x[0].clone()
    want[:, 12:, 9:] = x[0, :, 12:, 9:].mean((1, 2), keepdim=True)
    assert torch.equal(out, want)


def test_pixel_map_averages_overlaps():
    D = torch.arange(20, dtype=torch.float64).reshape(1, 1, 5, 4)
    got = pixel_map(D, (14, 11), 4, 3)[0, 0]
    total, count = torch.zeros(14, 11, dtype=torch.float64), torch.zeros(14, 11, dtype=torch.float64)
    for i in range(5):
        for j in range(4):
            total[i * 3:i * 3 + 4, j * 3:j * 3 + 4] += D[0, 0, i, j]
            count[i * 3:i * 3 + 4, j * 3:j * 3 + 4] += 1
    torch.testing.assert_close(got, total / count)


@pytest.mark.parametrize(("args", "match"), [
    ((14, 11, 12, 3), "patch.*12.*14x11"),
    ((14, 11, 0, 3), "patch.*0"),
    ((14, 11, 4, 0), "stride.*0"),
    ((14, 11, 4, -1), "stride.*-1"),
    ((14, 11, 4, 1.5), "stride.*1.5"),
])
def test_bad_grid(args, match):
    with pytest.raises(ValueError, match=match):
        grid_shape(*args)


def test_pixel_map_wrong_grid():
    with pytest.raises(ValueError, match=r"\(4, 4\) cells.*\(5, 4\) grid"):
        pixel_map(torch.zeros(1, 1, 4, 4), (14, 11), 4, 3)
