"""viewer.data: run discovery, opaque ids (no path from a request), polling, caches."""

import json
import os
import uuid

import pytest

from viewer.data import Registry, UnknownRunError, ViewError
from support.synthetic import SyntheticRun


def small(**kw) -> SyntheticRun:
    return SyntheticRun(**{"layers": {"fc": 8}, "checkpoints": 3, "map_size": 3, **kw})


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory):
    """Runs that tests only read."""
    return make_root(tmp_path_factory.mktemp("shared"))


def make_root(tmp_path):
    small(seed=1).write(tmp_path / "sweep" / "a")
    small(seed=2).write(tmp_path / "sweep" / "b")
    small(seed=3).write(tmp_path / "solo")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a run")
    broken = tmp_path / "sweep" / "broken" / "record.zarr"
    broken.mkdir(parents=True)
    (broken / "zarr.json").write_text("{ this is not json")
    return tmp_path


def test_discovers_runs_and_lists_unreadable_ones(shared_root):
    root = shared_root
    reg = Registry(root)
    entries = reg.entries()
    assert [e.id for e in entries] == ["solo", "sweep/a", "sweep/b", "sweep/broken"]
    assert [e.error is None for e in entries] == [True, True, True, False]
    broken = entries[-1]
    assert "not a tuneline run" in broken.error and str(root) not in broken.error
    assert broken.label == "sweep/broken (unreadable)"
    with pytest.raises(ViewError, match="'sweep/broken' cannot be read"):
        reg.run("sweep/broken")


def test_root_that_is_a_run_and_empty_or_missing_roots(tmp_path):
    small().write(tmp_path / "one")
    assert [e.id for e in Registry(tmp_path / "one").entries()] == ["."]
    assert Registry(tmp_path / "nothing-here").entries() == []
    (tmp_path / "empty").mkdir()
    assert Registry(tmp_path / "empty").entries() == []


@pytest.mark.parametrize("bad", [
    "../etc/passwd", "/etc/passwd", "..%2F..%2Fetc%2Fpasswd", "sweep/../solo", "sweep/a/", "./solo", "",
    "sweep%2Fa", "SOLO", None, 3, ["solo"], {"id": "solo"}, "x" * 500,
])
def test_only_discovered_ids_name_runs(shared_root, bad):
    reg = Registry(shared_root)
    with pytest.raises(UnknownRunError, match="unknown run") as info:
        reg.run(bad)
    assert "root:" not in str(info.value) and "passwd" not in str(info.value).replace(str(bad)[:80], "")


def test_new_runs_are_found_on_rescan(tmp_path):
    root = tmp_path
    small().write(root / "first")
    reg = Registry(root, rescan_s=0.0)
    assert "late" not in [e.id for e in reg.entries()]
    small().write(root / "late")
    assert "late" in [e.id for e in reg.entries()]
    assert reg.run("late").n_committed == 3


def test_poll_sees_rows_committed_by_a_writer(tmp_path):
    root = tmp_path
    gen = small(checkpoints=5)
    writer = gen.open_writer(root / "live")
    try:
        reg = Registry(root, poll_s=0.0, rescan_s=0.0)
        assert reg.poll("live") == 0
        with pytest.raises(ViewError, match="no committed checkpoints yet"):
            reg.payload("live", "fc")
        gen.append(writer, 0, 2)
        assert reg.poll("live") == 2
        first = reg.payload("live", "fc")
        assert first["T"] == 2
        assert reg.payload("live", "fc") is first  # cached
        gen.append(writer, 2, 4)
        assert reg.poll("live") == 4
        assert reg.payload("live", "fc")["T"] == 4  # a new payload for the new rows
    finally:
        writer.close()


def test_series_pick_up_metrics_logged_between_rows(tmp_path):
    gen = small(checkpoints=3)
    with gen.open_writer(tmp_path / "live") as writer:
        gen.append(writer, 0, 2)
        reg = Registry(tmp_path, poll_s=0.0, rescan_s=0.0)
        reg.poll("live")
        before = reg.series("live")["accuracy"]["heldout_accuracy"]
        writer.log_scalars(150, {"heldout_accuracy": 0.5})  # no new row
        reg.poll("live")
        after = reg.series("live")["accuracy"]["heldout_accuracy"]
    assert after["x"] == before["x"] + [150] and after["y"] == before["y"] + [0.5]


