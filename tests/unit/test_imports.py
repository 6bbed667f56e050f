"""The import graph of ``appliance/``, ``web/`` and ``image/`` (docs/architecture.md):

- direction: ``image`` <- appliance core <- ``appliance/dicom`` <- services (``worklist``,
  ``printing``, ``forward``, ``hl7``, ``qr``) <- ``server``, ``cli``, ``app`` and ``web``;
  a service never imports another service;
- no cycle among the modules (read from the source, module-level imports only);
- no import inside a function or class, except the optional modules in ``LATE_IMPORTS``.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("appliance", "image", "web")
SERVICES = ("worklist", "printing", "forward", "hl7", "qr")
TOP = {"appliance.server", "appliance.cli", "appliance.app", "appliance.__main__"}
IMAGE, CORE, DICOM, SERVICE, EDGE = range(5)
LAYER_NAMES = ("image", "core", "dicom", "service", "server/cli/app/web")

# Third-party packages a layer must not import (beside the layer rule for our modules).
FORBIDDEN = {
    IMAGE: {"flask", "pynetdicom", "sqlite_utils", "sqlite3", "socket"},
    CORE: {"flask", "cheroot"},
    DICOM: {"flask", "cheroot"},
    SERVICE: {"flask", "cheroot"},
}
# webserver.py is the one place that imports cheroot.
ALLOWED_THIRD_PARTY = {"appliance.webserver": {"cheroot"}}

# Crossings that are there today and not yet moved down into the core: (module, imported
# module) -> why. A new crossing fails the test; moving one down removes its line here.
KNOWN_CROSSINGS: dict[tuple[str, str], str] = {
    ("appliance.catalog", "appliance.worklist.model"): "Code and validate_text of the catalog",
    ("appliance.forward.queue", "appliance.qr.index"): "the Q/R index follows the spool",
    ("appliance.forward.receiver", "appliance.qr.index"): "each received instance is indexed",
    ("appliance.hl7.inbox", "appliance.worklist.model"): "orders become scheduled steps",
    ("appliance.hl7.inbox", "appliance.worklist.repo"): "orders become scheduled steps",
    ("appliance.hl7.mapping", "appliance.worklist.model"): "orders become scheduled steps",
    ("appliance.hl7.outbound", "appliance.worklist.repo"): "step status goes back to the RIS",
    ("appliance.qr.retrieve", "appliance.forward.sender"): "C-MOVE sends with the forwarder",
    ("appliance.qr.retrieve", "appliance.forward.spool"): "Q/R serves the spool's files",
    ("appliance.qr.retrieve", "appliance.forward.journal"): "Q/R reads journal records",
    ("appliance.qr.retrieve", "appliance.forward.store_wire"): "C-MOVE streams as the forwarder",
    ("appliance.qr.index", "appliance.worklist.matching"): "names folded as the matcher folds them",
    ("appliance.qr.repo", "appliance.worklist.matching"): "name prefixes narrowed in SQL",
    ("appliance.qr.scp", "appliance.forward.spool"): "Q/R serves the spool's files",
    ("appliance.qr.qido", "appliance.worklist.matching"): "QIDO-RS: the same attribute matching",
    ("appliance.qr.scp", "appliance.worklist.matching"): "the same attribute matching",
    ("appliance.qr.scp", "appliance.worklist.scp"): "the same identifier reading",
}

# (module, imported module) -> why it is imported late. Only optional modules (a
# dependency that is installed only where it is used) belong here.
LATE_IMPORTS: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def layer(module: str) -> int:
    parts = module.split(".")
    if parts[0] == "image":
        return IMAGE
    if parts[0] == "web" or module in TOP:
        return EDGE
    if len(parts) > 1 and parts[1] == "dicom":
        return DICOM
    if len(parts) > 1 and parts[1] in SERVICES:
        return SERVICE
    return CORE


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def top_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports run when the module is loaded (``if TYPE_CHECKING:`` blocks are not)."""
    body = list(tree.body)
    while body:
        node = body.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            body[:0] = [*node.body, *node.orelse]
        elif isinstance(node, ast.Try):
            body[:0] = [*node.body, *node.orelse, *node.finalbody]
            for handler in node.handlers:
                body[:0] = handler.body


def late_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports inside a function or a class body."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    yield inner


def targets(node: ast.Import | ast.ImportFrom, here: str, known: set[str]) -> set[str]:
    """The modules an import statement loads (``from a import b``: ``a.b`` if a module)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = node.module or ""
    if node.level:
        package = here.split(".")[: -node.level] if here in known else here.split(".")
        base = ".".join([*package, *([base] if base else [])])
    out = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.add(sub if sub in known else base)
    return out


@functools.cache
def graph() -> dict[str, set[str]]:
    known = set(modules())
    edges: dict[str, set[str]] = {}
    for name, path in modules().items():
        tree = ast.parse(path.read_text(), str(path))
        edges[name] = set()
        for node in top_level_imports(tree):
            edges[name] |= targets(node, name, known)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), our modules only."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_import_direction() -> None:
    edges = graph()
    bad = []
    for module, imported in sorted(edges.items()):
        for target in sorted(imported):
            root = target.split(".")[0]
            if (module, target) in KNOWN_CROSSINGS:
                continue
            if root in PACKAGES:
                if layer(target) > layer(module):
                    bad.append(f"{module} ({LAYER_NAMES[layer(module)]}) imports {target} "
                               f"({LAYER_NAMES[layer(target)]})")  # fmt: skip
                elif layer(module) == SERVICE == layer(target) and (
                    module.split(".")[1] != target.split(".")[1]
                ):
                    bad.append(f"service {module} imports another service: {target}")
                elif root == "web" and module.split(".")[0] == "web" and target in TOP:
                    bad.append(f"{module} imports {target}")
            elif root in FORBIDDEN.get(layer(module), set()) - ALLOWED_THIRD_PARTY.get(
                module, set()
            ):
                bad.append(f"{module} imports {root}")
    assert bad == []


def test_no_import_inside_functions_but_the_optional_ones() -> None:
    known = set(modules())
    bad = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text(), str(path))
        for node in late_imports(tree):
            for target in targets(node, name, known):
                if (name, target.split(".")[0]) not in LATE_IMPORTS and (
                    name,
                    target,
                ) not in LATE_IMPORTS:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {target}")
    assert bad == []


def test_known_crossings_are_still_there() -> None:
    """A crossing moved down into the core leaves this list too (no stale exceptions)."""
    edges = graph()
    assert [pair for pair in KNOWN_CROSSINGS if pair[1] not in edges.get(pair[0], ())] == []


def test_the_checks_catch_a_cycle_a_wrong_direction_and_a_late_import(tmp_path: Path) -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert layer("appliance.devices") < layer("appliance.dicom.edge") < layer(
        "appliance.forward.sender"
    ) < layer("web.admin")  # fmt: skip
    tree = ast.parse("import os\ndef f():\n    import flask\nclass C:\n    from web import x\n")
    assert [type(n).__name__ for n in late_imports(tree)] == ["Import", "ImportFrom"]
    assert [n.lineno for n in top_level_imports(tree)] == [1]
    guarded = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import web\n")
    assert len(list(top_level_imports(guarded))) == 1
