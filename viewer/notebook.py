"""The viewer inside a Jupyter notebook: `show(root)` renders the app in the cell's output.

    import viewer
    viewer.show("runs/demo")                 # the layer map, inline, below the cell
    viewer.show("s3://bucket/sweep", height=900)

The app is the one `python -m viewer` serves (`viewer.app.create_app`), run with
Dash's Jupyter support (`app.run(jupyter_mode=...)`): a server thread in the
kernel on 127.0.0.1 and a free port (or `port`), shown in an IFrame. Running the
cell again with the same port replaces the earlier server. Needs the `notebook`
extra (`pip install 'tuneline[notebook]'`): IPython's kernel, which Dash's Jupyter
support runs in.
"""

from __future__ import annotations

import os
import socket

import dash

from viewer.app import create_app

__all__ = ["free_port", "show"]

MODES = ("inline", "external", "tab", "jupyterlab")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at `host` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def show(root: str | os.PathLike = "runs", *, port: int | None = None, height: int = 800, width: str = "100%",
         mode: str = "inline", warm: bool = True) -> dash.Dash:
    """Serve the runs below `root` (folder or URL) from this kernel and show the viewer in the cell output.

    `mode`: 'inline' (an IFrame in the output), 'external' (a link), 'tab' (a new browser
    tab) or 'jupyterlab' (a JupyterLab tab, with Dash's JupyterLab extension). Returns the app.
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
        raise ValueError(f"port {port!r} is not a valid port: give an int in 1..65535, or None for a free one")
    if not isinstance(height, int) or isinstance(height, bool) or height <= 0:
        raise ValueError(f"height {height!r} is not a height in pixels: give a positive int")
    if not dash.jupyter_dash.active:
        raise RuntimeError("viewer.show renders the viewer in a Jupyter notebook, and this is not one (or "
                           "IPython's kernel is missing: pip install 'tuneline[notebook]'); outside a "
                           f"notebook run: python -m viewer {root}")
    app = create_app(root, warm=warm)
    app.run(jupyter_mode=mode, host="127.0.0.1", port=port or free_port(), jupyter_height=height,
            jupyter_width=width)
    return app
