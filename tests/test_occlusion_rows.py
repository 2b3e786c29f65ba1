"""Occlusion recorded by the Recorder: rows equal the public functions at each checkpoint."""

import copy

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import TinyNet, batches, sgd_steps, tiny_probe
from torch.nn.parallel import DistributedDataParallel

from recorder import Recorder, RunStore
from recorder.occlusion import discrepancy, empirical_rf, grid_shape, peak_cells, rf_size, theoretical_rf
from recorder.occlusion.rows import occlusion_arrays
from recorder.occlusion.settings import OcclusionSettings

LAYERS = ["conv1", "block.conv", "fc"]
N_IMAGES, SIZE, TOPK = 12, 8, 3


def record(store, occlusion, steps=4, topk_by=("max",), snapshots=None, dropout=0.0, batchnorm=False):
    """Train TinyNet a few SGD steps with a Recorder (a row at every step); `snapshots[step]`
    gets the weights each row was recorded with."""
    torch.manual_seed(0)
    model = TinyNet(batchnorm=batchnorm, dropout=dropout)
    rec = Recorder(model, LAYERS, probe=tiny_probe(n=N_IMAGES, size=SIZE), store=store, every=1, topk=TOPK,
                   progress=False, occlusion=occlusion, topk_by=topk_by)

    def snapshot(step):
        if snapshots is not None:
            snapshots[step] = copy.deepcopy(model.state_dict())

    sgd_steps(model, batches(steps), rec, after_step=snapshot)
    rec.close()
    return model


