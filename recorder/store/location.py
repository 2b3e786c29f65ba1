"""Where a run lives: a local path or an fsspec URL, as a zarr store and for listing.

    loc = Location.parse("s3://bucket/runs/base")       # or "runs/base", "memory://x"
    loc.join("record.zarr").zarr_store(read_only=True)   # a zarr Store (public API)
    loc.exists(), loc.is_empty(), loc.read_bytes("record.zarr/zarr.json")

A string with a scheme (`s3://`, `gs://`, `memory://`, ...) is a URL and is never
taken for a local folder; `file://` URLs and paths are local. Endpoints and
credentials come from the backend's usual environment (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, ...) or from `storage_options`. An unknown scheme is a
ValueError, a scheme whose fsspec backend is not installed an ImportError naming
the package to install. Local stores write every file under a temporary name and
rename it, so concurrent readers only ever see whole files (zarr 3.0's LocalStore
writes in place).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from zarr.storage import FsspecStore, LocalStore, WrapperStore

__all__ = ["AtomicLocalStore", "Location", "remove_partial_files"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
# Packages that implement the common schemes (fsspec's own hints are used for the rest).
_BACKENDS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
             "abfss": "adlfs", "adl": "adlfs", "http": "aiohttp", "https": "aiohttp", "hf": "huggingface_hub"}
# Listings are never cached: a live run grows while it is read.
_NO_LISTING_CACHE = {"use_listings_cache": False}


_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")  # the temporary name of a file being written


def remove_partial_files(folder: Path) -> int:
    """Delete the temporary files (`<name>.<uuid hex>.partial`) that a writer killed while
    writing left below `folder`, and the folders left empty (an array whose metadata was
    never renamed into place); returns how many files. Called when a writer opens a run:
    zarr would otherwise warn about each one as an object it does not know."""
    removed = 0
    for parent, _, files in os.walk(folder, topdown=False):
        for name in files:
            if _PARTIAL.search(name):
                Path(parent, name).unlink(missing_ok=True)
                removed += 1
        if Path(parent) != Path(folder) and not os.listdir(parent):  # no zarr node is empty
            os.rmdir(parent)
    return removed


def _put_atomic(path: Path, data, exclusive: bool = False) -> None:
    """Write `data` to a temporary file next to `path`, then rename (or link, if
    `exclusive`: FileExistsError when `path` exists) it to `path`."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    try:
        f = open(tmp, "wb")
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(tmp, "wb")
    try:
        with f:
            f.write(data)
        if exclusive:
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class AtomicLocalStore(WrapperStore):
    """A zarr LocalStore whose files are written to a temporary name and renamed.

        store = AtomicLocalStore(LocalStore("runs/base/record.zarr"))
        group = zarr.open_group(store, mode="r+")

    Reads, listing and deletes are the LocalStore's own.
    """

    def __init__(self, store: LocalStore):
        super().__init__(store)
        self.folder = Path(store.root)

    def _refuse_read_only(self, key: str) -> None:
        if self.read_only:
            raise ValueError(f"cannot write '{key}': the store at '{self.folder}' is read-only")

    async def set(self, key: str, value) -> None:
        self._refuse_read_only(key)
        await asyncio.to_thread(_put_atomic, self.folder / key, value.as_buffer_like())

    async def set_if_not_exists(self, key: str, value) -> None:
        self._refuse_read_only(key)
        try:
            await asyncio.to_thread(_put_atomic, self.folder / key, value.as_buffer_like(), True)
        except FileExistsError:
            pass


def _filesystem(protocol: str, url: str, storage_options: dict):
    """The fsspec filesystem class for `protocol`; clear errors for unknown or missing backends."""
    try:
        import fsspec
        from fsspec.registry import known_implementations
    except ImportError as exc:
        raise ImportError(f"cannot open '{url}': URLs need the package fsspec (pip install fsspec)") from exc

    if protocol not in fsspec.available_protocols():
        raise ValueError(f"cannot open '{url}': unknown URL scheme '{protocol}://' (use a local path or "
                         f"an fsspec URL such as s3://, gs://, az://, memory://)")
    try:
        return fsspec.filesystem(protocol, **storage_options)
    except ImportError as exc:
        package = _BACKENDS.get(protocol)
        hint = known_implementations.get(protocol, {}).get("err", "")
        what = f"the package {package} (pip install {package})" if package else f"its fsspec backend ({hint})"
        raise ImportError(f"cannot open '{url}': the {protocol}:// scheme needs {what}") from exc


