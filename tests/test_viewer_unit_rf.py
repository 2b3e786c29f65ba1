"""viewer.unit_rf: the occlusion block of a unit's detail, from a run with occlusion arrays."""

import base64

import numpy as np
import pytest

from recorder.store import RunStore
from viewer import images, receptive, unit_rf
from support.synthetic import SyntheticRun


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("unit_rf") / "run"
    SyntheticRun(layers={"conv3": 10}, checkpoints=7, seed=4, occlusion=dict(patch=8, stride=4, every=3)).write(path)
    return RunStore.open(path)


def test_cards_pair_each_top_image_mask_with_its_discrepancy_map(run):
    section = unit_rf.occlusion_section(run, "conv3", 2, t=4)  # shows row 3
    layer = run.layer("conv3")
    index = layer.topk_index[3, 2]
    assert len(section["cards"]) == len(index)
    thumb = run.thumbs[index[0]]
    pixels = receptive.pixel_map(layer.occlusion[3, 2, 0], 32, 32, 8, 4)
    assert section["cards"][0]["occ"] == images.discrepancy_uri(thumb, pixels, size=unit_rf.THUMB)
    assert section["cards"][0]["caption"].startswith(f"#1 · img {index[0]}")
    assert f"step {int(run.steps[3]):,}" in section["note"] and "patch 8, stride 4" in section["note"]
    assert len(section["figures"]) == 2 and [s["current"] for s in section["strip"]] == [False, True, False]
    for s in section["strip"]:
        assert base64.b64decode(s["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_occlusion_yet_or_none_at_all(run, tmp_path):
    late = SyntheticRun(layers={"conv3": 4}, checkpoints=3, occlusion=dict(patch=8, stride=4, every=2))
    late.write(tmp_path / "late")
    section = unit_rf.occlusion_section(RunStore.open(tmp_path / "late"), "conv3", 0, t=1)
    assert section["cards"] is not None  # row 0 is occluded
    SyntheticRun(layers={"conv3": 4}, checkpoints=2, map_size=0).write(tmp_path / "plain")
    assert unit_rf.occlusion_section(RunStore.open(tmp_path / "plain"), "conv3", 0, t=1) is None
    np.testing.assert_array_equal(np.isnan(run.layer("conv3").rf_size[1]), True)  # between occluded rows: NaN
