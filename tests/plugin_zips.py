"""Plugin ZIPs for unit and integration tests, made from the worked example in docs/examples."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_PLUGIN = REPO / "docs" / "examples" / "shell-job-type"


def zip_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def example_files(**overrides: str | None) -> dict[str, str]:
    """The example plugin's files as text; an override replaces a file (None leaves it out)."""
    files = {
        path.relative_to(EXAMPLE_PLUGIN).as_posix(): path.read_text()
        for path in EXAMPLE_PLUGIN.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    for name, text in overrides.items():
        if text is None:
            files.pop(name, None)
        else:
            files[name] = text
    return files
