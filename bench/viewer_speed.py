"""Viewer speed in headless Chromium: navigation -> painted layer map, slider step -> repaint.

    python bench/viewer_speed.py [--repeats 5] [--steps 40] [--root DIR] [--screenshots docs/]

Generates a run of 4 layers x 2048 units x 200 checkpoints (tests/support/synthetic.py, probe
arrays by true label and dissection IoU, no top-k maps), serves it with
`python -m viewer` in a child process and drives Debian's /usr/bin/chromium with
Playwright. Times are the page's own `performance.now()`:
- navigation -> painted map: from navigation start (a fresh browser context: nothing
  cached) to the frame after the tile map is first drawn; goal <= 1.5 s;
- slider step -> repaint: from an arrow key's event to the frame after the map is
  redrawn at the new checkpoint (the charts' cursors move in the same update); goal
  <= 50 ms.
Also the server's cold and warm time to compute one layer's color payload, and its size.
`--screenshots DIR` instead writes viewer_map.png, viewer_unit.png, viewer_compare.png
of a small generated sweep into DIR (the README's pictures).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from viewer.data import Registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support: tests' generated runs, browser
from support.browser import chromium, serve, wait_painted  # noqa: E402
from support.synthetic import SyntheticRun  # noqa: E402

GOAL_LOAD_S, GOAL_STEP_MS = 1.5, 50.0
# the most selective unit that is a detector at the shown checkpoint (for the unit detail picture)
FIND_DETECTOR = """() => { const s = window.tuneline.maps['map-canvas'], d = s.d, p = s.p;
  let best = 0, top = -1;
  for (let u = 0; u < p.K; u++) { const i = s.t * p.K + u;
    if (d.concept && (d.concept[i] & 0x8000) && d.sat[i] <= 100 && d.sat[i] > top) { top = d.sat[i]; best = u; } }
  return best; }"""


def make_big_run(root: Path) -> Path:
    path = root / "bench" / "big"
    if not (path / "record.zarr").exists():
        t0 = time.perf_counter()
        SyntheticRun(layers={f"layer{i}": 2048 for i in range(1, 5)}, checkpoints=200, every=500, lean=True,
                     map_size=0, name="big").write(path)
        print(f"generated 4 layers x 2048 units x 200 checkpoints in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
    return path


def payload_times(root: Path) -> tuple[float, float, float]:
    registry = Registry(root)
    run_id = registry.entries()[0].id
    t0 = time.perf_counter()
    payload = registry.payload(run_id, "layer1", "true", "si")
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    registry.payload(run_id, "layer1", "true", "si")
    warm = time.perf_counter() - t0
    size = sum(len(v) for v in payload.values() if isinstance(v, str)) / 1e6
    return cold, warm, size


def time_load(browser, url: str) -> float:
    """Seconds from navigation start to the frame showing the first painted map (fresh context)."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.goto(url)
    wait_painted(page, timeout=30)
    page.wait_for_function("window.tuneline.firstPaint.frame !== undefined")
    ms = page.evaluate("window.tuneline.firstPaint.frame")
    context.close()
    return ms / 1000.0


