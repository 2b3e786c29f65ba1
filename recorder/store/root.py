"""Where a run's zarr group is, and whether it holds a tuneline run (numpy-free, no torch).

    zarr_loc = resolve_zarr_location("runs/demo/baseline")   # its record.zarr; or a URL
    attrs = read_root_attrs(zarr_loc)                       # NotARunError if it is no run

`Run` (reading) and `RunWriter` (resuming) both start here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from recorder.schema import SCHEMA
from recorder.store.location import Location

__all__ = ["RECORD", "NotARunError", "damaged", "read_root_attrs", "resolve_zarr_location"]

RECORD = "record.zarr"  # the zarr group inside a run folder
_REQUIRED_ATTRS = ("classes", "concepts", "probe", "layers", "units", "n_committed")


class NotARunError(ValueError):
    """The path exists but holds no tuneline run store."""


def resolve_zarr_location(where: str | os.PathLike | Location, storage_options: dict | None = None) -> Location:
    """The `record.zarr` of a run folder, or `where` itself when it is the zarr group.

    Missing path or empty prefix -> FileNotFoundError; a folder that holds no run ->
    NotARunError; bad URL -> ValueError or ImportError (see `Location.parse`).
    """
    loc = Location.parse(where, storage_options)
    record = loc.join(RECORD)
    if loc.is_local:
        if not Path(loc.url).exists():
            raise FileNotFoundError(f"no run at '{loc}': the path does not exist")
        if Path(record.url).is_dir():
            return record
        if loc.is_file("zarr.json"):
            return loc
    else:
        if record.is_file("zarr.json"):
            return record
        if loc.is_file("zarr.json"):
            return loc
        if not record.is_empty():  # record.zarr without root metadata
            return record
        if loc.is_empty():
            raise FileNotFoundError(f"no run at '{loc}': nothing is stored there")
    raise NotARunError(f"'{loc}' is not a tuneline run: it has no {RECORD}")


def damaged(zarr_loc: Location, what: str, exc: BaseException) -> NotARunError:
    """The error for a run store whose files cannot be read: names the unreadable
    metadata files when there are any, else `what` and the cause."""
    bad = []
    for key in zarr_loc.files():
        if key.rsplit("/", 1)[-1] != "zarr.json":
            continue
        try:
            if not isinstance(json.loads(zarr_loc.read_bytes(key)), dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as error:
            bad.append(f"{key} ({error})")
    cause = f"cannot parse {', '.join(bad)}" if bad else f"cannot read {what}: {type(exc).__name__}: {exc}"
    return NotARunError(f"run store at '{zarr_loc}' is damaged: {cause}")


def read_root_attrs(zarr_loc: Location) -> dict:
    """The root attributes of a run store, checked to be a tuneline run (NotARunError)."""
    try:
        meta = json.loads(zarr_loc.read_bytes("zarr.json"))
    except FileNotFoundError:
        raise NotARunError(f"'{zarr_loc}' is not a tuneline run: it has no zarr.json") from None
    except (OSError, ValueError) as exc:
        raise NotARunError(
            f"'{zarr_loc}' is not a tuneline run: cannot read zarr.json: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("node_type") != "group" or meta.get("zarr_format") != 3:
        raise NotARunError(f"'{zarr_loc}' is not a tuneline run: not a zarr v3 group")
    attrs = meta.get("attributes")
    schema = attrs.get("schema") if isinstance(attrs, dict) else None
    if schema != SCHEMA:
        raise NotARunError(
            f"'{zarr_loc}' is not a tuneline run: schema is {schema!r}, expected {SCHEMA!r}")
    missing = [key for key in _REQUIRED_ATTRS if key not in attrs]
    if missing:
        raise NotARunError(f"'{zarr_loc}' is a damaged tuneline run: root attributes {missing} are missing")
    return attrs
