"""The viewer in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

The app runs in its own process (`python -m viewer root --port N`), on a local folder
and on an S3 prefix of a real S3 server (moto's server mode, tests/conftest.py). Screenshots of
every page go to the test's tmp folder (and to $TUNELINE_SCREENSHOTS if set).
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recorder import metrics
from recorder.store import RunStore
from viewer import colors
from support.browser import CHROMIUM, chromium, serve, wait_painted
from support.synthetic import SyntheticRun

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"browser tests need Debian's chromium at {CHROMIUM} "
                                       f"(apt-get install chromium; .ci/run installs it)")
LAYERS = {"conv": 64, "fc": 24}
LIVE = SyntheticRun(layers={"fc": 16}, checkpoints=6, seed=9, map_size=3)
FOLLOW = SyntheticRun(layers={"fc": 16}, checkpoints=9)  # as `python tests/support/synthetic.py --stdin` writes it
SYNTHETIC = Path(__file__).resolve().parent / "support" / "synthetic.py"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    SyntheticRun(layers=LAYERS, checkpoints=8, seed=1, map_size=5, config={"wd": 0.0}).write(root / "sweep" / "a")
    SyntheticRun(layers=LAYERS, checkpoints=6, seed=2, every=150, map_size=5, config={"wd": 5e-4}).write(
        root / "sweep" / "b")
    (root / "broken" / "record.zarr").mkdir(parents=True)
    (root / "broken" / "record.zarr" / "zarr.json").write_text("{ not json")
    LIVE.open_writer(root / "live").close()  # a run with zero committed rows
    FOLLOW.open_writer(root / "follow").close()  # rows come from a writer process (test_follow_...)
    SyntheticRun(layers={"fc": 16}, checkpoints=1, seed=3).write(root / "one")
    SyntheticRun(layers={"fc": 16}, checkpoints=2, seed=4, every=1).write(root / "two")
    return root


@pytest.fixture(scope="module")
def url(root, tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "viewer.log"
    with serve(root, log=log) as url:
        yield url
    assert "Traceback" not in log.read_text(errors="replace"), log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture()
def page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.errors = []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.shot = lambda name: shot(page, tmp_path, name)
    yield page
    context.close()


def shot(page, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    extra = os.environ.get("TUNELINE_SCREENSHOTS")
    if extra:
        shutil.copy(path, Path(extra) / path.name)
    return path


def state(page, canvas="map-canvas") -> dict:
    return page.evaluate(f"() => {{ const s = window.tuneline.maps[{canvas!r}]; return {{t: s.t, T: s.p.T}}; }}")


def wait_text(page, id_: str, text: str, timeout: float = 10.0) -> None:
    page.wait_for_function(f"(document.getElementById({id_!r}) || {{innerText: ''}}).innerText.includes({text!r})",
                           timeout=timeout * 1000)


def label(page, id_="map-step-label") -> str:
    return page.inner_text(f"#{id_}")


def test_map_page_loads_without_console_errors(page, url, root):
    page.goto(f"{url}/?run=sweep/a&layer=conv")
    s = wait_painted(page, K=64, T=8)
    assert s["t"] == 7 and label(page).startswith("step 700")
    page.wait_for_selector("#map-hist .main-svg")
    # the legend names every class; the painted colors are viewer.colors' HSV mapping
    legend = page.inner_text("#map-legend")
    run = RunStore.open(root / "sweep" / "a")
    assert all(name in legend for name in run.classes)
    layer = run.layer("conv")
    expected = colors.tile_rgb(layer.dominant(), layer.selectivity("si"), metrics.is_dead(layer.class_means()), 10)
    for unit in (0, 17, 63):
        assert page.evaluate(f"window.tuneline.tileRGB('map-canvas', {unit})") == expected[7, unit].tolist()
    page.shot("map")
    assert page.errors == []


def test_moving_the_slider_recolors_tiles_in_the_browser(page, url):
    page.goto(f"{url}/?run=sweep/a&layer=conv")
    wait_painted(page, t=7)
    before = page.evaluate("window.tuneline.snapshot('map-canvas')")
    requests = []
    page.on("request", lambda r: requests.append(r.url) if "_dash-update-component" in r.url else None)
    track = page.locator("#map-t .dash-slider-track").bounding_box()
    page.mouse.click(track["x"] + 3, track["y"] + track["height"] / 2)  # the start of the track: checkpoint 0
    wait_painted(page, t=0)
    assert page.evaluate("window.tuneline.snapshot('map-canvas')") != before
    assert label(page).startswith("step 0 ")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    wait_painted(page, t=2)
    assert label(page).startswith("step 200")
    # the charts' cursors follow, after the map's frame (a chart not mounted yet is waited for: Dash loads
    # its graph component lazily, after the map has painted)
    page.wait_for_function("document.querySelector('#map-sel .js-plotly-plot')?.layout?.shapes?.[0]?.x0 === 200")
    page.wait_for_function("document.querySelector('#map-hist .js-plotly-plot')?.data?.[0]?.y"
                           "?.reduce((a, b) => a + b) > 0")
    time.sleep(0.3)
    # recoloring needs no server; only the charts' cursor and nothing else moved (the unit panel is closed)
    assert not [r for r in requests if "map-data" in r]
    assert page.errors == []


def test_play_advances(page, url):
    page.goto(f"{url}/?run=sweep/a&layer=fc")
    wait_painted(page, t=7)
    for _ in range(3):
        page.keyboard.press("ArrowLeft")
    wait_painted(page, t=4)
    page.click("#map-play")  # at the default speed
    wait_painted(page, t=5, timeout=10)
    assert page.inner_text("#map-play").endswith("Pause")
    wait_painted(page, t=7, timeout=10)  # stops at the last checkpoint
    page.wait_for_function("document.getElementById('map-play').innerText.endsWith('Play')")
    assert page.errors == []


def test_clicking_a_tile_opens_its_detail_with_top_images(page, url):
    page.goto(f"{url}/?run=sweep/a&layer=conv")
    wait_painted(page)
    center = page.evaluate("window.tuneline.tileCenter('map-canvas', 5)")
    page.mouse.move(center["x"], center["y"])
    page.wait_for_function("window.tuneline.hovers.size > 0")  # concepts come after the first paint
    page.mouse.move(center["x"] + 1, center["y"])
    tip = page.wait_for_selector("#tl-tip", state="visible")
    assert "unit 5" in tip.inner_text() and "dominant class" in tip.inner_text()
    assert "best concept" in tip.inner_text() and "IoU" in tip.inner_text()
    page.mouse.click(center["x"], center["y"])
    page.wait_for_selector("#unit-topk img", timeout=10000)
    assert "conv · unit 5" in page.inner_text("#unit-panel")
    assert page.locator("#unit-topk img").count() == 4
    assert page.locator("#unit-panel .js-plotly-plot").count() == 3
    assert wait_painted(page, unit=5)["unit"] == 5
    page.keyboard.press("ArrowLeft")  # the images follow the slider
    wait_text(page, "unit-panel", "at step 600")
    page.shot("unit")
    page.click("#unit-close")
    page.wait_for_function("!document.querySelector('#unit-topk')")
    assert page.errors == []


def test_comparison_renders_two_runs(page, url):
    page.goto(f"{url}/compare?runs=sweep/a,sweep/b")
    wait_painted(page, "cmp-canvas-0")
    wait_painted(page, "cmp-canvas-1")
    assert "wd=0.0" in page.inner_text("#cmp-grid") and "wd=0.0005" in page.inner_text("#cmp-grid")
    page.wait_for_selector("#cmp-sel .main-svg")
    assert page.locator("#cmp-sel .scatterlayer .trace").count() == 2
    page.keyboard.press("Home")  # the shared slider moves both maps
    wait_painted(page, "cmp-canvas-0", t=0)
    wait_painted(page, "cmp-canvas-1", t=0)
    page.click("text=fraction of training")
    wait_text(page, "cmp-step-label", "% of training")
    page.shot("compare")
    assert page.errors == []


def test_a_run_written_while_the_page_is_open_gains_checkpoints(page, url, root):
    page.goto(f"{url}/?run=live")
    wait_text(page, "map-status", "no committed checkpoints")
    with LIVE.open_writer(root / "live") as writer:
        LIVE.append(writer, 0, 3)
        start = time.monotonic()
        wait_painted(page, T=3, timeout=8)
        appeared = time.monotonic() - start
        assert page.inner_text("#map-status") == ""
        page.keyboard.press("Home")
        wait_painted(page, t=0)
        LIVE.append(writer, 3, 5)
        wait_painted(page, T=5, timeout=8)
    assert state(page) == {"t": 0, "T": 5}  # the range grew, the position stayed
    assert page.evaluate("document.querySelector('#map-t [role=slider]').getAttribute('aria-valuemax')") == "4"
    assert appeared < 4.0
    assert page.errors == []


def test_problems_are_messages_on_the_page(page, url, tmp_path):
    page.goto(f"{url}/?run=broken")
    wait_text(page, "map-status", "cannot be read")
    page.goto(f"{url}/?run=..%2F..%2Fetc%2Fpasswd")
    page.wait_for_selector("text=unknown run '../../etc/passwd'")
    wait_painted(page)  # and another run is shown
    assert "unknown run" in page.inner_text(".tl-map-page")
    assert "root:x:0" not in page.content()
    (tmp_path / "empty").mkdir()
    with serve(tmp_path / "empty") as empty_url:
        page.goto(empty_url)
        page.wait_for_selector("text=No runs found under")
        SyntheticRun(layers={"fc": 4}, checkpoints=2, map_size=0).write(tmp_path / "empty" / "first")
        wait_painted(page, T=2, timeout=20)  # the page shows the first run that appears
        assert "Traceback" not in page.content()
        assert page.errors == []
        page.goto("about:blank")  # stop the page's polling before its server stops


def test_runs_on_s3_are_served_with_live_rows(page, s3_server, s3_url, tmp_path):
    """`python -m viewer s3://bucket/prefix` against a real S3 server: both runs listed and painted with
    all their checkpoints, and a row appended to a run on S3 while the page is open appears."""
    SyntheticRun(layers=LAYERS, checkpoints=8, seed=1, map_size=3).write(f"{s3_url}/sweep/a")
    SyntheticRun(layers=LAYERS, checkpoints=6, seed=2, map_size=3).write(f"{s3_url}/sweep/b")
    live = SyntheticRun(layers={"fc": 16}, checkpoints=4, seed=9, map_size=3)
    log = tmp_path / "viewer.log"
    with live.open_writer(f"{s3_url}/live") as writer, serve(s3_url, log=log, env=s3_server.env) as url:
        live.append(writer, 0, 2)
        page.goto(url)
        wait_painted(page, T=2)  # the first run in order: 'live'
        assert page.inner_text(".tl-root") == s3_url
        page.click("#map-run")
        options = page.locator(".dash-dropdown-options [role=option]").all_inner_texts()
        assert [o.strip() for o in options] == ["live", "sweep/a", "sweep/b"], options
        page.keyboard.press("Escape")
        for run_id, n in (("sweep/a", 8), ("sweep/b", 6)):
            page.goto(f"{url}/?run={run_id}&layer=conv")
            assert wait_painted(page, T=n, K=64)["t"] == n - 1
            assert label(page).endswith(f"checkpoint {n} / {n}")
        page.wait_for_selector("#map-sel .scatterlayer .trace")  # the charts, read from S3 too
        page.wait_for_selector("#map-hist .barlayer .point")
        page.shot("s3_run")
        page.goto(f"{url}/?run=live")
        wait_painted(page, T=2)
        live.append(writer, 2, 3)  # a row committed on S3 while the page is open
        assert wait_painted(page, T=3, timeout=15)["t"] == 2  # at the newest checkpoint: it follows
        assert label(page).endswith("checkpoint 3 / 3")
        assert page.errors == []  # (while the server runs: the page's polls fail once it stops)
    assert "Traceback" not in log.read_text(errors="replace"), log.read_text(errors="replace")[-3000:]


# ------------------------------------------------------------------ URLs, live runs, sparse runs, legends


def search(page) -> str:
    return page.evaluate("window.location.search")


def test_a_unit_has_a_bookmarkable_url_and_back_closes_it(page, url):
    page.goto(f"{url}/?run=sweep/a&layer=conv")
    wait_painted(page, t=7)
    page.evaluate("window.__page = document.getElementById('map-canvas')")  # gone if the page is rebuilt
    page.keyboard.press("ArrowLeft")
    wait_painted(page, t=6)
    center = page.evaluate("window.tuneline.tileCenter('map-canvas', 5)")
    page.mouse.click(center["x"], center["y"])
    page.wait_for_function("window.location.search.includes('unit=5')")
    page.wait_for_selector("#unit-topk img")
    assert "conv · unit 5" in page.inner_text("#unit-panel")
    assert "run=sweep%2Fa" in search(page) and "layer=conv" in search(page)
    center = page.evaluate("window.tuneline.tileCenter('map-canvas', 9)")
    page.mouse.click(center["x"], center["y"])
    page.wait_for_function("window.location.search.includes('unit=9')")
    wait_text(page, "unit-panel", "conv · unit 9")
    page.go_back()  # unit 5 again, on the same page at the same checkpoint
    page.wait_for_function("window.location.search.includes('unit=5')")
    wait_text(page, "unit-panel", "conv · unit 5")
    page.go_back()  # no unit: the panel closes
    page.wait_for_function("!window.location.search.includes('unit=')")
    page.wait_for_function("!document.querySelector('#unit-topk')")
    assert page.evaluate("window.__page === document.getElementById('map-canvas')")
    assert state(page) == {"t": 6, "T": 8}
    page.go_forward()
    wait_text(page, "unit-panel", "conv · unit 5")
    bookmark = page.url
    page.goto("about:blank")
    page.goto(bookmark)  # the URL opens the unit by itself
    wait_text(page, "unit-panel", "conv · unit 5")
    assert wait_painted(page, unit=5)["unit"] == 5
    page.goto(f"{url}/?run=sweep/b&layer=fc&unit=7")
    wait_text(page, "unit-panel", "fc · unit 7")
    assert page.errors == []


def test_a_live_run_opens_at_its_newest_checkpoint_and_follows_from_there(page, url, root):
    """A writer process appends rows: at the newest checkpoint the slider follows; elsewhere it stays."""
    writer = subprocess.Popen([sys.executable, str(SYNTHETIC), str(root / "follow"), "--layers", "fc=16",
                               "--checkpoints", "9", "--stdin"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(SYNTHETIC.parents[1])})

    def rows(n: int) -> None:
        writer.stdin.write(f"{n}\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == f"{n} committed"

    try:
        assert writer.stdout.readline().strip() == "0 committed"
        rows(3)
        page.goto(f"{url}/?run=follow")
        assert wait_painted(page, T=3)["t"] == 2  # opens at the newest
        rows(5)
        wait_painted(page, T=5, t=4, timeout=10)  # follows
        assert label(page).endswith("checkpoint 5 / 5")
        page.keyboard.press("Home")
        wait_painted(page, t=0)
        rows(7)
        wait_painted(page, T=7, timeout=10)
        time.sleep(1.5)  # a poll or two later
        assert state(page) == {"t": 0, "T": 7}  # elsewhere: stays put
        page.keyboard.press("End")
        wait_painted(page, t=6)
        rows(9)
        wait_painted(page, T=9, t=8, timeout=10)  # at the newest again: follows
    finally:
        writer.stdin.close()
        writer.wait(timeout=20)
    assert writer.returncode == 0
    assert page.errors == []


def full_layout(page, graph: str, key: str):
    return page.evaluate(f"document.querySelector('#{graph} .js-plotly-plot')._fullLayout.{key}")


def test_one_checkpoint_charts_draw_points_and_two_rows_span_their_steps(page, url):
    page.goto(f"{url}/?run=one")
    wait_painted(page, T=1)
    for graph in ("map-sel", "map-det", "map-acc"):
        page.wait_for_selector(f"#{graph} .scatterlayer .point", state="attached")
        assert page.locator(f"#{graph} .scatterlayer .point").count() >= 1, graph
        assert page.locator(f"#{graph} .xtick text").all_text_contents() == ["0"], graph
    page.shot("one_checkpoint")
    page.goto(f"{url}/?run=two")
    wait_painted(page, T=2)
    page.wait_for_selector("#map-sel .scatterlayer .point", state="attached")
    lo, hi = full_layout(page, "map-sel", "xaxis.range")
    assert -0.1 <= lo < 0 and 1 < hi <= 1.1  # the steps' range (0 and 1), not -0.5 .. 1.5
    assert page.locator("#map-sel .xtick text").all_text_contents() == ["0", "1"]
    page.shot("two_checkpoints")
    assert page.errors == []


def boxes(page, selector: str) -> list[dict]:
    return page.evaluate(f"""Array.from(document.querySelectorAll({selector!r})).map(g => {{
        const box = el => {{ const r = el && el.getBoundingClientRect(); return r && r.width ? [r.left, r.top, r.right,
            r.bottom] : null; }};
        return {{id: g.closest('[id]').id, legend: box(g.querySelector('.legend')),
                 titles: ['.xtitle', '.ytitle', '.gtitle'].map(s => box(g.querySelector(s))).filter(b => b)}};
    }})""")


def overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("path, selector", [
    ("/?run=sweep/a&layer=conv&unit=3", "#unit-panel .js-plotly-plot, .tl-charts .js-plotly-plot"),
    ("/compare?runs=sweep/a,sweep/b", ".tl-compare-charts .js-plotly-plot"),
])
def test_legends_never_overlap_titles(page, url, path, selector):
    page.goto(url + path)
    page.wait_for_selector(".legend", state="attached")
    time.sleep(1.0)  # every chart drawn
    charts = boxes(page, selector)
    assert len([c for c in charts if c["legend"]]) >= 3
    for chart in charts:
        for title in chart["titles"]:
            assert not (chart["legend"] and overlap(chart["legend"], title)), chart
    assert page.errors == []