def time_steps(browser, url: str, steps: int) -> list[float]:
    """Milliseconds from each arrow key event to the frame showing the map at the new checkpoint."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.goto(url)
    s = wait_painted(page, timeout=30)
    page.wait_for_selector("#map-hist .main-svg")
    time.sleep(1.0)  # let the first charts settle
    out, t = [], s["t"]
    for i in range(steps):
        key = "ArrowLeft" if (i // 10) % 2 == 0 else "ArrowRight"  # back and forth, 10 at a time
        t = t - 1 if key == "ArrowLeft" else t + 1
        page.keyboard.press(key)
        wait_painted(page, t=t)
        page.wait_for_function(f"window.tuneline.lastPaint.t === {t} && window.tuneline.lastPaint.frame !== undefined")
        out.append(page.evaluate("window.tuneline.lastPaint.frame - window.tuneline.lastKey.at"))
        time.sleep(0.05)
    context.close()
    return out


def _write_sweep(root: Path) -> None:
    layers = {"conv3": 128, "conv4": 256, "conv5": 384}
    sweep = [("wd0", dict(seed=1), {"weight_decay": 0.0, "dropout": 0.0}),
             ("wd5e-4", dict(seed=2, selectivity_gain=1.8, detector_gain=0.7),
              {"weight_decay": 5e-4, "dropout": 0.0}),
             ("wd5e-4_dropout", dict(seed=3, selectivity_gain=0.6, detector_gain=1.5),
              {"weight_decay": 5e-4, "dropout": 0.5})]
    for name, kw, config in sweep:
        SyntheticRun(layers=layers, checkpoints=40, every=250, config=config, **kw).write(root / "sweep" / name)


def screenshots(folder: Path, runs: Path | None = None) -> None:
    """The README's pictures: of the demo sweep's runs in `runs` (run ids baseline, si-neg,
    si-pos; layer conv4), or of generated runs when `runs` is None."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if runs is not None:
            root, main, layer, compare = runs, "baseline", "conv4", "baseline,si-neg,si-pos"
        else:
            root, main, layer = Path(tmp) / "runs", "sweep/wd5e-4", "conv4"
            compare = "sweep/wd0,sweep/wd5e-4,sweep/wd5e-4_dropout"
            _write_sweep(root)
        with serve(root) as url, chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 860})
            page.goto(f"{url}/?run={main}&layer={layer}")
            n_checkpoints = wait_painted(page)["T"]
            back = min(12, n_checkpoints // 4)  # a little before the end of training
            page.keyboard.press("End")
            for _ in range(back):
                page.keyboard.press("ArrowLeft")
            target = n_checkpoints - 1 - back
            wait_painted(page, t=target)
            page.wait_for_selector("#map-acc .main-svg")
            time.sleep(1.0)
            page.click("text=by class")
            wait_painted(page, t=target)
            page.mouse.click(5, 400)
            time.sleep(0.5)
            page.screenshot(path=folder / "viewer_map.png")
            unit = page.evaluate(FIND_DETECTOR)
            center = page.evaluate(f"window.tuneline.tileCenter('map-canvas', {unit})")
            page.mouse.click(center["x"], center["y"])
            page.wait_for_selector("#unit-topk img")
            page.mouse.move(5, 5)  # no tooltip in the picture
            time.sleep(1.0)
            page.locator("#unit-panel").screenshot(path=folder / "viewer_unit.png")
            page.goto(f"{url}/compare?runs={compare}&layer={layer}")
            wait_painted(page, "cmp-canvas-2")
            page.click("text=fraction of training")
            page.wait_for_function("document.getElementById('cmp-step-label').innerText.includes('%')")
            time.sleep(0.5)
            print("compare controls:", page.inner_text("#cmp-by"), "|", page.inner_text("#cmp-metric"), file=sys.stderr)
            page.mouse.click(5, 400)  # focus off the radio buttons, so arrow keys move the slider
            page.keyboard.press("Home")
            for _ in range(26):
                page.keyboard.press("ArrowRight")
            time.sleep(1.5)
            page.screenshot(path=folder / "viewer_compare.png", full_page=True)
    for name in ("viewer_map.png", "viewer_unit.png", "viewer_compare.png"):
        print(f"{folder / name}: {(folder / name).stat().st_size / 1e3:.0f} kB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="navigations timed; the median is reported")
    parser.add_argument("--steps", type=int, default=40, help="slider steps timed; the median is reported")
    parser.add_argument("--root", type=Path, help="where to keep the generated run (default: a temporary folder)")
    parser.add_argument("--screenshots", type=Path, help="write the README's screenshots here and exit")
    parser.add_argument("--runs", type=Path, help="with --screenshots: the demo sweep's folder (e.g. runs/demo)")
    args = parser.parse_args()
    if args.screenshots:
        screenshots(args.screenshots, args.runs)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp)
        make_big_run(root)
        cold, warm, size = payload_times(root)
        with serve(root) as url, chromium() as browser:
            first = time_load(browser, url)  # the server warms its cache while the page loads
            loads = [time_load(browser, url) for _ in range(args.repeats)]
            steps = time_steps(browser, url, args.steps)
    load, step = statistics.median(loads), statistics.median(steps)
    print("| measure (4 layers x 2048 units x 200 checkpoints) | median | goal |")
    print("|---|---|---|")
    print(f"| navigation -> painted layer map | {load:.2f} s (first after start: {first:.2f} s) | "
          f"<= {GOAL_LOAD_S} s |")
    print(f"| slider step -> repaint | {step:.1f} ms (p90 {sorted(steps)[int(0.9 * len(steps))]:.1f} ms) | "
          f"<= {GOAL_STEP_MS:.0f} ms |")
    print(f"| server: one layer's color payload | {cold:.2f} s cold, {warm * 1e3:.2f} ms cached, "
          f"{size:.1f} MB | |")


if __name__ == "__main__":
    main()
