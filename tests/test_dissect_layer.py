import numpy as np
import torch
import torch.nn.functional as F
from helpers import CONCEPTS, TinyNet, seg_probe

from recorder import Recorder, RunStore
from recorder.dissect.layer import TopMaps
from recorder.probe_pass import observation_mode, run_probe_pass

def brute_force_dissection(model, probe, layer, q, topk):
    """Per image and per unit: upsample one map, threshold, count pixels."""
    maps = []
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: maps.append(o[0].clone()))
    model.eval()
    with torch.no_grad():
        for i in range(len(probe)):
            model(probe[i]["image"][None])
    handle.remove()
    maps = torch.stack(maps).double()  # (N, K, h, w)
    n, units = maps.shape[:2]
    thresholds = np.array([np.quantile(maps[:, k].numpy().ravel(), 1 - q) for k in range(units)])
    category = [c for _, c in CONCEPTS]
    inter = np.zeros((units, len(CONCEPTS)))
    union = np.zeros((units, len(CONCEPTS)))
    for i in range(n):
        seg = probe[i]["seg"].numpy()  # (L, H, W)
        carried = {category[c - 1] for c in np.unique(seg) if c > 0}
        for k in range(units):
            up = F.interpolate(maps[i, k][None, None].float(), size=seg.shape[1:], mode="bilinear",
                               align_corners=False)[0, 0].numpy()
            mask = up > thresholds[k]
            for c in range(len(CONCEPTS)):
                if category[c] not in carried:
                    continue
                label = (seg == c + 1).any(0)
                inter[k, c] += (mask & label).sum()
                union[k, c] += (mask | label).sum()
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0)
    spatial_max = maps.flatten(2).amax(2).numpy()  # (N, K)
    top = np.argsort(-spatial_max, axis=0, kind="stable")[:topk].T  # (K, k)
    return thresholds, iou, top, maps.float().numpy()


def test_thresholds_iou_and_topk_maps_equal_brute_force(tmp_path):
    torch.manual_seed(1)
    model = TinyNet(batchnorm=False, dropout=0.0)
    probe = seg_probe()
    with Recorder(model, ["conv1", "block.conv", "fc"], probe=probe, store=tmp_path / "r", quantile=0.1,
                  topk=4, batch_size=5, progress=False) as rec:
        rec.record(0)
    run = RunStore.open(tmp_path / "r")
    for layer in ["conv1", "block.conv"]:
        thresholds, iou, top, maps = brute_force_dissection(model, probe, layer, 0.1, 4)
        stored = run.layer(layer)
        np.testing.assert_allclose(stored.threshold[0], thresholds, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stored.iou[0].astype(np.float64), iou, atol=1e-3)
        assert (iou > 0).any()
        np.testing.assert_array_equal(stored.topk_index[0], top)
        expected_maps = np.stack([maps[top[k], k] for k in range(len(top))])  # (K, k, h, w)
        np.testing.assert_allclose(stored.topk_map[0].astype(np.float32), expected_maps, rtol=1e-2, atol=1e-2)
    assert not run.layer("fc").has("iou") and not run.layer("fc").has("threshold")


def test_pass_two_without_cache_equals_cached():
    model = TinyNet(batchnorm=False, dropout=0.0)
    probe = seg_probe(n=9)
    shapes = {"conv1": (6, 8, 8)}
    results = []
    for cache_bytes in (1 << 30, 0):
        with observation_mode(model):
            _, _, dissections = run_probe_pass(model, probe, ["conv1"], shapes, torch.device("cpu"),
                                               batch_size=4, quantile=0.2, cache_bytes=cache_bytes,
                                               progress=False)
        results.append(dissections["conv1"].row_arrays())
    for key in results[0]:
        np.testing.assert_array_equal(results[0][key], results[1][key], err_msg=key)


def test_top_maps_streaming_and_two_ranks_equal_a_full_sort():
    torch.manual_seed(0)
    spatial_max, maps = torch.randn(30, 5), torch.randn(30, 5, 3, 3)
    one = TopMaps(5, 4, (3, 3))
    for first in range(0, 30, 7):
        one.add(first, spatial_max[first:first + 7], maps[first:first + 7])
    ranks = [TopMaps(5, 4, (3, 3), world_size=2, rank=r) for r in range(2)]
    ranks[0].add(0, spatial_max[:16], maps[:16])
    ranks[1].add(16, spatial_max[16:], maps[16:])
    merged = TopMaps(5, 4, (3, 3), world_size=2)
    merged.load_state_dict({k: ranks[0].state_dict()[k] + ranks[1].state_dict()[k] for k in merged._state})
    order = spatial_max.argsort(0, descending=True)[:4].T  # (K, k)
    for top in (one, merged):
        index, value, top_maps = top.result()
        assert torch.equal(index, order)
        assert torch.equal(value, spatial_max.gather(0, order.T).T)
        for k in range(5):
            assert torch.equal(top_maps[k], maps[order[k], k])


def test_fewer_images_than_k():
    top = TopMaps(2, 3, (1, 1))
    top.add(0, torch.tensor([[1.0, 2.0], [3.0, 0.5]]), torch.zeros(2, 2, 1, 1))
    index, value, _ = top.result()
    assert index.tolist() == [[1, 0, -1], [0, 1, -1]]