@dataclass(frozen=True)
class Location:
    """A folder on a local disk (`url` is its path) or below an fsspec URL.

        Location.parse("runs/base").path            # Path('runs/base')
        Location.parse("s3://b/runs").join("base")  # Location('s3://b/runs/base')
    """

    url: str
    protocol: str | None = None  # None: a local path
    storage_options: dict = field(default_factory=dict, compare=False)

    @classmethod
    def parse(cls, where: str | os.PathLike | Location, storage_options: dict | None = None) -> Location:
        if isinstance(where, Location):
            return where if storage_options is None else cls(where.url, where.protocol, dict(storage_options))
        if not isinstance(where, (str, os.PathLike)):
            raise TypeError(f"a run location must be a path or a URL string, got {where!r}")
        text = os.fspath(where)
        if isinstance(text, bytes):
            text = os.fsdecode(text)
        match = _SCHEME.match(text)
        if match is None or match.group(1).lower() == "file":
            if storage_options:
                raise ValueError(f"storage_options={storage_options!r} were given for the local path "
                                 f"'{text}': they apply to URLs only")
            return cls(text[len("file://"):] if match else text)
        protocol = match.group(1).lower()
        options = dict(storage_options or {})
        _filesystem(protocol, text, options)  # fail now for unknown schemes and missing backends
        return cls(text.rstrip("/"), protocol, options)

    def __str__(self) -> str:
        return self.url

    @property
    def is_local(self) -> bool:
        return self.protocol is None

    @property
    def path(self) -> Path | None:
        """The local folder (None for a URL)."""
        return Path(self.url) if self.is_local else None

    @property
    def name(self) -> str:
        return Path(self.url).name if self.is_local else self.url.rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        if self.is_local:
            return Location(os.fspath(Path(self.url).parent))
        head = self.url.rsplit("/", 1)[0]
        return self if head.endswith(":/") else Location(head, self.protocol, self.storage_options)

    def join(self, *parts: str) -> Location:
        if self.is_local:
            return Location(os.fspath(Path(self.url, *parts)))
        return Location("/".join([self.url, *parts]), self.protocol, self.storage_options)

    # -------------------------------------------------------------- fsspec

    @property
    def fs(self):
        """The fsspec filesystem of a URL (listings never cached)."""
        return _filesystem(self.protocol, self.url, {**_NO_LISTING_CACHE, **self.storage_options})

    def _fs_path(self, key: str = "") -> str:
        return "/".join(p for p in (self.url, key) if p)

    # ------------------------------------------------------------- queries

    def zarr_store(self, read_only: bool):
        """A zarr Store rooted here: AtomicLocalStore for a path, FsspecStore for a URL."""
        if self.is_local:
            return AtomicLocalStore(LocalStore(self.url, read_only=read_only))
        return FsspecStore.from_url(self.url, storage_options={**_NO_LISTING_CACHE, **self.storage_options},
                                    read_only=read_only)

    def exists(self, key: str = "") -> bool:
        """Whether a file `key` below here, or (no key) anything here, exists."""
        if self.is_local:
            return Path(self.url, key).exists()
        return self.fs.isfile(self._fs_path(key)) if key else not self.is_empty()

    def is_file(self, key: str) -> bool:
        return Path(self.url, key).is_file() if self.is_local else self.fs.isfile(self._fs_path(key))

    def read_bytes(self, key: str) -> bytes:
        """The content of file `key`; FileNotFoundError if there is none."""
        if self.is_local:
            return Path(self.url, key).read_bytes()
        return self.fs.cat_file(self._fs_path(key))

    def list_dir(self, key: str = "") -> list[str]:
        """Names directly below `key` (files and folders), sorted; [] if there are none."""
        if self.is_local:
            folder = Path(self.url, key)
            return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        fs = self.fs
        try:
            listed = fs.ls(self._fs_path(key), detail=False)
        except FileNotFoundError:
            return []
        base = self._fs_path(key).split("://", 1)[-1].strip("/")
        return sorted({str(p).rstrip("/").rsplit("/", 1)[-1] for p in listed if str(p).strip("/") != base})

    def is_empty(self) -> bool:
        """Whether nothing is here (a missing folder or prefix is empty)."""
        if self.is_local:
            folder = Path(self.url)
            return not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))
        fs = self.fs
        try:
            return not fs.find(self._fs_path(), maxdepth=None, withdirs=False, detail=False)
        except FileNotFoundError:
            return True

    def files(self) -> list[str]:
        """Every file below here, as keys relative to here, sorted."""
        if self.is_local:
            root = Path(self.url)
            return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        prefix = self._fs_path().split("://", 1)[-1].strip("/") + "/"
        try:
            found = [str(p).lstrip("/") for p in self.fs.find(self._fs_path(), withdirs=False, detail=False)]
        except FileNotFoundError:
            return []
        return sorted(p[len(prefix):] for p in found if p.startswith(prefix))

    def remove(self) -> None:
        """Delete everything here."""
        if self.is_local:
            shutil.rmtree(self.url)
        else:
            self.fs.rm(self._fs_path(), recursive=True)

    def walk_folders(self):
        """Yield (location, names below it) top-down; the caller may prune the list of names
        in place (like os.walk). Names are those of sub-folders."""
        pending = [self]
        while pending:
            here = pending.pop(0)
            if here.is_local:
                folder = Path(here.url)
                subs = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
            else:
                try:
                    entries = here.fs.ls(here._fs_path(), detail=True)
                except FileNotFoundError:
                    entries = []
                subs = sorted(str(e["name"]).rstrip("/").rsplit("/", 1)[-1] for e in entries
                              if e.get("type") == "directory")
            yield here, subs
            pending[:0] = [here.join(name) for name in subs]
