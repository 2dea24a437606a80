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
import os
import stat
import tarfile
import tempfile
import time
import zipfile
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
            if hasattr(tarfile, "data_filter"):
                tar.extractall(destination, members=members, filter="data")
            else:
                # Pythons before 3.11.4 (Debian 12's python3, the base of the racetrackd image on
                # hosts without a registry) have no extraction filters: _check_member has refused what
                # the "data" filter would; drop what it drops from the rest.
                tar.extractall(destination, members=[_as_plain_data(member) for member in members])
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ValidationError(f"build_context: not a readable tar.gz archive: {exc}") from exc


def archive_as_tar_gz(data: bytes, max_bytes: int = MAX_UNPACKED_BYTES) -> bytes:
    """An uploaded job directory as the tar.gz a deployment takes: a tar (gzipped or not) passes through,
    a zip is repacked (regular files and directories only; unpacking checks paths again)."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return data
    total = 0
    packed = io.BytesIO()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive, tarfile.open(fileobj=packed, mode="w:gz") as tar:
            for entry in archive.infolist():
                total += entry.file_size
                if total > max_bytes:  # checked before reading, so a zip bomb is never inflated
                    raise ValidationError(f"build_context: unpacks to more than {_size(max_bytes)}")
                info = tarfile.TarInfo(entry.filename.rstrip("/"))
                info.mtime = int(time.mktime((*entry.date_time, 0, 0, -1)))
                if entry.is_dir():
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                    continue
                content = archive.read(entry)
                info.size, info.mode = len(content), 0o755 if (entry.external_attr >> 16) & 0o111 else 0o644
                tar.addfile(info, io.BytesIO(content))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise ValidationError(f"build_context: not a readable zip archive: {exc}") from exc
    return packed.getvalue()


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


def _as_plain_data(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """What the "data" extraction filter keeps of a (checked) member: no setuid, setgid or sticky bit,
    no write bit for group or others, and the extracting user as owner."""
    member.mode &= ~(stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH)
    member.uid, member.gid, member.uname, member.gname = os.geteuid(), os.getegid(), "", ""
    return member


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
    # The daemon runs with umask 077 (its data dir is private), so its workspaces are owner-only; in the
    # image (owned by root, run as another user) files must read as they would under the usual umask 022.
    owner = info.mode & 0o500
    info.mode |= (owner >> 3) | (owner >> 6)
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
