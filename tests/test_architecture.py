"""The architecture the README draws, checked on the code: SQL only in storage/, no import
circle between any two modules, and no module importing a view module (one with endpoints)
of the service, except the package route tables that join them."""

from __future__ import annotations

import re
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
SQL = re.compile(r"\b(SELECT\s+\S|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM)\b")


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("service", "storage", "schemas", "devstack",
                             exclude_type_checking_imports=True)


def test_no_sql_text_in_the_service_package() -> None:
    found = [f"{path.relative_to(ROOT)}:{n}" for path in sorted((ROOT / "service").rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if SQL.search(line)]
    assert found == []


def test_no_import_circle_between_modules() -> None:
    graph = _graph()
    circles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.chain_exists(imported=module, importer=imported):
                circles.append((module, imported))
    assert circles == []


def test_no_module_imports_a_view_module() -> None:
    graph = _graph()
    views = {".".join(path.relative_to(ROOT).with_suffix("").parts)
             for path in (ROOT / "service").rglob("*.py") if "@routes.route(" in path.read_text()}
    assert len(views) > 20
    importers = {(importer, view) for view in views
                 for importer in graph.find_modules_that_directly_import(view)
                 if not importer.endswith(".routes")}
    assert importers == set()


LOCK_CONSTANT = re.compile(r"^(\w+_LOCK(?:_SPACE)?)\s*=\s*(0x[0-9A-Fa-f]+|\d+)\b", re.M)


def test_every_advisory_lock_has_a_key_of_its_own() -> None:
    """Two unrelated PostgreSQL advisory locks on one key wait for each other: a scrub pass
    (hours) held up key snapshots, and a purge run could hold up sign-ins, before each class
    of lock got a key of its own."""
    found: dict[int, list[str]] = {}
    for path in sorted([*(ROOT / "service").rglob("*.py"), *(ROOT / "storage").rglob("*.py")]):
        for name, value in LOCK_CONSTANT.findall(path.read_text()):
            found.setdefault(int(value, 0), []).append(f"{path.relative_to(ROOT)}:{name}")
    assert len(found) >= 9, found  # the scan still sees the locks
    assert {k: v for k, v in found.items() if len(v) > 1} == {}
