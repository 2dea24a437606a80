"""Serving files from the job's directory: static endpoints and the webview's ./static."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from racetrack_job_wrapper.http import HttpError, Response


def file_response(path: Path, content_type: str | None = None) -> Response:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HttpError(404, f"file {path.name} not found") from exc
    guessed = content_type or mimetypes.guess_type(path.name)[0] or "text/plain"
    if guessed.startswith("text/") and "charset" not in guessed:
        guessed += "; charset=utf-8"
    return Response(200, data, guessed)


def file_in(root: Path, relative: str) -> Path:
    """`relative` inside directory `root`; 404 for anything that would leave it."""
    candidate = (root / relative.lstrip("/")).resolve()
    root = root.resolve()
    if candidate != root and root not in candidate.parents:
        raise HttpError(404, "not found")
    if not candidate.is_file():
        raise HttpError(404, f"{relative} not found")
    return candidate
