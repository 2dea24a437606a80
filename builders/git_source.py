"""Fetch a job's source from git: a shallow clone of one branch, then the job's subdirectory.

Credentials travel only inside the clone URL given to git and are scrubbed from every message
that could reach a log, the API or the user. git runs with a minimal environment (GIT_ENV_*), and
by default only against public addresses (check_remote_address).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlsplit, urlunsplit

from builders.context import check_links_inside
from racetrackd.errors import BuildError, ValidationError


@dataclasses.dataclass(frozen=True)
class GitCredentials:
    username: str
    password: str


@dataclasses.dataclass(frozen=True)
class Checkout:
    context_dir: Path  # the job's directory inside the clone: the build context
    commit: str


def remote_scheme(remote: str) -> str:
    """https, http, ssh, git or file (a local path counts as file)."""
    if "://" in remote:
        return urlsplit(remote).scheme.lower()
    if remote.startswith(("/", ".")):
        return "file"
    if "@" in remote and ":" in remote.split("@", 1)[1]:
        return "ssh"  # scp-like: git@host:org/repo.git
    return "unknown"


def check_remote_allowed(remote: str, allowed: frozenset[str]) -> None:
    scheme = remote_scheme(remote)
    if scheme not in allowed:
        raise ValidationError(
            f"git.remote: {scheme} remotes are not allowed here (allowed: {', '.join(sorted(allowed))})",
            hint="the operator sets RACETRACK_GIT_ALLOWED_SCHEMES",
        )


# What git may see of the daemon's environment: enough to find itself, reach the network through
# the operator's proxy and trust the operator's CAs. Never RACETRACK_* (the secret key, the admin
# token), nor anything else a hostile remote or a git config could make git pass on.
GIT_ENV_PASSTHROUGH = (
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
    "SSH_AUTH_SOCK",
)
GIT_ENV_FIXED = {
    "GIT_TERMINAL_PROMPT": "0",  # never wait for a password on a terminal nobody watches
    "GIT_ASKPASS": "true",
    "SSH_ASKPASS": "true",
    "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
    "LC_ALL": "C",  # messages in English: _explain reads them
}
DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22, "git": 9418}


def git_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment git runs with: the passthrough variables of `environ`, and GIT_ENV_FIXED."""
    return {**{name: environ[name] for name in GIT_ENV_PASSTHROUGH if name in environ}, **GIT_ENV_FIXED}


def remote_host(remote: str) -> tuple[str, int] | None:
    """The host and port git connects to for `remote` (None for local paths and file:// remotes)."""
    scheme = remote_scheme(remote)
    if scheme not in DEFAULT_PORTS:
        return None
    if "://" in remote:
        parts = urlsplit(remote)
        try:
            port = parts.port
        except ValueError:
            port = None
        return (parts.hostname or ""), port or DEFAULT_PORTS[scheme]
    host = remote.split("@", 1)[1].split(":", 1)[0]  # scp-like: user@host:path
    return host.strip("[]"), DEFAULT_PORTS["ssh"]


def check_remote_address(remote: str, allow_private: bool) -> list[str]:
    """Resolve the remote's host; ValidationError naming git.remote when it is loopback, private,
    link-local or otherwise not a public address (unless `allow_private`). Returns the addresses, so
    that the clone connects to the ones checked (see `clone`)."""
    target = remote_host(remote)
    if target is None or allow_private:
        return []
    host, port = target
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        if _through_proxy(remote_scheme(remote), host):
            return []  # behind a proxy that resolves names the host cannot: git connects to the proxy only
        raise ValidationError(f"git.remote: cannot resolve the host {host!r}: {exc}") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        mapped = getattr(address, "ipv4_mapped", None)
        if not (mapped or address).is_global:
            raise ValidationError(
                f"git.remote: {host} is {text}, a loopback, private or link-local address: the daemon "
                "does not clone from inside its own network",
                hint="the operator allows it with RACETRACK_GIT_ALLOW_PRIVATE_REMOTES=true",
            )
    return addresses


def _through_proxy(scheme: str, host: str) -> bool:
    """Whether git reaches an http(s) `host` through a proxy of the environment (it passes them on)."""
    proxies = urllib.request.getproxies_environment()
    return scheme in ("https", "http") and scheme in proxies and not urllib.request.proxy_bypass(host)


