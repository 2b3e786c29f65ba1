"""Recording overhead, measured side by side in one process; prints ratios.

    python bench/record_overhead.py [--repeats 5] [--device cpu|cuda] [--only dissect]
                                    [--threads 2] [--clock wall|cpu]

1. probe pass: `rec.record(step)` time / a bare `no_grad` forward over the same
   probe (same model, same batches), for a small CNN and ResNet-18 at 64x64, without
   dissection (random probe, goal <= 1.3) and with dissection of every conv layer on
   the shapes world's probe (5 concept layers of 64x64 masks, goal <= 2.0);
2. online mode: training step time with the recorder's hooks / without;
3. zarr append time per layer per checkpoint (10 classes x 512 units).
Each figure is the median of `--repeats` runs; the probe-pass ratio is that of the
medians, with the median of the ratios of each run's adjacent bare and recorded
passes beside it (less sensitive to a machine whose load changes). `--only` runs one
part: `probe` (without dissection), `dissect`, `online` or `append`. On a CPU shared
with other work, `--threads 1 --clock cpu` times the process's own CPU time, which
other processes hardly change.

Allocator: glibc gives large freed blocks back to the operating system, and the next
allocation page-faults them in again, 4 KiB at a time: on a virtual machine a bare
forward of the small CNN can spend half its time so, more or less depending on what
ran before it. By default (`--allocator keep`) the bench re-runs itself with glibc
told to keep freed memory (`KEEP_FREED`), so both sides are measured without those
faults and the ratio is one of work; `--allocator default` measures as is. The
page faults of each side are printed beside the times.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from recorder import ProbeSet, Recorder
from recorder.store import RunWriter


def small_cnn(width: int = 32, n_classes: int = 10) -> nn.Module:
    layers, channels = [], 3
    for i, out in enumerate([width, width * 2, width * 4, width * 8]):
        layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
        if i < 3:
            layers.append(nn.MaxPool2d(2))
        channels = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, n_classes))


def resnet18_64(n_classes: int = 10) -> nn.Module:
    model = torchvision.models.resnet18(num_classes=n_classes)
    model.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)  # 64x64 input: no stride-2 stem
    model.maxpool = nn.Identity()
    return model


def random_probe(n: int, size: int = 64, n_classes: int = 10) -> ProbeSet:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    return ProbeSet(pixels, np.arange(n) % n_classes, [f"c{i}" for i in range(n_classes)],
                    mean=(0.5,) * 3, std=(0.25,) * 3, source="bench")


def world_probe(n: int) -> ProbeSet:
    """The built-in shapes world's probe: 64x64 images with object/part/color/texture/scene masks."""
    from training.world import make_probe

    return make_probe(n, seed=1234)


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCK["wall"]
KEEP_FREED = {"MALLOC_TRIM_THRESHOLD_": str(1 << 36), "MALLOC_TOP_PAD_": str(1 << 30),
              "MALLOC_MMAP_THRESHOLD_": str(1 << 25)}  # glibc keeps what is freed for reuse


