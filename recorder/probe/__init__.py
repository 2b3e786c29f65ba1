"""Probe sets: the fixed images (with class labels and concept masks) a checkpoint is probed on.

    from recorder.probe import ProbeSet
    probe = ProbeSet.from_h5("probe.h5")     # or from_dataset(ds, classes), from_broden(root)

`probeset` holds `ProbeSet`; `h5`, `broden` and `dataset` (any dataset of
`(image, label)` pairs) are readers that return plain arrays, from which `ProbeSet`
builds itself.
"""

from recorder.probe.probeset import ProbeSet, normalize_concepts

__all__ = ["ProbeSet", "normalize_concepts"]