def clone(
    remote: str,
    branch: str | None,
    directory: str,
    credentials: GitCredentials | None,
    destination: Path,
    timeout: float,
    addresses: list[str] | None = None,
) -> Checkout:
    """Shallow-clone `remote` at `branch` (default branch when None) into `destination`.

    `addresses` (from check_remote_address) pin an http(s) remote's host to the addresses checked,
    so a DNS answer that changes between the check and the clone cannot point git elsewhere.
    """
    url = _with_credentials(remote, credentials)
    options = ["-c", "protocol.ext.allow=never"]
    target = remote_host(remote)
    if addresses and target is not None and remote_scheme(remote) in ("https", "http"):
        pinned = ",".join(f"[{address}]" if ":" in address else address for address in addresses)
        # A redirect would lead git to a host that was never checked.
        options += ["-c", f"http.curloptResolve={target[0]}:{target[1]}:{pinned}", "-c", "http.followRedirects=false"]
    command = ["git", *options, "clone", "--depth=1", "--single-branch", "--no-tags"]
    if branch:
        command += ["--branch", branch]
    command += ["--", url, str(destination)]
    _run_git(command, remote, branch, credentials, timeout)
    commit = _run_git(["git", "-C", str(destination), "rev-parse", "HEAD"], remote, branch, credentials, timeout)
    shutil.rmtree(destination / ".git", ignore_errors=True)  # history never goes into images
    context = _subdirectory(destination, directory)
    return Checkout(context_dir=context, commit=commit.strip())


def _run_git(
    command: list[str], remote: str, branch: str | None, credentials: GitCredentials | None, timeout: float
) -> str:
    try:
        result = subprocess.run(
            command,
            env=git_environment(os.environ),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BuildError(f"cannot fetch {redact_remote(remote)}: git took longer than {timeout:.0f} s") from None
    except OSError as exc:
        raise BuildError(f"cannot run git: {exc}") from None
    if result.returncode != 0:
        raise BuildError(_explain(result.stderr, remote, branch, credentials))
    return result.stdout


def _subdirectory(root: Path, directory: str) -> Path:
    """The job's directory inside the clone. A clone keeps committed symlinks, and the daemon reads
    and deletes files in this directory on the host: neither it nor a link in it may lead out."""
    relative = PurePosixPath(directory or ".")
    if relative.is_absolute() or ".." in relative.parts:
        raise ValidationError(f"git.directory: {directory!r} must be a relative path inside the repository")
    context = (root / relative).resolve()
    if not context.is_relative_to(root.resolve()):
        raise ValidationError(f"git.directory: {directory!r} is a link to outside the repository")
    if not context.is_dir():
        raise BuildError(f"git.directory: {directory!r} does not exist in the repository")
    check_links_inside(context, "git.directory")
    return context


def _with_credentials(remote: str, credentials: GitCredentials | None) -> str:
    if credentials is None or remote_scheme(remote) not in ("https", "http"):
        return remote
    parts = urlsplit(remote)
    host = parts.hostname or ""
    netloc = f"{quote(credentials.username, safe='')}:{quote(credentials.password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def scrub(text: str, credentials: GitCredentials | None) -> str:
    """`text` with the credentials replaced by ***, whichever way they were written."""
    if credentials is None:
        return text
    for secret in {credentials.password, quote(credentials.password, safe="")}:
        if secret:
            text = text.replace(secret, "***")
    return text


def redact_remote(remote: str) -> str:
    """`remote` as it may be shown: any user and password in it replaced by *** (the schema refuses
    them in new manifests; a manifest stored before may still hold them)."""
    if "://" not in remote:
        return remote
    parts = urlsplit(remote)
    if "@" not in parts.netloc:
        return remote
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def _explain(stderr: str, remote: str, branch: str | None, credentials: GitCredentials | None) -> str:
    """One line for the user from git's stderr: its `fatal:`/`error:` line, credentials scrubbed."""
    shown = redact_remote(remote)
    text = scrub(stderr, credentials).strip()
    lowered = text.lower()
    if "authentication" in lowered or "could not read username" in lowered or "403" in lowered or "401" in lowered:
        if credentials is None:
            return (
                f"cannot fetch {shown}: the repository needs credentials and none were sent "
                "(give them with the deploy: rtd submit --git-username/--git-password)"
            )
        return f"cannot fetch {shown}: the git credentials were rejected"
    if branch and ("not found in upstream" in lowered or "remote branch" in lowered):
        return f"cannot fetch {shown}: branch {branch!r} does not exist"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line.split(":", 1)[1].strip() for line in lines if line.lower().startswith(("fatal:", "error:"))]
    said = "; ".join(errors[:3]) if errors else (lines[-1] if lines else "git failed")
    return f"cannot fetch {shown}: {said}"
