"""`python -m training rotate`: the rotation control of a trained run (Bau et al. 2017).

    python -m training rotate runs/demo/baseline --out runs/demo/rotated [--layer conv4] [--seed 0]

Replays the checkpoints of a trained run with one layer's units rotated by a random
orthogonal matrix (inverted before the next layer, see `training.rotation`) and
records each as a row at the checkpoint's own step, into a run of its own. The
network computes the same function, so accuracy is unchanged, but Network
Dissection counts axis-aligned detectors: a rotated basis is expected to have
fewer unique detectors. `config.json` is the source run's config plus a
`rotation` entry (source run, layer, consumer, seed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import torch

from recorder import Recorder
from training.checkpoints import checkpoint_path, checkpoint_steps, load_checkpoint
from training.config import TrainConfig
from training.datasets import load_data
from training.ddp import evaluate
from training.models import build_model, conv_layers, record_layers
from training.rotation import RotatedUnits

__all__ = ["is_rotation_run", "record_rotation", "main"]


def is_rotation_run(path: str | os.PathLike) -> bool:
    """Whether `path` holds a run written by `record_rotation` (its config has a `rotation` entry)."""
    try:
        return "rotation" in json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False


def record_rotation(source: str | os.PathLike, out: str | os.PathLike, layer: str | None = None, seed: int = 0,
                    *, final_only: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Record the checkpoints of run `source` with `layer` (default: its last conv layer) rotated.

    Writes a new run at `out`; with `overwrite`, an earlier rotation run there is replaced.
    Returns {"run", "layer", "steps", "heldout_accuracy"} (accuracy at the last step).
    """
    source, out = Path(source), Path(out)
    steps = checkpoint_steps(source)
    if not steps:
        raise FileNotFoundError(f"{source} has no checkpoints/step_<N>.pt to replay")
    if out.exists() and any(out.iterdir()):
        if not (overwrite and is_rotation_run(out)):
            raise FileExistsError(f"{out} is not empty; choose another --out"
                                  + (" (it is no rotation run, so it is not replaced)" if overwrite else ""))
        shutil.rmtree(out)
    config = TrainConfig.from_dict(json.loads((source / "config.json").read_text()))
    if config.threads:
        torch.set_num_threads(config.threads)
    data = load_data(config)
    torch.manual_seed(config.seed)
    model = build_model(config, len(data.classes))
    layer = layer or conv_layers(model)[-1]
    layers = config.record_layers or record_layers(model)
    if layer not in layers:
        raise ValueError(f"layer {layer!r} is not recorded by {source}; its record layers are {layers}")
    if final_only:
        steps = steps[-1:]
    model.load_state_dict(load_checkpoint(checkpoint_path(source, steps[-1]))["model"])
    example = data.heldout.batch(torch.arange(min(64, len(data.heldout))))[0]
    accuracy = float("nan")
    with RotatedUnits(model, layer, seed, example=example) as rotation:  # before the Recorder's hooks
        info = {"source": str(source), "layer": layer, "consumer": rotation.consumer, "seed": seed}
        with Recorder(model, layers, probe=data.probe, store=out, online=False, quantile=config.quantile,
                      topk=min(config.topk, len(data.probe)), dissect=config.dissect,
                      config={**config.to_dict(), "rotation": info}, progress=progress) as rec:
            for step in steps:
                model.load_state_dict(load_checkpoint(checkpoint_path(source, step))["model"])
                accuracy = evaluate(model, data.heldout)
                rec.record(step, epoch=step * config.batch_size / len(data.train),
                           metrics={"heldout_accuracy": accuracy})
    (out / "config.json").write_text(json.dumps({**config.to_dict(), "rotation": info}, indent=2) + "\n")
    return {"run": str(out), "layer": layer, "steps": steps, "heldout_accuracy": accuracy}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training rotate", description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a trained run folder with checkpoints/")
    parser.add_argument("--out", required=True, help="the new run folder")
    parser.add_argument("--layer", help="layer to rotate (default: the last conv layer)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random rotation")
    parser.add_argument("--final-only", action="store_true", help="replay only the last checkpoint")
    args = parser.parse_args(argv)
    result = record_rotation(args.source, args.out, args.layer, args.seed, final_only=args.final_only)
    print(f"{result['run']}: {args.source} with {result['layer']!r} rotated, {len(result['steps'])} rows, "
          f"held-out accuracy {result['heldout_accuracy']:.3f}")


if __name__ == "__main__":
    main()
