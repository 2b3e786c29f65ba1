"""Synthetic runs with plausible tuning dynamics, for the tests, screenshots and benchmarks (not shipped).

    from support.synthetic import SyntheticRun
    SyntheticRun(layers={"conv3": 64, "conv4": 128}, checkpoints=24).write("runs/synth/base")

    python tests/support/synthetic.py runs/synth/base --layers conv3=64 conv4=128 --checkpoints 24

Each unit is given a target class and an onset: its class means start flat and noisy,
then, along a sigmoid in training progress, the target class's mean rises, so the
unit's dominant class settles and its selectivity grows (deeper layers more so).
A few units die, a few switch class half way. Every unit also has a target concept
whose IoU rises past the detector threshold for about half of them (shallow layers:
colors and textures; deep layers: objects and parts). Top-k images drift towards the
target class, with a blob-shaped activation map each. Held-out accuracy rises.
Everything is deterministic in `seed`; row t depends only on (seed, t), so a run can
be written a few rows at a time (`append`), as a live training run would be.
Writes through `recorder.store.RunWriter` only.

Options: `signed=("conv3",)` shifts those layers' responses below 0 and stores each
unit's smallest response (`response_min`) and the layer attribute `signed`, as a conv
recorded before its ReLU would; dead units there respond the same negative value to
every image. `heldout_offset=50` logs held-out accuracy 50 steps after each row
(`log_scalars`), not with the row. `occlusion=dict(patch=8, stride=4, every=2)` stores
every `every`-th row discrepancy maps of each unit's top-k images (a bump around the
image's shape, of the unit's receptive-field width, which narrows as the unit tunes),
the empirical RF re-centred from them, `rf_size` as DESIGN.md defines it, and the layer
attributes `occlusion` and `theoretical_rf`; other rows hold NaN.

    python tests/support/synthetic.py runs/live --layers fc=16 --checkpoints 8 --stdin
    # a writer process: each line "N" on stdin appends rows up to N; it answers "N committed"
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from recorder.schema import Concept
from recorder.store import RunWriter

__all__ = ["CLASSES", "CONCEPTS", "SyntheticRun", "recentred_mean", "rf_size", "serve_stdin"]

CLASSES = ["circle", "square", "triangle", "stripes", "ring", "cross", "dots", "checker", "diamond", "wave"]
CONCEPTS = [Concept(n, "color") for n in ("red", "green", "blue", "yellow", "white")] + \
    [Concept(n, "texture") for n in ("striped", "dotted", "checkered", "wavy")] + \
    [Concept(n, "object") for n in ("disk", "box", "wedge", "loop", "plus", "rhombus")] + \
    [Concept(n, "part") for n in ("corner", "edge", "center")] + \
    [Concept(n, "scene") for n in ("light", "dark")]
_DEPTH_AFFINITY = {"color": (1.0, 0.2), "texture": (0.8, 0.4), "object": (0.1, 1.0),
                   "part": (0.3, 0.8), "scene": (0.2, 0.6)}  # (shallow, deep) weights


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class _Units:
    """Fixed per-unit traits of one layer."""

    target: np.ndarray  # [K] class
    early: np.ndarray  # [K] class before a switch (== target for most)
    onset: np.ndarray  # [K] progress in [0, 1] where tuning is half way
    strength: np.ndarray  # [K] response gain of the target class
    base: np.ndarray  # [K] baseline response
    dead_from: np.ndarray  # [K] progress after which the unit is dead (inf: never)
    concept: np.ndarray  # [K] target concept
    peak_iou: np.ndarray  # [K]
    iou_onset: np.ndarray  # [K]


@dataclass
class SyntheticRun:
    """A generated run: `write(path)` it whole, or `append(writer, start, stop)` rows."""

    layers: dict[str, int] = field(default_factory=lambda: {"conv3": 64, "conv4": 128})
    checkpoints: int = 24
    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    concepts: list[Concept] = field(default_factory=lambda: list(CONCEPTS))
    per_class: int = 6  # probe images per class
    thumb: int = 32  # thumbnail side (pixels)
    topk: int = 4
    map_size: int = 7  # side of the stored top-k activation maps; 0: no maps
    every: int = 100  # steps between checkpoints
    steps_per_epoch: int = 500
    seed: int = 0
    lean: bool = False  # probe arrays by true label and dissection only (benchmark size)
    selectivity_gain: float = 1.0  # scales how strongly units tune to their class
    detector_gain: float = 1.0  # scales the units' peak IoU with their concept
    config: dict = field(default_factory=dict)  # stored as the run's config
    name: str | None = None
    signed: tuple[str, ...] = ()  # layers whose responses go below 0 (response_min, attribute signed)
    heldout_offset: int = 0  # held-out accuracy logged this many steps after each row (0: with the row)
    occlusion: dict | None = None  # {patch, stride, every}: occlusion arrays every `every`-th row

    def __post_init__(self):
        rng = np.random.default_rng(self.seed)
        self._units = {name: self._make_units(rng, k, depth)
                       for depth, (name, k) in zip(self._depths(), self.layers.items())}
        self._probe_labels = np.repeat(np.arange(len(self.classes)), self.per_class).astype(np.int32)
        # where each probe image's shape is (fraction of the side): activation blobs sit on it
        self._centers = np.random.default_rng([self.seed, 98]).uniform(0.35, 0.65, (len(self._probe_labels), 2))

    # ------------------------------------------------------------ fixed traits

    def _depths(self) -> list[float]:
        n = len(self.layers)
        return [i / (n - 1) if n > 1 else 1.0 for i in range(n)]

    def _make_units(self, rng: np.random.Generator, k: int, depth: float) -> _Units:
        c, p = len(self.classes), len(self.concepts)
        target = rng.integers(0, c, k)
        switch = rng.random(k) < 0.1
        early = np.where(switch, rng.integers(0, c, k), target)
        gain = 1.5 + 6.0 * depth
        strength = gain * self.selectivity_gain * rng.beta(2.0, 3.0, k)
        dead_from = np.where(rng.random(k) < 0.04, rng.uniform(0.1, 0.9, k), np.inf)
        weights = np.array([(1 - depth) * _DEPTH_AFFINITY[cc.category][0] + depth * _DEPTH_AFFINITY[cc.category][1]
                            for cc in self.concepts]) if p else np.zeros(0)
        concept = rng.choice(p, k, p=weights / weights.sum()) if p else np.zeros(k, np.int64)
        return _Units(target=target, early=early, onset=rng.uniform(0.05, 0.75, k), strength=strength,
                      base=rng.lognormal(0.0, 0.4, k), dead_from=dead_from, concept=concept,
                      peak_iou=self.detector_gain * rng.uniform(0.0, 0.12, k) * rng.uniform(0.5, 1.2, k),
                      iou_onset=rng.uniform(0.1, 0.8, k))

    # ------------------------------------------------------------------ rows

    def step(self, t: int) -> int:
        return t * self.every

    def progress(self, t: int) -> float:
        return t / max(1, self.checkpoints - 1)

    def accuracy(self, t: int) -> float:
        chance = 1.0 / max(1, len(self.classes))
        x = self.progress(t)
        noise = np.random.default_rng([self.seed, t, 7]).normal(0, 0.01)
        return float(np.clip(chance + (0.9 - chance) * _sigmoid((x - 0.3) / 0.1) + noise, 0, 1))

    def _class_means(self, u: _Units, x: float, rng: np.random.Generator) -> np.ndarray:
        """[C, K] class means at progress x."""
        c, k = len(self.classes), len(u.target)
        g = _sigmoid((x - u.onset) / 0.08)
        cls = np.where(x < u.onset + 0.1, u.early, u.target)
        bump = np.zeros((c, k))
        bump[cls, np.arange(k)] = u.strength * g
        noise = rng.normal(0.0, 0.25 * (1.0 - 0.6 * x), (c, k))
        mu = u.base * (1.0 + bump + noise)
        mu = np.maximum(mu, 0.0) - 0.05 * u.base  # a ReLU-ish floor, slightly negative means
        return np.where(x >= u.dead_from, 0.0, mu)

    def layer_row(self, name: str, t: int) -> dict[str, np.ndarray]:
        """Every array of layer `name` at checkpoint t."""
        u = self._units[name]
        layer_index = list(self.layers).index(name)
        rng = np.random.default_rng([self.seed, t, layer_index])
        x = self.progress(t)
        c, k = len(self.classes), len(u.target)
        mu = self._class_means(u, x, rng)
        counts = np.full(c, self.per_class, dtype=np.int64)
        floor = None
        if name in self.signed:  # before the ReLU: most means below 0; the dead respond -shift to everything
            shift = 1.2 * u.base
            mu = mu - shift
            floor = np.where(x >= u.dead_from, -shift, mu.min(axis=0) - 0.3 * u.base)
        row = {"sum_true": (mu * counts[:, None]).astype(np.float32), "count_true": counts}
        if floor is not None:
            row["response_min"] = floor.astype(np.float32)
        g = _sigmoid((x - u.onset) / 0.08)
        live = x < u.dead_from
        si_like = u.strength * g / (2.0 + u.strength * g)
        row["precision"] = np.where(live, np.clip(1.0 / c + (1 - 1.0 / c) * si_like + rng.normal(0, 0.05, k), 0, 1),
                                    0.0).astype(np.float32)
        if not self.lean:
            acc = self.accuracy(t)
            pred_counts = rng.multinomial(c * self.per_class, np.full(c, 1.0 / c)) if c else counts
            mix = acc * mu + (1 - acc) * mu.mean(axis=0, keepdims=True)
            row["sum_pred"] = (mix * pred_counts[:, None]).astype(np.float32)
            row["count_pred"] = pred_counts
            row["max_true"] = (mu * 1.8 + np.abs(rng.normal(0, 0.1, (c, k)))).astype(np.float32)
            window = self._class_means(u, max(0.0, x - 0.5 / max(1, self.checkpoints - 1)), rng)
            train_counts = rng.multinomial(32 * self.every, np.full(c, 1.0 / c)) if c else counts
            row["train_sum"] = (window * train_counts[:, None]).astype(np.float32)
            row["train_count"] = train_counts
        row.update(self._dissection(u, x, rng, live))
        if self.occlusion:
            row.update(self._occlusion(u, t, x, row.get("topk_index")))
        return row

    # -------------------------------------------------------------- occlusion

    def grid(self) -> tuple[int, int]:
        """(gh, gw) of the occluder grid on the thumbnails (DESIGN.md "Occlusion")."""
        p, s = self.occlusion["patch"], self.occlusion["stride"]
        g = math.ceil((self.thumb - p) / s) + 1
        return g, g

    def occlusion_attrs(self, depth: float) -> dict:
        o = self.occlusion
        size = int(o["patch"] + (2 + 6 * depth) * o["stride"])
        return {"occlusion": {"patch": o["patch"], "stride": o["stride"], "fill": "mean", "measure": "mean",
                              "every": o["every"]},
                "theoretical_rf": {"size": [size, size], "jump": [o["stride"], o["stride"]], "start": [0.5, 0.5]}}

    def _occlusion(self, u: _Units, t: int, x: float, index) -> dict:
        gh, gw = self.grid()
        k, n_top = len(u.target), self.topk
        if t % self.occlusion["every"] or index is None:
            return {"occlusion": np.full((k, n_top, gh, gw), np.nan, np.float16),
                    "rf": np.full((k, 2 * gh - 1, 2 * gw - 1), np.nan, np.float16),
                    "rf_size": np.full(k, np.nan, np.float32)}
        rng = np.random.default_rng([self.seed, t, 5])
        g = _sigmoid((x - u.onset) / 0.08)
        width = 2.6 - 1.4 * g + rng.normal(0, 0.1, k)  # [K] cells: broad while untuned, narrower after
        peak = self._centers[index] * np.array([gh, gw]) - 0.5  # [K, k, 2] where each top image's shape is
        yy, xx = np.mgrid[0:gh, 0:gw]
        d2 = (yy - peak[..., 0, None, None]) ** 2 + (xx - peak[..., 1, None, None]) ** 2
        maps = np.exp(-d2 / (2 * width[:, None, None, None] ** 2)) + rng.normal(0, 0.04, (k, n_top, gh, gw))
        maps = maps * u.base[:, None, None, None]  # [K, k, gh, gw]
        rf = recentred_mean(maps)
        return {"occlusion": maps.astype(np.float16), "rf": rf.astype(np.float16),
                "rf_size": rf_size(rf, self.occlusion["stride"]).astype(np.float32)}

    def _dissection(self, u: _Units, x: float, rng: np.random.Generator, live: np.ndarray) -> dict:
        k, p, n = len(u.target), len(self.concepts), len(self._probe_labels)
        g = _sigmoid((x - u.onset) / 0.08)
        threshold = (u.base * (1.0 + u.strength * g)).astype(np.float32)
        out = {"threshold": threshold}
        if p:
            iou = rng.uniform(0.0, 0.025, (k, p))
            iou[np.arange(k), u.concept] += u.peak_iou * _sigmoid((x - u.iou_onset) / 0.1)
            out["iou"] = np.where(live[:, None], iou, 0.0).astype(np.float16)
        if self.topk:
            # k distinct images per unit; those of the target class rise to the top as the unit tunes
            score = rng.random((k, n)) + (self._probe_labels[None, :] == u.target[:, None]) * (0.2 + 1.5 * g[:, None])
            index = np.argsort(-score, axis=1)[:, :self.topk]
            value = np.sort(rng.uniform(1.0, 2.0, (k, self.topk)), axis=1)[:, ::-1] * threshold[:, None]
            out["topk_index"] = index.astype(np.int32)
            out["topk_value"] = value.astype(np.float32)
            if self.map_size:
                m = self.map_size
                yy, xx = np.mgrid[0:m, 0:m]
                centers = self._centers[index] * m - 0.5 + rng.normal(0, 0.4, (k, self.topk, 2))  # [K, k, 2]
                cy, cx = centers[..., 0, None, None], centers[..., 1, None, None]
                radius = rng.uniform(0.8, 1.8, (k, self.topk, 1, 1))
                blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius ** 2))
                maps = threshold[:, None, None, None] * (1.6 * blob + rng.uniform(0, 0.3, (k, self.topk, m, m)))
                out["topk_map"] = maps.astype(np.float16)
        return out

    def row(self, t: int) -> dict:
        """Arguments of `RunWriter.append` for checkpoint t."""
        acc = self.accuracy(t)
        x = self.progress(t)
        metrics = {"heldout_accuracy": acc, "train_accuracy": min(1.0, acc + 0.05 * x),
                   "loss": float(2.3 * math.exp(-3 * x) + 0.1)}
        return {"step": self.step(t), "epoch": self.step(t) / self.steps_per_epoch, "metrics": metrics,
                "layers": {name: self.layer_row(name, t) for name in self.layers}}

    # ------------------------------------------------------------------ probe

    def thumbs(self) -> np.ndarray:
        """uint8 [N, thumb, thumb, 3]: a class-specific shape of a random color on a plain ground."""
        s = self.thumb
        rng = np.random.default_rng([self.seed, 99])
        n = len(self._probe_labels)
        yy, xx = np.mgrid[0:s, 0:s] / s
        out = np.empty((n, s, s, 3), np.uint8)
        for i, label in enumerate(self._probe_labels):
            ground = rng.uniform(20, 90, 3) if rng.random() < 0.5 else rng.uniform(170, 235, 3)
            color = rng.choice([[220, 50, 40], [40, 170, 60], [50, 90, 220], [230, 200, 40], [245, 245, 245]])
            (cy, cx), r = self._centers[i], rng.uniform(0.2, 0.3)
            mask = _shape_mask(self.classes[label] if label < len(self.classes) else "", yy - cy, xx - cx, r)
            img = np.where(mask[..., None], color, ground) + rng.normal(0, 6, (s, s, 3))
            out[i] = np.clip(img, 0, 255).astype(np.uint8)
        return out

    # ------------------------------------------------------------------ write

    def open_writer(self, path, storage_options: dict | None = None) -> RunWriter:
        """A writer of this run at folder or URL `path` (created, or resumed at its committed rows)."""
        path = os.fspath(path)
        options = {} if storage_options is None else {"storage_options": storage_options}
        name = self.name or path.rstrip("/").rsplit("/", 1)[-1]
        return RunWriter.open(
            path, **options, classes=list(self.classes), concepts=list(self.concepts), layers=dict(self.layers),
            probe={"source": "synthetic", "n_images": len(self._probe_labels), "fingerprint": f"synthetic-{self.seed}"},
            run={"name": name, "config": {"seed": self.seed, **self.config}}, topk=self.topk)

    def append(self, writer: RunWriter, start: int, stop: int) -> None:
        """Append rows start .. stop-1 (and the probe and layer attributes, if not written yet)."""
        if writer.n_committed == 0:
            writer.write_probe(self.thumbs(), self._probe_labels)
            for depth, name in zip(self._depths(), self.layers):
                attrs = {"signed": name in self.signed}
                if self.occlusion:
                    attrs.update(self.occlusion_attrs(depth))
                writer.set_layer_attrs(name, attrs)
        for t in range(start, min(stop, self.checkpoints)):
            row = self.row(t)
            metrics = dict(row["metrics"])
            heldout = metrics.pop("heldout_accuracy") if self.heldout_offset else None
            writer.append(row["step"], epoch=row["epoch"], wall_time=1.7e9 + 60.0 * t,
                          metrics=metrics, layers=row["layers"])
            if heldout is not None:
                writer.log_scalars(row["step"] + self.heldout_offset, {"heldout_accuracy": heldout})

    def write(self, path, rows: int | None = None, storage_options: dict | None = None):
        """Write the run (its first `rows` checkpoints, default all) to folder or URL `path`; returns `path`."""
        with self.open_writer(path, storage_options) as writer:
            self.append(writer, writer.n_committed, self.checkpoints if rows is None else rows)
        return path


def recentred_mean(maps: np.ndarray) -> np.ndarray:
    """[K, 2gh-1, 2gw-1]: each map [K, k, gh, gw] shifted so its peak cell lands at the centre, averaged
    per canvas cell over the maps that reach it (NaN where none does): DESIGN.md's empirical RF."""
    n_units, k, gh, gw = maps.shape
    total = np.zeros((n_units, 2 * gh - 1, 2 * gw - 1))
    count = np.zeros_like(total)
    for unit in range(n_units):
        for r in range(k):
            i, j = np.unravel_index(np.argmax(maps[unit, r]), (gh, gw))
            top, left = gh - 1 - i, gw - 1 - j
            total[unit, top:top + gh, left:left + gw] += maps[unit, r]
            count[unit, top:top + gh, left:left + gw] += 1
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def rf_size(rf: np.ndarray, stride: int) -> np.ndarray:
    """[K]: sqrt of the RF's area (cells x stride^2) where it is at least half its maximum."""
    flat = rf.reshape(len(rf), -1)
    peak = np.nanmax(flat, axis=1)
    cells = (np.nan_to_num(flat, nan=-np.inf) >= peak[:, None] / 2).sum(axis=1)
    return np.where(peak > 0, np.sqrt(cells * stride ** 2), np.nan)


