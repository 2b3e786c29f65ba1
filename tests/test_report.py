"""training.report: per-run summaries, the markdown tables and the expected-findings checks."""

import numpy as np
import pytest

from recorder import RunStore

from training import report as report_cli
from training.config import TrainConfig
from training.report import checks, report_markdown, summarize
from training.sweep import PRESETS, run_sweep
from training.train import train


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    run_sweep(PRESETS["smoke"], folder, progress=False)
    return folder


def test_summary_of_a_run(smoke):
    s = summarize(smoke / "baseline")
    assert s["name"] == "baseline" and s["steps"] == [0, 6]
    assert set(s["si"]) == {"conv1", "conv2", "fc"} and s["conv_layers"] == ["conv1", "conv2"]
    assert s["last_conv"] == "conv2"
    assert set(s["unique_first"]) == {"object", "part", "color", "texture", "scene"}
    assert 0 <= s["heldout_accuracy"] <= 1 and 0 <= s["mean_conv_si"] <= 1


def test_markdown_has_a_row_per_run_in_sweep_order(smoke):
    text = report_markdown(smoke)
    lines = text.splitlines()
    assert "| run | held-out acc | step | SI conv1 | SI conv2 | SI fc | SI conv mean |" in lines
    assert "| run | layer | object | part | color | texture | scene | total |" in lines
    rows = [line.split(" | ")[0] for line in lines if line.startswith("| ") and "run |" not in line]
    assert rows[:3] == ["| baseline", "| si-neg", "| rotated"]
    assert "Expected findings:" in text and "baseline held-out accuracy >= 90 %" in text


def test_receptive_fields_at_the_first_and_last_occluded_step(smoke):
    run = RunStore.open(smoke / "baseline")
    size = run.layer("conv2").rf_size  # [T, K]: the smoke preset occludes conv2 in every row
    rf = summarize(smoke / "baseline")["rf"]
    assert list(rf) == ["conv2"]
    # SmallCNN: conv 3x3 (RF 3) -> max-pool 2 (RF 4, jump 2) -> conv 3x3 (RF 4 + 2 * 2 = 8)
    assert rf["conv2"]["theoretical"] == 8.0 and rf["conv2"]["image"] == (16, 16)
    for key, t in (("first", 0), ("last", -1)):
        assert rf["conv2"][key]["step"] == run.steps[t]
        assert rf["conv2"][key]["median"] == pytest.approx(float(np.nanmedian(size[t])))
    text = report_markdown(smoke)
    assert "| run | layer | theoretical | empirical first | empirical last | last / theoretical |" in text
    assert "empirical RF of conv2 smaller than its theoretical RF" in text
    assert "rotation control: fewer unique detectors in conv2 at equal accuracy" in text  # the layer's name


def test_cli_writes_report_md(smoke, tmp_path, capsys):
    (smoke / "report.md").unlink(missing_ok=True)
    report_cli.main([str(smoke), "--no-write"])
    assert not (smoke / "report.md").exists() and "# Sweep report" in capsys.readouterr().out
    report_cli.main([str(smoke)])
    assert (smoke / "report.md").read_text() == capsys.readouterr().out
    assert report_markdown(tmp_path) == f"No runs under {tmp_path}.\n"


def test_runs_without_dissection_have_no_detector_numbers(tmp_path):
    config = TrainConfig.from_dict({**PRESETS["smoke"].base, "progress": False, "dissect": False, "steps": 3})
    train(config, tmp_path / "baseline")
    s = summarize(tmp_path / "baseline")
    assert s["last_conv"] is None and s["unique_last"] is None
    text = report_markdown(tmp_path)
    assert "| baseline | – | – | – | – | – | – |" not in text  # no detector table without categories
    assert "Unique detectors" not in text


def summary(acc, si, unique_first, unique_last, convs=("conv1", "conv4")):
    return {"heldout_accuracy": acc, "si": dict(zip(convs, si)), "conv_layers": list(convs),
            "mean_conv_si": sum(si) / len(si), "last_conv": convs[-1], "steps": [0, 100],
            "unique_first": {"part": unique_first}, "unique_last": {"part": unique_last}}


def test_checks_report_what_holds_and_what_does_not():
    good = {"baseline": summary(0.95, [0.2, 0.5], 2, 9), "rotated": summary(0.95, [0.2, 0.5], 0, 4),
            "si-neg": summary(0.93, [0.1, 0.2], 1, 3), "si-pos": summary(0.9, [0.3, 0.7], 1, 8)}
    found = checks(good)
    assert len(found) == 6 and all(ok for _, ok, _ in found)
    bad = {"baseline": summary(0.85, [0.5, 0.2], 5, 3), "rotated": summary(0.80, [0.5, 0.2], 1, 1),
           "si-neg": summary(0.9, [0.6, 0.6], 1, 1)}
    found = checks(bad)
    assert [ok for _, ok, _ in found] == [False, False, False, False, False]
    assert found[0][2] == "85.0 %" and "0.200 vs 0.500" in found[1][2]
    assert checks({"other": summary(0.9, [0.1, 0.2], 1, 2)})[0][1] is False
