"""A study server in its own process (`python -m viewer.study serve`), for kill -9 and concurrency tests.

    server = StudyServer(db_path).start(); server.url; server.kill(); server.start()
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from tests.conftest import free_port


class StudyServer:
    def __init__(self, db_path):
        self.db_path, self.port, self.process = db_path, free_port(), None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StudyServer:
        self.process = subprocess.Popen([sys.executable, "-m", "viewer.study", "serve", "--db", str(self.db_path),
                                         "--port", str(self.port)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/study/p/none/state", timeout=2)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the study server did not start")

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
