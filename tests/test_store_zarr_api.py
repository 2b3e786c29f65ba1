"""`recorder/` uses zarr's public API only: no `zarr.core` imports, no zarr private names.

The check reads the source with `ast`. A private name is one that starts with a single
underscore. Flagged:
- importing `zarr.core...` or any zarr module or name that starts with `_`;
- `x._name` where `x` is rooted at an imported zarr module (`zarr.storage._local`);
- `self._name` inside a class that derives from a zarr class, when zarr defines `_name`;
- `x._name` anywhere else when zarr's own source defines or uses `_name` and recorder's
  code does not define it for itself (`self._name = ...`, `def _name`, `_name = ...`).
It is checked here against snippets that reach into zarr in each of these ways.
"""

from __future__ import annotations

import ast
import textwrap
from functools import lru_cache
from pathlib import Path

import pytest
import zarr

RECORDER = Path(__file__).resolve().parents[1] / "recorder"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@lru_cache(maxsize=1)
def zarr_private_names() -> frozenset[str]:
    """Every private identifier that zarr's source defines, assigns or reads."""
    names = set()
    for path in Path(zarr.__file__).parent.rglob("*.py"):
        if _private(path.stem):
            names.add(path.stem)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = node.name
            elif isinstance(node, ast.Attribute):
                name = node.attr
            elif isinstance(node, ast.Name):
                name = node.id
            else:
                continue
            if _private(name):
                names.add(name)
    return frozenset(names)


def own_private_names(trees: list[ast.AST]) -> set[str]:
    """Private names that recorder's code defines for itself."""
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for sub in ast.walk(target):
                        if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) \
                                and sub.value.id in ("self", "cls"):
                            names.add(sub.attr)
                        elif isinstance(sub, ast.Name):
                            names.add(sub.id)
    return {n for n in names if _private(n)}


def _zarr_module(module: str | None) -> bool:
    return module is not None and (module == "zarr" or module.startswith("zarr."))


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def violations(tree: ast.AST, own: set[str], where: str = "<source>") -> list[str]:
    """The uses of zarr internals in one module."""
    found = []
    zarr_aliases: set[str] = set()  # local names bound to zarr modules or classes
    zarr_private = zarr_private_names()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _zarr_module(alias.name):
                    zarr_aliases.add((alias.asname or alias.name).split(".")[0])
                    if alias.name.startswith("zarr.core") or any(map(_private, alias.name.split("."))):
                        found.append(f"{where}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and _zarr_module(node.module):
            if node.module.startswith("zarr.core") or any(map(_private, node.module.split("."))):
                found.append(f"{where}:{node.lineno}: from {node.module} import ...")
            for alias in node.names:
                zarr_aliases.add(alias.asname or alias.name)
                if _private(alias.name):
                    found.append(f"{where}:{node.lineno}: from {node.module} import {alias.name}")
    zarr_classes = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(_root_name(b) in zarr_aliases for b in node.bases):
            zarr_classes.add(node)
    in_zarr_class = {id(sub) for cls in zarr_classes for sub in ast.walk(cls)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not _private(node.attr):
            continue
        root = _root_name(node)
        on_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
        if root in zarr_aliases:
            found.append(f"{where}:{node.lineno}: {ast.unparse(node)} (a private name of zarr)")
        elif on_self and id(node) in in_zarr_class and node.attr in zarr_private:
            found.append(f"{where}:{node.lineno}: {ast.unparse(node)} (a private member of a zarr base class)")
        elif not on_self and node.attr in zarr_private and node.attr not in own:
            found.append(f"{where}:{node.lineno}: {ast.unparse(node)} (a private member of a zarr object)")
    return found


def recorder_trees() -> dict[str, ast.AST]:
    return {path.relative_to(RECORDER.parent).as_posix(): ast.parse(path.read_text(encoding="utf-8"))
            for path in sorted(RECORDER.rglob("*.py"))}


def test_recorder_uses_only_public_zarr_names():
    trees = recorder_trees()
    own = own_private_names(list(trees.values()))
    found = [v for where, tree in trees.items() for v in violations(tree, own, where)]
    assert not found, "zarr internals used:\n" + "\n".join(found)


def test_the_store_imports_zarr():  # the check above has something to look at
    trees = recorder_trees()
    assert any(_root_name(n) == "zarr" for n in ast.walk(trees["recorder/store/writer.py"])
               if isinstance(n, ast.Attribute))


# How a writer can reach into zarr (each line is one way; the store once did all of them).
INTERNALS = {
    "zarr.core import": "from zarr.core.sync import sync\n",
    "zarr.core module": "import zarr.core.array\n",
    "private module": "from zarr.storage._local import LocalStore\n",
    "private name": "from zarr.storage import _utils\n",
    "private attribute of a zarr module": "import zarr\nzarr.storage._local.LocalStore\n",
    "private member of a zarr object": "import zarr\ndef grow(a):\n    return a._async_array.resize((3,))\n",
    "private member of a group": "import zarr\nclass W:\n    def f(self):\n        return self.group._async_group\n",
    "zarr base class private": textwrap.dedent("""
        from zarr.storage import LocalStore
        class RowStore(LocalStore):
            async def set(self, key, value):
                if not self._is_open:
                    await self._open()
                self._check_writable()
        """),
}


@pytest.mark.parametrize("source", INTERNALS.values(), ids=INTERNALS.keys())
def test_each_way_into_zarr_internals_is_found(source):
    tree = ast.parse(source)
    assert violations(tree, own_private_names([tree]))


def test_own_private_members_are_not_flagged():
    source = textwrap.dedent("""
        import zarr
        from zarr.storage import WrapperStore
        class Run:
            def __init__(self):
                self._store = zarr.storage.MemoryStore()
                self._lock = None
            def f(self, other):
                return self._store, other._lock
        class Atomic(WrapperStore):
            def _refuse(self):
                return self.read_only
            async def set(self, key, value):
                self._refuse()
        """)
    tree = ast.parse(source)
    assert violations(tree, own_private_names([tree])) == []
