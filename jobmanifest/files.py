"""Whether the files a manifest names are in the job's directory, with a did-you-mean when not.

The daemon checks the same per job type plugin (racetrackd.plugins.jobtypes); this is the CLI's
early check (`rtd validate`, and `rtd submit` before it uploads), so a misspelt entrypoint is
reported in a second, not after an upload and a build. It knows Racetrack's own job types only:
a plugin's extra path fields are still checked by the daemon.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from jobmanifest.schema import JOBTYPE_EXTRA_PATHS, FieldError, Manifest

# Job types that build the job's own Dockerfile, which then must exist even when not named.
OWN_DOCKERFILE_JOBTYPES = ("dockerfile", "docker-proxy")
DEFAULT_DOCKERFILE = "Dockerfile"
# How many files of the directory the did-you-mean looks at, and which directories it skips:
# a job directory is small, a virtualenv or node_modules left in it is not.
MAX_CANDIDATES = 5000
SKIPPED_DIRS = frozenset({".git", ".venv", "venv", "node_modules", "__pycache__"})


def named_files(manifest: Manifest) -> dict[str, str]:
    """Manifest field -> the relative path it names, for the job files this job type needs."""
    files = {
        f"jobtype_extra.{key}": value
        for key in JOBTYPE_EXTRA_PATHS
        if isinstance(value := manifest.jobtype_extra.get(key), str) and value
    }
    if manifest.jobtype_name in OWN_DOCKERFILE_JOBTYPES:
        files.setdefault("jobtype_extra.dockerfile_path", DEFAULT_DOCKERFILE)
    return files


def missing_files(manifest: Manifest, directory: Path) -> list[FieldError]:
    """One error per named file that is not a file inside `directory` (a link out of it counts as missing)."""
    errors = []
    candidates: list[str] | None = None
    root = directory.resolve()
    for field, relative in named_files(manifest).items():
        resolved = (root / relative).resolve()
        if resolved.is_relative_to(root) and resolved.is_file():
            continue
        if not resolved.is_relative_to(root):
            errors.append(FieldError(field, f"{relative} is a link to outside {directory}"))
            continue
        if candidates is None:
            candidates = _files_of(root)
        errors.append(
            FieldError(field, f"file {relative} not found in {directory}{_did_you_mean(relative, candidates)}")
        )
    return errors


def _did_you_mean(relative: str, candidates: list[str]) -> str:
    wanted = Path(relative).as_posix()
    by_lower = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(wanted.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]}?)" if close else ""


def _files_of(root: Path) -> list[str]:
    found: list[str] = []
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in sorted(files):
            found.append((Path(current) / name).relative_to(root).as_posix())
            if len(found) >= MAX_CANDIDATES:
                return found
    return found
