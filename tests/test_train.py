"""training.train: a complete run, resume, recording that leaves training alone, the CLI."""

import json
import math

import numpy as np
import pytest
import torch

from recorder import RunStore
from training import train as train_cli
from training.checkpoints import checkpoint_steps, latest_checkpoint, load_checkpoint
from training.config import ConfigError, TrainConfig
from training.sweep import PRESETS
from training.train import lr_factor, train


def tiny(**changes) -> TrainConfig:
    """The smoke preset's config: 16x16 world, 2 conv blocks of width 4, 6 steps, rows every 3."""
    return TrainConfig.from_dict({**PRESETS["smoke"].base, "progress": False, **changes})


def final_weights(run) -> dict:
    return load_checkpoint(latest_checkpoint(run))["model"]


def test_a_run_writes_config_rows_checkpoints_and_heldout_accuracy(tmp_path):
    config = tiny()
    summary = train(config, tmp_path / "run")
    assert summary["steps"] == 6 and not summary["resumed"]
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == config.to_dict()
    run = RunStore.open(tmp_path / "run")
    assert run.steps.tolist() == [0, 3, 6]
    assert run.config == config.to_dict()
    assert run.layers == ["conv1", "conv2", "fc"]
    accuracy = run.metrics["heldout_accuracy"]
    assert accuracy.shape == (3,) and not np.isnan(accuracy).any()
    assert accuracy[-1] == pytest.approx(summary["heldout_accuracy"])
    assert np.isnan(run.metrics["train_loss"][0]) and not np.isnan(run.metrics["train_loss"][1:]).any()
    assert run.layer("conv2").iou.shape[0] == 3  # dissection on the world's concepts
    assert run.layer("conv1").train_count[0].sum() == 0  # row 0: the untrained model, no batch yet
    assert run.layer("conv1").train_count[1:].sum() == 6 * config.batch_size
    assert checkpoint_steps(tmp_path / "run") == [0, 3, 6]
    state = torch.load(tmp_path / "run" / "checkpoints" / "step_3.pt", weights_only=True)
    assert set(state) == {"model", "optimizer", "scheduler", "step", "rng", "config"}
    assert state["step"] == 3 and state["scheduler"]["last_epoch"] == 3


def test_rerun_resumes_and_steps_continue(tmp_path):
    train(tiny(), tmp_path / "run")
    again = train(tiny(), tmp_path / "run")  # finished: nothing to do
    assert again["resumed"] and again["start_step"] == 6
    longer = train(tiny(steps=9), tmp_path / "run")
    assert longer["resumed"] and longer["start_step"] == 6 and longer["steps"] == 9
    assert RunStore.open(tmp_path / "run").steps.tolist() == [0, 3, 6, 9]
    assert checkpoint_steps(tmp_path / "run") == [0, 3, 6, 9]


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    config = tiny(augment=True, dropout=0.3, batchnorm=True, steps=8, record_every=4)
    train(config, tmp_path / "whole")
    first = train(config, tmp_path / "parts", stop_at=5)
    assert first["steps"] == 5
    train(config, tmp_path / "parts")
    assert RunStore.open(tmp_path / "parts").steps.tolist() == [0, 4, 5, 8]
    whole, parts = final_weights(tmp_path / "whole"), final_weights(tmp_path / "parts")
    for key in whole:
        assert torch.equal(whole[key], parts[key]), key


def test_recording_does_not_change_training(tmp_path):
    config = tiny(augment=True, dropout=0.3, batchnorm=True)
    train(config, tmp_path / "recorded")
    train(config.replace(record=False), tmp_path / "plain")
    assert not (tmp_path / "plain" / "record.zarr").exists()
    recorded, plain = final_weights(tmp_path / "recorded"), final_weights(tmp_path / "plain")
    assert any("running_mean" in key for key in plain)
    for key in plain:
        assert torch.equal(recorded[key], plain[key]), key


def test_resume_with_another_config_is_refused(tmp_path):
    train(tiny(), tmp_path / "run")
    with pytest.raises(ConfigError, match=r"cannot resume .*differs in \['lr'\]"):
        train(tiny(lr=0.5), tmp_path / "run")


def test_a_record_without_checkpoints_is_refused(tmp_path):
    train(tiny(), tmp_path / "run")
    for path in (tmp_path / "run" / "checkpoints").iterdir():
        path.unlink()
    with pytest.raises(FileExistsError, match="no checkpoints to resume from"):
        train(tiny(), tmp_path / "run")


@pytest.mark.parametrize("changes", [
    {"optimizer": "adamw", "lr": 1e-3, "schedule": "step", "label_smoothing": 0.1},
    {"schedule": "constant", "warmup_steps": 2, "selectivity_alpha": 0.5, "weight_decay": 1e-3},
])
def test_optimizers_and_regularizers_train(tmp_path, changes):
    summary = train(tiny(steps=3, **changes), tmp_path / "run")
    run = RunStore.open(tmp_path / "run")
    assert run.steps.tolist() == [0, 3] and 0 <= summary["heldout_accuracy"] <= 1
    if changes.get("selectivity_alpha"):
        assert 0 <= run.metrics["train_selectivity"][-1] <= 1


def test_learning_rate_schedules():
    cosine = TrainConfig(steps=100)
    assert lr_factor(cosine, 0) == 1.0 and lr_factor(cosine, 50) == pytest.approx(0.5)
    assert lr_factor(cosine, 100) == pytest.approx(0.0, abs=1e-12)
    step = TrainConfig(steps=100, schedule="step")
    assert [lr_factor(step, s) for s in (0, 49, 50, 75)] == pytest.approx([1, 1, 0.1, 0.01])
    warm = TrainConfig(steps=100, schedule="constant", warmup_steps=4)
    assert [lr_factor(warm, s) for s in (0, 3, 4, 99)] == [0.25, 1.0, 1.0, 1.0]
    assert not math.isnan(lr_factor(TrainConfig(steps=1), 1))


def test_cli_reads_a_config_file_and_overrides(tmp_path, capsys):
    (tmp_path / "c.json").write_text(json.dumps({**PRESETS["smoke"].base, "progress": False}))
    train_cli.main(["--out", str(tmp_path / "run"), "--config", str(tmp_path / "c.json"), "--set", "steps=3"])
    assert "step 3, held-out accuracy" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "config.json").read_text())["steps"] == 3
    with pytest.raises(SystemExit):
        train_cli.main(["--out", str(tmp_path / "x"), "--set", "optimizer=adam"])
    assert "given an invalid value: 'adam'" in capsys.readouterr().err


def test_a_diverging_loss_stops_the_run(tmp_path):
    with pytest.raises(FloatingPointError, match=r"the loss is (nan|inf|-inf) at step \d+; lower lr"):
        train(tiny(lr=1e30, record=False), tmp_path / "run")
