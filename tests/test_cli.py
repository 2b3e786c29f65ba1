"""`python -m recorder info` and `export`, run as real subprocesses."""

from __future__ import annotations

import subprocess
import sys

import pytest

from recorder.store import RunStore
from test_store_export import assert_h5_equals_run
from test_store import make_run


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recorder", *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "baseline"
    make_run(path, n_rows=3, dissection=True)
    return path


def test_info(run_path):
    result = cli("info", run_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for text in ["run       demo", f"path      {run_path}", "schema    tuneline.run/1",
                 "rows      3 committed, steps 0 .. 20", "classes   3: circle, square, stripe",
                 "concepts  3: color 1, object 1, scene 1",
                 "probe     tiny.h5, 6 images, fingerprint 0123abcd, thumbnails yes",
                 "metrics   loss = 0.3333 @ 20  (latest)", "conv: 4 units, mean SI at the last row 0.",
                 "fc: 5 units", "arrays: sum_true, count_true, sum_pred"]:
        assert text in out, f"{text!r} not in:\n{out}"


def test_export(run_path, tmp_path):
    result = cli("export", run_path / "record.zarr", tmp_path / "out.h5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "out.h5")
    assert_h5_equals_run(tmp_path / "out.h5", RunStore.open(run_path))


def test_export_refuses_to_overwrite_without_force(run_path, tmp_path):
    out = tmp_path / "mine.h5"
    out.write_bytes(b"precious")
    result = cli("export", run_path, out)
    assert result.returncode == 2 and f"'{out}' exists; pass --force to overwrite it" in result.stderr
    assert out.read_bytes() == b"precious"
    assert cli("export", run_path, out, "--force").returncode == 0
    assert_h5_equals_run(out, RunStore.open(run_path))


def test_info_on_a_sweep_folder_lists_its_runs(tmp_path):
    make_run(tmp_path / "sweep" / "a", n_rows=3)
    make_run(tmp_path / "sweep" / "b", n_rows=1)
    result = cli("info", tmp_path / "sweep")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"2 runs below {tmp_path / 'sweep'}"
    assert lines[2].split() == ["a", "3", "0", "..", "20"] and lines[3].split() == ["b", "1", "0", "..", "0"]


@pytest.mark.parametrize("command", ["info", "export"])
def test_bad_path_exits_2_without_traceback(tmp_path, command):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x.txt").write_text("x")
    for path, message in [(tmp_path / "missing", "does not exist"), (tmp_path / "plain", "not a tuneline run")]:
        args = [command, path] + ([tmp_path / "out.h5"] if command == "export" else [])
        result = cli(*args)
        assert result.returncode == 2
        assert message in result.stderr and str(path) in result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""


def test_info_and_export_of_a_run_on_s3(s3_url, tmp_path):
    url = f"{s3_url}/baseline"
    make_run(url, n_rows=2, dissection=True)
    result = cli("info", url)
    assert result.returncode == 0, result.stderr
    assert f"path      {url}" in result.stdout and "rows      2 committed, steps 0 .. 10" in result.stdout
    result = cli("export", url, tmp_path / "out.h5")
    assert result.returncode == 0, result.stderr
    assert_h5_equals_run(tmp_path / "out.h5", RunStore.open(url))


def test_bad_url_exits_2_naming_it(tmp_path):
    result = cli("info", "nosuch://bucket/run", cwd=tmp_path)
    assert result.returncode == 2 and "unknown URL scheme 'nosuch://'" in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_error_exits_2():
    result = cli("frobnicate")
    assert result.returncode == 2 and "invalid choice" in result.stderr
