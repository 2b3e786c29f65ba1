"""Network Dissection (Bau et al. 2017) as additive accumulators.

    from recorder.dissect import ConceptLabels, IoUCounts, TopValues

`quantile`: exact streaming thresholds (`TopValues`) and a mergeable tail sketch;
`floor`: the per-unit floors that keep most values out of the threshold sorts;
`labels`: a batch's concept labels, prepared once for every layer (`ConceptLabels`);
`iou`: IoU counts of thresholded maps against concept masks (`IoUCounts`);
`layer`: one layer's dissection during the probe pass. Readouts of stored IoU
(detectors, unique detectors) are numpy-only and live in `recorder.metrics`.
"""

from recorder.dissect.iou import IoUCounts
from recorder.dissect.labels import ConceptLabels
from recorder.dissect.quantile import TailSketch, TopValues, threshold_accumulator

__all__ = ["ConceptLabels", "IoUCounts", "TailSketch", "TopValues", "threshold_accumulator"]
