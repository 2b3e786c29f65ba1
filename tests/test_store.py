"""The run store as a whole: layout on disk, xarray, concurrent readers, no torch.

Also holds the small run builders that test_store_writer, test_store_reader,
test_cli and test_export import.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import join

from recorder.schema import LAYER_ARRAYS, PROBE_ARRAYS, ROOT_ARRAYS, SCALAR_SPEC, SCHEMA, Concept
from recorder.store.scalars import SCALAR_CHUNK
from recorder.store import RunStore, RunWriter

CLASSES = ["circle", "square", "stripe"]
CONCEPTS = [Concept("red", "color"), Concept("sky", "scene"), Concept("grass", "object")]
PROBE = {"source": "tiny.h5", "n_images": 6, "fingerprint": "0123abcd"}
LAYERS = {"conv": 4, "fc": 5}
TOPK = 2


def open_writer(path, **overrides) -> RunWriter:
    kwargs = dict(classes=CLASSES, concepts=CONCEPTS, layers=LAYERS, probe=PROBE,
                  run={"name": "demo", "config": {"lr": 0.1, "model": "tiny"}}, topk=TOPK)
    kwargs.update(overrides)
    return RunWriter.open(path, **kwargs)


def layer_row(t: int, units: int, *, dissection: bool = False, classes: int = len(CLASSES)) -> dict:
    """Every array of one layer for row t: random but reproducible, counts with a zero class."""
    rng = np.random.default_rng(1000 * t + units)
    c, k = classes, units
    counts = rng.integers(1, 5, c)
    counts[t % c] = 0  # a class without images in every row
    row = {
        "sum_true": rng.normal(size=(c, k)).astype(np.float32),
        "count_true": counts,
        "sum_pred": rng.normal(size=(c, k)).astype(np.float32),
        "count_pred": rng.integers(0, 5, c),
        "max_true": rng.normal(size=(c, k)).astype(np.float32),
        "train_sum": rng.normal(size=(c, k)).astype(np.float32),
        "train_count": rng.integers(0, 9, c),
        "precision": rng.random(k).astype(np.float32),
        "response_min": rng.normal(size=k).astype(np.float32),
        "train_min": rng.normal(size=k).astype(np.float32),
        "topk_index": rng.integers(0, PROBE["n_images"], (k, TOPK)).astype(np.int32),
        "topk_value": rng.random((k, TOPK)).astype(np.float32),
        "topk_map": rng.random((k, TOPK, 3, 3)).astype(np.float16),
        "topk_mean_index": rng.integers(0, PROBE["n_images"], (k, TOPK)).astype(np.int32),
        "topk_mean_value": rng.random((k, TOPK)).astype(np.float32),
        "occlusion": rng.random((k, TOPK, 2, 2)).astype(np.float16),
        "rf": rng.random((k, 3, 3)).astype(np.float16),
        "rf_size": rng.random(k).astype(np.float32),
    }
    if dissection:
        row["threshold"] = rng.random(k).astype(np.float32)
        row["iou"] = (rng.random((k, len(CONCEPTS))) * 0.1).astype(np.float16)
    return row


def row_layers(t: int, layers=LAYERS, **kw) -> dict:
    return {name: layer_row(t, k, **kw) for name, k in layers.items()}


def make_run(path, n_rows: int = 3, *, probe: bool = True, dissection: bool = False):
    """A closed run with `n_rows` rows at steps 0, 10, 20, ...; returns the rows written."""
    rows = []
    with open_writer(path) as w:
        if probe:
            w.write_probe(np.arange(6 * 4 * 4 * 3, dtype=np.uint8).reshape(6, 4, 4, 3),
                          np.array([0, 1, 2, 0, 1, 2]))
        for t in range(n_rows):
            row = {"step": 10 * t, "epoch": t / 2, "wall_time": 1000.0 + t,
                   "metrics": {"loss": 1.0 / (t + 1)}, "layers": row_layers(t, dissection=dissection)}
            w.append(row["step"], epoch=row["epoch"], wall_time=row["wall_time"],
                     metrics=row["metrics"], layers=row["layers"])
            rows.append(row)
    return rows


def hash_files(root) -> dict[str, str]:
    """sha256 of every file below root, by relative path."""
    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def zarr_nodes(zarr_path) -> dict[str, dict]:
    """Every zarr.json below zarr_path, parsed, by node path ('' = root)."""
    zarr_path = Path(zarr_path)
    return {p.parent.relative_to(zarr_path).as_posix().lstrip("."): json.loads(p.read_text())
            for p in zarr_path.rglob("zarr.json")}


# ---------------------------------------------------------------- round trip


def test_rows_read_back_equal(tmp_path):
    rows = make_run(tmp_path / "run", n_rows=3, dissection=True)
    run = RunStore.open(tmp_path / "run")
    assert run.n_committed == 3
    assert run.name == "demo" and run.config == {"lr": 0.1, "model": "tiny"}
    assert run.classes == CLASSES and run.concepts == CONCEPTS
    assert run.layers == list(LAYERS) and run.units == LAYERS and run.topk == TOPK
    assert run.probe == PROBE and run.schema == SCHEMA
    np.testing.assert_array_equal(run.steps, [0, 10, 20])
    assert run.steps.dtype == np.int64
    np.testing.assert_array_equal(run.epochs, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(run.wall_times, [1000.0, 1001.0, 1002.0])
    np.testing.assert_array_equal(run.metric("loss"), [1.0, 0.5, 1 / 3])
    assert list(run.metrics) == ["loss"]
    for name in LAYERS:
        layer = run.layer(name)
        assert layer.arrays == list(LAYER_ARRAYS)
        for array, spec in LAYER_ARRAYS.items():
            got = getattr(layer, array)
            assert got.dtype == np.dtype(spec.dtype), array
            np.testing.assert_array_equal(got, np.stack([r["layers"][name][array] for r in rows]),
                                          err_msg=array)
    assert run.thumbs.shape == (6, 4, 4, 3) and run.thumbs.dtype == np.uint8
    np.testing.assert_array_equal(run.probe_labels, [0, 1, 2, 0, 1, 2])


def test_every_array_has_dimension_names_and_one_row_chunks(tmp_path):
    make_run(tmp_path / "run", dissection=True)
    nodes = zarr_nodes(tmp_path / "run" / "record.zarr")
    specs = {**ROOT_ARRAYS, "scalars/loss/value": SCALAR_SPEC,
             "scalars/loss/step": SCALAR_SPEC._replace(dtype="int64"),
             **{f"probe/{n}": s for n, s in PROBE_ARRAYS.items()},
             **{f"layers/{layer}/{n}": s for layer in LAYERS for n, s in LAYER_ARRAYS.items()}}
    arrays = {path: meta for path, meta in nodes.items() if meta["node_type"] == "array"}
    assert set(arrays) == set(specs)
    for path, meta in arrays.items():
        spec = specs[path]
        assert tuple(meta["dimension_names"]) == spec.dims, path
        assert meta["data_type"] == spec.dtype, path
        chunks = meta["chunk_grid"]["configuration"]["chunk_shape"]
        if path.startswith("scalars/"):
            assert chunks == [SCALAR_CHUNK], path
        elif not path.startswith("probe/"):
            assert chunks == [1, *meta["shape"][1:]], path


def test_no_consolidated_metadata(tmp_path):
    make_run(tmp_path / "run")
    zarr_path = tmp_path / "run" / "record.zarr"
    for path, meta in zarr_nodes(zarr_path).items():
        assert meta.get("consolidated_metadata") is None, path  # zarr 3.0 writes null, 3.1 nothing
    assert not (zarr_path / ".zmetadata").exists()
    assert json.loads((zarr_path / "zarr.json").read_text())["attributes"]["n_committed"] == 3


def test_xarray_opens_layer_groups(tmp_path):
    import xarray as xr
    rows = make_run(tmp_path / "run", n_rows=2)
    ds = xr.open_zarr(tmp_path / "run" / "record.zarr", group="layers/fc", consolidated=False)
    assert ds["sum_true"].dims == ("step", "class", "unit")
    assert ds["count_true"].dims == ("step", "class")
    assert ds["topk_map"].dims == ("step", "unit", "rank", "y", "x")
    for array in ("sum_true", "count_true", "topk_index"):
        np.testing.assert_array_equal(ds[array].values, np.stack([r["layers"]["fc"][array] for r in rows]))
    root = xr.open_zarr(tmp_path / "run" / "record.zarr", consolidated=False)
    np.testing.assert_array_equal(root["step"].values, [0, 10])
    assert root.attrs["schema"] == SCHEMA


def test_find_and_is_run(tmp_path):
    make_run(tmp_path / "sweep" / "a", n_rows=1)
    make_run(tmp_path / "sweep" / "b", n_rows=1)
    (tmp_path / "sweep" / "notes").mkdir()
    assert RunStore.find(tmp_path) == [tmp_path / "sweep" / "a", tmp_path / "sweep" / "b"]
    assert RunStore.is_run(tmp_path / "sweep" / "a")
    assert RunStore.is_run(tmp_path / "sweep" / "a" / "record.zarr")
    assert not RunStore.is_run(tmp_path / "sweep" / "notes")
    assert not RunStore.is_run(tmp_path / "missing")
    assert isinstance(RunStore.writer(tmp_path / "sweep" / "a", classes=CLASSES, concepts=CONCEPTS,
                                      layers=LAYERS, probe=PROBE, topk=TOPK), RunWriter)


def test_store_does_not_import_torch():
    code = "import sys, recorder.store, recorder.store.export, recorder.metrics; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------- concurrency

WRITER_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    from recorder.store import RunWriter
    path, n_rows = sys.argv[1], int(sys.argv[2])
    layers = {"a": 3, "b": 5}
    w = RunWriter.open(path, classes=["x", "y"], concepts=[], layers=layers,
                       probe={"source": "s", "n_images": 4, "fingerprint": "f"}, topk=2)
    for t in range(n_rows):
        v = t + 1  # never a fill value (0, -1, NaN)
        w.append(10 * v, epoch=float(v), metrics={"m": float(v)}, layers={
            name: {"sum_true": np.full((2, k), v, np.float32), "count_true": np.full(2, v),
                   "topk_value": np.full((k, 2), v, np.float32)} for name, k in layers.items()})
        time.sleep(0.002)
    w.close()
""")


