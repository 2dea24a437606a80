"""builders.context: unpacking an uploaded build context safely, and packing the Docker build context."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from builders.context import CA_BUNDLE_PATH, DOCKERFILE_NAME, assemble_docker_context, unpack_build_context
from racetrackd.errors import ValidationError
from racetrackd.settings import BUILTIN_PLUGINS_DIR


def make_archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def file_member(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def link_member(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def unpack_error(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], **kwargs: int) -> str:
    archive = make_archive(tmp_path / "upload.tar.gz", members)
    destination = tmp_path / "job"
    with pytest.raises(ValidationError) as caught:
        unpack_build_context(archive, destination, **kwargs)
    assert caught.value.status_code == 400
    assert caught.value.message.startswith("build_context: ")
    assert not (tmp_path / "outside").exists()
    return caught.value.message


def test_a_normal_archive_extracts(tmp_path: Path) -> None:
    archive = make_archive(
        tmp_path / "upload.tar.gz",
        [
            file_member("job.yaml", b"name: adder\n"),
            file_member("entrypoint.py", b"class E: ...\n"),
            file_member("pkg/module.py", b"X = 1\n"),
            link_member("pkg/alias.py", "module.py"),
        ],
    )

    unpack_build_context(archive, tmp_path / "job")

    assert (tmp_path / "job" / "job.yaml").read_text() == "name: adder\n"
    assert (tmp_path / "job" / "pkg" / "module.py").read_text() == "X = 1\n"
    assert (tmp_path / "job" / "pkg" / "alias.py").read_text() == "X = 1\n"


@pytest.mark.parametrize("filters", ["with extraction filters", "without (Python before 3.11.4)"])
def test_special_mode_bits_and_foreign_owners_are_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, filters: str
) -> None:
    if filters.startswith("without"):
        extract = tarfile.TarFile.extractall

        def extractall_before_filters(
            self: tarfile.TarFile, path: str | Path = ".", members: Any = None, *, numeric_owner: bool = False
        ) -> None:
            extract(self, path, members, numeric_owner=numeric_owner, filter="fully_trusted")

        monkeypatch.delattr(tarfile, "data_filter")
        monkeypatch.setattr(tarfile.TarFile, "extractall", extractall_before_filters)
    info, data = file_member("run.sh", b"#!/bin/sh\n")
    info.mode = 0o6777  # setuid, setgid, writable by everyone
    info.uid, info.gid, info.uname, info.gname = 4242, 4242, "nobody-here", "nobody-here"
    archive = make_archive(tmp_path / "upload.tar.gz", [(info, data)])

    unpack_build_context(archive, tmp_path / "job")

    unpacked = (tmp_path / "job" / "run.sh").stat()
    assert stat.S_IMODE(unpacked.st_mode) == 0o755
    assert (unpacked.st_uid, unpacked.st_gid) == (os.geteuid(), os.getegid())


def test_a_plain_uncompressed_tar_is_accepted(tmp_path: Path) -> None:
    archive = tmp_path / "upload.tar"
    with tarfile.open(archive, mode="w") as tar:
        info = tarfile.TarInfo("entrypoint.py")
        tar.addfile(info, io.BytesIO(b""))

    unpack_build_context(archive, tmp_path / "job")

    assert (tmp_path / "job" / "entrypoint.py").is_file()


@pytest.mark.parametrize("name", ["/etc/cron.d/evil", "../outside/evil", "pkg/../../outside/evil"])
def test_paths_outside_the_context_are_rejected(tmp_path: Path, name: str) -> None:
    message = unpack_error(tmp_path, [file_member("ok.py"), file_member(name)])

    assert repr(name) in message
    assert "outside the context" in message


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("evil", "/etc/passwd"),
        ("evil", "../outside"),
        ("pkg/evil", "../../outside"),
        ("pkg/evil", "sub/../../../outside"),
    ],
)
def test_symlinks_escaping_the_context_are_rejected(tmp_path: Path, name: str, target: str) -> None:
    message = unpack_error(tmp_path, [link_member(name, target)])

    assert f"link {name!r} points outside the context" in message


def test_hard_links_escaping_the_context_are_rejected(tmp_path: Path) -> None:
    # A hard link's target is relative to the archive root, not to the link's directory.
    message = unpack_error(tmp_path, [link_member("pkg/evil", "../outside", kind=tarfile.LNKTYPE)])

    assert "link 'pkg/evil' points outside the context" in message


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_device_files_and_pipes_are_rejected(tmp_path: Path, kind: bytes) -> None:
    info = tarfile.TarInfo("dev/sda")
    info.type = kind

    message = unpack_error(tmp_path, [(info, None)])

    assert "'dev/sda' is a device or pipe" in message


def test_an_archive_bigger_than_max_bytes_is_rejected(tmp_path: Path) -> None:
    message = unpack_error(
        tmp_path, [file_member("a.bin", b"a" * 600), file_member("b.bin", b"b" * 600)], max_bytes=1000
    )

    assert "unpacks to more than" in message
    assert not (tmp_path / "job" / "a.bin").exists()  # nothing extracted


def test_an_archive_at_max_bytes_is_accepted(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "upload.tar.gz", [file_member("a.bin", b"a" * 1000)])

    unpack_build_context(archive, tmp_path / "job", max_bytes=1000)

    assert (tmp_path / "job" / "a.bin").stat().st_size == 1000


@pytest.mark.parametrize("content", [b"not a tar at all", b"", b"\x1f\x8b\x08\x00truncated"])
def test_an_unreadable_archive_is_a_validation_error(tmp_path: Path, content: bytes) -> None:
    archive = tmp_path / "upload.tar.gz"
    archive.write_bytes(content)

    with pytest.raises(ValidationError, match="^build_context: "):
        unpack_build_context(archive, tmp_path / "job")


def list_context(context: io.IOBase) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=context, mode="r:") as tar:  # type: ignore[call-overload]
        return {member.name: member for member in tar.getmembers()}


def read_member(context: io.IOBase, name: str) -> bytes:
    context.seek(0)
    with tarfile.open(fileobj=context, mode="r:") as tar:  # type: ignore[call-overload]
        extracted = tar.extractfile(name)
        assert extracted is not None
        return extracted.read()


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    job = tmp_path / "job"
    (job / "pkg").mkdir(parents=True)
    (job / "entrypoint.py").write_text("class E: ...\n")
    (job / "pkg" / "util.py").write_text("")
    (job / "__pycache__").mkdir()
    (job / "__pycache__" / "entrypoint.cpython-311.pyc").write_bytes(b"\0")
    (job / ".git").mkdir()
    (job / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return job


def test_docker_context_holds_dockerfile_job_and_jobtype(job_dir: Path) -> None:
    with assemble_docker_context("FROM scratch\n", job_dir, BUILTIN_PLUGINS_DIR / "python3", None) as context:
        members = list_context(context)
        dockerfile = read_member(context, DOCKERFILE_NAME)

    assert dockerfile == b"FROM scratch\n"
    assert "job/entrypoint.py" in members
    assert "job/pkg/util.py" in members
    assert "jobtype/plugin-manifest.yaml" in members
    assert "jobtype/racetrack_job_wrapper/app.py" in members
    assert CA_BUNDLE_PATH not in members
    assert not any(name.startswith("racetrack-build/") for name in members)
    # Caches and VCS data never reach the image; ownership and times are normalised for layer caching.
    assert not any("__pycache__" in name or ".git" in name.split("/") for name in members)
    assert {m.mtime for n, m in members.items() if n.startswith("job/")} == {0}
    assert {m.uid for n, m in members.items() if n.startswith("job")} == {0}


def test_docker_context_holds_the_ca_bundle_only_when_given(job_dir: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "corporate-ca.pem"
    bundle.write_bytes(b"-----BEGIN CERTIFICATE-----\n")

    with assemble_docker_context("FROM scratch\n", job_dir, BUILTIN_PLUGINS_DIR / "python3", bundle) as context:
        assert CA_BUNDLE_PATH in list_context(context)
        assert read_member(context, CA_BUNDLE_PATH) == b"-----BEGIN CERTIFICATE-----\n"
