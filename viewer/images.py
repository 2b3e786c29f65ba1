"""Top-k probe images with the thresholded activation mask overlaid, as PNG data URIs.

    uri = overlay_uri(thumb, act_map, threshold, size=96)   # thumb uint8 [H, W, 3]

The mask is Network Dissection's: the activation map upsampled bilinearly
(`align_corners=False`) to the image's resolution, then `> threshold`. Outside the
mask the image is dimmed; the mask's border is drawn in a bright outline. PNGs are
encoded here with zlib (no imaging library needed).

    uri = discrepancy_uri(thumb, pixels, size=96)   # occlusion: where hiding the image lowers the unit
    uri = heat_uri(rf_canvas, size=72)              # an empirical receptive field, dark to bright
"""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

__all__ = ["bilinear_matrix", "discrepancy_overlay", "discrepancy_uri", "encode_png", "heat_rgb", "heat_uri",
           "mask_overlay", "overlay_uri", "png_uri", "upsample", "upsample_mask"]

OUTLINE_RGB = (255, 214, 0)
DROP_RGB = (255, 60, 20)  # occluding here lowers the unit's activation
RISE_RGB = (40, 120, 255)  # occluding here raises it
NAN_RGB = (60, 60, 66)
# a dark-to-bright ramp (black, purple, red, orange, pale yellow) for receptive fields
HEAT = np.array([[0, 0, 4], [60, 15, 110], [150, 40, 110], [230, 90, 50], [252, 200, 40], [252, 255, 200]], float)
DIM = 0.3  # brightness outside the mask


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """float64 `[n_out, n_in]`: 1-D linear interpolation with `align_corners=False`."""
    scale = n_in / n_out
    src = np.maximum((np.arange(n_out) + 0.5) * scale - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    w_hi = src - lo
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1.0 - w_hi)
    np.add.at(m, (np.arange(n_out), hi), w_hi)
    return m


def upsample(act_map, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of `[h, w]` to `[height, width]` (`align_corners=False`)."""
    act_map = np.asarray(act_map, dtype=np.float64)
    h, w = act_map.shape
    return bilinear_matrix(h, height) @ act_map @ bilinear_matrix(w, width).T


def upsample_mask(act_map, threshold: float, height: int, width: int) -> np.ndarray:
    """bool `[height, width]`: upsampled activation `> threshold`."""
    return upsample(act_map, height, width) > threshold


def _nearest(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    rows = np.minimum((np.arange(size) * h) // size, h - 1)
    cols = np.minimum((np.arange(size) * w) // size, w - 1)
    return image[rows][:, cols]


def mask_overlay(thumb, mask) -> np.ndarray:
    """uint8 `[H, W, 3]`: `thumb` dimmed outside `mask`, with the mask's border outlined."""
    thumb = np.asarray(thumb, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    out = np.where(mask[..., None], thumb, thumb * DIM)
    padded = np.pad(mask, 1, mode="edge")
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    border = mask & ~inner
    out[border] = OUTLINE_RGB
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def encode_png(image) -> bytes:
    """PNG bytes of a uint8 `[H, W, 3]` RGB image."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3], got shape {image.shape}")
    h, w, _ = image.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), image.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def png_uri(image) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode("ascii")


def overlay_uri(thumb, act_map=None, threshold: float | None = None, size: int = 96) -> str:
    """Data URI of `thumb` scaled to `size` px, with the mask of `act_map > threshold` if given."""
    image = _nearest(np.asarray(thumb, dtype=np.uint8), size)
    if act_map is not None and threshold is not None and np.all(np.isfinite(act_map)) and np.isfinite(threshold):
        image = mask_overlay(image, upsample_mask(act_map, threshold, size, size))
    return png_uri(image)


def heat_rgb(values) -> np.ndarray:
    """uint8 `[..., 3]`: values in [0, 1] on the HEAT ramp (clipped); NaN -> NAN_RGB."""
    v = np.asarray(values, dtype=np.float64)
    x = np.clip(np.nan_to_num(v, nan=0.0), 0.0, 1.0) * (len(HEAT) - 1)
    lo = np.minimum(np.floor(x).astype(np.int64), len(HEAT) - 2)
    f = (x - lo)[..., None]
    rgb = HEAT[lo] * (1 - f) + HEAT[lo + 1] * f
    rgb[np.isnan(v)] = NAN_RGB
    return np.floor(rgb + 0.5).astype(np.uint8)


def heat_uri(canvas, size: int = 72) -> str:
    """Data URI of a 2-D map (e.g. an empirical RF) scaled by its maximum, nearest-upscaled to `size` px."""
    canvas = np.asarray(canvas, dtype=np.float64)
    top = np.nanmax(canvas) if np.isfinite(canvas).any() else np.nan
    scaled = canvas / top if np.isfinite(top) and top > 0 else np.full_like(canvas, np.nan)
    return png_uri(_nearest(heat_rgb(scaled), size))


def discrepancy_overlay(thumb, pixels) -> np.ndarray:
    """uint8 `[H, W, 3]`: the image grayed and dimmed, red where occluding lowers the unit's activation
    (`pixels` > 0), blue where it raises it, opacity proportional to |value| / max |value|."""
    thumb = np.asarray(thumb, dtype=np.float64)
    pixels = np.asarray(pixels, dtype=np.float64)
    gray = thumb.mean(axis=-1, keepdims=True) * 0.55 + 20
    top = np.nanmax(np.abs(pixels)) if np.isfinite(pixels).any() else 0.0
    if not top > 0:
        return np.clip(gray.repeat(3, axis=-1) + 0.5, 0, 255).astype(np.uint8)
    a = np.clip(np.nan_to_num(pixels, nan=0.0) / top, -1.0, 1.0)[..., None]
    color = np.where(a > 0, np.asarray(DROP_RGB, float), np.asarray(RISE_RGB, float))
    alpha = 0.85 * np.abs(a)
    return np.clip(gray * (1 - alpha) + color * alpha + 0.5, 0, 255).astype(np.uint8)


def discrepancy_uri(thumb, pixels, size: int = 96) -> str:
    """Data URI of `discrepancy_overlay` scaled to `size` px (`pixels` at the thumbnail's resolution)."""
    return png_uri(_nearest(discrepancy_overlay(thumb, pixels), size))
