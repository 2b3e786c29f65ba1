"""Occlusion of each unit's top-k images: `occlude_topk` side by side with `captum.attr.Occlusion`.

    python bench/occlusion_speed.py [--units 64] [--captum-units 8] [--probe 200] [--repeats 3] [--device cpu]

The small CNN of training/models.py (depth 4, width 16, seeded, untrained) on
64x64 shapes-world probe images; layer conv3 (64 units); each unit's top-8 probe
images by spatial max; an 8x8 zero-filled occluder at stride 4 (15x15 grid),
measures "peak" (the recorder's default) and "mean". Ours runs occluded forwards
only where conv3's map changes (the chain's geometry is certified: stage by stage
for "mean", the peak's cone for "peak"); with `--full`, ours with `windowed=False`
(full occluded images, one forward shared by every unit) is timed beside it.
Captum gets its best settings: `perturbations_per_eval=64` and a forward function
that stops at the layer and returns the unit's value at its clean peak, or its
spatial mean; its API needs one call per unit and image. Captum runs on the top-k
images of the first `--captum-units` units (its cost per call does not depend on
the unit); its time for all units is that time scaled by the number of calls, and
is printed as such. Its pixel maps are checked against `pixel_map` of ours
(<= 1e-5). Each figure is the median of `--repeats` runs, all kinds of run
interleaved. Also printed: occlusion time / the time of one bare forward of the
whole probe.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from recorder.occlusion import occlude_topk, pixel_map
from training.models import SmallCNN
from training.world import make_probe

LAYER, PATCH, STRIDE, TOPK, SIZE = "conv3", 8, 4, 8, 64
MEASURES = ("peak", "mean")


class _Out(Exception):
    def __init__(self, output):
        self.output = output


def layer_output(model, x):
    """conv3's output, the forward stopped there (Captum's forward function gets the same shortcut)."""
    def hook(module, inputs, output):
        raise _Out(output)
    handle = getattr(model, LAYER).register_forward_hook(hook)
    try:
        model(x)
    except _Out as out:
        return out.output
    finally:
        handle.remove()
    raise RuntimeError("layer did not run")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(work, device, repeats):
    times, result = [], None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = work()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=64, help="units of conv3 occluded by ours (<= 64)")
    parser.add_argument("--captum-units", type=int, default=8, help="units run through Captum (<= --units)")
    parser.add_argument("--probe", type=int, default=200, help="probe images the top-k are drawn from")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full", action="store_true", help="also time ours on full occluded images")
    args = parser.parse_args()
    from captum.attr import Occlusion

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = SmallCNN(depth=4, width=16).to(device).eval()
    probe = make_probe(args.probe, seed=1234)
    images = probe.batch(range(len(probe))).to(device)  # (N, 3, 64, 64)

    with torch.no_grad():
        maps = torch.cat([layer_output(model, images[i:i + 64]) for i in range(0, len(images), 64)])
    topk = maps[:, :args.units].flatten(2).amax(2).T.topk(TOPK, dim=1).indices  # (K, k)
    distinct = len(torch.unique(topk))

    def bare_forward():
        with torch.no_grad():
            for i in range(0, len(images), 64):
                model(images[i:i + 64])

    peak_at = maps[:, :args.units].flatten(2).argmax(2)  # (N, K) clean peak of each unit on each image

    def ours(measure, windowed=None):
        return occlude_topk(model, {LAYER: topk}, images, PATCH, STRIDE, "zero", measure,
                            units={LAYER: list(range(args.units))}, windowed=windowed)[LAYER].maps[measure]

    def captum(measure):
        out = {}
        for unit in range(args.captum_units):
            for rank, index in enumerate(topk[unit].tolist()):
                def f(x, unit=unit, index=index):
                    a = layer_output(model, x)[:, unit].flatten(1)  # (B, h*w)
                    return a.mean(1) if measure == "mean" else a[:, peak_at[index, unit]]  # (B,)
                with torch.no_grad():
                    out[unit, rank] = Occlusion(f).attribute(
                        images[index:index + 1], sliding_window_shapes=(3, PATCH, PATCH),
                        strides=(3, STRIDE, STRIDE), baselines=0.0, perturbations_per_eval=64)[0, 0]
        return out

    kinds = {"bare": bare_forward}
    for measure in MEASURES:
        kinds[f"ours {measure}"] = lambda measure=measure: ours(measure)
        if args.full:
            kinds[f"full {measure}"] = lambda measure=measure: ours(measure, windowed=False)
        kinds[f"captum {measure}"] = lambda measure=measure: captum(measure)
    bare_forward(), ours("peak"), ours("mean")  # warm-up
    runs, results = {name: [] for name in kinds}, {}
    for _ in range(args.repeats):  # interleaved, so that a busy machine slows every kind alike
        for name, work in kinds.items():
            seconds, results[name] = timed(work, device, 1)
            runs[name].append(seconds)
    t = {name: statistics.median(times) for name, times in runs.items()}
    calls_run, calls_all = args.captum_units * TOPK, args.units * TOPK
    scale = calls_all / calls_run

    print(f"device {device}, threads {args.threads}, {args.units} units of {LAYER}, top-{TOPK} of {len(images)} "
          f"probe images ({distinct} distinct), patch {PATCH}, stride {STRIDE}, 15x15 grid, fill zero; "
          f"median of {args.repeats} interleaved runs; Captum run for {args.captum_units} units ({calls_run} calls) "
          f"and scaled to all {calls_all} calls")
    print(f"bare probe forward        {t['bare'] * 1e3:9.1f} ms")
    for measure in MEASURES:
        pixels = pixel_map(results[f"ours {measure}"], (SIZE, SIZE), PATCH, STRIDE)  # (K, k, 64, 64)
        worst = max(float((pixels[unit, rank] - want).abs().max())
                    for (unit, rank), want in results[f"captum {measure}"].items())
        assert worst <= 1e-5, f"{measure}: maps differ from Captum's by {worst}"
        ours_t, captum_t = t[f"ours {measure}"], t[f"captum {measure}"] * scale
        print(f"measure {measure!r}")
        print(f"  occlude_topk            {ours_t * 1e3:9.1f} ms   ({ours_t / t['bare']:.1f}x the bare probe forward)")
        if args.full:
            full_t = t[f"full {measure}"]
            worst_full = float((results[f"ours {measure}"] - results[f"full {measure}"]).abs().max())
            assert worst_full <= 1e-5, f"{measure}: windowed and full images differ by {worst_full}"
            print(f"  occlude_topk, full imgs {full_t * 1e3:9.1f} ms   ({full_t / t['bare']:.1f}x; "
                  f"captum / full {captum_t / full_t:.1f}x; windowed vs full max |diff| {worst_full:.1e})")
        scaled_from = t[f"captum {measure}"] * 1e3
        print(f"  captum.attr.Occlusion   {captum_t * 1e3:9.1f} ms   (scaled from {scaled_from:.1f} ms)")
        print(f"  speed-up captum / ours: {captum_t / ours_t:.1f}x; maps max |diff| vs captum {worst:.1e}")


if __name__ == "__main__":
    main()
