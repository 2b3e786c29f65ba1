"""Viewer under load: the server's peak memory, page load and repaint on a 500-checkpoint run.

    python bench/viewer_load.py [--checkpoints 500] [--layers 4] [--units 512] [--root DIR] [--json FILE]

Generates a run of 4 layers x 512 units x 500 checkpoints, 10 classes (tests/support/synthetic.py,
every array a recorded run holds: class sums by true and predicted label, maxima,
training-batch sums, precision, dissection IoU over 24 concepts, top-4 images with 7x7
activation maps), serves it with `python -m viewer` in a child process and drives
Debian's /usr/bin/chromium with Playwright:
1. navigation -> painted layer map, in fresh browser contexts (as bench/viewer_speed.py);
   goal <= 1.5 s;
2. for every layer: its map is opened, and the slider scrubbed through every checkpoint
   (Home, then one arrow key per checkpoint), each step timed from the key's event to
   the frame showing the map at the new checkpoint; goal: median <= 50 ms;
3. one unit's detail is opened (figures, top-k images with their masks) and the slider
   stepped 20 times with it open (each step asks the server for the unit's images).
After each phase the viewer process's peak resident memory is read from its
/proc/<pid>/status (VmHWM): memory must stay bounded as layers are opened and the
slider scrubbed, not grow with every checkpoint shown.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support: tests' generated runs, browser
from support.browser import chromium, serve, wait_painted  # noqa: E402
from support.synthetic import SyntheticRun  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from viewer_speed import GOAL_LOAD_S, GOAL_STEP_MS, time_load  # noqa: E402

UNIT_STEPS = 20  # slider steps with the unit detail open
EVERY = 100  # training steps between checkpoints of the generated run
# the map of `layer` is painted, its tiles' concepts (hover) and its charts have arrived: the server is done
SETTLED = """(layer) => { const s = window.tuneline.maps['map-canvas'];
  const hist = document.querySelector('#map-hist .js-plotly-plot');
  return !!s && s.p.layer === layer && window.tuneline.hovers.has(s.p.hover_key)
    && !!hist && !!hist.data && hist.data.length > 0; }"""


def make_run(root: Path, checkpoints: int = 500, layers: int = 4, units: int = 512, lean: bool = False) -> Path:
    """The generated run at root/load/big (kept if already there); returns its folder."""
    path = root / "load" / "big"
    if not (path / "record.zarr").exists():
        t0 = time.perf_counter()
        SyntheticRun(layers={f"layer{i}": units for i in range(1, layers + 1)}, checkpoints=checkpoints,
                     every=EVERY, lean=lean, name="big").write(path)
        print(f"generated {layers} layers x {units} units x {checkpoints} checkpoints in "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return path


def server_pid(port: int) -> int:
    """The process id of this process's child `python -m viewer ... --port <port>`."""
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = stat.rpartition(")")[2].split()[1]  # the field after the state
        if ppid == me and b"viewer" in cmdline and str(port).encode() in cmdline:
            return int(entry.name)
    raise LookupError(f"no child process serves the viewer on port {port}")


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory of process `pid` now (VmRSS) and at its peak (VmHWM), in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024  # kB
    return {"rss_mb": fields["VmRSS"], "peak_mb": fields["VmHWM"]}


def step_once(page, key: str, t: int) -> float:
    """Press `key` (the slider moves to checkpoint t); milliseconds from the key's event to the repainted frame."""
    page.keyboard.press(key)
    wait_painted(page, t=t)
    page.wait_for_function(f"window.tuneline.lastPaint.t === {t} && window.tuneline.lastPaint.frame !== undefined")
    return page.evaluate("window.tuneline.lastPaint.frame - window.tuneline.lastKey.at")


def scrub(page, n: int) -> list[float]:
    """From the last checkpoint: Home, then ArrowRight through all n checkpoints; each step's time."""
    wait_painted(page, t=n - 1)
    page.keyboard.press("Home")
    wait_painted(page, t=0)
    return [step_once(page, "ArrowRight", t) for t in range(1, n)]


