"""Shared fixtures: a real S3 server (moto's server mode on 127.0.0.1) and run locations.

    def test_x(s3_url):            # "s3://tuneline-test/<unique prefix>", env set for s3fs
    def test_y(store_root):        # parametrized: a local folder (Path) and an S3 prefix (str)

The server runs in its own process for the whole session; tests that use it get
`AWS_ENDPOINT_URL` and fake credentials in their environment (child processes
inherit them). `StoredFiles` lists and reads a run's files with fsspec, apart from the
store's own code.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

BUCKET = "tuneline-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """moto's S3 server in a subprocess: `S3Server().start()`, `.env`, `.stop()`."""

    def __init__(self):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> S3Server:
        # The server logs every request: to a file, so that a full pipe never blocks it.
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    self.log.seek(0)
                    raise RuntimeError(f"moto server failed: {self.log.read().decode()[-2000:]}") from None
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto server did not answer on {self.endpoint} in {timeout} s") from None
                time.sleep(0.05)

    def create_bucket(self, name: str) -> None:
        import s3fs

        s3fs.S3FileSystem(endpoint_url=self.endpoint, key="testing", secret="testing").mkdir(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server with bucket `BUCKET`; its environment is set for the session."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    server = S3Server().start()
    saved = {key: os.environ.get(key) for key in server.env}
    os.environ.update(server.env)
    try:
        server.create_bucket(BUCKET)
        yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@pytest.fixture
def s3_url(s3_server) -> str:
    """A fresh, empty prefix in the test bucket."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["local", "s3"])
def store_root(request, tmp_path):
    """A folder to put runs in: a local Path, or an S3 URL prefix (str)."""
    if request.param == "local":
        return tmp_path
    return request.getfixturevalue("s3_url")


def join(root, *parts: str):
    """`root / parts` for a Path, `root/parts` for a URL."""
    return Path(root, *parts) if isinstance(root, Path) else "/".join([root, *parts])


class StoredFiles:
    """The files below a local folder or URL, read with fsspec.

        StoredFiles(run).keys()              # relative keys, sorted
        StoredFiles(run).read("record.zarr/zarr.json")
    """

    def __init__(self, where):
        import fsspec

        self.where = os.fspath(where)
        self.fs, self.root = fsspec.core.url_to_fs(self.where, use_listings_cache=False)
        self.root = self.root.rstrip("/")

    def keys(self) -> list[str]:
        try:
            found = self.fs.find(self.root, withdirs=False)
        except FileNotFoundError:
            return []
        prefix = self.root.lstrip("/") + "/"
        return sorted(p.lstrip("/")[len(prefix):] for p in found if p.lstrip("/").startswith(prefix))

    def exists(self, key: str = "") -> bool:
        return self.fs.isfile(f"{self.root}/{key}") if key else bool(self.keys())

    def read(self, key: str) -> bytes:
        return self.fs.cat_file(f"{self.root}/{key}")

    def write(self, key: str, data: bytes) -> None:
        if self.fs.protocol in ("file", ("file", "local")) or "file" in self.fs.protocol:
            Path(self.root, key).parent.mkdir(parents=True, exist_ok=True)
        self.fs.pipe_file(f"{self.root}/{key}", data)