def layer_peak(model, layer, images):
    """(N, K, 2) row, col of each unit's max on each image, from a plain forward hook."""
    seen = {}
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda m, i, o: seen.setdefault("out", o.detach()))
    with torch.no_grad():
        model.eval()
        model(images)
    handle.remove()
    out = seen["out"]  # (N, K, h, w)
    flat = out.flatten(2).argmax(2)
    return torch.stack([flat // out.shape[3], flat % out.shape[3]], -1)


def expected_row(model, layer, topk_index, patch, stride, fill, measure):
    """Per unit: `discrepancy` on its own top-k images (one unit at a time), the peak maps
    re-centred by the public RF functions."""
    images = tiny_probe(n=N_IMAGES, size=SIZE).batch(range(N_IMAGES))
    rf = theoretical_rf(model, layer, (3, SIZE, SIZE))
    maps, canvases = [], []
    for unit, index in enumerate(topk_index):
        x = images[torch.as_tensor(np.array(index), dtype=torch.int64)]
        maps.append(discrepancy(model, layer, x, patch, stride, fill, measure, units=[unit])[:, 0])
        peak_maps = discrepancy(model, layer, x, patch, stride, fill, "peak", units=[unit])[:, 0]  # (k, gh, gw)
        peak = layer_peak(model, layer, x)[:, unit]  # (k, 2)
        cells = peak_cells(peak, rf, (SIZE, SIZE), patch, stride)
        canvases.append(empirical_rf(peak_maps[None], cells[None])[0])
    canvas = torch.stack(canvases)
    return torch.stack(maps).numpy(), canvas.numpy(), rf_size(canvas, stride).numpy(), rf


@pytest.mark.parametrize("fill,measure", [("mean", "peak"), ("zero", "mean")])
def test_rows_equal_the_public_functions_at_each_checkpoint(tmp_path, fill, measure):
    snapshots = {}
    model = record(tmp_path / "run", dict(patch=3, stride=2, fill=fill, measure=measure, every=2),
                   snapshots=snapshots)
    run = RunStore.open(tmp_path / "run")
    assert run.steps.tolist() == [0, 1, 2, 3]
    for name in ("conv1", "block.conv"):
        layer = run.layer(name)
        assert layer.occlusion.shape == (4, layer.units, TOPK, 4, 4) and layer.rf.shape == (4, layer.units, 7, 7)
        for t, step in enumerate(run.steps.tolist()):
            if t % 2:  # no occlusion in this row
                assert np.isnan(layer.occlusion[t]).all() and np.isnan(layer.rf[t]).all()
                assert np.isnan(layer.rf_size[t]).all()
                continue
            model.load_state_dict(snapshots[step])
            maps, canvas, size, rf = expected_row(model, name, layer.topk_index[t], 3, 2, fill, measure)
            np.testing.assert_allclose(layer.occlusion[t], maps.astype(np.float16), rtol=2e-3, atol=1e-4)
            np.testing.assert_allclose(layer.rf[t], canvas.astype(np.float16), rtol=2e-3, atol=1e-4)
            np.testing.assert_allclose(layer.rf_size[t], size, rtol=1e-5)
        attrs = run.layer_attrs(name)
        assert attrs["occlusion"] == {"patch": 3, "stride": 2, "fill": fill, "measure": measure, "every": 2}
        assert attrs["theoretical_rf"] == rf.to_dict() == layer.theoretical_rf
    assert not run.layer("fc").has("occlusion")  # layers=None: the recorded layers with a spatial map


def test_units_not_chosen_hold_nan_and_layers_limit_the_arrays(tmp_path):
    record(tmp_path / "run", dict(layers=["block.conv"], units={"block.conv": [1, 4]}, patch=4, stride=4, every=1),
           steps=2)
    run = RunStore.open(tmp_path / "run")
    layer = run.layer("block.conv")
    assert not run.layer("conv1").has("occlusion")
    chosen = np.zeros(layer.units, bool)
    chosen[[1, 4]] = True
    for array in (layer.occlusion, layer.rf, layer.rf_size):
        flat = array.reshape(array.shape[0], array.shape[1], -1)
        assert np.isnan(flat[:, ~chosen]).all()
        assert np.isfinite(flat[:, chosen]).any(axis=2).all()


def test_the_row_size_is_printed_once_before_the_first_occlusion_row(tmp_path, capfd):
    record(tmp_path / "run", dict(patch=4, stride=2, every=2), steps=4)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "occlusion every" in line]
    assert len(lines) == 1
    k1, k2 = TinyNet().conv1.out_channels, TinyNet().block.conv.out_channels
    gh = 3  # ceil((8 - 4) / 2) + 1
    assert grid_shape(SIZE, SIZE, 4, 2) == (gh, gh)
    size = (k1 + k2) * (2 * TOPK * gh * gh + 2 * (2 * gh - 1) ** 2 + 4)
    assert f"{size / 1e6:.3g} MB per row" in lines[0]


def test_topk_by_mean_equals_a_sort_of_the_mean_responses(tmp_path):
    model = record(tmp_path / "run", None, steps=1, topk_by=("max", "mean"))
    run = RunStore.open(tmp_path / "run")
    images = tiny_probe(n=N_IMAGES, size=SIZE).batch(range(N_IMAGES))
    seen = {}
    handles = [dict(model.named_modules())[name].register_forward_hook(
        lambda m, i, o, name=name: seen.__setitem__(name, o.detach())) for name in LAYERS]
    with torch.no_grad():
        model.eval()
        model(images)
    for handle in handles:
        handle.remove()
    for name in LAYERS:
        out = seen[name]
        mean = (out.mean((2, 3)) if out.dim() == 4 else out).numpy()  # (N, K)
        layer = run.layer(name)
        index, value = layer.topk_mean_index[-1], layer.topk_mean_value[-1]  # (K, k)
        np.testing.assert_allclose(value, -np.sort(-mean.T, axis=1)[:, :TOPK], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.take_along_axis(mean.T, index.astype(np.int64), 1), value, rtol=1e-5,
                                   atol=1e-6)
    assert not RunStore.open(tmp_path / "run").layer("fc").has("occlusion")


def test_default_topk_by_writes_no_mean_arrays(tmp_path):
    record(tmp_path / "run", None, steps=1)
    assert not RunStore.open(tmp_path / "run").layer("conv1").has("topk_mean_index")


def test_occlusion_changes_nothing_in_training(tmp_path):
    """Bitwise-identical weights, train flags and RNG with and without a recorder that occludes."""
    results = []
    for store in (None, tmp_path / "run"):
        torch.manual_seed(0)
        model = TinyNet(batchnorm=True, dropout=0.3)
        rec = None if store is None else Recorder(
            model, LAYERS, probe=tiny_probe(n=N_IMAGES, size=SIZE), store=store, every=1, topk=TOPK,
            progress=False, occlusion=dict(patch=3, stride=2, fill="noise", every=1))
        model.train()
        sgd_steps(model, batches(3), rec)
        if rec is not None:
            rec.close()
        results.append((model.state_dict(), [m.training for m in model.modules()], torch.rand(4)))
    (a, flags_a, rng_a), (b, flags_b, rng_b) = results
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert flags_a == flags_b and all(flags_a)
    assert torch.equal(rng_a, rng_b)
    assert np.isfinite(RunStore.open(tmp_path / "run").layer("conv1").rf_size).any()


@pytest.mark.parametrize("occlusion,words", [
    (dict(patch=9), ["occlusion patch", "9", "8x8"]),
    (dict(stride=0), ["occlusion stride", "0", ">= 1"]),
    (dict(stride=-2), ["occlusion stride", "-2", ">= 1"]),
    (dict(fill="blur"), ["occlusion fill", "'blur'", "['zero', 'mean', 'noise']"]),
    (dict(measure="sum"), ["occlusion measure", "'sum'", "['mean', 'max', 'peak']"]),
    (dict(every=0), ["occlusion every", "0", "integer >= 1"]),
    (dict(every=2.5), ["occlusion every", "2.5", "integer >= 1"]),
    (dict(size=3), ["unknown key", "'size'", "'patch'"]),
    (dict(layers=["fc"]), ["'fc'", "no spatial map", "'conv1'", "'block.conv'"]),
    (dict(layers=["block.relu"]), ["'block.relu'", "not recorded", "'conv1'"]),
    (dict(units={"conv1": [6]}), ["units [6]", "'conv1'", "0..5"]),
    ("yes", ["occlusion given an invalid value", "'yes'"]),
])
def test_bad_occlusion_arguments_are_named(tmp_path, occlusion, words):
    with pytest.raises(ValueError) as info:
        Recorder(TinyNet(), LAYERS, probe=tiny_probe(n=N_IMAGES, size=SIZE), store=tmp_path / "run",
                 occlusion=occlusion, progress=False)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert not (tmp_path / "run" / "record.zarr").exists()


def test_every_bad_value_is_reported_together(tmp_path):
    with pytest.raises(ValueError) as info:
        Recorder(TinyNet(), LAYERS, probe=tiny_probe(n=N_IMAGES, size=SIZE), store=tmp_path / "run",
                 occlusion=dict(patch=20, stride=0, fill="blur", measure="sum", every=-1), topk_by=("mean",))
    text = str(info.value)
    assert text.startswith("6 invalid Recorder arguments")
    for word in ("patch", "stride", "fill", "measure", "every", "topk_by"):
        assert f"{word} given an invalid value" in text


def test_occlusion_without_a_probe_is_refused(tmp_path):
    with pytest.raises(ValueError, match="occlusion needs a probe"):
        Recorder(TinyNet(), LAYERS, classes=["a", "b", "c"], store=tmp_path / "run", occlusion={})


# ------------------------------------------------------------------ DDP
def _ddp_record(store, rank=0, world=1):
    torch.manual_seed(0)
    model = TinyNet(batchnorm=False, dropout=0.0)
    if world > 1:
        model = DistributedDataParallel(model)
    rec = Recorder(model, LAYERS, probe=tiny_probe(n=N_IMAGES + 1, size=SIZE), store=store, every=2, topk=TOPK,
                   progress=False, batch_size=4, occlusion=dict(patch=3, stride=2, every=1,
                                                                units={"block.conv": [0, 3, 5, 6, 11]}))
    sgd_steps(model, batches(3, batch=8), rec, rank=rank, world=world)
    rec.close()


def _worker(rank, world, init_file, store):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        _ddp_record(store, rank, world)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_occlude_what_one_process_does(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "ddp")), nprocs=2, join=True)
    _ddp_record(tmp_path / "single")
    ddp, single = RunStore.open(tmp_path / "ddp"), RunStore.open(tmp_path / "single")
    assert ddp.steps.tolist() == single.steps.tolist()
    for name in ("conv1", "block.conv"):
        a, b = ddp.layer(name), single.layer(name)
        np.testing.assert_array_equal(a.topk_index, b.topk_index)
        for array in ("occlusion", "rf", "rf_size"):
            x, y = getattr(a, array), getattr(b, array)
            np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=f"{name}/{array}")
            np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4, err_msg=f"{name}/{array}")
        assert np.isfinite(a.rf_size).any()


