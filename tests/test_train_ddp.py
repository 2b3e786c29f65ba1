"""`torchrun --nproc_per_node=2 -m training train` (gloo on CPU) records what one process records."""

import json
import os
import subprocess
import sys

import numpy as np
import torch

from recorder import RunStore
from training.checkpoints import latest_checkpoint, load_checkpoint
from training.config import TrainConfig
from training.sweep import PRESETS
from training.train import train


def test_two_ranks_under_torchrun_match_one_process(tmp_path):
    # No dropout and no BatchNorm: their masks and batch statistics are per rank. Augmentation
    # is drawn for the whole global batch, so each rank's shard is augmented as in one process.
    config = TrainConfig.from_dict({**PRESETS["smoke"].base, "progress": False, "steps": 4, "record_every": 2,
                                    "augment": True, "batch_size": 16})
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "training", "train", "--config", str(tmp_path / "config.json"), "--out", str(tmp_path / "ddp")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step 4, held-out accuracy" in done.stdout and done.stdout.count("held-out accuracy") == 1
    train(config, tmp_path / "single")

    ddp, single = RunStore.open(tmp_path / "ddp"), RunStore.open(tmp_path / "single")
    assert ddp.steps.tolist() == single.steps.tolist() == [0, 2, 4]
    for name in single.layers:
        a, b = ddp.layer(name), single.layer(name)
        for array in ("sum_true", "sum_pred", "train_sum"):
            np.testing.assert_allclose(getattr(a, array), getattr(b, array), rtol=1e-4, atol=1e-5,
                                       err_msg=f"{name}/{array}")
        for array in ("count_true", "count_pred", "train_count"):
            np.testing.assert_array_equal(getattr(a, array), getattr(b, array), err_msg=f"{name}/{array}")
    for metric in ("heldout_accuracy", "probe_accuracy", "train_accuracy", "train_loss"):
        np.testing.assert_allclose(ddp.metrics[metric], single.metrics[metric], rtol=1e-5, err_msg=metric)
    a, b = load_checkpoint(latest_checkpoint(tmp_path / "ddp")), load_checkpoint(latest_checkpoint(tmp_path / "single"))
    for key in b["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-6)
    assert json.loads((tmp_path / "ddp" / "config.json").read_text()) == config.to_dict()
