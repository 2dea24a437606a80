"""Build contexts: unpack what a user uploaded (safely) and pack what Docker builds from.

The context Docker sees is laid out as:
    Dockerfile.racetrack    the rendered job-type template
    job/                    the user's files
    jobtype/                the job type plugin's files (its wrapper)
    racetrack-build/        operator-provided build inputs (CA bundle), and the helper that
                            gives RUN steps the secret build env (with-build-secrets.py)

A job type that builds the job's own Dockerfile (`dockerfile`, `docker-proxy`) gets the layout
`docker build .` in the job's directory would see: the job's files at the root, with
Dockerfile.racetrack and racetrack-build/ added beside them (and no jobtype/).
"""

from __future__ import annotations

import io
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import IO

from racetrackd.errors import ValidationError

DOCKERFILE_NAME = "Dockerfile.racetrack"
CA_BUNDLE_PATH = "racetrack-build/ca-bundle.crt"
SECRETS_HELPER_PATH = "racetrack-build/with-build-secrets.py"
SECRETS_HELPER_SOURCE = Path(__file__).with_name("with_build_secrets.py")
MAX_UNPACKED_BYTES = 2 * 1024**3
EXCLUDED_DIRS = {".git", "__pycache__"}


def unpack_build_context(archive: Path, destination: Path, max_bytes: int = MAX_UNPACKED_BYTES) -> None:
    """Extract a tar.gz upload into `destination`, refusing anything that would escape it."""
    destination.mkdir(parents=True, exist_ok=True)
    total = 0
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member)
                total += max(member.size, 0)
                if total > max_bytes:
                    raise ValidationError(
                        f"build_context: unpacks to more than {_size(max_bytes)}"
                    )
            tar.extractall(destination, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ValidationError(f"build_context: not a readable tar.gz archive: {exc}") from exc


def _size(count: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= factor:
            return f"{count / factor:g} {unit}"
    return f"{count} bytes"


def _check_member(member: tarfile.TarInfo) -> None:
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        raise ValidationError(f"build_context: entry {member.name!r} points outside the context")
    if member.isdev() or member.isfifo():
        raise ValidationError(f"build_context: entry {member.name!r} is a device or pipe")
    if member.issym() or member.islnk():
        target = PurePosixPath(member.linkname)
        # A hard link's target is relative to the archive root, a symlink's to the link's directory.
        resolved = target if target.is_absolute() or member.islnk() else path.parent / target
        if target.is_absolute() or _escapes(resolved):
            raise ValidationError(f"build_context: link {member.name!r} points outside the context")


def _escapes(path: PurePosixPath) -> bool:
    depth = 0
    for part in path.parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return True
    return False


def assemble_docker_context(
    dockerfile: str, job_dir: Path, jobtype_dir: Path | None, ca_bundle: Path | None, *,
    with_secrets_helper: bool = False,
) -> IO[bytes]:
    """An uncompressed tar of the full Docker build context, spooled to disk when large.

    `jobtype_dir=None`: the job's own Dockerfile is built, so the job's files are the root.
    """
    spool = tempfile.SpooledTemporaryFile(max_size=64 * 1024**2)  # noqa: SIM115 (returned to caller)
    with tarfile.open(fileobj=spool, mode="w") as tar:
        if jobtype_dir is None:
            for child in sorted(job_dir.iterdir()):
                tar.add(child, arcname=child.name, filter=_skip_excluded)
        else:
            tar.add(job_dir, arcname="job", filter=_skip_excluded)
            tar.add(jobtype_dir, arcname="jobtype", filter=_skip_excluded)
        # After the job's files: a file of the job with one of these names is replaced, never used.
        _add_bytes(tar, DOCKERFILE_NAME, dockerfile.encode())
        if ca_bundle is not None:
            _add_bytes(tar, CA_BUNDLE_PATH, ca_bundle.read_bytes())
        if with_secrets_helper:
            _add_bytes(tar, SECRETS_HELPER_PATH, SECRETS_HELPER_SOURCE.read_bytes())
    spool.seek(0)
    return spool


def _skip_excluded(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if EXCLUDED_DIRS & set(PurePosixPath(info.name).parts):
        return None
    # Normalise ownership and times so identical sources give identical layers (cache hits).
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
