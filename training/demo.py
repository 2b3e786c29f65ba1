"""`python -m training demo`: serve the viewer first, then train the demo sweep behind it.

    python -m training demo                    # viewer on http://127.0.0.1:8050/, runs appear live
    python -m training demo --preset smoke --port 8051 --no-wait

The viewer runs in its own process on the sweep folder, so each run shows up on
the page as soon as its first checkpoint is written and grows while it trains.
After the sweep (and its report) the viewer keeps serving until Ctrl-C.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

from training.sweep import PRESETS, run_sweep
from training.report import write_report

READY_S = 60.0  # how long to wait for the viewer to answer before training anyway


def start_viewer(root: Path, host: str, port: int) -> subprocess.Popen:
    """`python -m viewer root` in a child process; returns once it accepts connections."""
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "viewer", str(root), "--host", host, "--port", str(port)])
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.2)
    if proc.poll() is not None:
        raise SystemExit(f"the viewer exited with code {proc.returncode} (is port {port} in use? try --port)")
    return proc


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training demo", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS), help="which sweep (default demo)")
    parser.add_argument("--out", help="sweep folder (default: the preset's, e.g. runs/demo)")
    parser.add_argument("--host", default="127.0.0.1", help="viewer interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8050, help="viewer port (default 8050)")
    parser.add_argument("--jobs", type=int, default=1, help="settings trained at once, one process each")
    parser.add_argument("--no-wait", action="store_true", help="stop the viewer when the sweep is done")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    out = Path(args.out or preset.out)
    viewer = start_viewer(out, args.host, args.port)
    print(f"\n  tuneline viewer: http://{args.host}:{args.port}/  (runs appear as they train)\n", flush=True)
    try:
        run_sweep(preset, out, jobs=args.jobs, progress=False)
        print(write_report(out))
        print(f"wrote {out / 'report.md'}")
        if not args.no_wait:
            print(f"\n  the sweep is done; the viewer keeps serving at http://{args.host}:{args.port}/ "
                  "(Ctrl-C to stop)\n", flush=True)
            viewer.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if viewer.poll() is None:
            viewer.terminate()
            viewer.wait(timeout=10)


if __name__ == "__main__":
    main()