def timed(fn, faults: list | None = None) -> float:
    """Seconds `fn()` took by the chosen clock; appends its minor page faults to `faults`."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = clock()
    fn()
    elapsed = clock() - start
    if faults is not None:
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return elapsed


def bare_forward(model, probe, device, batch_size):
    model.eval()
    with torch.no_grad():
        for first in range(0, len(probe), batch_size):
            model(probe.batch(range(first, min(first + batch_size, len(probe)))).to(device))
    if device.type == "cuda":
        torch.cuda.synchronize()


def probe_pass_ratio(name, model, layers, n_images, repeats, device, batch_size=64, dissect=False):
    model = model.to(device)
    probe = world_probe(n_images) if dissect else random_probe(n_images)
    with tempfile.TemporaryDirectory() as folder:
        rec = Recorder(model, layers, probe=probe, store=folder + "/run", progress=False,
                       batch_size=batch_size, online=False, dissect=dissect)
        bare_forward(model, probe, device, batch_size)  # warm-up
        bare, recorded, bare_faults, recorded_faults = [], [], [], []
        for step in range(repeats):
            bare.append(timed(lambda: bare_forward(model, probe, device, batch_size), bare_faults))
            recorded.append(timed(lambda: rec.record(step), recorded_faults))
        rec.close()
    b, r = statistics.median(bare), statistics.median(recorded)
    paired = statistics.median(x / y for x, y in zip(recorded, bare))
    what = f"{name} + dissection" if dissect else name
    goal = 2.0 if dissect else 1.3
    print(f"probe pass  {what:<24} {n_images} images, {len(layers)} layers: forward {b * 1e3:7.1f} ms, "
          f"record {r * 1e3:7.1f} ms, ratio {r / b:.2f} (paired {paired:.2f})  (goal <= {goal}); "
          f"page faults {statistics.median(bare_faults):.0f} / {statistics.median(recorded_faults):.0f}")
    return r / b


def online_ratio(repeats, device, steps=20, batch=64):
    torch.manual_seed(0)
    model = small_cnn().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(batch, 3, 64, 64, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def train(rec=None):
        for step in range(1, steps + 1):
            logits = model(x)
            F.cross_entropy(logits, y).backward()
            opt.step()
            opt.zero_grad()
            if rec is not None:
                rec.step(step, labels=y, logits=logits)
        if device.type == "cuda":
            torch.cuda.synchronize()

    layers = ["0", "4", "8", "12"]
    plain, online = [], []
    with tempfile.TemporaryDirectory() as folder:
        train()  # warm-up
        for i in range(repeats):
            plain.append(timed(train))
            # every= larger than the run: only the first step's row and the final row
            rec = Recorder(model, layers, classes=[f"c{i}" for i in range(10)], store=f"{folder}/r{i}",
                           every=10**9, progress=False)
            model(x)
            rec.step(0, labels=y)  # the first step's row, outside the timing
            online.append(timed(lambda: train(rec)))
            rec.close()
    p, o = statistics.median(plain), statistics.median(online)
    print(f"online      small CNN  batch {batch}, {len(layers)} layers: plain {p / steps * 1e3:6.1f} ms/step, "
          f"recorded {o / steps * 1e3:6.1f} ms/step, {100 * (o / p - 1):+.1f} %  (goal <= +3 %)")
    return o / p


def append_ms(repeats, n_layers=4, classes=10, units=512, rows=20):
    rng = np.random.default_rng(0)
    row = {
        "sum_true": rng.random((classes, units), dtype=np.float32),
        "count_true": np.full(classes, 50),
        "sum_pred": rng.random((classes, units), dtype=np.float32),
        "count_pred": np.full(classes, 50),
        "max_true": rng.random((classes, units), dtype=np.float32),
        "train_sum": rng.random((classes, units), dtype=np.float32),
        "train_count": np.full(classes, 64),
        "precision": rng.random(units, dtype=np.float32),
        "topk_index": rng.integers(0, 500, (units, 8)).astype(np.int32),
        "topk_value": rng.random((units, 8), dtype=np.float32),
    }
    names = [f"layer{i}" for i in range(n_layers)]
    medians = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as folder:
            writer = RunWriter.open(folder + "/run", classes=[f"c{i}" for i in range(classes)], concepts=[],
                                    layers={n: units for n in names},
                                    probe={"source": "bench", "n_images": 500, "fingerprint": "x"})
            times = [timed(lambda s=step: writer.append(s, layers={n: row for n in names}))
                     for step in range(rows)]
            medians.append(statistics.median(times[1:]) / n_layers)
    ms = statistics.median(medians) * 1e3
    print(f"zarr append {len(row)} arrays of {classes}x{units} per layer: {ms:.1f} ms per layer per checkpoint"
          f"  (goal <= 10 ms)")
    return ms


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", choices=["probe", "dissect", "online", "append"], default=None,
                        help="run one part only")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--clock", choices=sorted(CLOCK), default="wall",
                        help="wall time, or this process's CPU time")
    parser.add_argument("--allocator", choices=["keep", "default"], default="keep",
                        help="keep: rerun with glibc keeping freed memory (no page faults on reuse)")
    args = parser.parse_args()
    if args.allocator == "keep" and any(os.environ.get(k) != v for k, v in KEEP_FREED.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **KEEP_FREED})
    global clock
    clock = CLOCK[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load = "n/a" if not hasattr(os, "getloadavg") else f"{os.getloadavg()[0]:.1f}"
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"median of {args.repeats}, {args.clock} clock, load average {load}, allocator {args.allocator}")
    small = ("small CNN", ["0", "4", "8", "12"], 512)
    resnet = ("ResNet-18", ["layer1", "layer2", "layer3", "layer4", "fc"], 128)
    for dissect, part in ((False, "probe"), (True, "dissect")):
        if args.only in (None, part):
            for (name, layers, n_images), make in ((small, small_cnn), (resnet, resnet18_64)):
                probe_pass_ratio(name, make(), layers, n_images, args.repeats, device, dissect=dissect)
    if args.only in (None, "online"):
        online_ratio(args.repeats, device)
    if args.only in (None, "append"):
        append_ms(args.repeats)


if __name__ == "__main__":
    main()
