"""tuneline's recorder: watch every unit of chosen layers become tuned during training.

    from recorder import Recorder, ProbeSet, RunStore
    probe = ProbeSet.from_h5("probe.h5")
    with Recorder(model, layers=["layer3"], probe=probe, store="runs/demo/base") as rec:
        ...
        rec.step(step, labels=y, logits=logits)
    run = RunStore.open("runs/demo/base")

`recorder.store` and `recorder.metrics` need numpy and zarr only, so reading a run
does not import torch: `Recorder` and `ProbeSet` are imported on first use.
"""

from recorder.schema import Concept
from recorder.store import RunStore

__all__ = ["Concept", "ProbeSet", "Recorder", "RunStore"]


def __getattr__(name: str):
    if name == "Recorder":
        from recorder.recording import Recorder

        return Recorder
    if name == "ProbeSet":
        from recorder.probe import ProbeSet

        return ProbeSet
    raise AttributeError(f"module 'recorder' has no attribute {name!r}")
