import numpy as np
import pytest
import torch

from recorder.dissect.floor import above_floor, group_size, sample_floor
from recorder.dissect.quantile import TopValues

SPECIAL = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}


def maps_with(rng, shape, kind):
    x = rng.normal(size=shape)
    if kind == "ties":
        x = rng.integers(-2, 3, size=shape).astype(np.float64)
    elif kind == "relu":
        x = np.maximum(x - 1.0, 0)
    elif kind in SPECIAL:  # a few special values in unit 1 (NaN) or in every unit (+-inf)
        x -= 10  # all negative: a stray zero in a buffer would show
        for unit in [1] if kind == "nan" else range(shape[1]):
            flat = x[:, unit].reshape(-1)
            flat[[0, *rng.choice(flat.size, size=2, replace=False)]] = SPECIAL[kind]  # one in image 0
            x[:, unit] = flat.reshape(x[:, unit].shape)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def slow_above(maps: torch.Tensor, floor: torch.Tensor):
    """Unit by unit, the values not <= floor, NaN as -inf, sorted descending; NaN counts."""
    kept, nans = [], []
    for unit in range(maps.shape[1]):
        x = maps[:, unit].reshape(-1).numpy()
        x = x[~(x <= floor[unit].item())]
        nans.append(int(np.isnan(x).sum()))
        kept.append(np.sort(np.where(np.isnan(x), -np.inf, x))[::-1])
    return kept, nans


@pytest.mark.parametrize("map_size", [(7, 7), (8, 8), (16, 16), (5, 3), (13, 17), (1, 1)])
@pytest.mark.parametrize("kind", ["normal", "ties", "relu", "nan", "inf", "-inf"])
@pytest.mark.parametrize("by_rows", [False, True])  # groups of positions, or rows by their given maxima
def test_above_floor_equals_a_filter_unit_by_unit(map_size, kind, by_rows):
    rng = np.random.default_rng(sum(map_size))
    maps = maps_with(rng, (6, 4, *map_size), kind)
    per_unit = maps.transpose(0, 1).reshape(4, -1)
    floor = torch.stack([  # (K,) a high quantile, a tie value, nothing kept, everything kept
        per_unit[0].nan_to_num(nan=0).quantile(0.9), per_unit[1].nan_to_num(nan=0).median(),
        torch.tensor(float("inf")), torch.tensor(float("-inf"))])
    kept, counts, nans = above_floor(maps, floor, maps.amax(3) if by_rows else None)
    expected, expected_nans = slow_above(maps, floor)
    assert nans.tolist() == expected_nans
    assert counts.tolist() == [len(e) for e in expected]
    assert kept.shape[1] == max(len(e) for e in expected)
    for unit, values in enumerate(expected):
        row = kept[unit].sort(descending=True).values.numpy()
        np.testing.assert_array_equal(row[:len(values)], values)
        assert np.all(row[len(values):] == -np.inf)  # padding


def test_group_size_divides_the_map():
    assert [group_size(h * w, w) for h, w in [(64, 64), (7, 7), (14, 14), (5, 3), (13, 17), (61, 67)]] == \
        [64, 49, 49, 3, 17, 61]


def test_sample_floor_is_usually_a_valid_floor():
    rng = np.random.default_rng(0)
    maps = maps_with(rng, (64, 8, 16, 16), "normal")
    need = 1000
    guess = sample_floor(maps, need)
    above = (maps > guess[:, None, None]).sum((0, 2, 3))
    assert (above >= need).all() and (above < 2 * need).all()  # a floor that also filters
    assert torch.isinf(sample_floor(maps[:1, :, :2, :2], need)).all()  # too few values: -inf


def numpy_thresholds(maps, q):
    x = maps.numpy()
    return np.array([np.quantile(x[:, k].ravel(), 1 - q) for k in range(x.shape[1])], dtype=np.float32)


@pytest.mark.parametrize("kind", ["normal", "ties", "relu", "nan", "inf", "-inf", "increasing"])
@pytest.mark.parametrize("batch", [1, 8, 64])
@pytest.mark.parametrize("q", [0.01, 0.05])  # m = 63 or 309: a first image (64 values) fills it or not
def test_top_values_with_floors_equal_numpy(kind, batch, q):
    rng = np.random.default_rng(1)
    if kind == "increasing":  # every batch above all earlier ones: the floor always moves
        maps = torch.from_numpy(np.sort(rng.normal(size=96 * 3 * 64)).astype(np.float32)).reshape(3, 96, 8, 8)
        maps = maps.transpose(0, 1).contiguous()
    else:
        maps = maps_with(rng, (96, 3, 8, 8), kind)
    top = TopValues(3, maps[:, 0].numel(), q)
    for start in range(0, maps.shape[0], batch):
        top.add(maps[start:start + batch])
    # numpy: NaN for the unit with a NaN, bit-equal elsewhere (also with +-inf values)
    np.testing.assert_array_equal(top.thresholds().numpy(), numpy_thresholds(maps, q))


@pytest.mark.parametrize("guess", ["max", "inf", "nan", "too high"])
def test_a_wrong_guess_is_caught_and_thresholds_stay_exact(monkeypatch, guess):
    rng = np.random.default_rng(2)
    maps = maps_with(rng, (40, 3, 8, 8), "ties")  # ties at every level
    maps = maps + torch.linspace(1, 0, 40)[:, None, None, None]  # the first batch holds the top
    wrong = {
        "max": lambda maps, need: maps.amax((0, 2, 3)),
        "inf": lambda maps, need: torch.full((maps.shape[1],), float("inf")),
        "nan": lambda maps, need: torch.full((maps.shape[1],), float("nan")),
        "too high": lambda maps, need: maps.transpose(0, 1).reshape(maps.shape[1], -1)
        .topk(need // 2, dim=1).values[:, -1],
    }[guess]
    calls = []

    def spy(maps, need):
        calls.append(need)
        return wrong(maps, need)

    monkeypatch.setattr("recorder.dissect.quantile.sample_floor", spy)
    top = TopValues(3, maps[:, 0].numel(), 0.02)
    for start in range(0, 40, 16):
        top.add(maps[start:start + 16])
    assert calls  # the guessed path ran
    np.testing.assert_array_equal(top.thresholds().numpy(), numpy_thresholds(maps, 0.02))


def test_sample_floor_holds_on_maps_with_a_hot_border():
    # the top row of every map is far above the rest (as padding can make it): a sample
    # reading the same positions of every map guesses from the wrong mix of rows
    rng = np.random.default_rng(3)
    maps = torch.from_numpy(rng.normal(size=(512, 4, 8, 8)).astype(np.float32))
    maps[:, :, 0, :] += 10
    need = 165
    guess = sample_floor(maps, need)
    above = (maps > guess[:, None, None]).sum((0, 2, 3))
    assert (above >= need).all() and (above < 8 * need).all()  # valid, and it filters
