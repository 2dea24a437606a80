"""The files racetrackd reads at run time and ships in its wheel, found with `importlib.resources`.

Every lookup of a shipped file goes through here, so none depends on where the source tree sits:
- `templates` (top-level package): dockerfile/ fragments and the dashboard's dashboard/ pages;
- `jobtype_plugins` (top-level package): the built-in job-type plugins;
- `racetrackd.dashboard` static/: the dashboard's CSS and JS;
- `builders`: the build-secrets helper copied into build contexts.

Docker build contexts, Jinja's FileSystemLoader and Flask's static folder need real directories:
an installed wheel or a source tree gives them; a zip import is extracted once to a temporary
directory that lives as long as the process.
"""

from __future__ import annotations

import atexit
import importlib
import shutil
import tempfile
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from racetrackd.errors import RacetrackError

TEMPLATES_PACKAGE = "templates"
JOBTYPE_PLUGINS_PACKAGE = "jobtype_plugins"
_OWNER = "racetrackd"
_extracted: dict[str, Path] = {}


def builtin_plugins_dir() -> Path:
    """The directory holding one folder per built-in job-type plugin."""
    return _on_disk(_owned_package(JOBTYPE_PLUGINS_PACKAGE), JOBTYPE_PLUGINS_PACKAGE)


def templates_dir() -> Path:
    """The templates root: dockerfile/ and dashboard/ beneath it (the dashboard renders "dashboard/x.html")."""
    return _on_disk(_owned_package(TEMPLATES_PACKAGE), TEMPLATES_PACKAGE)


def dockerfile_templates_dir() -> Path:
    """The fragments job-type Dockerfile templates may include."""
    return templates_dir() / "dockerfile"


def dashboard_static_dir() -> Path:
    """The dashboard's static files (CSS, JS)."""
    return _on_disk(files("racetrackd.dashboard") / "static", "racetrackd.dashboard/static")


def build_secrets_helper_source() -> bytes:
    """The helper script a build runs to fetch its secrets (builders/with_build_secrets.py)."""
    return (files("builders") / "with_build_secrets.py").read_bytes()


def _owned_package(name: str) -> Traversable:
    """The package's files, after checking it is ours: `templates` is a generic top-level name."""
    module = importlib.import_module(name)
    if getattr(module, "OWNER", None) != _OWNER:
        raise RacetrackError(
            f"the {name!r} package imported from {getattr(module, '__file__', '?')} is not "
            f"racetrackd's: another installed distribution or a folder on sys.path shadows it",
            hint="install racetrackd in its own environment (pipx install ...)",
        )
    return files(module)


def _on_disk(resource: Traversable, key: str) -> Path:
    """A real directory for `resource`: itself when it is one, else a copy extracted once (zip imports)."""
    if isinstance(resource, Path):
        return resource
    if key not in _extracted:
        target = Path(tempfile.mkdtemp(prefix="racetrackd-resources-"))
        atexit.register(shutil.rmtree, target, True)
        _copy_tree(resource, target)
        _extracted[key] = target
    return _extracted[key]


def _copy_tree(source: Traversable, target: Path) -> None:
    for child in source.iterdir():
        if child.name == "__pycache__":
            continue
        if child.is_dir():
            (target / child.name).mkdir()
            _copy_tree(child, target / child.name)
        else:
            (target / child.name).write_bytes(child.read_bytes())
