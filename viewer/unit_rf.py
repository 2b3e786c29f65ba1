"""The occlusion part of a unit's detail: its top images' discrepancy maps beside their dissection
masks, its empirical receptive field against the theoretical one, and how that changed.

    section = occlusion_section(run, "conv4", unit=3, t=7)   # None when the layer has no occlusion

Plain values out (data URIs, Plotly dicts, text), laid out by `viewer.layout.occlusion_block`.
"""

from __future__ import annotations

import numpy as np

from recorder.store import Run

from viewer import images, readout, receptive, rf_figures

__all__ = ["occlusion_section"]

THUMB = 96  # px of a top image
STRIP_PX = 64  # px of an RF image in the strip


def occlusion_section(run: Run, layer: str, unit: int, t: int) -> dict | None:
    """`{"note", "cards": [{"mask", "occ", "caption"}], "figures": [rf, rf size], "strip": [{"src", "step"}]}`
    for the latest occluded checkpoint at or before row t; `{"note"}` alone when there is none yet;
    None when the layer has no occlusion for this unit."""
    occ = receptive.unit_occlusion(run, layer, unit, t)
    if occ is None:
        return None
    if "first" in occ:
        return {"note": f"occlusion: none yet at this checkpoint; the first is at step {occ['first']:,}"}
    settings = run.layer(layer).occlusion_settings or {}
    thumbs = run.thumbs
    cards = []
    if thumbs is not None and occ["index"] is not None:
        gh, gw = occ["maps"].shape[-2:]
        tops = {im["rank"]: im for im in readout.top_images(run, run.layer(layer), unit, occ["t"])}
        for rank, image in enumerate(occ["index"].tolist()):
            if image < 0 or image >= len(thumbs) or not np.isfinite(occ["maps"][rank]).any():
                continue
            thumb = thumbs[image]
            h, w = thumb.shape[:2]
            side_h = receptive.input_side(gh, occ["patch"], occ["stride"], h)
            side_w = receptive.input_side(gw, occ["patch"], occ["stride"], w)
            pixels = receptive.pixel_map(occ["maps"][rank], side_h, side_w, occ["patch"], occ["stride"])
            if (side_h, side_w) != (h, w):  # the model saw a larger image than the thumbnail
                pixels = images.upsample(np.nan_to_num(pixels), h, w)
            im = tops.get(rank, {})
            drop = float(np.nanmax(occ["maps"][rank]))
            cards.append({
                "mask": images.overlay_uri(thumb, im.get("map"), im.get("threshold"), size=THUMB),
                "occ": images.discrepancy_uri(thumb, pixels, size=THUMB),
                "caption": f"#{rank + 1} · img {image} · largest drop {drop:.3g}"})
    theoretical = occ["theoretical"]
    figs = [rf_figures.unit_rf_figure(occ["rf"], occ["stride"], occ["rf_size"], theoretical, occ["step"]),
            rf_figures.unit_rf_size_figure(occ["steps"], occ["sizes"], theoretical, x=occ["step"])]
    strip = [{"src": images.heat_uri(s["rf"], STRIP_PX), "step": s["step"], "current": s["step"] == occ["step"]}
             for s in occ["strip"]]
    how = ", ".join(f"{k} {settings[k]}" for k in ("patch", "stride", "fill", "measure") if k in settings)
    note = (f"occlusion at step {occ['step']:,} ({how}; every {settings.get('every', '?')} checkpoints): "
            f"each top image's dissection mask (left) and where occluding it lowers the unit's activation "
            f"(right: red, blue where it rises)")
    return {"note": note, "cards": cards, "figures": figs, "strip": strip}
