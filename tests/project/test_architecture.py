"""The import rules of docs/ARCHITECTURE.md, read from the source (not from what happens to be
imported at run time): no circles, no borrowing of another module's private names, the CLI on
top of public names only, and each room importing only the rooms below it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "python"
PACKAGE = "e2ebackup"

# Each room and the rooms it must not import (docs/ARCHITECTURE.md, "Rooms"). A module belongs
# to the first room whose prefix matches its dotted name.
ROOMS: list[tuple[str, tuple[str, ...]]] = [
    ("e2ebackup.cli", ()),
    ("e2ebackup.__main__", ()),  # `python -m e2ebackup`: the CLI's entry
    # Bulk work on a Dask cluster (the `dask` extra): above the library, below the CLI.
    ("e2ebackup.dask", ("e2ebackup.cli", "e2ebackup.vault.server")),
    ("e2ebackup.vault.server", ("e2ebackup.cli", "e2ebackup.repo", "e2ebackup.sealed")),
    (
        "e2ebackup.vault",
        ("e2ebackup.cli", "e2ebackup.repo", "e2ebackup.sealed", "e2ebackup.vault.server"),
    ),
    (
        "e2ebackup.repo",
        (
            "e2ebackup.cli",
            "e2ebackup.vault.server",
            "e2ebackup.sealed",
            "e2ebackup._files",
            "e2ebackup.files",
            "e2ebackup.whatsapp",
        ),
    ),
    (
        "e2ebackup.storage",
        (
            "e2ebackup.cli",
            "e2ebackup.repo",
            "e2ebackup.vault",
            "e2ebackup.keyring",
            "e2ebackup.sealed",
        ),
    ),
    (
        "e2ebackup.keyring",
        (
            "e2ebackup.cli",
            "e2ebackup.repo",
            "e2ebackup.sealed",
            "e2ebackup.storage",
            "e2ebackup.vault.server",
        ),
    ),
    (
        "e2ebackup.whatsapp",
        ("e2ebackup.cli", "e2ebackup.repo", "e2ebackup.vault", "e2ebackup.storage"),
    ),
    ("e2ebackup", ("e2ebackup.cli",)),
]


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # a module
    name: str | None  # the name taken from it, for `from target import name`
    deferred: bool  # inside a function
    type_only: bool  # under `if TYPE_CHECKING:`
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((PACKAGE_ROOT / PACKAGE).rglob("*.py"))}


MODULES = _modules()
COMPILED = {f"{PACKAGE}._core"}  # the extension: a module without a .py file


def _is_module(name: str) -> bool:
    return name in MODULES or name in COMPILED


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = importer if MODULES[importer].name == "__init__.py" else importer.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, deferred: bool, type_only: bool) -> Iterator[tuple[ast.AST, bool, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for sub in child.body:
                yield sub, deferred, True
                yield from _walk(sub, deferred, True)
            for sub in child.orelse:
                yield sub, deferred, type_only
                yield from _walk(sub, deferred, type_only)
            continue
        inner = deferred or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield child, inner, type_only
        yield from _walk(child, inner, type_only)


def _imports(module: str) -> Iterator[Import]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node, deferred, type_only in _walk(tree, False, False):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    yield Import(module, alias.name, None, deferred, type_only, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            if source.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if _is_module(sub):  # `from e2ebackup import errors` imports a module
                    yield Import(module, sub, None, deferred, type_only, node.lineno)
                else:
                    yield Import(module, source, alias.name, deferred, type_only, node.lineno)


ALL_IMPORTS = [imp for module in MODULES for imp in _imports(module)]


def _where(imp: Import) -> str:
    shown = f"{imp.target}.{imp.name}" if imp.name else imp.target
    return f"{imp.importer} (line {imp.line}) imports {shown}"


def _room(module: str) -> tuple[str, tuple[str, ...]]:
    for prefix, forbidden in ROOMS:
        if module == prefix or module.startswith(prefix + "."):
            return prefix, forbidden
    raise AssertionError(f"{module} is in no room: add it to ROOMS and docs/ARCHITECTURE.md")


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _is_cli(module: str) -> bool:
    return _within(module, "e2ebackup.cli") or module == "e2ebackup.__main__"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_every_module_is_in_a_room() -> None:
    for module in MODULES:
        _room(module)


def test_no_import_circles() -> None:
    """Deferred imports count: a circle hidden inside a function is still a circle."""
    edges: dict[str, set[str]] = {module: set() for module in MODULES}
    for imp in ALL_IMPORTS:
        if not imp.type_only and imp.target != imp.importer and imp.target in MODULES:
            edges[imp.importer].add(imp.target)
    assert _cycles(edges) == []


def test_no_module_borrows_private_names() -> None:
    borrowed = [_where(imp) for imp in ALL_IMPORTS if imp.name and imp.name.startswith("_")]
    assert borrowed == []


def test_the_library_never_imports_the_cli() -> None:
    upward = [
        _where(imp)
        for imp in ALL_IMPORTS
        if not _is_cli(imp.importer) and _within(imp.target, "e2ebackup.cli")
    ]
    assert upward == []


def test_the_cli_uses_public_library_names_only() -> None:
    private = [
        _where(imp)
        for imp in ALL_IMPORTS
        if _within(imp.importer, "e2ebackup.cli")
        and not _within(imp.target, "e2ebackup.cli")
        and (
            any(part.startswith("_") for part in imp.target.split("."))
            or (imp.name or "").startswith("_")
        )
    ]
    assert private == []


@pytest.mark.parametrize("room", [prefix for prefix, _ in ROOMS])
def test_rooms_import_only_what_lies_below(room: str) -> None:
    wrong = []
    for imp in ALL_IMPORTS:
        prefix, forbidden = _room(imp.importer)
        if prefix != room or (_within(imp.target, room) and room != PACKAGE):
            continue
        if any(_within(imp.target, f) for f in forbidden):
            wrong.append(_where(imp))
    assert wrong == []


def test_the_rule_reader_sees_circles_and_private_names() -> None:
    """The checker itself can fail: a circle and a private import in made-up sources are found."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    tree = ast.parse("def f():\n    from e2ebackup.x import _hidden\n")
    found = [(n, d) for n, d, _ in _walk(tree, False, False) if isinstance(n, ast.ImportFrom)]
    assert len(found) == 1
    assert found[0][1] is True  # deferred: inside a function
