"""The layers of racetrackd, read from the imports of every module (docs/architecture.md, "Modules").

Each module belongs to one room (a subpackage, or the foundation or entry modules at the root);
each room may import only the rooms below it. An import that runs back up fails here with the
module, the line and the rule it breaks. Every import counts, also those inside functions or under
TYPE_CHECKING: a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Root modules every room may use: they import only one another (and shared packages).
FOUNDATION = {
    "racetrackd",
    "errors",
    "settings",
    "db",
    "naming",
    "manifest",
    "metrics",
    "callstats",
    "audit",
    "maintenance",
    "resources",
    "serving",
    "streams",
    "footprint",
}
# Root modules that wire the rooms together and start processes: nothing imports them but each other.
ENTRY = {"__main__", "app", "asgi", "daemon", "commands", "gunicorn_hooks"}
# The composition root (racetrackd/services.py): wires the rooms below it; the edges take what it built.
SERVICES = {"services"}

# room -> the rooms it may import (besides itself). One way: foundation <- auth/docker <- plugins <- jobs
# <- deploy/gateway/services <- api <- dashboard <- entry.
MAY_IMPORT: dict[str, set[str]] = {
    "foundation": set(),
    "auth": {"foundation"},
    "docker": {"foundation"},
    "plugins": {"foundation", "auth"},
    "jobs": {"foundation", "auth", "docker", "plugins"},
    "deploy": {"foundation", "auth", "docker", "plugins", "jobs"},
    # The gateway runs on the HTTP workers' event loops: no deployments, no Docker adapter, and not
    # jobs/ or plugins/ either (they load the Docker SDK and Jinja); waking comes in as a callable.
    "gateway": {"foundation", "auth"},
    "services": {"foundation", "auth", "docker", "plugins", "jobs"},
    "api": {"foundation", "auth", "docker", "plugins", "jobs", "deploy", "gateway", "services"},
    "dashboard": {"foundation", "auth", "docker", "plugins", "jobs", "deploy", "gateway", "services", "api"},
    "entry": {"foundation", "auth", "docker", "plugins", "jobs", "deploy", "gateway", "services", "api", "dashboard"},
}

# Shared packages below the daemon: what of racetrackd each may import.
SHARED_MAY_IMPORT = {
    "jobmanifest": set(),
    "pluginbundle": set(),
    "cli": set(),
    # The builder raises racetrackd's error tree (a module that imports nothing), so the API answers its
    # errors like any other, and finds the shipped Dockerfile fragments and build helper through
    # racetrackd.resources (which imports only errors). Nothing else: it reports results, never rows.
    "builders": {"racetrackd.errors", "racetrackd.resources"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in the file, relative ones made absolute."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from racetrackd.jobs import waking` imports racetrackd.jobs.waking: name the module, not the package.
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def room_of(module: str) -> str:
    """The room of a racetrackd module: its subpackage, or foundation/entry for the root modules."""
    parts = module.split(".")
    if parts == ["racetrackd"]:
        return "foundation"
    name = parts[1]
    if (REPO / "racetrackd" / name).is_dir():
        return name
    if name in FOUNDATION:
        return "foundation"
    if name in ENTRY:
        return "entry"
    if name in SERVICES:
        return "services"
    raise AssertionError(
        f"racetrackd/{name}.py is in no room: put it in a subpackage, or name it in "
        f"FOUNDATION, SERVICES or ENTRY of {Path(__file__).name}"
    )


def racetrackd_target(name: str) -> str | None:
    """The racetrackd module an imported name refers to (`racetrackd.db.Job` -> racetrackd.db), else None."""
    if name != "racetrackd" and not name.startswith("racetrackd."):
        return None
    parts = name.split(".")
    while len(parts) > 1:
        candidate = REPO.joinpath(*parts)
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return "racetrackd"


def test_every_room_is_declared() -> None:
    packages = {p.name for p in (REPO / "racetrackd").iterdir() if (p / "__init__.py").is_file()}
    assert packages <= set(MAY_IMPORT), f"subpackages without a place in MAY_IMPORT: {packages - set(MAY_IMPORT)}"


def test_imports_point_one_way() -> None:
    wrong = []
    for path in sorted((REPO / "racetrackd").rglob("*.py")):
        module = module_name(path)
        room = room_of(module)
        for line, name in imported_modules(path):
            target = racetrackd_target(name)
            if target is None:
                continue
            target_room = room_of(target)
            if target_room != room and target_room not in MAY_IMPORT[room]:
                wrong.append(
                    f"{path.relative_to(REPO)}:{line}: {room} imports {target} ({target_room}), "
                    f"which sits above it or beside it; {room} may import {sorted(MAY_IMPORT[room])}"
                )
    assert not wrong, "imports that run back up the layers:\n" + "\n".join(wrong)


def test_shared_packages_do_not_import_the_daemon() -> None:
    wrong = []
    for package, allowed in SHARED_MAY_IMPORT.items():
        for path in sorted((REPO / package).rglob("*.py")):
            for line, name in imported_modules(path):
                target = racetrackd_target(name)
                if target is not None and target not in allowed:
                    wrong.append(f"{path.relative_to(REPO)}:{line}: imports {target}")
    assert not wrong, "shared packages must not import racetrackd:\n" + "\n".join(wrong)


def test_only_the_docker_adapter_imports_the_docker_sdk() -> None:
    importers = {
        str(path.relative_to(REPO))
        for path in (REPO / "racetrackd").rglob("*.py")
        for _, name in imported_modules(path)
        if name == "docker" or name.startswith("docker.")
    }
    assert importers <= {"racetrackd/docker/runtime.py", "racetrackd/docker/swarm.py"}


def test_the_map_itself_runs_one_way() -> None:
    """No two rooms may import each other, directly or round a loop: the map is a stack, not a web."""

    def below(room: str, seen: frozenset[str] = frozenset()) -> set[str]:
        assert room not in seen, f"the rooms {sorted(seen)} import each other in a loop"
        return set().union(*({lower} | below(lower, seen | {room}) for lower in MAY_IMPORT[room]))

    for room in MAY_IMPORT:
        assert room not in below(room), f"{room} may import itself round a loop"
