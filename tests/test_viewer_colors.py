"""viewer.colors: class -> hue, selectivity -> saturation, against hand-computed values."""

import colorsys

import numpy as np
import pytest

from viewer import colors


@pytest.mark.parametrize("h, s, v, expected", [
    (0.0, 1.0, 0.9, (230, 0, 0)),        # 0.9 * 255 = 229.5 -> 230 (half up)
    (1 / 3, 1.0, 0.9, (0, 230, 0)),
    (2 / 3, 1.0, 0.9, (0, 0, 230)),
    (0.25, 0.5, 0.9, (172, 230, 115)),   # i=1, f=0.5: (q, v, p) = (0.675, 0.9, 0.45)
    (0.5, 0.0, 0.9, (230, 230, 230)),    # no saturation: gray at the value
    (0.1, 0.75, 0.8, (204, 143, 51)),    # i=0, f=0.6: (v, t, p) = (0.8, 0.56, 0.2)
])
def test_hsv_to_rgb_hand_computed(h, s, v, expected):
    assert tuple(colors.hsv_to_rgb(h, s, v).tolist()) == expected


def test_hsv_to_rgb_matches_colorsys_everywhere():
    rng = np.random.default_rng(0)
    h, s, v = rng.random((3, 500))
    ours = colors.hsv_to_rgb(h, s, v).astype(int)
    ref = np.array([colorsys.hsv_to_rgb(*x) for x in zip(h, s, v)]) * 255
    assert np.abs(ours - ref).max() <= 0.5 + 1e-9


def test_class_hues_are_evenly_spaced():
    assert colors.class_hue(np.arange(4), 4).tolist() == [0.0, 0.25, 0.5, 0.75]
    assert colors.class_hex(3) == ["#e60000", "#00e600", "#0000e6"]


def test_tile_rgb_hue_is_class_and_saturation_is_selectivity():
    # C = 4: class 1 -> hue 0.25; selectivity 0.5 -> saturation 0.5; value 0.9
    rgb = colors.tile_rgb([1], [0.5], [False], n_classes=4)
    assert rgb.tolist() == [[172, 230, 115]]
    # class 0 of 3 fully selective -> pure red at value 0.9; selectivity 0 -> gray
    assert colors.tile_rgb([0, 2], [1.0, 0.0], [False, False], 3).tolist() == [[230, 0, 0], [230, 230, 230]]


def test_saturation_is_clipped_and_quantized_to_hundredths():
    codes = colors.saturation_codes([-0.3, 0.0, 0.004, 0.005, 0.5, 1.0, 1.7, np.nan], [False] * 8)
    assert codes.tolist() == [0, 0, 0, 1, 50, 100, 100, colors.SAT_NAN]
    assert colors.tile_rgb([0], [1.7], [False], 3).tolist() == colors.tile_rgb([0], [1.0], [False], 3).tolist()


def test_dead_units_dark_nan_and_classless_units_gray():
    rgb = colors.tile_rgb(dominant=[0, 1, -1, 2], selectivity=[0.0, np.nan, 0.9, 0.9],
                          dead=[True, False, False, False], n_classes=3)
    assert rgb[0].tolist() == list(colors.DEAD_RGB)
    assert rgb[1].tolist() == list(colors.NAN_RGB)
    assert rgb[2].tolist() == list(colors.NAN_RGB)  # no dominant class
    assert rgb[3].tolist() == colors.hsv_to_rgb(2 / 3, 0.9, colors.VALUE).tolist()
    assert sum(colors.DEAD_RGB) < sum(colors.NAN_RGB) < 3 * 200  # dead is darker than unknown


def test_palette_is_the_hsv_of_every_class_and_saturation_code():
    pal = colors.palette(5)
    assert pal.shape == (5, colors.SAT_LEVELS + 1, 3) and pal.dtype == np.uint8
    assert pal[3, 40].tolist() == colors.hsv_to_rgb(3 / 5, 0.4, colors.VALUE).tolist()
    assert (pal[:, 0] == pal[0, 0]).all()  # saturation 0 is the same gray for every class


@pytest.mark.parametrize("n_classes, dtype, none", [(10, np.uint8, 255), (254, np.uint8, 255),
                                                    (255, np.uint16, 65535), (1000, np.uint16, 65535)])
def test_dominant_codes_dtype_fits_the_classes(n_classes, dtype, none):
    codes = colors.dominant_codes([-1, 0, n_classes - 1], n_classes)
    assert codes.dtype == dtype
    assert codes.tolist() == [none, 0, n_classes - 1]
    assert colors.no_class_code(n_classes) == none


def test_tile_rgb_vectorized_over_checkpoints_and_units():
    rng = np.random.default_rng(1)
    dom = rng.integers(-1, 7, (6, 50))
    sel = rng.random((6, 50))
    dead = rng.random((6, 50)) < 0.1
    rgb = colors.tile_rgb(dom, sel, dead, 7)
    assert rgb.shape == (6, 50, 3)
    t, k = np.argwhere((dom >= 0) & ~dead)[0]
    assert rgb[t, k].tolist() == colors.hsv_to_rgb(dom[t, k] / 7, round(sel[t, k] * 100) / 100, 0.9).tolist()
