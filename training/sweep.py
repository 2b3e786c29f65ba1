"""`python -m training sweep`: the regularization settings of a preset, one run each, then a report.

    python -m training sweep --preset demo              # runs/demo/<setting>/, about 5 min on 2 CPU cores
    python -m training sweep --preset smoke --out /tmp/s # seconds; used by the tests
    python -m training sweep --preset demo --only baseline,si-neg --set steps=600 --jobs 2

Each setting is a `TrainConfig` (the preset's base plus the setting's changes)
trained into `<out>/<setting>/`; then the rotation control replays the baseline's
checkpoints with its last conv layer rotated into `<out>/rotated/`, and
`<out>/report.md` is written (see `training.report`). A finished run is left as it
is and an interrupted one resumes, so rerunning a sweep only does what is missing;
`--fresh` deletes the preset's runs first. `python -m training demo` is
`python -m training sweep --preset demo`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from training.config import ConfigError, TrainConfig, parse_overrides
from training.report import write_report
from training.rotate import record_rotation

__all__ = ["PRESETS", "Preset", "run_sweep", "main"]


@dataclass(frozen=True)
class Preset:
    base: dict                                  # TrainConfig fields shared by every setting
    settings: dict[str, dict]                   # setting name -> its changes to `base`
    rotation_of: str = "baseline"               # setting whose checkpoints the rotation control replays
    rotation_name: str = "rotated"              # the rotation control's run name ("" = no control)
    out: str = "runs/demo"                      # default output folder
    notes: dict[str, str] = field(default_factory=dict)  # setting name -> one-line description

    def configs(self, overrides: dict | None = None) -> dict[str, TrainConfig]:
        return {name: TrainConfig.from_dict({**self.base, **changes, **(overrides or {})})
                for name, changes in self.settings.items()}


# The regularization settings, each one change from the baseline. The selectivity
# regularizer's alphas: with alpha = -1 the plain (no BatchNorm) CNN escaped to dead
# units (SI 0, chance accuracy) and with +1 it diverged; +0.3 cost 40 points of accuracy.
_SETTINGS = {
    "baseline": {},
    "dropout": {"dropout": 0.2},
    "batchnorm": {"batchnorm": True},
    "weight-decay": {"weight_decay": 5e-4},
    "augment": {"augment": True},
    "label-smoothing": {"label_smoothing": 0.1},
    "si-neg": {"selectivity_alpha": -0.3},
    "si-pos": {"selectivity_alpha": 0.1},
}
_NOTES = {
    "baseline": "SmallCNN, no BatchNorm, no dropout, no weight decay, no augmentation",
    "dropout": "dropout 0.2 after each pooled block and before fc",
    "batchnorm": "BatchNorm after each conv",
    "weight-decay": "weight decay 5e-4",
    "augment": "random flips, crops (pad 4) and brightness/contrast jitter",
    "label-smoothing": "label smoothing 0.1",
    "si-neg": "class-selectivity regularizer, alpha = -0.3 (discourages selectivity)",
    "si-pos": "class-selectivity regularizer, alpha = +0.1 (encourages selectivity)",
    "rotated": "baseline checkpoints, last conv layer's units randomly rotated (Bau et al. 2017)",
}

PRESETS: dict[str, Preset] = {
    # 32x32 world, SmallCNN depth 4 / width 16, 1500 SGD steps of 64 images: ~35 s per setting
    # on one core; probe of 300 images with dissection every 100 steps; occlusion of conv3 and
    # conv4 (6 px squares at stride 3, a 10 x 10 grid) every 5th row: rows 0, 5, 10, 15 (the last).
    "demo": Preset(
        base={"image_size": 32, "train_size": 16000, "heldout_size": 1000, "probe_size": 300,
              "depth": 4, "width": 16, "steps": 1500, "record_every": 100, "lr": 0.05, "threads": 1,
              "occlusion_layers": ["conv3", "conv4"], "occlusion_every": 5, "occlusion_patch": 6,
              "occlusion_stride": 3},
        settings=_SETTINGS, notes=_NOTES, out="runs/demo"),
    # Seconds: 16x16 images, a 2-block CNN of width 4, 6 steps; conv2 occluded in every row.
    "smoke": Preset(
        base={"image_size": 16, "train_size": 64, "heldout_size": 20, "probe_size": 20, "depth": 2,
              "width": 4, "batch_size": 16, "steps": 6, "record_every": 3, "threads": 1,
              "occlusion_layers": ["conv2"], "occlusion_every": 1, "occlusion_patch": 4, "occlusion_stride": 2},
        settings={"baseline": {}, "si-neg": {"selectivity_alpha": -1.0}},
        notes={k: _NOTES[k] for k in ("baseline", "si-neg", "rotated")}, out="runs/smoke"),
}


def _train_one(name: str, config: TrainConfig, out: Path) -> dict:
    from training.train import train  # imported in the worker process

    return {"setting": name, **train(config, out / name)}


def _clear(path: Path) -> None:
    """Delete a run folder of this sweep (only folders that look like runs)."""
    if path.is_dir() and ((path / "record.zarr").exists() or (path / "config.json").exists()
                          or (path / "checkpoints").exists()):
        shutil.rmtree(path)


def run_sweep(preset: Preset, out: str | Path, *, jobs: int = 1, only: list[str] | None = None,
              overrides: dict | None = None, fresh: bool = False, progress: bool = True) -> list[dict]:
    """Train every setting of `preset` (or those in `only`), the rotation control, and the report."""
    out = Path(out)
    configs = preset.configs(overrides)
    names = list(configs) + ([preset.rotation_name] if preset.rotation_name else [])
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown}; this preset has {names}")
        names = [n for n in names if n in only]
    out.mkdir(parents=True, exist_ok=True)
    if fresh:
        for name in names:
            _clear(out / name)
    (out / "sweep.json").write_text(json.dumps(
        {"settings": list(configs) + ([preset.rotation_name] if preset.rotation_name else []),
         "notes": preset.notes, "base": preset.base, "changes": preset.settings,
         "rotation_of": preset.rotation_of}, indent=2) + "\n")
    to_train = [n for n in names if n in configs]
    t0 = time.perf_counter()
    results = []

    def done(result: dict) -> None:
        results.append(result)
        print(f"[{len(results)}/{len(names)}] {result['setting']:<16} held-out accuracy "
              f"{result['heldout_accuracy']:.3f}  ({result['wall_s']:.0f} s, {time.perf_counter() - t0:.0f} s total)",
              flush=True)

    if jobs <= 1:
        for name in to_train:
            done(_train_one(name, configs[name].replace(progress=progress and configs[name].progress), out))
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
            futures = [pool.submit(_train_one, n, configs[n].replace(progress=False), out) for n in to_train]
            for future in concurrent.futures.as_completed(futures):
                done(future.result())
    if preset.rotation_name in names:
        started = time.perf_counter()
        rotated = record_rotation(out / preset.rotation_of, out / preset.rotation_name, overwrite=True,
                                  progress=progress)
        done({"setting": preset.rotation_name, "heldout_accuracy": rotated["heldout_accuracy"],
              "wall_s": time.perf_counter() - started})
    print(f"sweep done in {time.perf_counter() - t0:.0f} s")
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS), help="which settings (default demo)")
    parser.add_argument("--out", help="sweep folder (default: the preset's, e.g. runs/demo)")
    parser.add_argument("--jobs", type=int, default=1, help="settings trained at once, one process each")
    parser.add_argument("--only", help="comma-separated settings to run (default: all)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field in every setting, e.g. --set steps=300")
    parser.add_argument("--fresh", action="store_true", help="delete the preset's runs first")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    try:
        overrides = parse_overrides(args.set)
        preset.configs(overrides)  # validate every setting before training any
    except ConfigError as exc:
        parser.error(str(exc))
    out = Path(args.out or preset.out)
    only = [n.strip() for n in args.only.split(",")] if args.only else None
    valid = list(preset.settings) + ([preset.rotation_name] if preset.rotation_name else [])
    if only and set(only) - set(valid):
        parser.error(f"--only names unknown setting(s) {sorted(set(only) - set(valid))}; valid: {valid}")
    try:
        run_sweep(preset, out, jobs=args.jobs, only=only, overrides=overrides, fresh=args.fresh,
                  progress=not args.no_progress)
    except (ConfigError, FileExistsError) as exc:
        raise SystemExit(f"sweep failed: {exc}\n(use --fresh to start the preset's runs over)") from exc
    print(write_report(out))
    print(f"wrote {out / 'report.md'}")


if __name__ == "__main__":
    main()
