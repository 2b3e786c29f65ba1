"""viewer.images: Network Dissection masks (bilinear, align_corners=False) and PNG encoding."""

import base64
import struct
import zlib

import numpy as np
import pytest

from viewer import images


def decode_png(data: bytes) -> np.ndarray:
    """uint8 [H, W, 3] of an 8-bit RGB PNG without filters (what encode_png writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    w, h = size
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(h, w, 3)


def test_png_round_trip():
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(decode_png(images.encode_png(img)), img)
    uri = images.png_uri(img)
    assert uri.startswith("data:image/png;base64,")
    assert np.array_equal(decode_png(base64.b64decode(uri.split(",", 1)[1])), img)


def test_png_rejects_other_shapes():
    with pytest.raises(ValueError, match="uint8 \\[H, W, 3\\]"):
        images.encode_png(np.zeros((4, 4), np.uint8))


def test_bilinear_hand_computed():
    # 2 -> 4 with align_corners=False: sources -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped hi)
    up = images.upsample(np.array([[0.0, 4.0]]), 1, 4)
    assert up.tolist() == [[0.0, 1.0, 3.0, 4.0]]
    assert images.bilinear_matrix(3, 3).tolist() == np.eye(3).tolist()


def test_bilinear_matches_torch():
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(1).random((7, 5))
    ours = images.upsample(a, 32, 23)
    ref = torch.nn.functional.interpolate(torch.from_numpy(a)[None, None], size=(32, 23), mode="bilinear",
                                          align_corners=False)[0, 0].numpy()
    assert np.allclose(ours, ref, atol=1e-12)


def test_mask_is_upsampled_map_above_threshold():
    act = np.zeros((4, 4))
    act[1:3, 1:3] = 1.0
    mask = images.upsample_mask(act, 0.5, 16, 16)
    assert mask[8, 8] and not mask[0, 0] and not mask[15, 15]
    assert mask.sum() == (images.upsample(act, 16, 16) > 0.5).sum()


def test_overlay_dims_outside_and_outlines_the_mask():
    thumb = np.full((8, 8, 3), 200, np.uint8)
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    out = images.mask_overlay(thumb, mask)
    assert out[0, 0].tolist() == [60, 60, 60]                 # dimmed to 30 %
    assert out[2, 2].tolist() == list(images.OUTLINE_RGB)     # border of the mask
    assert out[3, 3].tolist() == [200, 200, 200]              # inside, untouched


def test_overlay_uri_scales_and_skips_missing_maps():
    thumb = np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    plain = decode_png(base64.b64decode(images.overlay_uri(thumb, None, None, size=48).split(",")[1]))
    assert plain.shape == (48, 48, 3) and np.array_equal(plain[::3, ::3], thumb)
    masked = decode_png(base64.b64decode(images.overlay_uri(thumb, np.ones((3, 3)), 2.0, size=48).split(",")[1]))
    assert (masked <= plain).all() and (masked < plain).any()  # nothing above threshold: all dimmed


def test_heat_ramp_ends_and_nan():
    rgb = images.heat_rgb(np.array([0.0, 1.0, np.nan, 2.0]))
    assert rgb[0].tolist() == images.HEAT[0].astype(int).tolist()
    assert rgb[1].tolist() == rgb[3].tolist() == images.HEAT[-1].astype(int).tolist()  # clipped
    assert rgb[2].tolist() == list(images.NAN_RGB)


def test_discrepancy_overlay_red_for_drops_blue_for_rises():
    thumb = np.full((4, 4, 3), 100, np.uint8)
    pixels = np.zeros((4, 4))
    pixels[0, 0], pixels[3, 3] = 2.0, -1.0
    out = images.discrepancy_overlay(thumb, pixels).astype(int)
    gray = 100 * 0.55 + 20
    assert out[1, 1].tolist() == [int(gray + 0.5)] * 3  # no change: the dimmed gray image
    assert out[0, 0, 0] > out[0, 0, 2] and out[3, 3, 2] > out[3, 3, 0]
    alpha = 0.85 * 0.5  # half the largest |value|
    assert out[3, 3].tolist() == [int(gray * (1 - alpha) + c * alpha + 0.5) for c in images.RISE_RGB]
