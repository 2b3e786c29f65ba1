"""Network Dissection (Bau et al. 2017) as additive accumulators.

    from recorder.dissect import IoUCounts, TopValues

`quantile`: exact streaming thresholds (`TopValues`) and a mergeable tail sketch;
`iou`: IoU counts of thresholded maps against concept masks (`IoUCounts`);
`layer`: one layer's dissection during the probe pass. Readouts of stored IoU
(detectors, unique detectors) are numpy-only and live in `recorder.metrics`.
"""

from recorder.dissect.iou import IoUCounts
from recorder.dissect.quantile import TailSketch, TopValues, threshold_accumulator

__all__ = ["IoUCounts", "TailSketch", "TopValues", "threshold_accumulator"]