def measure(root: Path, run_id: str, layers: list[str], n: int, units: int, repeats: int = 3,
            log: Path | None = None) -> dict:
    """Load time, repaint times and the server's memory for the run `run_id` served from `root`
    (the server's output goes to `log`)."""
    phases = []
    with serve(root, log=log) as url, chromium() as browser:
        pid = server_pid(urlparse(url).port)
        phases.append(("started", memory_mb(pid)))
        loads = [time_load(browser, f"{url}/?run={run_id}&layer={layers[0]}") for _ in range(repeats + 1)]
        first, loads = loads[0], loads[1:]  # the first also waits for the server's cold start of the run
        phases.append(("first map loaded", memory_mb(pid)))
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        steps, scrub_s = [], []
        for layer in layers:
            page.goto(f"{url}/?run={run_id}&layer={layer}")
            wait_painted(page, timeout=60, K=units, T=n)
            page.wait_for_function(SETTLED, arg=layer, timeout=60_000)
            phases.append((f"{layer}: map loaded", memory_mb(pid)))
            t0 = time.perf_counter()
            steps += scrub(page, n)
            scrub_s.append(time.perf_counter() - t0)
            phases.append((f"{layer}: scrubbed {n} checkpoints", memory_mb(pid)))
        page.keyboard.press("Home")
        wait_painted(page, t=0)
        center = page.evaluate(f"window.tuneline.tileCenter('map-canvas', {units // 2})")
        page.mouse.click(center["x"], center["y"])
        page.wait_for_selector("#unit-topk img", timeout=60_000)
        phases.append(("unit detail opened", memory_mb(pid)))
        for t in range(1, UNIT_STEPS + 1):
            step_once(page, "ArrowRight", t)
            page.wait_for_function(f"document.getElementById('unit-panel').innerText.includes('step {t * EVERY:,}')",
                                   timeout=60_000)
        phases.append((f"{UNIT_STEPS} slider steps with the unit detail open", memory_mb(pid)))
        images = page.locator("#unit-topk img").count()
        context.close()
    return {"run": run_id, "layers": len(layers), "units": units, "checkpoints": n,
            "peak_rss_mb": max(m["peak_mb"] for _, m in phases),
            "phases": [{"phase": name, **m} for name, m in phases],
            "load_s": statistics.median(loads), "first_load_s": first,
            "repaint_median_ms": statistics.median(steps), "repaint_p90_ms": sorted(steps)[int(0.9 * len(steps))],
            "steps_timed": len(steps), "scrub_s_per_layer": statistics.median(scrub_s),
            "unit_images": images, "page_errors": errors}


def report(r: dict) -> None:
    print(f"| phase ({r['layers']} layers x {r['units']} units x {r['checkpoints']} checkpoints) | "
          f"viewer RSS | peak RSS |")
    print("|---|---|---|")
    for p in r["phases"]:
        print(f"| {p['phase']} | {p['rss_mb']:.0f} MB | {p['peak_mb']:.0f} MB |")
    print()
    print("| measure | median | goal |")
    print("|---|---|---|")
    print(f"| viewer peak RSS (VmHWM) | {r['peak_rss_mb']:.0f} MB | bounded |")
    print(f"| navigation -> painted layer map | {r['load_s']:.2f} s (first after start: {r['first_load_s']:.2f} s) "
          f"| <= {GOAL_LOAD_S} s |")
    print(f"| slider step -> repaint ({r['steps_timed']} steps) | {r['repaint_median_ms']:.1f} ms "
          f"(p90 {r['repaint_p90_ms']:.1f} ms) | <= {GOAL_STEP_MS:.0f} ms |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=500)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--units", type=int, default=512, help="units per layer")
    parser.add_argument("--lean", action="store_true", help="true-label and dissection arrays only (quicker to write)")
    parser.add_argument("--repeats", type=int, default=3, help="navigations timed; the median is reported")
    parser.add_argument("--root", type=Path, help="where to keep the generated run (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp)
        make_run(root, args.checkpoints, args.layers, args.units, args.lean)
        names = [f"layer{i}" for i in range(1, args.layers + 1)]
        result = measure(root, "load/big", names, args.checkpoints, args.units, args.repeats)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
