"""support.synthetic: generated runs are valid run stores with plausible tuning dynamics."""

import numpy as np

from recorder.store import RunStore
from support.synthetic import SyntheticRun


def test_written_run_has_every_array_and_rises(tmp_path):
    gen = SyntheticRun(layers={"early": 48, "late": 64}, checkpoints=16, seed=3)
    gen.write(tmp_path / "run")
    run = RunStore.open(tmp_path / "run")
    assert run.n_committed == 16 and run.steps.tolist() == [100 * t for t in range(16)]
    assert run.thumbs.shape == (60, 32, 32, 3) and run.probe_labels.tolist() == sorted(run.probe_labels.tolist())
    late = run.layer("late")
    assert set(late.arrays) >= {"sum_true", "sum_pred", "train_sum", "precision", "threshold", "iou",
                                "topk_index", "topk_map"}
    si = np.nanmean(late.selectivity("si"), axis=1)
    assert si[-1] > si[0] + 0.15  # units become selective
    assert np.nanmean(run.layer("late").selectivity("si")[-1]) > np.nanmean(run.layer("early").selectivity("si")[-1])
    det = late.detectors()["is_detector"].mean(axis=1)
    assert det[0] < 0.2 < det[-1] < 0.95  # IoU rises past the threshold for some units, not all
    acc = run.metric("heldout_accuracy")
    assert acc[0] < 0.3 < 0.8 < acc[-1]
    dead = (late.selectivity("si") == 0).mean(axis=1)
    assert dead[-1] < 0.15


def test_rows_depend_only_on_seed_and_t(tmp_path):
    gen = SyntheticRun(layers={"fc": 12}, checkpoints=6, seed=5)
    gen.write(tmp_path / "whole")
    with gen.open_writer(tmp_path / "parts") as w:  # like a live run: a few rows at a time
        gen.append(w, 0, 2)
        gen.append(w, 2, 6)
    a, b = RunStore.open(tmp_path / "whole"), RunStore.open(tmp_path / "parts")
    assert np.array_equal(a.layer("fc").sum_true, b.layer("fc").sum_true)
    assert np.array_equal(a.layer("fc").iou, b.layer("fc").iou)


def test_lean_runs_skip_pred_and_train_arrays(tmp_path):
    SyntheticRun(layers={"fc": 8}, checkpoints=2, lean=True, map_size=0).write(tmp_path / "lean")
    layer = RunStore.open(tmp_path / "lean").layer("fc")
    assert "sum_pred" not in layer.arrays and "topk_map" not in layer.arrays and "iou" in layer.arrays


def test_signed_layers_store_their_floor_and_rule(tmp_path):
    SyntheticRun(layers={"conv": 24, "fc": 8}, checkpoints=6, seed=2, signed=("conv",)).write(tmp_path / "s")
    run = RunStore.open(tmp_path / "s")
    conv, fc = run.layer("conv"), run.layer("fc")
    assert conv.signed and not fc.signed and "response_min" not in fc.arrays
    mu = conv.class_means()
    assert np.all(conv.response_min[:, None, :] <= mu + 1e-5)  # the floor lies below every class mean
    assert (np.all(mu < 0, axis=1) & ~conv.dead()).any()  # negative yet alive


def test_heldout_accuracy_at_its_own_steps(tmp_path):
    SyntheticRun(layers={"fc": 4}, checkpoints=3, heldout_offset=40, map_size=0).write(tmp_path / "m")
    run = RunStore.open(tmp_path / "m")
    steps, _ = run.scalar("heldout_accuracy")
    assert steps.tolist() == [40, 140, 240] and run.scalar("loss")[0].tolist() == [0, 100, 200]


def test_occlusion_arrays_follow_the_design_definitions(tmp_path):
    """rf is the mean of the stored maps re-centred on their peak cells (the synthetic stand-in for the peak of
    the unit's activation map) and rf_size its size, as the recorder's functions compute them."""
    import torch
    from recorder.occlusion.receptive_field import empirical_rf, rf_size

    SyntheticRun(layers={"conv": 6}, checkpoints=4, occlusion=dict(patch=8, stride=4, every=2)).write(tmp_path / "o")
    layer = RunStore.open(tmp_path / "o").layer("conv")
    assert np.isnan(layer.rf_size[1]).all() and np.isnan(layer.occlusion[3]).all()
    maps = torch.from_numpy(layer.occlusion[2].astype(np.float32))  # (K, k, gh, gw)
    gh = maps.shape[-1]
    flat = maps.flatten(2).argmax(-1)
    cells = torch.stack([flat // gh, flat % gh], dim=-1)  # each map's peak cell
    expected = empirical_rf(maps, cells).numpy()
    np.testing.assert_allclose(layer.rf[2].astype(np.float32), expected, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(layer.rf_size[2], rf_size(torch.from_numpy(layer.rf[2].astype(np.float32)), 4).numpy(),
                               rtol=1e-6)
    assert layer.occlusion_settings["stride"] == 4 and layer.theoretical_rf["size"][0] > 8


def test_stdin_writer_appends_on_request(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent / "support" / "synthetic.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "w"), "--layers", "fc=4", "--checkpoints", "5",
                           "--stdin"], input="2\n4\n", capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(script.parents[1])})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["0 committed", "2 committed", "4 committed"]
    assert RunStore.open(tmp_path / "w").n_committed == 4
