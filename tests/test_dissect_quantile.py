import numpy as np
import pytest
import torch

from recorder.dissect.quantile import (
    TailSketch,
    TopValues,
    exact_quantile_thresholds,
    threshold_accumulator,
    top_count,
)


def random_maps(rng, n, k=3, h=3, w=4, kind="normal"):
    if kind == "normal":
        x = rng.normal(size=(n, k, h, w))
    elif kind == "cauchy":  # heavy-tailed
        x = rng.standard_cauchy(size=(n, k, h, w))
    elif kind == "lognormal":
        x = rng.lognormal(sigma=3.0, size=(n, k, h, w))
    elif kind == "ties":  # few distinct values, many exact ties
        x = rng.integers(-3, 4, size=(n, k, h, w)).astype(np.float64)
    elif kind == "relu":  # mostly exact zeros, like post-ReLU maps
        x = np.maximum(rng.normal(size=(n, k, h, w)) - 1.5, 0)
    elif kind == "increasing":  # adversarial order: every batch above all earlier ones
        x = np.sort(rng.normal(size=n * k * h * w)).reshape(k, n, h, w).transpose(1, 0, 2, 3)
    else:
        raise ValueError(kind)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def numpy_thresholds(maps, q):
    x = maps.numpy()
    return np.array([np.quantile(x[:, k].ravel(), 1 - q) for k in range(x.shape[1])], dtype=np.float32)


def add_in_splits(acc, maps, rng, most=5):
    i = 0
    while i < maps.shape[0]:
        j = i + int(rng.integers(1, most + 1))
        acc.add(maps[i:j])
        i = j


@pytest.mark.parametrize("q", [0.0, 0.005, 0.05, 0.3, 0.999])
@pytest.mark.parametrize("kind", ["normal", "cauchy", "ties", "relu"])
def test_top_values_equal_numpy_quantile(q, kind):
    rng = np.random.default_rng(0)
    maps = random_maps(rng, 37, kind=kind)
    expected = numpy_thresholds(maps, q)
    top = TopValues(3, maps[:, 0].numel(), q)
    add_in_splits(top, maps, rng)
    assert top.m == top_count(maps[:, 0].numel(), q) == min(int(q * (maps[:, 0].numel() - 1)) + 2, 444)
    # same float arithmetic as numpy's linear method: equal to the last bit
    np.testing.assert_array_equal(top.thresholds().numpy(), expected)
    np.testing.assert_array_equal(exact_quantile_thresholds(maps, q).numpy(), expected)


def test_any_split_equals_one_add():
    rng = np.random.default_rng(1)
    maps = random_maps(rng, 50, kind="cauchy")
    whole = TopValues(3, maps[:, 0].numel(), 0.05)
    whole.add(maps)
    for most in (1, 7, 20):  # small batches take the merge path, large ones topk
        split = TopValues(3, maps[:, 0].numel(), 0.05)
        add_in_splits(split, maps, rng, most=most)
        assert torch.equal(split.seen, whole.seen)
        # the same multiset of held values (each buffer is unsorted)
        assert torch.equal(split.values.sort(-1).values, whole.values.sort(-1).values)
        assert torch.equal(split.thresholds(), whole.thresholds())


def test_two_ranks_merge_by_summation():
    rng = np.random.default_rng(2)
    maps = random_maps(rng, 40, kind="normal")
    n_values = maps[:, 0].numel()
    whole = TopValues(3, n_values, 0.02)
    whole.add(maps)
    ranks = [TopValues(3, n_values, 0.02, world_size=2, rank=r) for r in range(2)]
    ranks[0].add(maps[:13])  # uneven shards, several batches
    ranks[1].add(maps[13:30])
    ranks[1].add(maps[30:])
    assert ranks[0].values[1].abs().sum() == 0  # other rank's slot left zero
    merged = {k: ranks[0].state_dict()[k] + ranks[1].state_dict()[k] for k in ranks[0].state_dict()}
    ranks[0].load_state_dict(merged)
    assert torch.equal(ranks[0].thresholds(), whole.thresholds())


