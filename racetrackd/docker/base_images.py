"""Base images without a registry: build a Debian root filesystem with debootstrap and import it.

The path for air-gapped hosts (and any host where `docker pull` cannot reach a registry). The
Debian mirror is read from the host's own apt sources at run time, so whatever mirror the host
already trusts is the one used.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from racetrackd.errors import RacetrackError

if TYPE_CHECKING:  # the Docker SDK only when a command builds or looks up an image
    from racetrackd.docker.runtime import Runtime

log = logging.getLogger(__name__)

LOCAL_PYTHON_IMAGE = "racetrackd/python3-base:bookworm"
LOCAL_GOLANG_IMAGE = "racetrackd/golang-base:bookworm"
LOCAL_RUST_IMAGE = "racetrackd/rust-base:bookworm"
DEFAULT_SUITE = "bookworm"
# One apt step inside a new root filesystem (the rust image's install is the longest: ~150
# packages, about 5 minutes on a shared 2-core host): past this, a stuck mirror ends the build.
APT_STEP_TIMEOUT = 1800.0
APT_SOURCES = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))


@dataclasses.dataclass(frozen=True)
class BaseImageKind:
    """What a locally built base image of one job type holds."""

    local_name: str
    packages: tuple[str, ...]
    changes: tuple[str, ...]  # Dockerfile instructions applied on import
    # Installed with apt inside the new root filesystem after debootstrap: packages whose
    # dependencies are virtual packages (Debian's librust-*-dev crates), which debootstrap's own
    # resolver cannot follow.
    apt_packages: tuple[str, ...] = ()


KINDS = {
    "python3": BaseImageKind(
        LOCAL_PYTHON_IMAGE, ("python3", "python3-venv", "ca-certificates"), ("ENV LANG=C.UTF-8", 'CMD ["python3"]')
    ),
    # Debian's Go toolchain: golang:*-bookworm images need a registry. No gcc (cgo stays off) and
    # no git (modules come through GOPROXY, or vendored).
    "golang": BaseImageKind(
        LOCAL_GOLANG_IMAGE,
        ("golang-go", "ca-certificates"),
        ("ENV LANG=C.UTF-8", "ENV GOPATH=/go", 'CMD ["go", "version"]'),
    ),
    # Debian's Rust toolchain and its packaged crates (/usr/share/cargo/registry): the crates the
    # rust job wrapper needs come from there, so a rust job builds without the public crate index.
    "rust": BaseImageKind(
        LOCAL_RUST_IMAGE,
        ("ca-certificates",),
        ("ENV LANG=C.UTF-8", 'CMD ["cargo", "--version"]'),
        # rustc itself depends on a virtual package (libc-dev): all of it comes through apt.
        apt_packages=("rustc", "cargo", "librust-tiny-http-dev", "librust-serde-json-dev", "librust-libc-dev"),
    ),
}


def find_mirror(suite: str, sources: tuple[Path, ...] = APT_SOURCES) -> str:
    """The first `deb` URI serving `suite` in the host's apt sources (deb822 or one-line format)."""
    for source in sources:
        files = sorted(source.glob("*.sources")) + sorted(source.glob("*.list")) if source.is_dir() else [source]
        for file in files:
            if not file.is_file():
                continue
            text = file.read_text(errors="replace")
            mirror = _mirror_in_deb822(text, suite) if file.suffix == ".sources" else _mirror_in_list(text, suite)
            if mirror:
                return mirror
    raise RacetrackError(
        f"no Debian mirror for {suite} found in the host's apt sources",
        hint="pass --mirror URL",
    )


def _mirror_in_deb822(text: str, suite: str) -> str | None:
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split():
            uris = fields.get("uris", "").split()
            if uris:
                return uris[0]
    return None


def _mirror_in_list(text: str, suite: str) -> str | None:
    for line in text.splitlines():
        parts = re.sub(r"\[[^\]]*\]", "", line).split()
        if len(parts) >= 3 and parts[0] == "deb" and parts[2] == suite:
            return parts[1]
    return None


