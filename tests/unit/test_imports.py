"""The import direction of the packages: image <- appliance <- web (design.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "image": {"appliance", "web", "flask", "pynetdicom", "sqlite_utils", "sqlite3", "socket"},
    "appliance": {"web", "flask", "waitress", "cheroot"},
    "web": set(),
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


# server.py builds the web app; webserver.py is the one place that imports cheroot.
ALLOWED = {("appliance", "server.py"): {"web"}, ("appliance", "webserver.py"): {"cheroot"}}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_direction(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    for path in files:
        allowed = ALLOWED.get((package, path.name), set())
        bad = (imported_roots(path) & FORBIDDEN[package]) - allowed
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_checker_catches_a_violation(tmp_path: Path) -> None:
    f = tmp_path / "x.py"
    f.write_text("import flask\nfrom web.app import x\n")
    assert {"flask", "web"} <= imported_roots(f)
