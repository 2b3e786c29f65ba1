"""Occlusion: discrepancy maps, receptive fields and occlusion-pair trials.

    from recorder.occlusion import discrepancy, pixel_map
    D = discrepancy(model, "conv3", images, patch=8, stride=4, fill="mean", measure="mean")  # (N, K, gh, gw)
    pixels = pixel_map(D, images.shape[-2:], patch=8, stride=4)                            # (N, K, H, W)

Definitions: DESIGN.md "Occlusion" and "Occlusion-pair trial".
"""

from recorder.occlusion.discrepancy import TopkOcclusion, discrepancy, occlude_topk, occluded_responses
from recorder.occlusion.grid import FILLS, MEASURES, OcclusionGrid, grid_shape, pixel_map
from recorder.occlusion.pairs import OcclusionPair, occlusion_pair
from recorder.occlusion.receptive_field import ReceptiveField, empirical_rf, peak_cells, rf_size, theoretical_rf

__all__ = ["FILLS", "MEASURES", "OcclusionGrid", "OcclusionPair", "ReceptiveField", "TopkOcclusion", "discrepancy",
           "empirical_rf", "grid_shape", "occlude_topk", "occluded_responses", "occlusion_pair", "peak_cells",
           "pixel_map", "rf_size", "theoretical_rf"]
