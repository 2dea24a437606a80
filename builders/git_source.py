"""Fetch a job's source from git: a shallow clone of one branch, then the job's subdirectory.

Credentials travel only inside the clone URL given to git and are scrubbed from every message
that could reach a log, the API or the user.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import git

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


def clone(remote: str, branch: str | None, directory: str, credentials: GitCredentials | None,
          destination: Path, timeout: float) -> Checkout:
    """Shallow-clone `remote` at `branch` (default branch when None) into `destination`."""
    url = _with_credentials(remote, credentials)
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "GIT_SSH_COMMAND": "ssh -o BatchMode=yes"}
    options: dict[str, Any] = {"depth": 1, "single_branch": True, "kill_after_timeout": timeout}
    if branch:
        options["branch"] = branch
    try:
        repo = git.Repo.clone_from(url, destination, env={**os.environ, **env}, multi_options=["--no-tags"],
                                   **options)
        commit = repo.head.commit.hexsha
        repo.close()
    except git.GitCommandError as exc:
        raise BuildError(_explain(exc, remote, branch, credentials)) from None
    shutil.rmtree(destination / ".git", ignore_errors=True)  # history never goes into images
    context = _subdirectory(destination, directory)
    return Checkout(context_dir=context, commit=commit)


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


def _explain(exc: git.GitCommandError, remote: str, branch: str | None, credentials: GitCredentials | None) -> str:
    stderr = scrub(str(exc.stderr or exc), credentials).strip()
    lowered = stderr.lower()
    if "authentication" in lowered or "could not read username" in lowered or "403" in lowered or "401" in lowered:
        if credentials is None:
            return (f"cannot fetch {remote}: the repository needs credentials and none were sent "
                    "(give them with the deploy: rtd submit --git-username/--git-password)")
        return f"cannot fetch {remote}: the git credentials were rejected"
    if branch and ("not found in upstream" in lowered or "remote branch" in lowered):
        return f"cannot fetch {remote}: branch {branch!r} does not exist"
    last = stderr.splitlines()[-1] if stderr else "git failed"
    return f"cannot fetch {remote}: {last}"
