"""training.sweep: presets, the smoke sweep end to end, reruns, the CLI."""

import json

import pytest

from recorder import RunStore
from training import sweep as sweep_cli
from training.sweep import PRESETS, run_sweep

DEMO_SETTINGS = ["baseline", "dropout", "batchnorm", "weight-decay", "augment", "label-smoothing", "si-neg", "si-pos"]


def test_presets_validate_and_demo_has_every_setting():
    for preset in PRESETS.values():
        configs = preset.configs()
        assert "baseline" in configs and preset.rotation_of in configs
    demo = PRESETS["demo"].configs()
    assert list(demo) == DEMO_SETTINGS
    assert demo["si-neg"].selectivity_alpha < 0 < demo["si-pos"].selectivity_alpha
    assert demo["batchnorm"].batchnorm and not demo["baseline"].batchnorm
    assert set(PRESETS["demo"].notes) >= {*DEMO_SETTINGS, "rotated"}


def test_smoke_sweep_writes_runs_rotation_control_and_report(tmp_path, capsys):
    results = run_sweep(PRESETS["smoke"], tmp_path / "s", progress=False)
    assert [r["setting"] for r in results] == ["baseline", "si-neg", "rotated"]
    for name in ("baseline", "si-neg", "rotated"):
        assert RunStore.open(tmp_path / "s" / name).steps.tolist() == [0, 3, 6]
    assert RunStore.open(tmp_path / "s" / "rotated").config["rotation"]["layer"] == "conv2"
    assert json.loads((tmp_path / "s" / "sweep.json").read_text())["settings"] == ["baseline", "si-neg", "rotated"]
    assert "[3/3] rotated" in capsys.readouterr().out

    again = run_sweep(PRESETS["smoke"], tmp_path / "s", progress=False, only=["baseline"])
    assert again[0]["resumed"] and again[0]["start_step"] == 6  # finished: left as it is
    assert RunStore.open(tmp_path / "s" / "baseline").steps.tolist() == [0, 3, 6]
    fresh = run_sweep(PRESETS["smoke"], tmp_path / "s", progress=False, only=["baseline"], fresh=True,
                      overrides={"steps": 3})
    assert not fresh[0]["resumed"]
    assert RunStore.open(tmp_path / "s" / "baseline").steps.tolist() == [0, 3]


@pytest.mark.slow  # spawns two worker processes that import torch: ~10 s on 2 cores
def test_parallel_jobs_give_the_same_runs(tmp_path):
    run_sweep(PRESETS["smoke"], tmp_path / "one", progress=False, only=["baseline", "si-neg"])
    run_sweep(PRESETS["smoke"], tmp_path / "two", progress=False, only=["baseline", "si-neg"], jobs=2)
    for name in ("baseline", "si-neg"):
        a, b = RunStore.open(tmp_path / "one" / name), RunStore.open(tmp_path / "two" / name)
        assert (a.layer("conv2").sum_true == b.layer("conv2").sum_true).all()


def test_cli_runs_and_reports(tmp_path, capsys):
    sweep_cli.main(["--preset", "smoke", "--out", str(tmp_path / "s"), "--only", "baseline", "--no-progress"])
    out = capsys.readouterr().out
    assert "| baseline |" in out and (tmp_path / "s" / "report.md").exists()
    with pytest.raises(SystemExit):
        sweep_cli.main(["--preset", "smoke", "--out", str(tmp_path / "s"), "--only", "nope"])
    assert "unknown setting(s) ['nope']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sweep_cli.main(["--preset", "smoke", "--out", str(tmp_path / "s"), "--set", "lr=-1"])
    assert "config 'lr' given an invalid value: -1.0" in capsys.readouterr().err
    with pytest.raises(SystemExit, match=r"(?s)sweep failed: cannot resume .*differs in \['width'\].*--fresh"):
        sweep_cli.main(["--preset", "smoke", "--out", str(tmp_path / "s"), "--only", "baseline",
                        "--set", "width=5", "--no-progress"])
