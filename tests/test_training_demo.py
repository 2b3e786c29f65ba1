"""`python -m training demo`: the viewer answers before the sweep trains its first run."""

import socket
import subprocess
import sys
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_viewer_serves_before_the_sweep_trains(tmp_path):
    port, out = free_port(), tmp_path / "sweep"
    proc = subprocess.Popen(
        [sys.executable, "-m", "training", "demo", "--preset", "smoke", "--out", str(out), "--port", str(port),
         "--no-wait"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, answered = [], None
    try:
        for line in proc.stdout:
            lines.append(line)
            if "tuneline viewer: http://" in line and answered is None:
                assert not any(line.startswith("[1/") for line in lines), "a run finished before the URL"
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
                    answered = response.status
        assert proc.wait(timeout=300) == 0, "".join(lines)
    finally:
        proc.kill()
    assert answered == 200
    text = "".join(lines)
    assert text.index("tuneline viewer: http://") < text.index("[1/")
    assert (out / "baseline" / "record.zarr").is_dir() and (out / "report.md").is_file()
