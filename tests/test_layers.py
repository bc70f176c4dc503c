"""The package's layers: a module imports only from its own layer or the layers below, and no
two modules import each other, however indirectly. Read from the source (every import, also
those only for type checking), nothing is run.

The layers, from the bottom (README, Development):

    base      errors, config, logs (the modules at the package's top)
    model     pure: documents, requests, messages, matching, what is loaded
    couch     the CouchDB side: the store (with its error mapping, the only user of
              python-couchdb), feeds, setup
    workers   worker processes and their supervision
    runs      firing, running, activation records, which daemons are alive
    triggers  schedules, changes triggers and their leases
    api       the HTTP routes, whoever carries them, and who may call them
    core      the service: one core, whatever hosts it
    hosts     CouchDB's os_daemon channel, its external protocol, plain HTTP
    cli       the commands
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "couchdb_events"
LAYERS = ["base", "model", "couch", "workers", "runs", "triggers", "api", "core", "hosts", "cli"]
APART = {"helpers"}  # worker-side code, run by workers, never imported by the package
MAX_LINES = 300


def modules() -> dict[str, Path]:
    """Dotted name (below the package) → file, for every module of the package."""
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[0] in APART:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def layer(name: str) -> str:
    """``__main__`` is the entry, above everything; ``""``, the package's face (its version),
    is at the bottom."""
    head = name.split(".", maxsplit=1)[0]
    if name == "__main__":
        return "entry"
    return head if head in LAYERS else "base"


def rank(name: str) -> int:
    found = layer(name)
    return len(LAYERS) if found == "entry" else LAYERS.index(found)


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules that module ``name`` imports."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if name else []
    package = here if is_package else here[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("couchdb_events"):
                    out.add(alias.name.removeprefix("couchdb_events").lstrip("."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("couchdb_events"):
                target = node.module.split(".")[1:]
            else:
                continue
            prefix = ".".join(target)
            for alias in node.names:
                sub = f"{prefix}.{alias.name}" if prefix else alias.name
                out.add(sub if sub in known else prefix)
    out.discard(name)
    return {target for target in out if target in known}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_imports_only_go_down() -> None:
    upward = [
        f"{name} ({layer(name)}) imports {target} ({layer(target)})"
        for name, targets in graph().items()
        for target in sorted(targets)
        if rank(target) > rank(name)
    ]
    assert upward == []


def test_no_module_imports_itself_through_others() -> None:
    edges = graph()
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(edges[name]):
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name)
    assert circles == []


@pytest.mark.parametrize("folder", LAYERS[1:])
def test_each_layer_says_what_it_holds_and_may_import(folder: str) -> None:
    doc = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text()))
    assert doc, f"{folder}/__init__.py has no docstring"
    assert "May import" in doc, f"{folder}/__init__.py does not say what it may import"


def test_no_module_is_longer_than_the_style_says() -> None:
    long = {
        name: count
        for name, path in modules().items()
        if (count := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_an_upward_import_is_seen(tmp_path: Path) -> None:
    """The check itself: a model module importing from the core is caught."""
    known = modules()
    bad = tmp_path / "bad.py"
    bad.write_text("from ..core.service import Service\n")
    found = imports("model.bad", bad, known)
    assert found == {"core.service"} and rank("core.service") > rank("model.bad")
