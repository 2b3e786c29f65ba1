"""`python -m recorder occlude`: occlusion added from a trained run's checkpoints equals recording it live."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from recorder import RunStore
from recorder.__main__ import main
from training.config import TrainConfig
from training.train import train

SMOKE = {"image_size": 16, "train_size": 64, "heldout_size": 20, "probe_size": 20, "depth": 2, "width": 4,
         "batch_size": 16, "steps": 6, "record_every": 3, "threads": 1, "progress": False}
OCCLUSION = {"occlusion_layers": ["conv1", "conv2"], "occlusion_patch": 4, "occlusion_stride": 4}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three runs of the same training: occlusion every row, every 2nd row, and none."""
    root = tmp_path_factory.mktemp("runs")
    train(TrainConfig(**SMOKE, **OCCLUSION, occlusion_every=1), root / "every1")
    train(TrainConfig(**SMOKE, **OCCLUSION, occlusion_every=2), root / "every2")
    train(TrainConfig(**SMOKE), root / "plain")
    return root


def _hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def assert_same_occlusion(a, b, layers=("conv1", "conv2")):
    assert a.steps.tolist() == b.steps.tolist() == [0, 3, 6]
    for name in layers:
        x, y = a.layer(name), b.layer(name)
        np.testing.assert_array_equal(x.topk_index, y.topk_index)
        for array in ("occlusion", "rf", "rf_size"):
            got, want = getattr(x, array), getattr(y, array)
            assert got.shape == want.shape and got.dtype == want.dtype, array
            np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-3, atol=1e-4,
                                       err_msg=f"{name}/{array}")
        assert x.theoretical_rf == y.theoretical_rf


def test_occlude_a_run_without_occlusion_gives_the_live_maps(runs, tmp_path, capsys):
    run_dir = _copy(runs / "plain", tmp_path / "plain")
    rows_before = _hashes(run_dir / "record.zarr" / "layers")
    assert main(["occlude", str(run_dir), "--layers", "conv1,conv2", "--patch", "4", "--stride", "4"]) == 0
    assert "occluded 3 checkpoint(s)" in capsys.readouterr().out
    assert _hashes(run_dir / "record.zarr" / "layers") == rows_before  # committed rows untouched
    added, live = RunStore.open(run_dir), RunStore.open(runs / "every1")
    assert not added.layer("conv1").has("occlusion")
    assert_same_occlusion(added, live)
    assert added.layer("conv1").occlusion_settings == {"patch": 4, "stride": 4, "fill": "mean", "measure": "peak"}
    assert main(["occlude", str(run_dir), "--patch", "4", "--stride", "4"]) == 0  # again: nothing left to do
    assert "nothing to occlude" in capsys.readouterr().out


def test_occlude_fills_the_rows_a_live_recording_skipped(runs, tmp_path):
    run_dir = _copy(runs / "every2", tmp_path / "every2")
    before = RunStore.open(run_dir).layer("conv2")
    assert np.isnan(before.rf_size[1]).all() and np.isfinite(before.rf_size[0]).any()
    assert main(["occlude", str(run_dir)]) == 0  # the layers' recorded settings, every row
    assert_same_occlusion(RunStore.open(run_dir), RunStore.open(runs / "every1"))


def test_occlude_every_other_row_and_the_added_group_survives_a_resume(runs, tmp_path):
    run_dir = _copy(runs / "plain", tmp_path / "plain")
    assert main(["occlude", str(run_dir), "--layers", "conv2", "--every", "2", "--patch", "4", "--stride",
                 "4"]) == 0
    run = RunStore.open(run_dir)
    size = run.layer("conv2").rf_size
    assert np.isfinite(size[[0, 2]]).any(axis=1).all() and np.isnan(size[1]).all()
    with pytest.raises(KeyError, match="no occlusion was recorded or added"):
        run.layer("conv1").rf_size
    train(TrainConfig(**{**SMOKE, "steps": 9}), run_dir)  # resume: the writer trims rows, not added occlusion
    resumed = RunStore.open(run_dir)
    assert resumed.steps.tolist() == [0, 3, 6, 9]
    np.testing.assert_array_equal(resumed.layer("conv2").rf_size[:3], size)
    assert np.isnan(resumed.layer("conv2").rf_size[3]).all()


@pytest.mark.parametrize("args,words", [
    (["--patch", "5"], ["patch", "already has occlusion", "5"]),
    (["--fill", "blur"], ["fill", "'blur'", "['zero', 'mean', 'noise']"]),
    (["--layers", "fc"], ["'fc'", "no spatial map"]),
    (["--layers", "conv9"], ["'conv9'", "not recorded"]),
    (["--every", "0"], ["every", "0", ">= 1"]),
    (["--builder", "nowhere:build"], ["builder 'nowhere:build' cannot be loaded"]),
    (["--builder", "training.rebuild"], ["'module:function'"]),
    (["--units", "conv2"], ["--units", "'conv2'", "LAYER:UNITS"]),
    (["--units", "conv2:a-3"], ["--units", "'conv2:a-3'", "conv3:0-15,40"]),
    (["--units", "conv2:99"], ["units [99]", "'conv2'", "8 units (valid: 0..7)"]),
    (["--layers", "conv1", "--units", "conv2:0"], ["units given for layer 'conv2'", "not occluded"]),
])
def test_bad_occlude_arguments_are_named(runs, tmp_path, capsys, args, words):
    run_dir = _copy(runs / "every2", tmp_path / "every2")
    assert main(["occlude", str(run_dir), *args]) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, (word, err)


def test_a_run_whose_config_names_no_builder_needs_one(runs, tmp_path, capsys):
    run_dir = _copy(runs / "plain", tmp_path / "plain")
    config = json.loads((run_dir / "config.json").read_text())
    del config["builder"]
    (run_dir / "config.json").write_text(json.dumps(config))
    assert main(["occlude", str(run_dir), "--layers", "conv2"]) == 2
    assert "--builder" in capsys.readouterr().err
    assert main(["occlude", str(run_dir), "--layers", "conv2", "--builder", "training.rebuild:model_and_probe"]) == 0


def test_occlude_some_units_leaves_the_others_nan(runs, tmp_path, capsys):
    run_dir = _copy(runs / "plain", tmp_path / "plain")
    assert main(["occlude", str(run_dir), "--layers", "conv2", "--units", "conv2:0,2-3", "--patch", "4",
                 "--stride", "4"]) == 0
    added, live = RunStore.open(run_dir).layer("conv2"), RunStore.open(runs / "every1").layer("conv2")
    for array in ("occlusion", "rf", "rf_size"):
        got, want = getattr(added, array).astype(np.float32), getattr(live, array).astype(np.float32)
        np.testing.assert_allclose(got[:, [0, 2, 3]], want[:, [0, 2, 3]], rtol=1e-3, atol=1e-4, err_msg=array)
        assert np.isnan(got[:, 1]).all(), array