def serve_stdin(run: SyntheticRun, path) -> None:
    """A writer process: each line "N" appends rows up to N and answers "N committed"."""
    with run.open_writer(path) as writer:
        print(f"{writer.n_committed} committed", flush=True)
        for line in sys.stdin:
            if line.strip().isdigit():
                run.append(writer, writer.n_committed, int(line))
                print(f"{writer.n_committed} committed", flush=True)


def _shape_mask(kind: str, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    ady, adx = np.abs(dy), np.abs(dx)
    rr = np.hypot(dy, dx)
    masks = {
        "circle": rr < r,
        "square": (ady < r * 0.85) & (adx < r * 0.85),
        "triangle": (dy < r * 0.8) & (dy > -r) & (adx < (dy + r) * 0.6),
        "stripes": (np.floor((dx + dy) * 12) % 2 == 0) & (rr < r * 1.6),
        "ring": (rr < r) & (rr > r * 0.6),
        "cross": ((ady < r * 0.25) & (adx < r)) | ((adx < r * 0.25) & (ady < r)),
        "dots": (np.hypot((dy * 8) % 1 - 0.5, (dx * 8) % 1 - 0.5) < 0.3) & (rr < r * 1.6),
        "checker": ((np.floor(dy * 10) + np.floor(dx * 10)) % 2 == 0) & (ady < r) & (adx < r),
        "diamond": ady + adx < r,
        "wave": (np.abs(dy - 0.1 * np.sin(dx * 30)) < r * 0.25) & (adx < r * 1.4),
    }
    return masks.get(kind, rr < r * 0.5)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python tests/support/synthetic.py", description="Write a synthetic run.")
    parser.add_argument("path", help="run folder to create (must not exist or be empty)")
    parser.add_argument("--layers", nargs="+", default=["conv3=64", "conv4=128"], help="name=units ...")
    parser.add_argument("--checkpoints", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lean", action="store_true", help="true-label and dissection arrays only")
    parser.add_argument("--stdin", action="store_true", help="append rows as lines 'N' on stdin ask")
    args = parser.parse_args(argv)
    layers = {}
    for item in args.layers:
        name, _, k = item.partition("=")
        if not k.isdigit():
            parser.error(f"--layers takes name=units, got {item!r}")
        layers[name] = int(k)
    run = SyntheticRun(layers=layers, checkpoints=args.checkpoints, seed=args.seed, lean=args.lean)
    if args.stdin:
        serve_stdin(run, args.path)
        return
    run.write(args.path)
    print(f"wrote {args.path}")


if __name__ == "__main__":
    main()
