"""Network Dissection counting speed, measured side by side in one process.

    python bench/dissect_speed.py [--images 512] [--repeats 5] [--threads 2] [--device cpu]

512 units with 7x7 maps, 112x112 segmentations with two layers (40 "object" concepts
in Voronoi blobs, 20 "color" concepts in coarser blobs; about 90% of pixels labelled),
q = 0.005. Prints images per second of
  (a) `IoUCounts.add` on batches of 64 (thresholds given), and separately the
      `TopValues` threshold pass (buffer sized for a 10 000-image probe); also
      `IoUCounts(method="interpolate")`: only the crossing maps, through F.interpolate;
  (b) a dense baseline: every map upsampled, thresholded, masks (K, HW) x one-hot
      labels (HW, P) per image;
  (c) the reference style (NetDissect-Lite's loop over units: resize one map,
      threshold, bincount) on a few images;
and the ratio (a) / (b). Each figure is the median of `--repeats` runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from recorder.dissect import IoUCounts, TopValues

UNITS, MAP, SEG, Q, BATCH = 512, 7, 112, 0.005, 64
OBJECTS, COLORS = 40, 20
CATEGORY = torch.tensor([0] * OBJECTS + [1] * COLORS)


def voronoi(n: int, seeds: int, first_id: int, n_ids: int, unlabelled: float, g: torch.Generator) -> torch.Tensor:
    """(n, SEG, SEG) blob-shaped label maps: each pixel takes the id of its nearest seed."""
    points = torch.rand(n, seeds, 2, generator=g) * SEG
    ids = torch.randint(first_id, first_id + n_ids, (n, seeds), generator=g)
    ids[torch.rand(n, seeds, generator=g) < unlabelled] = 0
    ys, xs = torch.meshgrid(torch.arange(SEG) + 0.5, torch.arange(SEG) + 0.5, indexing="ij")
    grid = torch.stack([ys, xs], -1).reshape(-1, 2)  # (HW, 2)
    nearest = torch.cdist(grid[None].expand(n, -1, -1), points).argmin(-1)  # (n, HW)
    return ids.gather(1, nearest).reshape(n, SEG, SEG)


def make_probe(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth, sparse post-ReLU-like maps (n, K, 7, 7) and segmentations (n, 2, 112, 112)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, UNITS, MAP + 2, MAP + 2, generator=g)
    smooth = F.avg_pool2d(noise, 3, stride=1)  # spatially correlated, like conv features
    scale = torch.rand(UNITS, generator=g)[:, None, None] * 2 + 0.5
    maps = torch.relu(smooth * scale - 0.3)
    seg = torch.stack([voronoi(n, 8, 1, OBJECTS, 0.1, g),
                       voronoi(n, 4, OBJECTS + 1, COLORS, 0.1, g)], dim=1)
    return maps.contiguous(), seg


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ours(maps, seg, thresholds, device, method="runs"):
    counts = IoUCounts(UNITS, CATEGORY, 2, device=device, method=method)
    for start in range(0, maps.shape[0], BATCH):
        counts.add(maps[start:start + BATCH], thresholds, seg[start:start + BATCH])
    return counts


def threshold_pass(maps, device):
    top = TopValues(UNITS, 10_000 * MAP * MAP, Q, device=device)
    for start in range(0, maps.shape[0], BATCH):
        top.add(maps[start:start + BATCH])
    return top.thresholds()


def dense(maps, seg, thresholds, chunk: int = 2):
    """Upsample every map, threshold, and count with a dense matmul per image."""
    p = len(CATEGORY)
    inter = torch.zeros(UNITS, p)
    active = torch.zeros(UNITS, 2)
    for start in range(0, maps.shape[0], chunk):
        block = maps[start:start + chunk]
        up = F.interpolate(block, size=(SEG, SEG), mode="bilinear", align_corners=False)
        masks = (up > thresholds[None, :, None, None]).flatten(2).float()  # (b, K, HW)
        labels = seg[start:start + chunk].flatten(2)  # (b, L, HW)
        onehot = torch.zeros(block.shape[0], SEG * SEG, p + 1)
        for layer in range(labels.shape[1]):
            onehot.scatter_(2, labels[:, layer, :, None], 1.0)
        onehot = onehot[:, :, 1:]  # (b, HW, P)
        inter += torch.bmm(masks, onehot).sum(0)
        carried = torch.zeros(block.shape[0], 2).index_add_(1, CATEGORY, onehot.sum(1)) > 0
        active += masks.sum(2).T @ carried.float()
    return inter, active


def reference(maps, seg, thresholds):
    """NetDissect-Lite style: a Python loop over images and units."""
    p = len(CATEGORY)
    inter = torch.zeros(UNITS, p + 1, dtype=torch.int64)
    for i in range(maps.shape[0]):
        for unit in range(UNITS):
            up = F.interpolate(maps[i, unit][None, None], size=(SEG, SEG), mode="bilinear",
                               align_corners=False)[0, 0]
            mask = up > thresholds[unit]
            inter[unit] += torch.bincount(seg[i][:, mask].reshape(-1), minlength=p + 1)
    return inter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=512, help="probe images timed in (a)")
    parser.add_argument("--dense-images", type=int, default=32, help="images timed in (b)")
    parser.add_argument("--reference-images", type=int, default=4, help="images timed in (c)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    maps, seg = make_probe(args.images)
    thresholds = threshold_pass(maps, "cpu")
    print(f"{UNITS} units {MAP}x{MAP} -> {SEG}x{SEG}, q={Q}, {len(CATEGORY)} concepts, "
          f"{args.threads} threads, device {device}")
    crossing = (maps.flatten(2).amax(2) > thresholds).float().mean().item()
    labelled = (seg > 0).float().mean().item()
    print(f"maps crossing their threshold: {crossing:.1%}; labelled pixels: {labelled:.1%}")

    d_maps, d_seg, d_thr = maps.to(device), seg.to(device), thresholds.to(device)

    def run_ours():
        ours(d_maps, d_seg, d_thr, device)
        sync()

    def run_thresholds():
        threshold_pass(d_maps, device)
        sync()

    def run_crossing():
        ours(d_maps, d_seg, d_thr, device, method="interpolate")
        sync()

    run_ours()  # warm-up
    t_ours = median_time(run_ours, args.repeats)
    t_crossing = median_time(run_crossing, max(1, args.repeats // 2))
    t_thr = median_time(run_thresholds, args.repeats)
    n_dense = min(args.dense_images, args.images)
    t_dense = median_time(lambda: dense(maps[:n_dense], seg[:n_dense], thresholds), max(1, args.repeats // 2))
    n_ref = min(args.reference_images, args.images)
    t_ref = median_time(lambda: reference(maps[:n_ref], seg[:n_ref], thresholds), 1)

    # the three agree on the intersection counts of the images they share
    inter_dense, _ = dense(maps[:n_ref], seg[:n_ref], thresholds)
    counts = ours(maps[:n_ref], seg[:n_ref], thresholds, "cpu")
    assert torch.equal(counts.intersection, inter_dense.round().long())
    assert torch.equal(counts.intersection, reference(maps[:n_ref], seg[:n_ref], thresholds)[:, 1:])
    full, crossing_only = ours(maps, seg, thresholds, "cpu"), ours(maps, seg, thresholds, "cpu", "interpolate")
    for key, value in full.state_dict().items():
        assert torch.equal(value, crossing_only.state_dict()[key]), key

    rate_ours, rate_dense = args.images / t_ours, n_dense / t_dense
    print(f"(a) IoUCounts.add, batches of {BATCH}: {rate_ours:10.1f} img/s")
    print(f"    TopValues threshold pass:        {args.images / t_thr:10.1f} img/s")
    print(f"    crossing maps via F.interpolate: {args.images / t_crossing:10.1f} img/s")
    print(f"(b) dense upsample + matmul:         {rate_dense:10.1f} img/s")
    print(f"(c) reference loop over units:       {n_ref / t_ref:10.1f} img/s")
    print(f"ratio (a)/(b): {rate_ours / rate_dense:.1f}x   (a)/(c): {rate_ours * t_ref / n_ref:.1f}x")


if __name__ == "__main__":
    main()