def build_base_image(
    runtime: Runtime,
    kind: BaseImageKind,
    name: str,
    suite: str,
    mirror: str | None,
    workdir: Path,
    rootfs: Path | None = None,
) -> str:
    """Bootstrap Debian `suite` with the packages of `kind` and import it into Docker as `name`.
    `rootfs`: a root filesystem `bootstrap_rootfs` made already (setup-host.sh makes one while pip
    works), imported as it is."""
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="rootfs-") as tmp:
        if rootfs is None:
            rootfs = Path(tmp) / "rootfs"
            bootstrap_rootfs(kind, suite, mirror, rootfs)
        started = time.monotonic()
        archive = Path(tmp) / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(rootfs, arcname=".")
        runtime.import_rootfs(archive, name, list(kind.changes))
        log.info("imported %s into Docker as %s in %.0f s", rootfs, name, time.monotonic() - started)
    return name


def bootstrap_rootfs(kind: BaseImageKind, suite: str, mirror: str | None, rootfs: Path) -> None:
    """debootstrap Debian `suite` with the packages of `kind` into the directory `rootfs` (new)."""
    if shutil.which("debootstrap") is None:
        raise RacetrackError("debootstrap is not installed", hint="apt-get install -y debootstrap")
    mirror = mirror or find_mirror(suite)
    started = time.monotonic()
    log.info("bootstrapping Debian %s from %s", suite, mirror)
    command = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(kind.packages)}",
        suite,
        str(rootfs),
        mirror,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        raise RacetrackError(f"debootstrap failed (exit {result.returncode}):\n{tail}")
    if kind.apt_packages:
        _apt_install_inside(rootfs, kind.apt_packages)
    log.info("bootstrapped Debian %s in %.0f s", suite, time.monotonic() - started)


def _apt_install_inside(rootfs: Path, packages: tuple[str, ...]) -> None:
    """apt-get install `packages` in the bootstrapped `rootfs` (from the mirror debootstrap wrote into
    its sources), then drop apt's lists and downloaded archives so the image carries neither."""
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    for command in (["apt-get", "update"], install, ["apt-get", "clean"]):
        try:
            result = subprocess.run(
                ["chroot", str(rootfs), *command],
                capture_output=True,
                text=True,
                check=False,
                timeout=APT_STEP_TIMEOUT,
                env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
            )
        except subprocess.TimeoutExpired as exc:
            raise RacetrackError(
                f"{' '.join(command[:2])} in the new root filesystem took longer than {APT_STEP_TIMEOUT:.0f} s",
                hint="check the Debian mirror (--mirror URL)",
            ) from exc
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
            raise RacetrackError(
                f"{' '.join(command[:2])} in the new root filesystem failed (exit {result.returncode}):\n{tail}"
            )
    for entry in (rootfs / "var" / "lib" / "apt" / "lists").glob("*"):
        if entry.is_file():
            entry.unlink()


def ensure_base_image(
    runtime: Runtime, kind: BaseImageKind, preferred: str, workdir: Path, rootfs: Path | None = None
) -> str:
    """`preferred` when present or pullable; else `kind`'s local image, built when missing (from
    `rootfs` when one was bootstrapped already). Returns its name."""
    if runtime.image_exists(preferred):
        return preferred
    try:
        runtime.pull_image(preferred)
        return preferred
    except RacetrackError as exc:
        log.info("cannot pull %s (%s); using a locally built base image", preferred, exc.message)
    if not runtime.image_exists(kind.local_name):
        build_base_image(runtime, kind, kind.local_name, DEFAULT_SUITE, None, workdir, rootfs=rootfs)
    return kind.local_name


def main(argv: list[str] | None = None) -> None:
    """`python3 -m racetrackd.docker.base_images bootstrap [--job-type T] DIR`: only the debootstrap
    of a base image, into DIR, with the standard library alone. scripts/setup-host.sh runs it with
    the system's python3 while pip fills .venv, for `racetrackd base-images ensure --rootfs DIR`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python3 -m racetrackd.docker.base_images")
    commands = parser.add_subparsers(dest="command", required=True)
    bootstrap = commands.add_parser("bootstrap", help="debootstrap a job type's base image root filesystem")
    bootstrap.add_argument("--job-type", choices=sorted(KINDS), default="python3")
    bootstrap.add_argument("--suite", default=DEFAULT_SUITE)
    bootstrap.add_argument("--mirror", default=None, help="Debian mirror URL (default: the host's apt sources)")
    bootstrap.add_argument("rootfs", type=Path, help="the directory to create")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        bootstrap_rootfs(KINDS[args.job_type], args.suite, args.mirror, args.rootfs)
    except RacetrackError as exc:
        raise SystemExit(f"error: {exc.message}") from exc


if __name__ == "__main__":
    main()
