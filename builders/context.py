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

import dataclasses
import io
import lzma
import os
import posixpath
import stat
import tarfile
import tempfile
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

from racetrackd import resources
from racetrackd.errors import ValidationError

DOCKERFILE_NAME = "Dockerfile.racetrack"
CA_BUNDLE_PATH = "racetrack-build/ca-bundle.crt"
SECRETS_HELPER_PATH = "racetrack-build/with-build-secrets.py"
MAX_UNPACKED_BYTES = 2 * 1024**3
MAX_ENTRIES = 50_000
MAX_RATIO = 200
# Below this many unpacked bytes the ratio is not checked: a small source tree compresses very well.
RATIO_FLOOR_BYTES = 64 * 1024**2
EXCLUDED_DIRS = {".git", "__pycache__"}
# What a damaged or hostile archive may raise while it is read (beyond tarfile's and zipfile's own errors).
_UNREADABLE = (
    EOFError,
    OSError,
    ValueError,
    LookupError,
    lzma.LZMAError,
    zlib.error,
    RuntimeError,
    NotImplementedError,
    UnicodeError,
    OverflowError,
)


@dataclasses.dataclass(frozen=True)
class ContextLimits:
    """How big an uploaded build context may get once unpacked, checked before anything is written."""

    max_bytes: int = MAX_UNPACKED_BYTES  # RACETRACK_MAX_CONTEXT_SIZE
    max_entries: int = MAX_ENTRIES  # RACETRACK_MAX_CONTEXT_ENTRIES
    max_ratio: int = MAX_RATIO  # RACETRACK_MAX_CONTEXT_RATIO

    def check_entries(self, count: int) -> None:
        if count > self.max_entries:
            raise ValidationError(
                f"build_context: more than {self.max_entries} entries (RACETRACK_MAX_CONTEXT_ENTRIES)"
            )

    def check_size(self, unpacked: int, packed: int) -> None:
        """`unpacked` bytes so far out of a `packed`-byte archive: within the size cap and the expansion ratio?"""
        if unpacked > self.max_bytes:
            raise ValidationError(
                f"build_context: unpacks to more than {_size(self.max_bytes)} (RACETRACK_MAX_CONTEXT_SIZE)"
            )
        if unpacked > max(RATIO_FLOOR_BYTES, packed * self.max_ratio):
            raise ValidationError(
                f"build_context: a {_size(packed)} archive unpacks to more than {self.max_ratio} "
                f"times its size (RACETRACK_MAX_CONTEXT_RATIO); it looks like a decompression bomb"
            )


def unpack_build_context(
    archive: Path, destination: Path, max_bytes: int = MAX_UNPACKED_BYTES, limits: ContextLimits | None = None
) -> None:
    """Extract a tar.gz upload into `destination`, refusing anything that would escape it and anything over
    the limits; every problem is a ValidationError."""
    limits = limits or ContextLimits(max_bytes=max_bytes)
    destination.mkdir(parents=True, exist_ok=True)
    total = 0
    members: list[tarfile.TarInfo] = []
    try:
        packed = archive.stat().st_size
        with tarfile.open(archive, mode="r:*") as tar:
            # Header by header as the stream inflates: a bomb stops at the first limit it crosses, and
            # nothing is written until the whole archive has been checked.
            names: set[str] = set()
            # What lands on disk: the members and the parent directories their paths imply (one
            # deep path makes many), so the entry cap holds for the unpacked tree, not just the headers.
            on_disk: set[PurePosixPath] = set()
            for member in tar:
                members.append(member)
                member_path = PurePosixPath(posixpath.normpath(member.name))
                on_disk.update(parent for parent in member_path.parents if parent.name)
                on_disk.add(member_path)
                limits.check_entries(max(len(members), len(on_disk)))
                _check_member(member)
                if member.islnk() and posixpath.normpath(member.linkname) not in names:
                    # tarfile would fail mid-extraction (KeyError), leaving a half-written directory
                    raise ValidationError(f"build_context: hard link {member.name!r} points to no earlier entry")
                names.add(posixpath.normpath(member.name))
                total += max(member.size, 0)
                limits.check_size(total, packed)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(destination, members=members, filter="data")
            else:
                # Pythons before 3.11.4 (Debian 12's python3, the base of the racetrackd image on
                # hosts without a registry) have no extraction filters: _check_member has refused what
                # the "data" filter would; drop what it drops from the rest.
                tar.extractall(destination, members=[_as_plain_data(member) for member in members])
    except (tarfile.TarError, *_UNREADABLE) as exc:
        raise ValidationError(f"build_context: not a readable tar.gz archive: {exc}") from exc


def archive_as_tar_gz(data: bytes, max_bytes: int = MAX_UNPACKED_BYTES, limits: ContextLimits | None = None) -> bytes:
    """An uploaded job directory as the tar.gz a deployment takes: a tar (gzipped or not) passes through,
    a zip is repacked (regular files and directories only; unpacking checks paths again)."""
    limits = limits or ContextLimits(max_bytes=max_bytes)
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return data
    total = 0
    packed = io.BytesIO()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive, tarfile.open(fileobj=packed, mode="w:gz") as tar:
            entries = archive.infolist()
            limits.check_entries(len(entries))
            for entry in entries:
                total += entry.file_size
                limits.check_size(total, len(data))  # before reading, so a zip bomb is never inflated
            for entry in entries:
                info = tarfile.TarInfo(entry.filename.rstrip("/"))
                info.mtime = int(time.mktime((*entry.date_time, 0, 0, -1)))
                if entry.is_dir():
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                    continue
                info.size, info.mode = entry.file_size, 0o755 if (entry.external_attr >> 16) & 0o111 else 0o644
                with archive.open(entry) as content:  # streamed: an entry is never held whole in memory
                    tar.addfile(info, content)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, *_UNREADABLE) as exc:
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


def resolve_inside(root: Path, relative: str, field: str) -> Path:
    """`root/relative` with every symlink followed; ValidationError naming `field` when that leaves `root`.

    A clone brings symlinks along as committed (an upload's are checked when it is unpacked): a
    path read or deleted on the host must never follow one out of the job's directory.
    """
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts:
        raise ValidationError(f"{field}: {relative!r} must be a relative path inside the job directory")
    resolved = (root / relative).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise ValidationError(f"{field}: {relative!r} is a link to outside the job directory")
    return resolved


def check_links_inside(root: Path, field: str) -> None:
    """Refuse a directory holding a symlink that resolves outside it (as unpacking an upload does)."""
    top = root.resolve()
    for directory, dirnames, filenames in os.walk(root):  # os.walk does not descend into linked directories
        for name in [*dirnames, *filenames]:
            path = Path(directory, name)
            if path.is_symlink() and not path.resolve().is_relative_to(top):
                raise ValidationError(
                    f"{field}: link {path.relative_to(root).as_posix()!r} points outside the job directory"
                )


def assemble_docker_context(
    dockerfile: str,
    job_dir: Path,
    jobtype_dir: Path | None,
    ca_bundle: Path | None,
    *,
    with_secrets_helper: bool = False,
) -> IO[bytes]:
    """An uncompressed tar of the full Docker build context, spooled to disk when large.

    `jobtype_dir=None`: the job's own Dockerfile is built, so the job's files are the root.
    """
    spool = tempfile.SpooledTemporaryFile(max_size=64 * 1024**2)  # returned to caller
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
            _add_bytes(tar, SECRETS_HELPER_PATH, resources.build_secrets_helper_source())
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