def test_each_shard_computes_only_its_units_and_the_shards_sum_to_the_whole():
    torch.manual_seed(0)
    model = TinyNet(batchnorm=False, dropout=0.0)
    probe = tiny_probe(n=N_IMAGES, size=SIZE)
    settings = OcclusionSettings.of(dict(patch=3, stride=2))
    index = {"block.conv": torch.randint(0, N_IMAGES, (12, TOPK), generator=torch.Generator().manual_seed(1))}
    rf = {"block.conv": theoretical_rf(model, "block.conv", (3, SIZE, SIZE))}
    units = {"block.conv": torch.tensor([0, 3, 5, 6, 11])}
    whole = occlusion_arrays(model, probe, index, settings, rf, units, image_size=(SIZE, SIZE))["block.conv"]
    shards = [occlusion_arrays(model, probe, index, settings, rf, units, image_size=(SIZE, SIZE),
                               shard=(rank, 2))["block.conv"] for rank in range(2)]
    for rank, shard in enumerate(shards):
        computed = torch.isfinite(shard["rf_size"]) & (shard["rf_size"] != 0)
        assert computed.nonzero().flatten().tolist() == units["block.conv"][rank::2].tolist()
    for key, value in whole.items():
        summed = shards[0][key] + shards[1][key]
        chosen = units["block.conv"]
        torch.testing.assert_close(summed[chosen], value[chosen], equal_nan=True)
        assert torch.isnan(value[[1, 2, 4, 7, 8, 9, 10]]).all()
