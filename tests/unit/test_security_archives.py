"""Property-based fuzzing of the build-context unpacker (hypothesis): whatever tar or zip a client
uploads (names with `..`, absolute paths, links, devices, huge declared sizes, many entries, damaged
bytes), unpacking never writes outside its target directory, never exceeds the caps, and never raises
anything but the project's own ValidationError."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tempfile
import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders.context import ContextLimits, archive_as_tar_gz, unpack_build_context
from racetrackd.errors import ValidationError

pytestmark = pytest.mark.security

LIMITS = ContextLimits(max_bytes=4096, max_entries=12, max_ratio=200)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_PARTS = st.sampled_from(["a", "b", "dir", "..", ".", "", "x" * 120, "é", "outside", "job", " "])
PATHS = st.builds(
    lambda lead, parts: lead + "/".join(parts),
    st.sampled_from(["", "/", "./", "../", "//"]),
    st.lists(_PARTS, min_size=1, max_size=5),
)
TYPES = st.sampled_from(
    [
        tarfile.REGTYPE,
        tarfile.AREGTYPE,
        tarfile.DIRTYPE,
        tarfile.SYMTYPE,
        tarfile.LNKTYPE,
        tarfile.CHRTYPE,
        tarfile.BLKTYPE,
        tarfile.FIFOTYPE,
        tarfile.CONTTYPE,
    ]
)


@st.composite
def tar_members(draw: st.DrawFn) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(draw(PATHS))
    info.type = draw(TYPES)
    info.mode = draw(st.integers(0, 0o7777))
    info.linkname = draw(PATHS) if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
    data = draw(st.binary(max_size=64)) if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE) else b""
    info.size = len(data)
    return info, data


@st.composite
def tar_archives(draw: st.DrawFn) -> bytes:
    members = draw(st.lists(tar_members(), max_size=16))
    compression = draw(st.sampled_from(["", "gz", "bz2", "xz"]))
    packed = io.BytesIO()
    with tarfile.open(
        fileobj=packed,
        mode=f"w:{compression}",
        format=draw(st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])),
    ) as tar:
        for info, data in members:
            try:
                tar.addfile(info, io.BytesIO(data))
            except ValueError:  # a name ustar cannot hold: the client could not send it this way either
                continue
        if draw(st.booleans()):  # a header claiming a huge file, with none of its data behind it
            huge = tarfile.TarInfo("huge.bin")
            huge.size = draw(st.integers(LIMITS.max_bytes, 2**40))
            tar.fileobj.write(huge.tobuf(tarfile.GNU_FORMAT))  # type: ignore[union-attr]
    return _damaged(draw, packed.getvalue())


@st.composite
def zip_archives(draw: st.DrawFn) -> bytes:
    packed = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(packed, "w") as archive:
        warnings.simplefilter("ignore")  # duplicate names: allowed, and worth trying
        for _ in range(draw(st.integers(0, 16))):
            name = draw(PATHS) + draw(st.sampled_from(["", "/"]))
            method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2]))
            info = zipfile.ZipInfo(name or "empty")
            info.compress_type = method
            info.external_attr = draw(st.integers(0, 0xFFFF)) << 16
            archive.writestr(info, draw(st.binary(max_size=64)) if not info.is_dir() else b"")
    return _damaged(draw, packed.getvalue())


def _damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """Sometimes flip bytes or cut the archive short, as a hostile or broken upload would."""
    how = draw(st.sampled_from(["intact", "intact", "flipped", "truncated"]))
    if how == "truncated" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flipped" and data:
        mutable = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            mutable[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(mutable)
    return data


def _check_unpacked(root: Path, destination: Path) -> None:
    """Nothing beside the destination; inside it, no device, nothing resolving outside, caps held."""
    assert sorted(path.name for path in root.iterdir()) == sorted(["upload", "job", "outside"])
    assert list((root / "outside").iterdir()) == []
    entries = 0
    size = 0
    for directory, dirs, files in os.walk(destination):
        for name in [*dirs, *files]:
            path = Path(directory) / name
            entries += 1
            mode = path.lstat().st_mode
            assert stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode), path
            assert Path(os.path.realpath(path)).is_relative_to(destination.resolve()), path
            if stat.S_ISREG(mode):
                size += path.lstat().st_size
                assert not mode & (stat.S_ISUID | stat.S_ISGID)
    assert entries <= LIMITS.max_entries
    assert size <= LIMITS.max_bytes


def _unpack(upload: bytes) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "outside").mkdir()
        archive = root / "upload"
        archive.write_bytes(upload)
        destination = root / "job"
        try:
            unpack_build_context(archive, destination, limits=LIMITS)
        except ValidationError as refused:
            assert refused.message.startswith("build_context: ")
        _check_unpacked(root, destination)


@FUZZ
@given(tar_archives())
def test_any_tar_upload_stays_inside_its_directory_and_limits(upload: bytes) -> None:
    _unpack(upload)


@FUZZ
@given(zip_archives())
def test_any_zip_from_the_dashboard_is_repacked_or_refused_and_unpacks_safely(upload: bytes) -> None:
    try:
        repacked = archive_as_tar_gz(upload, limits=LIMITS)
    except ValidationError as refused:
        assert refused.message.startswith("build_context: ")
        return
    _unpack(repacked)


@settings(max_examples=20, deadline=None)
@given(st.integers(LIMITS.max_entries + 1, 200))
def test_many_entries_are_refused_before_any_is_written(count: int) -> None:
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w:gz") as tar:
        for n in range(count):
            tar.addfile(tarfile.TarInfo(f"f{n}"), io.BytesIO(b""))
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / "upload"
        archive.write_bytes(packed.getvalue())
        with pytest.raises(ValidationError, match="RACETRACK_MAX_CONTEXT_ENTRIES"):
            unpack_build_context(archive, Path(scratch) / "job", limits=LIMITS)
        assert not any((Path(scratch) / "job").iterdir())
