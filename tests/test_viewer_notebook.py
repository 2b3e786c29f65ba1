"""viewer.notebook: `viewer.show(root)` in a real Jupyter kernel (nbclient), its output in real headless Chromium.

The notebook is built here (nbformat) and executed headless against a tiny generated
run; while its kernel is still running, the served URL is fetched over HTTP and the
cell's output is opened in Chromium, where the app inside the IFrame paints the map.
"""

import json
import os
import re
import shutil
import urllib.request
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from support.browser import CHROMIUM, chromium, wait_painted
from support.synthetic import SyntheticRun
from viewer import notebook

IFRAME = re.compile(r'<iframe\b[^>]*\bsrc="(http://127\.0\.0\.1:(\d+)/)"', re.I)


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - a loopback URL the test built
        return response.status, response.read()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("nb-runs")
    SyntheticRun(layers={"fc": 12}, checkpoints=4, seed=4, map_size=3).write(root / "sweep" / "a")
    return root


def test_show_renders_the_app_inline_and_serves_it(root, tmp_path):
    nb = new_notebook(cells=[new_code_cell(f"import viewer\napp = viewer.show({str(root)!r}, height=700)"),
                             new_code_cell("type(app).__name__")])
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    with client.setup_kernel():
        client.execute_cell(nb.cells[0], 0)
        client.execute_cell(nb.cells[1], 1)
        outputs = nb.cells[0].outputs
        assert not [o for o in outputs if o.output_type == "error"], outputs
        html = [o.data["text/html"] for o in outputs if o.output_type == "display_data" and "text/html" in o.data]
        assert len(html) == 1, outputs
        found = IFRAME.search(html[0])
        assert found and 'height="700"' in html[0], html[0]
        url, port = found.group(1), int(found.group(2))
        assert port != 8050  # a free port, not the command line's default
        assert nb.cells[1].outputs[0].data["text/plain"] == "'Dash'"

        status, page = get(url)
        assert status == 200 and b"<title>tuneline</title>" in page
        _, layout = get(url + "_dash-layout")
        assert '"url"' in layout.decode() and '"page"' in layout.decode()
        _, deps = get(url + "_dash-dependencies")
        assert any("map-data.data" in d["output"] for d in json.loads(deps))
        _, js = get(url + "assets/tuneline.js")
        assert b"renderMap" in js

        if not Path(CHROMIUM).exists():
            pytest.skip(f"the rest needs Debian's chromium at {CHROMIUM} (apt-get install chromium)")
        with chromium() as browser:  # the cell's output, as a notebook front end shows it
            page = browser.new_page(viewport={"width": 1300, "height": 800})
            page.set_content(f"<html><body>{html[0]}</body></html>")
            page.wait_for_function("() => window.frames.length === 1")
            frame = next(f for f in page.frames if f.url.startswith(url))
            state = wait_painted(frame, T=4, K=12)
            assert state["t"] == 3  # opens at the last checkpoint
            assert frame.locator("#map-run").inner_text().strip().startswith("sweep/a")
            shot = tmp_path / "viewer_notebook.png"
            page.screenshot(path=str(shot))
            if os.environ.get("TUNELINE_SCREENSHOTS"):
                shutil.copy(shot, Path(os.environ["TUNELINE_SCREENSHOTS"]) / shot.name)
    nbformat.validate(nb)


def test_show_outside_a_notebook_says_what_to_run(root):
    with pytest.raises(RuntimeError, match=r"not one .*python -m viewer"):
        notebook.show(root)


@pytest.mark.parametrize("kwargs, bad", [({"port": 0}, "port 0"), ({"port": "8050"}, "port '8050'"),
                                         ({"port": 70000}, "port 70000"), ({"height": -1}, "height -1"),
                                         ({"mode": "popup"}, "mode 'popup'")])
def test_bad_arguments_are_named(root, kwargs, bad):
    with pytest.raises(ValueError, match=re.escape(bad)):
        notebook.show(root, **kwargs)


def test_free_port_is_free():
    import socket

    port = notebook.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # nothing holds it
