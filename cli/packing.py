"""Pack a job's directory as the build context: a tar.gz without what `.gitignore` and
`.racetrackignore` (same syntax; `!pattern` re-includes) leave out, nor `.git`, nor the job's
secret env files (they travel apart, as secret_vars, and must never reach an image)."""

from __future__ import annotations

import base64
import io
import tarfile
from pathlib import Path

import pathspec

IGNORE_FILES = (".gitignore", ".racetrackignore")
ALWAYS_SKIPPED = {".git"}


def ignore_spec(directory: Path) -> pathspec.GitIgnoreSpec:
    lines: list[str] = []
    for name in IGNORE_FILES:
        path = directory / name
        if path.is_file():
            lines.extend(path.read_text(errors="replace").splitlines())
    return pathspec.GitIgnoreSpec.from_lines(lines)


def packed_files(directory: Path, exclude: frozenset[str] = frozenset()) -> list[Path]:
    """The files that go into the build context, relative to `directory` (`exclude`: relative paths left out)."""
    spec = ignore_spec(directory)
    files = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if ALWAYS_SKIPPED & set(relative.parts) or path.is_dir():
            continue
        if spec.match_file(relative.as_posix()) or relative.as_posix() in exclude:
            continue
        files.append(relative)
    return files


def pack(directory: Path, exclude: frozenset[str] = frozenset()) -> str:
    """The build context as base64 of a tar.gz, as the API takes it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for relative in packed_files(directory, exclude):
            tar.add(directory / relative, arcname=relative.as_posix(), recursive=False)
    return base64.b64encode(buffer.getvalue()).decode()