def test_partial_stream_empty_and_errors():
    rng = np.random.default_rng(3)
    maps = random_maps(rng, 20)
    top = TopValues(3, 10 * maps[:, 0].numel(), 0.01)  # sized for more than it sees
    assert torch.isnan(top.thresholds()).all()
    top.add(maps)
    np.testing.assert_array_equal(top.thresholds().numpy(), numpy_thresholds(maps, 0.01))
    small = TopValues(3, 24, 0.2)
    small.add(maps[:10])
    with pytest.raises(ValueError, match="saw 120 values per unit, more than the 24"):
        small.thresholds()
    with pytest.raises(ValueError, match=r"maps must have shape \(B, 3, h, w\), got \(4, 2, 3, 4\)"):
        top.add(maps[:4, :2])
    with pytest.raises(ValueError, match="q must be in"):
        TopValues(3, 10, 1.5)
    with pytest.raises(ValueError, match="rank must be in"):
        TopValues(3, 10, 0.1, world_size=2, rank=2)
    top.reset()
    assert torch.isnan(top.thresholds()).all()


def test_threshold_accumulator_is_exact_within_budget():
    exact = threshold_accumulator(512, 10_000 * 49, 0.005)
    assert isinstance(exact, TopValues) and exact.m == 2451
    sketch = threshold_accumulator(4, 100_000, 0.01, budget_bytes=4 * 4 * 600)
    assert isinstance(sketch, TailSketch) and (sketch.c, sketch.p) == (300, 300)
    ranks = threshold_accumulator(4, 100_000, 0.01, budget_bytes=4 * 4 * 600, world_size=2)
    assert ranks.c + ranks.p == 300
    with pytest.raises(ValueError, match="capacity 20 per unit is too small"):
        threshold_accumulator(4, 100_000, 0.01, budget_bytes=4 * 4 * 20)


def rank_error(values: np.ndarray, threshold: float, q: float) -> int:
    """How many positions `threshold` lies outside the exact threshold's neighbours."""
    n = values.size
    virtual = (n - 1) * (1 - q)
    d = n - 1 - int(np.floor(virtual))  # descending position of the lower order statistic
    above, at_least = int((values > threshold).sum()), int((values >= threshold).sum())
    return max(0, above - d, d - at_least)


@pytest.mark.parametrize("kind", ["normal", "cauchy", "lognormal", "ties", "relu", "increasing"])
@pytest.mark.parametrize("capacity", [400, 1000])
def test_sketch_rank_error_within_stated_bound(kind, capacity):
    rng = np.random.default_rng(4)
    q, k = 0.01, 2
    maps = random_maps(rng, 2000, k=k, h=7, w=7, kind=kind)  # 98 000 values per unit
    sketch = TailSketch(k, maps[:, 0].numel(), q, capacity)
    add_in_splits(sketch, maps, rng, most=6)
    assert sketch.compactions[0] > 100 and sketch.s > 1  # the approximation is exercised
    bound = sketch.rank_error_bound()
    assert 0 < bound <= sketch.a_priori_bound()
    estimate = sketch.thresholds().numpy()
    for unit in range(k):
        values = maps[:, unit].numpy().ravel()
        assert rank_error(values, float(estimate[unit]), q) <= bound
    if kind == "normal":  # in practice far inside the worst-case bound
        exact = numpy_thresholds(maps, q)
        np.testing.assert_allclose(estimate, exact, rtol=0.02)


def test_sketch_ranks_merge_and_exact_without_compaction():
    rng = np.random.default_rng(5)
    maps = random_maps(rng, 600, k=2, h=7, w=7, kind="cauchy")
    n_values, q = maps[:, 0].numel(), 0.02
    ranks = [TailSketch(2, n_values, q, 800, world_size=2, rank=r) for r in range(2)]
    add_in_splits(ranks[0], maps[:250], rng)
    add_in_splits(ranks[1], maps[250:], rng)
    merged = {key: ranks[0].state_dict()[key] + ranks[1].state_dict()[key] for key in ranks[0].state_dict()}
    ranks[0].load_state_dict(merged)
    bound = ranks[0].rank_error_bound()
    assert bound == (ranks[0].s // 2) * int(merged["compactions"].sum()) > 0
    for unit, threshold in enumerate(ranks[0].thresholds().tolist()):
        assert rank_error(maps[:, unit].numpy().ravel(), threshold, q) <= bound
    few = TailSketch(2, n_values, q, 800)
    few.add(maps[:5])  # 245 values fit the pending buffer: nothing approximated yet
    assert few.rank_error_bound() == 0
    np.testing.assert_array_equal(few.thresholds().numpy(), numpy_thresholds(maps[:5], q))
