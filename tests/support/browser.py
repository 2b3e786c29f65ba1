"""Driving the viewer from a real headless Chromium, for the browser tests, benchmarks and screenshots.

    with serve(root) as url, chromium() as browser:
        page = browser.new_page()
        page.goto(url)
        wait_painted(page)

The app runs in its own process (`python -m viewer root --port N`), as a user runs
it; the browser is the system's Chromium (Debian's package, never a downloaded one)
driven by Playwright.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "chromium", "free_port", "serve", "wait_painted"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the viewer exited with code {proc.returncode} before serving")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"the viewer did not listen on port {port} within {timeout} s")


@contextlib.contextmanager
def serve(root: str | os.PathLike, port: int | None = None, timeout: float = 30.0, log: Path | None = None,
          env: dict | None = None):
    """Run `python -m viewer root` in a child process (with `env` added to this one's environment, e.g. an
    S3 endpoint); yields its URL; stops it on exit."""
    port = port or free_port()
    out = open(log, "wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "viewer", str(root), "--port", str(port)], stdout=out,
                            stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        _wait_port(port, proc, timeout)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()


@contextlib.contextmanager
def chromium(playwright=None):
    """A headless Chromium browser from /usr/bin/chromium (Playwright's sync API)."""
    from playwright.sync_api import sync_playwright

    with contextlib.ExitStack() as stack:
        p = playwright or stack.enter_context(sync_playwright())
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        stack.callback(browser.close)
        yield browser


def wait_painted(page, canvas: str = "map-canvas", timeout: float = 15.0, **expect) -> dict:
    """Wait until `canvas` was painted (and its state matches `expect`, e.g. t=3, T=8); returns the state."""
    fields = {"t": "s.t", "unit": "s.unit", "T": "s.p.T", "K": "s.p.K", "key": "s.p.key"}
    check = " && ".join(f"{fields[k]} === {v!r}" for k, v in expect.items())
    page.wait_for_function(
        f"() => {{ const s = window.tuneline && window.tuneline.maps && window.tuneline.maps[{canvas!r}];"
        f" return !!s {('&& ' + check) if check else ''}; }}", timeout=timeout * 1000)
    return page.evaluate(f"() => {{ const s = window.tuneline.maps[{canvas!r}];"
                         f" return {{t: s.t, T: s.p.T, K: s.p.K, key: s.p.key, unit: s.unit}}; }}")