def test_poll_is_throttled(tmp_path):
    root = tmp_path
    gen = small(checkpoints=4)
    with gen.open_writer(root / "live") as writer:
        gen.append(writer, 0, 1)
        reg = Registry(root, poll_s=3600.0, rescan_s=0.0)
        assert reg.poll("live") == 1
        gen.append(writer, 1, 3)
        assert reg.poll("live") == 1  # not re-read within poll_s


def test_damaged_run_gives_a_message(tmp_path):
    root = tmp_path
    small().write(root / "solo")
    attrs_file = root / "solo" / "record.zarr" / "zarr.json"
    meta = json.loads(attrs_file.read_text())
    meta["attributes"]["n_committed"] = 99  # more rows claimed than the arrays have
    attrs_file.write_text(json.dumps(meta))
    reg = Registry(root)
    with pytest.raises(ViewError, match="'solo' cannot be read: .*damaged"):
        reg.payload("solo", "fc")


def test_payload_cache_is_bounded(shared_root, monkeypatch):
    monkeypatch.setattr("viewer.data.CACHE_SIZE", 2)
    reg = Registry(shared_root)
    for by, metric in [("true", "si"), ("true", "entropy"), ("pred", "si")]:
        reg.payload("sweep/a", "fc", by, metric)
    assert len(reg._payloads) <= 3  # 2 payloads + concept state


def test_symlinked_folders_are_not_followed(tmp_path, tmp_path_factory):
    root = tmp_path
    outside = tmp_path_factory.mktemp("outside")
    small().write(outside / "secret")
    os.symlink(outside, root / "link")
    assert "link/secret" not in [e.id for e in Registry(root).entries()]


@pytest.fixture()
def memory_root():
    """A fresh prefix of fsspec's in-process memory filesystem (a URL the run store opens)."""
    return f"memory://tuneline-viewer-{uuid.uuid4().hex}"


def test_a_url_root_ids_are_locations_below_it(memory_root):
    small(seed=1).write(f"{memory_root}/sweep/a")
    small(seed=2).write(f"{memory_root}/sweep/b")
    small(seed=3).write(f"{memory_root}-other/secret")  # a sibling prefix: not below the root
    for root in (memory_root, memory_root + "/"):
        reg = Registry(root)
        entries = reg.entries()
        assert reg.is_url and reg.root == memory_root
        assert [(e.id, e.location, e.error) for e in entries] == [
            ("sweep/a", f"{memory_root}/sweep/a", None), ("sweep/b", f"{memory_root}/sweep/b", None)]
        assert reg.run("sweep/b").n_committed == 3 and reg.payload("sweep/a", "fc")["T"] == 3
        for bad in ("../" + memory_root.rsplit("/", 1)[-1] + "-other/secret", f"{memory_root}-other/secret",
                    "sweep/a/..", "sweep"):
            with pytest.raises(UnknownRunError, match="unknown run"):
                reg.run(bad)
    assert [e.id for e in Registry(f"{memory_root}/sweep/a").entries()] == ["."]


def test_a_url_root_finds_new_runs_and_rows(memory_root):
    gen = small(checkpoints=5)
    reg = Registry(memory_root, poll_s=0.0, rescan_s=0.0)
    assert reg.entries() == [] and reg.problem is None
    with gen.open_writer(f"{memory_root}/live") as writer:
        assert [e.id for e in reg.entries()] == ["live"] and reg.poll("live") == 0
        gen.append(writer, 0, 2)
        assert reg.poll("live") == 2
        gen.append(writer, 2, 5)
        assert reg.poll("live") == 5 and reg.payload("live", "fc")["T"] == 5


def test_a_root_that_cannot_be_searched_says_why():
    reg = Registry("nosuchscheme://bucket/sweep")
    assert reg.entries() == [] and "nosuchscheme" in reg.problem


def test_bad_roots_are_named(tmp_path):
    with pytest.raises(TypeError, match="got 42"):
        Registry(42)
    with pytest.raises(ValueError, match="apply to URLs only"):
        Registry(tmp_path, storage_options={"anon": True})