def test_concurrent_reader_sees_only_complete_rows(store_root):
    """A writer process appends 200 rows (30 on S3) while this process reads the newest committed row."""
    path, n_rows = join(store_root, "live"), 200 if isinstance(store_root, Path) else 30
    proc = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(path), str(n_rows)])
    try:
        deadline = time.monotonic() + 60
        run = None
        while run is None:
            assert time.monotonic() < deadline and proc.poll() in (None, 0), "writer did not start"
            try:
                run = RunStore.open(path)
            except (FileNotFoundError, ValueError):
                time.sleep(0.005)
        seen, errors, reads = set(), [], 0
        while True:
            done = proc.poll() is not None
            run.refresh()
            n = run.n_committed
            seen.add(n)
            if n:
                t, v = n - 1, n
                try:
                    assert run.steps.shape == (n,) and run.steps[t] == 10 * v
                    assert run.metric("m")[t] == v
                    for name in ("a", "b"):
                        layer = run.layer(name)
                        for array in ("sum_true", "count_true", "topk_value"):
                            row = layer.row(array, t)
                            assert np.all(row == v), (name, array, t, row)
                    if reads % 10 == 0:  # whole arrays too: every row complete, none beyond n
                        full = run.layer("b").sum_true
                        assert full.shape == (n, 2, 5)
                        np.testing.assert_array_equal(full[:, 0, 0], np.arange(1, n + 1))
                except Exception as exc:  # noqa: BLE001 - collect, then report all
                    errors.append(repr(exc))
                reads += 1
            if done and n == n_rows:
                break
            assert time.monotonic() < deadline, f"timed out at n_committed={n}"
            if done and proc.returncode != 0:
                pytest.fail(f"writer process failed with exit code {proc.returncode}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert errors == []
    print(f"reads {reads}, distinct n_committed {len(seen)}")
    assert len(seen) > min(20, n_rows // 5), f"the reader saw only {len(seen)} distinct n_committed values"
    np.testing.assert_array_equal(run.steps, 10 * np.arange(1, n_rows + 1))
