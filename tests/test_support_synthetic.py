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
