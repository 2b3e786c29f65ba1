"""recorder.metrics against brute-force loops, hand-computed cases and error messages."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from recorder import metrics

EPS = 1e-7


# ---------------------------------------------------------------- brute force
def bf_class_means(sums, counts):
    C, K = sums.shape
    out = np.empty((C, K))
    for c in range(C):
        for k in range(K):
            out[c, k] = sums[c, k] / counts[c] if counts[c] > 0 else math.nan
    return out


def bf_valid(mu, k):
    """Positive parts of the non-NaN class means of unit k, as a Python list."""
    return [max(float(mu[c, k]), 0.0) for c in range(mu.shape[0]) if not math.isnan(mu[c, k])]


def bf_dead(mu):
    out = []
    for k in range(mu.shape[1]):
        vals = [float(mu[c, k]) for c in range(mu.shape[0]) if not math.isnan(mu[c, k])]
        out.append(not vals or max(vals) <= EPS)
    return np.array(out)


def bf_si(mu):
    out = []
    for k in range(mu.shape[1]):
        vals = bf_valid(mu, k)
        if len(vals) < 2:
            out.append(math.nan)
            continue
        top = max(vals)
        if top <= EPS:
            out.append(0.0)
            continue
        rest = list(vals)
        rest.remove(top)  # exactly one occurrence of the max
        mu_rest = sum(rest) / len(rest)
        out.append((top - mu_rest) / (top + mu_rest + EPS))
    return np.array(out)


def bf_entropy(mu):
    out = []
    for k in range(mu.shape[1]):
        vals = bf_valid(mu, k)
        if len(vals) < 2:
            out.append(math.nan)
            continue
        if max(vals) <= EPS:
            out.append(0.0)
            continue
        total = sum(vals)
        h = 0.0
        for v in vals:
            p = v / total
            if p > 0:
                h -= p * math.log(p)
        out.append(1.0 - h / math.log(len(vals)))
    return np.array(out)


def bf_dominant(mu):
    out = []
    for k in range(mu.shape[1]):
        best, best_c = -math.inf, -1
        for c in range(mu.shape[0]):
            if not math.isnan(mu[c, k]) and mu[c, k] > best:
                best, best_c = mu[c, k], c
        out.append(best_c)
    return np.array(out)


def bf_precision(responses, labels, dom, n=None, dead=None):
    out = []
    for k in range(responses.shape[1]):
        if dom[k] < 0:
            out.append(math.nan)
            continue
        if dead is not None and dead[k]:
            out.append(0.0)
            continue
        imgs = [i for i in range(len(labels)) if labels[i] >= 0]
        # sort by response descending, then by index ascending
        imgs.sort(key=lambda i: (-responses[i, k], i))
        nk = n if n is not None else sum(1 for i in imgs if labels[i] == dom[k])
        nk = min(nk, len(imgs))
        if nk == 0:
            out.append(math.nan)
            continue
        out.append(sum(1 for i in imgs[:nk] if labels[i] == dom[k]) / nk)
    return np.array(out)


def random_mu(rng, shape):
    """Class means with negative values, NaN classes, dead and all-NaN units."""
    mu = rng.normal(size=shape)
    mu[rng.random(shape) < 0.15] = np.nan
    K = shape[-1]
    mu[..., 0] = np.where(np.isnan(mu[..., 0]), np.nan, -np.abs(mu[..., 0]))  # dead
    mu[..., 1] = np.nan  # no valid class
    mu[..., 2] = 0.0  # dead, all zero
    mu[..., 3] = np.nan
    mu[..., 0, 3] = 1.0  # a single valid class
    mu[..., 4] = 0.5  # uniform
    mu[..., 5] = 0.0
    mu[..., 1, 5] = 2.0  # one-hot
    mu[..., 6] = 0.0
    mu[..., :2, 6] = 3.0  # tied max
    assert K > 7
    return mu


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------- class_means
def test_class_means_matches_brute_force(rng):
    sums = rng.normal(size=(6, 9))
    counts = rng.integers(0, 4, size=6)
    counts[1] = 0
    got = metrics.class_means(sums, counts)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, bf_class_means(sums, counts), equal_nan=True)
    assert np.isnan(got[1]).all()


def test_class_means_leading_axes_and_shape_error(rng):
    sums = rng.normal(size=(3, 4, 5)).astype(np.float32)
    counts = rng.integers(0, 3, size=(3, 4))
    got = metrics.class_means(sums, counts)
    for t in range(3):
        np.testing.assert_array_equal(got[t], metrics.class_means(sums[t], counts[t]))
    with pytest.raises(ValueError, match=r"counts \[\.\.\., C\]; got sums \(3, 4, 5\)"):
        metrics.class_means(sums, counts[:, :3])


# ---------------------------------------------------------------- against loops
@pytest.mark.parametrize(
    "fn, bf",
    [
        (metrics.is_dead, bf_dead),
        (metrics.si, bf_si),
        (metrics.entropy, bf_entropy),
        (metrics.dominant, bf_dominant),
    ],
    ids=["is_dead", "si", "entropy", "dominant"],
)
def test_unit_functions_match_brute_force(rng, fn, bf):
    for _ in range(5):
        mu = random_mu(rng, (7, 40))
        got = fn(mu)
        assert got.shape == (40,)
        np.testing.assert_allclose(got, bf(mu), rtol=1e-12, atol=1e-12, equal_nan=True)
    # leading axes: [T, C, K] equals a loop over t
    mu = random_mu(rng, (4, 7, 40))
    got = fn(mu)
    assert got.shape == (4, 40)
    for t in range(4):
        np.testing.assert_array_equal(got[t], fn(mu[t]))
    # and two leading axes
    mu2 = random_mu(rng, (2, 3, 5, 12))
    got2 = fn(mu2)
    for a in range(2):
        for b in range(3):
            np.testing.assert_array_equal(got2[a, b], fn(mu2[a, b]))


@pytest.mark.parametrize("fn", [metrics.si, metrics.entropy])
def test_selectivity_in_unit_interval_and_special_units(rng, fn):
    mu = random_mu(rng, (5, 30))
    s = fn(mu)
    finite = s[~np.isnan(s)]
    assert ((finite >= 0) & (finite <= 1)).all()
    assert s[0] == 0.0 and s[2] == 0.0  # dead units
    assert np.isnan(s[1]) and np.isnan(s[3])  # fewer than 2 valid classes
    assert s[4] == pytest.approx(0.0, abs=1e-12)  # uniform
    assert s[5] == pytest.approx(1.0, abs=1e-6)  # one-hot


# ---------------------------------------------------------------- by hand
def test_hand_computed_cases():
    one_hot = np.array([[1.0], [0.0], [0.0]])
    assert metrics.si(one_hot)[0] == pytest.approx(1.0 / (1.0 + EPS))
    assert metrics.entropy(one_hot)[0] == pytest.approx(1.0)
    uniform = np.full((4, 1), 2.0)
    assert metrics.si(uniform)[0] == pytest.approx(0.0, abs=1e-12)
    assert metrics.entropy(uniform)[0] == pytest.approx(0.0, abs=1e-12)
    # mu = [3, 1, NaN, -2]: mu_plus over valid = [3, 1, 0]; rest = (1 + 0) / 2
    mu = np.array([[3.0], [1.0], [np.nan], [-2.0]])
    assert metrics.si(mu)[0] == pytest.approx((3 - 0.5) / (3 + 0.5 + EPS))
    p = np.array([0.75, 0.25])
    h = -(p * np.log(p)).sum()
    assert metrics.entropy(mu)[0] == pytest.approx(1 - h / np.log(3))
    assert metrics.dominant(mu)[0] == 0
    # tied max: only one occurrence is left out, so rest = (2 + 0) / 2
    tied = np.array([[2.0], [2.0], [0.0]])
    assert metrics.si(tied)[0] == pytest.approx((2 - 1) / (2 + 1 + EPS))
    assert metrics.dominant(tied)[0] == 0  # first of the tied classes


def test_dead_and_dominant_edge_cases():
    mu = np.array([[np.nan, 1e-8, -1.0, 0.2], [np.nan, np.nan, -3.0, np.nan]])
    np.testing.assert_array_equal(metrics.is_dead(mu), [True, True, True, False])
    np.testing.assert_array_equal(metrics.dominant(mu), [-1, 0, 0, 0])
    assert metrics.dominant(mu).dtype == np.int64
    empty = np.zeros((3, 0, 4))  # no classes at all
    np.testing.assert_array_equal(metrics.dominant(empty), np.full((3, 4), -1))
    assert metrics.is_dead(empty).all()
    assert np.isnan(metrics.si(empty)).all()


# ---------------------------------------------------------------- precision
def test_precision_matches_brute_force(rng):
    n_img, n_units, n_cls = 60, 25, 4
    # rounded responses so that ties happen and the tie-break matters
    responses = np.round(rng.normal(size=(n_img, n_units)), 1)
    labels = rng.integers(-1, n_cls, size=n_img)
    dom = rng.integers(-1, n_cls, size=n_units)
    dead = rng.random(n_units) < 0.2
    for n in (None, 1, 5, 1000):
        got = metrics.precision(responses, labels, dom, n=n)
        assert got.dtype == np.float64 and got.shape == (n_units,)
        np.testing.assert_allclose(got, bf_precision(responses, labels, dom, n), equal_nan=True)
    got = metrics.precision(responses, labels, dom, dead=dead)
    np.testing.assert_allclose(got, bf_precision(responses, labels, dom, None, dead), equal_nan=True)


def test_precision_by_hand():
    # balanced probe, 2 images per class
    labels = np.array([0, 0, 1, 1, 2, 2])
    responses = np.array(
        [
            [5.0, 1.0, 0.0],
            [4.0, 1.0, 0.0],
            [3.0, 1.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 1.0, 0.0],
        ]
    )
    dom = np.array([0, 1, -1])
    got = metrics.precision(responses, labels, dom)
    # unit 0: top-2 = images 0, 1 -> both class 0; unit 1: all tied, the stable
    # sort keeps images 0, 1 (class 0) first -> 0 of 2 are class 1; unit 2: NaN
    np.testing.assert_array_equal(got[:2], [1.0, 0.0])
    assert np.isnan(got[2])
    assert metrics.precision(responses, labels, dom, n=3)[0] == pytest.approx(2 / 3)
    dead = np.array([True, False, True])
    got = metrics.precision(responses, labels, dom, dead=dead)
    assert got[0] == 0.0 and np.isnan(got[2])


def test_precision_ignores_unlabeled_images():
    labels = np.array([-1, 0, 1, -1])
    responses = np.array([[9.0], [1.0], [2.0], [8.0]])
    # the two unlabeled images rank first but are left out; top-1 of labeled = image 2
    assert metrics.precision(responses, labels, np.array([1]))[0] == 1.0
    assert metrics.precision(responses, labels, np.array([0]))[0] == 0.0
    # a dominant class with no probe images has no top-n: NaN
    assert np.isnan(metrics.precision(responses, labels, np.array([2]))[0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(responses=np.zeros(3)), r"responses must be \[N, K\], got shape \(3,\)"),
        (dict(labels=np.zeros(4, int)), r"labels must be \[N\] = \[3\], got shape \(4,\)"),
        (dict(dominant=np.zeros(3, int)), r"dominant must be \[K\] = \[2\], got shape \(3,\)"),
        (dict(n=0), r"n must be a positive int or None, got 0"),
        (dict(n=2.5), r"n must be a positive int or None, got 2.5"),
        (dict(dead=np.zeros(5, bool)), r"dead must be \[K\] = \[2\], got shape \(5,\)"),
    ],
)
def test_precision_errors(kwargs, match):
    args = dict(responses=np.zeros((3, 2)), labels=np.zeros(3, int), dominant=np.zeros(2, int))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        metrics.precision(**args)


# ---------------------------------------------------------------- dispatch
def test_selectivity_dispatch(rng):
    mu = random_mu(rng, (3, 5, 10))
    np.testing.assert_array_equal(metrics.selectivity(mu, "si"), metrics.si(mu))
    np.testing.assert_array_equal(metrics.selectivity(mu), metrics.si(mu))
    np.testing.assert_array_equal(metrics.selectivity(mu, "entropy"), metrics.entropy(mu))


def test_selectivity_errors():
    mu = np.ones((3, 2))
    with pytest.raises(ValueError, match=r"metric 'foo' is not one of 'si', 'entropy', 'precision'"):
        metrics.selectivity(mu, "foo")
    with pytest.raises(ValueError, match=r"'precision' needs per-image responses.*stored `precision` array"):
        metrics.selectivity(mu, "precision")
    with pytest.raises(ValueError, match=r"mu must have shape \[\.\.\., C, K\], got shape \(3,\)"):
        metrics.si(np.ones(3))


def test_metrics_does_not_import_torch():
    code = "import sys, recorder.metrics; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def signed_si_brute_force(responses, labels, n_classes):
    """DESIGN.md "Signed layers" by hand for one unit: class means of `responses` (one
    value per image) shifted by the unit's smallest response, then Morcos' SI."""
    floor = min(responses)
    means = []
    for c in range(n_classes):
        values = [r for r, label in zip(responses, labels) if label == c]
        means.append(sum(values) / len(values) - floor)
    if all(abs(r - floor) <= 1e-7 + 1e-5 * abs(floor) for r in responses):
        return 0.0  # the same response on every image: dead
    top = max(means)
    rest = (sum(means) - top) / (n_classes - 1)
    return (top - rest) / (top + rest + 1e-7)


def test_signed_rule_matches_a_per_unit_computation(rng):
    n, n_classes, n_units = 40, 4, 6
    labels = np.arange(n) % n_classes
    responses = rng.normal(size=(n, n_units)) - 1.5  # mostly negative, as before a ReLU
    responses[:, 3] = -0.25  # constant: dead, though every mean is negative
    responses[:, 4] = rng.normal(size=n) * 1e-3 - 5.0  # tiny spread far below 0: not selective
    sums = np.stack([responses[labels == c].sum(0) for c in range(n_classes)])
    counts = np.bincount(labels, minlength=n_classes)
    mu, r_min = metrics.class_means(sums, counts), responses.min(0)
    got = metrics.si(mu, r_min, signed=True)
    for k in range(n_units):
        assert got[k] == pytest.approx(signed_si_brute_force(responses[:, k], labels, n_classes), abs=1e-9)
    assert got[3] == 0.0 and metrics.is_dead(mu, r_min)[3] and not metrics.is_dead(mu, r_min)[4]
    assert got[4] < 0.6  # shifting by the smallest class mean would make it look selective
    assert metrics.selectivity(mu, "si", r_min, signed=True) == pytest.approx(got)
    # Morcos' max(mu, 0) calls every all-negative unit dead; the signed rule does not
    assert (metrics.si(mu)[mu.max(0) < 0] == 0).all() and (got[[0, 1, 2, 5]] > 0).all()


def test_signed_entropy_uses_the_shifted_means(rng):
    mu = rng.normal(size=(2, 5, 3)) - 2.0  # [T, C, K]
    r_min = mu.min(-2) - 0.5
    shifted = mu - r_min[:, None, :]
    p = shifted / shifted.sum(-2, keepdims=True)
    expected = 1 + (p * np.log(p)).sum(-2) / np.log(5)
    np.testing.assert_allclose(metrics.entropy(mu, r_min, signed=True), expected, rtol=1e-12)


def test_dead_only_when_constant_with_a_floor():
    mu = np.array([[0.5, -1.0, 0.0], [0.5, -1.0, 1e-9]])  # [C=2, K=3]
    r_min = np.array([0.5, -1.0, 0.0])
    assert metrics.is_dead(mu, r_min).tolist() == [True, True, True]
    assert metrics.is_dead(mu + np.array([[0, 0, 0], [0.1, 0.1, 0.1]]), r_min).tolist() == [False, False, False]
    with pytest.raises(ValueError, match=r"r_min must have shape \[..., K\] = \[3\]"):
        metrics.is_dead(mu, r_min[:2])
    with pytest.raises(ValueError, match="signed=True needs r_min"):
        metrics.si(mu, signed=True)


# ---------------------------------------------------------------- mask prediction score (ImRoU)
def _harth_imrou(neuron_masks, label_masks, r=0.75):
    """Harth 2022's normalized ImRoU_r written out per image, as in the paper's scorer."""
    n_area = l_area = inter = rand_inter = max_rand = 0.0
    cells = neuron_masks.shape[1] * neuron_masks.shape[2]
    for n_mask, l_mask in zip(neuron_masks, label_masks):
        n_image, l_image = int(n_mask.sum()), int(l_mask.sum())
        n_area += n_image
        l_area += l_image
        inter += int(np.logical_and(n_mask, l_mask).sum())
        rand_inter += n_image * l_image
        max_rand += n_image * n_image
    score = (inter - r / cells * rand_inter) / (n_area + l_area - inter + 1e-10)
    return score / ((n_area - r / cells * max_rand) / n_area)


@pytest.mark.parametrize("r", [0.75, 0.0, 1.0])
def test_imrou_equals_harths_formula(rng, r):
    for density in (0.05, 0.3, 0.7):
        actual = rng.random((40, 7, 7)) < density
        for predicted in (rng.random((40, 7, 7)) < density, actual.copy(), ~actual, np.zeros_like(actual),
                          actual | (rng.random((40, 7, 7)) < 0.1)):
            assert metrics.imrou(predicted, actual, r) == pytest.approx(_harth_imrou(actual, predicted, r),
                                                                        rel=1e-12, abs=1e-12)


def test_imrou_by_hand():
    actual = np.zeros((1, 2, 2), bool)
    actual[0, 0, 0] = True            # |N| = 1, I = 4
    predicted = np.zeros((1, 2, 2), bool)
    predicted[0, 0] = True            # |L| = 2, |N & L| = 1, union 2
    # score (1 - 0.75/4 * 2) / 2 = 0.3125; max (1 - 0.75/4) / 1 = 0.8125
    assert metrics.imrou(predicted, actual) == pytest.approx(0.3125 / 0.8125)
    assert metrics.imrou(actual, actual) == pytest.approx(1.0)
    assert metrics.mask_iou(predicted, actual) == pytest.approx(0.5)
    assert np.isnan(metrics.imrou(actual, np.zeros_like(actual)))
    assert np.isnan(metrics.mask_iou(np.zeros_like(actual), np.zeros_like(actual)))


def test_mask_iou_matches_a_loop(rng):
    a, b = rng.random((10, 5, 6)) < 0.3, rng.random((10, 5, 6)) < 0.4
    inter = sum(int((x & y).sum()) for x, y in zip(a, b))
    union = sum(int((x | y).sum()) for x, y in zip(a, b))
    assert metrics.mask_iou(a, b) == pytest.approx(inter / union)


@pytest.mark.parametrize("predicted, actual, r, match", [
    (np.zeros((2, 3, 3)), np.zeros((2, 3, 3), bool), 0.75, "predicted must be a boolean array"),
    (np.zeros((2, 3, 3), bool), np.zeros((2, 3), bool), 0.75, "actual must be a boolean array"),
    (np.zeros((2, 3, 3), bool), np.zeros((2, 3, 4), bool), 0.75, "the same shape"),
    (np.zeros((2, 3, 3), bool), np.zeros((2, 3, 3), bool), 1.5, "r given an invalid value"),
])
def test_imrou_errors(predicted, actual, r, match):
    with pytest.raises(ValueError, match=match):
        metrics.imrou(predicted, actual, r)
