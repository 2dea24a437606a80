"""Racetrack's manifest schema: validate a parsed `job.yaml` into a frozen `Manifest`.

Every problem found is reported at once, each as `field.path: message`; unknown keys get a
"did you mean" suggestion. Nothing here depends on the daemon's settings: limits that are
policy (memory caps, allowed git schemes) are checked by the daemon on top of this.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import yaml

from jobmanifest.quantities import parse_quantity
from jobmanifest.versions import SemanticVersion

DEFAULT_VERSION = "0.0.1"
MAX_REPLICAS = 50
# Patterns end in \Z, not $: $ also matches before a trailing newline ("adder\n").
# A job name ends up in container and DNS names (`job-{name}-v-{version}`): an RFC 1123 label.
NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?\Z")
MAX_NAME_LENGTH = 40
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\Z")
JOBTYPE = re.compile(r"^[a-z0-9][a-z0-9._-]*:[A-Za-z0-9.*_+-]+\Z")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
# Debian's package names (policy 5.6.1: lower case, at least two characters), optionally with an
# architecture (`libc6:amd64`), a version (`curl=7.88.1-10`) or a release (`curl/bookworm-backports`):
# they go unquoted into an `apt-get install` RUN line.
PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?(=[A-Za-z0-9.+~:-]+|/[a-z0-9.-]+)?\Z")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A path a template writes into a Dockerfile or a shell line (COPY, cp): no quoting survives both,
# so only characters that need none. No leading dash: it would read as an option.
SAFE_PATH = re.compile(r"^[A-Za-z0-9_.+@=,~][A-Za-z0-9_.+@=,~/-]*\Z")
# jobtype_extra keys of Racetrack's job types that name a file of the job, and those that go into a
# Dockerfile as something else; what each may hold (the daemon checks types per job type on top).
JOBTYPE_EXTRA_PATHS = ("entrypoint_path", "requirements_path", "gomod", "dockerfile_path")
PYTHON_VERSION = re.compile(r"^[0-9]+(\.[0-9]+){0,2}\Z")
DEBIAN_VERSION = re.compile(r"^[a-z0-9][a-z0-9.-]*\Z")
PYTHON_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
DEPRECATED_EXTRA = ("python", "golang", "wrapper_properties", "docker")
# racetrackd runs every job on its host's Docker engine: Racetrack's only target that applies here.
INFRASTRUCTURE_TARGET = "docker"
TOP_LEVEL = (
    "name",
    "owner_email",
    "version",
    "jobtype",
    "lang",
    "git",
    "jobtype_extra",
    "build_env",
    "runtime_env",
    "secret_build_env_file",
    "secret_runtime_env_file",
    "labels",
    "public_endpoints",
    "replicas",
    "resources",
    "system_dependencies",
    "infrastructure_target",
    "image_type",
    "extends",
    "idle_timeout",  # racetrackd's own: scale to zero after this long without calls
    "call_timeout",  # racetrackd's own: how long one call may take, end to end
    "placement_constraints",  # racetrackd's own: Swarm placement constraints (swarm mode only)
    *DEPRECATED_EXTRA,
)
GIT_FIELDS = ("remote", "branch", "directory")
RESOURCE_FIELDS = ("memory_min", "memory_max", "cpu_min", "cpu_max")


@dataclasses.dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ManifestInvalid(ValueError):
    """The manifest has one or more errors; `errors` lists them all."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


@dataclasses.dataclass(frozen=True)
class GitSource:
    remote: str
    branch: str | None
    directory: str


@dataclasses.dataclass(frozen=True)
class Resources:
    memory_min: str | None = None
    memory_max: str | None = None
    cpu_min: str | None = None
    cpu_max: str | None = None

    def value(self, field: str) -> float | None:
        """Bytes for memory fields, cores for CPU fields; None when unset."""
        raw = getattr(self, field)
        return None if raw is None else parse_quantity(raw)


@dataclasses.dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    owner_email: str
    jobtype: str
    git: GitSource | None
    jobtype_extra: dict[str, Any]
    build_env: dict[str, str]
    runtime_env: dict[str, str]
    secret_build_env_file: str | None
    secret_runtime_env_file: str | None
    labels: dict[str, Any]
    public_endpoints: tuple[str, ...]
    replicas: int
    resources: Resources
    system_dependencies: tuple[str, ...]
    infrastructure_target: str | None
    image_type: str
    idle_timeout: int | None  # seconds without calls before the job is stopped (woken by the next call)
    call_timeout: int | None  # seconds one call may take (gateway, wrapper and async calls); None: the default
    placement_constraints: tuple[str, ...]  # Swarm's `<key> ==|!= <value>`, e.g. node.labels.gpu == true
    raw: dict[str, Any]  # what the user wrote (after overlays), as stored and shown back
    warnings: tuple[str, ...] = ()

    @property
    def jobtype_name(self) -> str:
        return self.jobtype.partition(":")[0]

    @property
    def yaml(self) -> str:
        return yaml.safe_dump(self.raw, sort_keys=False, allow_unicode=True)

    @property
    def is_stable(self) -> bool:
        return SemanticVersion.parse(self.version).is_stable


class _Checker:
    """Collects errors while reading fields, so every mistake is reported in one go."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []
        self.warnings: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def unknown_keys(self, data: dict[str, Any], allowed: tuple[str, ...], prefix: str = "") -> None:
        for key in data:
            if key in allowed:
                continue
            path = f"{prefix}{key}"
            guess = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.7)
            hint = f" (did you mean {guess[0]!r}?)" if guess else ""
            self.error(path, f"unknown field{hint}")

    def string(
        self,
        data: dict[str, Any],
        key: str,
        path: str,
        *,
        required: bool = False,
        check: Callable[[str], str | None] | None = None,
    ) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                self.error(path, "required")
            return None
        if not isinstance(value, str):
            self.error(path, f"must be a string, not {_kind(value)} {value!r}")
            return None
        problem = check(value) if check else None
        if problem:
            self.error(path, problem)
            return None
        return value

    def mapping(self, data: dict[str, Any], key: str, path: str) -> dict[str, Any] | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.error(path, f"must be a mapping, not {_kind(value)}")
            return None
        return value

    def string_list(
        self, data: dict[str, Any], key: str, path: str, check: Callable[[str], str | None]
    ) -> tuple[str, ...]:
        value = data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            self.error(path, f"must be a list, not {_kind(value)}")
            return ()
        result = []
        for index, item in enumerate(value):
            if not isinstance(item, str):
                self.error(f"{path}[{index}]", f"must be a string, not {_kind(item)}")
                continue
            problem = check(item)
            if problem:
                self.error(f"{path}[{index}]", problem)
            else:
                result.append(item)
        return tuple(result)

    def env(self, data: dict[str, Any], key: str) -> dict[str, str]:
        value = self.mapping(data, key, key) or {}
        result = {}
        for name, item in value.items():
            path = f"{key}.{name}"
            if not isinstance(name, str) or not ENV_NAME.match(name):
                self.error(
                    path, "not a valid environment variable name (letters, digits, _; not starting with a digit)"
                )
            elif not isinstance(item, str):
                self.error(path, f'must be a string, not {_kind(item)}; quote it: {name}: "{item}"')
            else:
                result[name] = item
        return result


def validate_manifest(data: Any) -> Manifest:
    """Validate a parsed job.yaml; ManifestInvalid lists every error as `field.path: message`."""
    if not isinstance(data, dict):
        raise ManifestInvalid([FieldError("manifest", f"must be a mapping of fields, not {_kind(data)}")])
    c = _Checker()
    c.unknown_keys(data, TOP_LEVEL)

    name = c.string(data, "name", "name", required=True, check=_check_name)
    owner_email = c.string(
        data,
        "owner_email",
        "owner_email",
        required=True,
        check=lambda v: None if EMAIL.match(v) else f"{v!r} is not an e-mail address",
    )
    version = _version(c, data)
    jobtype = _jobtype(c, data)
    git = _git(c, data)
    jobtype_extra = _jobtype_extra(c, data)
    build_env = c.env(data, "build_env")
    runtime_env = c.env(data, "runtime_env")
    secret_build = c.string(data, "secret_build_env_file", "secret_build_env_file")
    secret_runtime = c.string(data, "secret_runtime_env_file", "secret_runtime_env_file")
    labels = c.mapping(data, "labels", "labels") or {}
    public_endpoints = c.string_list(
        data,
        "public_endpoints",
        "public_endpoints",
        lambda v: None if v.startswith("/") else f"{v!r} must be a path starting with /",
    )
    replicas = _replicas(c, data)
    resources = _resources(c, data)
    system_dependencies = c.string_list(
        data,
        "system_dependencies",
        "system_dependencies",
        lambda v: (
            None
            if PACKAGE.match(v)
            else (
                f"{v!r} is not a package name (Debian's rules: lower-case letters, digits, + - .; optionally "
                ":arch, =version or /release)"
            )
        ),
    )
    infrastructure_target = c.string(
        data, "infrastructure_target", "infrastructure_target", check=infrastructure_target_problem
    )
    image_type = c.string(
        data,
        "image_type",
        "image_type",
        check=lambda v: None if v == "docker" else f"{v!r} is not supported (supported: docker)",
    )
    idle_timeout = _duration(c, data, "idle_timeout", MIN_IDLE_TIMEOUT)
    call_timeout = _duration(c, data, "call_timeout", MIN_CALL_TIMEOUT)
    placement_constraints = c.string_list(
        data, "placement_constraints", "placement_constraints", placement_constraint_problem
    )
    c.string(
        data,
        "extends",
        "extends",
        check=lambda v: f"{v!r} must be a relative path to the base manifest" if v.startswith("/") else None,
    )

    if c.errors or name is None or owner_email is None or jobtype is None:
        raise ManifestInvalid(c.errors)
    raw = dict(data)
    raw["version"] = version
    raw.pop("extends", None)
    return Manifest(
        name=name,
        version=version,
        owner_email=owner_email,
        jobtype=jobtype,
        git=git,
        jobtype_extra=jobtype_extra,
        build_env=build_env,
        runtime_env=runtime_env,
        secret_build_env_file=secret_build,
        secret_runtime_env_file=secret_runtime,
        labels=labels,
        public_endpoints=public_endpoints,
        replicas=replicas,
        resources=resources,
        system_dependencies=system_dependencies,
        infrastructure_target=infrastructure_target,
        image_type=image_type or "docker",
        idle_timeout=idle_timeout,
        call_timeout=call_timeout,
        placement_constraints=placement_constraints,
        raw=raw,
        warnings=tuple(c.warnings),
    )


def _check_name(value: str) -> str | None:
    if len(value) > MAX_NAME_LENGTH or not NAME.match(value):
        return (
            f"{value!r} is not valid in container and DNS names: use lower-case letters, digits and "
            f"dashes (no underscores), starting and ending with a letter or digit, at most {MAX_NAME_LENGTH} characters"
        )
    return None


def _version(c: _Checker, data: dict[str, Any]) -> str:
    value = data.get("version")
    if value is None:  # absent or left empty
        return DEFAULT_VERSION
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        c.error("version", f'{value!r} is a number; write a semantic version as a string, like "{_as_semver(value)}"')
        return DEFAULT_VERSION
    if not isinstance(value, str):
        c.error("version", f"must be a string, not {_kind(value)}")
        return DEFAULT_VERSION
    try:
        SemanticVersion.parse(value)
    except ValueError as exc:
        c.error("version", f"{exc} (MAJOR.MINOR.PATCH, optionally -prerelease)")
    return value


def _as_semver(number: float) -> str:
    parts = str(number).split(".")
    return ".".join((parts + ["0", "0"])[:3])


def _jobtype(c: _Checker, data: dict[str, Any]) -> str | None:
    if "jobtype" in data and "lang" in data:
        c.error("lang", "deprecated alias of jobtype; set only jobtype")
        return None
    key = "jobtype" if "jobtype" in data or "lang" not in data else "lang"
    if key == "lang":
        c.warnings.append("lang is deprecated: rename it to jobtype")
    return c.string(
        data,
        key,
        key,
        required=True,
        check=lambda v: (
            None
            if JOBTYPE.match(v)
            else (f"{v!r} must be NAME:VERSION, e.g. python3:latest, python3:1.0.0 or python3:1.*")
        ),
    )


def _git(c: _Checker, data: dict[str, Any]) -> GitSource | None:
    git = c.mapping(data, "git", "git")
    if git is None:
        return None
    c.unknown_keys(git, GIT_FIELDS, "git.")
    remote = c.string(git, "remote", "git.remote", required=True, check=_check_remote)
    branch = c.string(git, "branch", "git.branch", check=_check_branch)
    directory = c.string(git, "directory", "git.directory", check=_check_relative_path) or "."
    return GitSource(remote, branch, directory) if remote else None


def _check_branch(value: str) -> str | None:
    # The rules of `git check-ref-format --branch`, without running git.
    bad = (
        not value
        or value.startswith(("-", "/"))
        or value.endswith((".", "/", ".lock"))
        or ".." in value
        or "//" in value
        or "@{" in value
        or re.search(r"[\x00-\x20\x7f~^:?*\[\\\"]", value) is not None
    )
    return f"{value!r} is not a valid branch name" if bad else None


def _check_relative_path(value: str) -> str | None:
    if value.startswith("/") or ".." in value.split("/"):
        return f"{value!r} must be a relative path inside the job's directory"
    if CONTROL.search(value):
        return f"{value!r} must not hold control characters (a newline, say)"
    return None


def relative_path_problem(value: str) -> str | None:
    """Why `value` cannot be a job file's path that a template writes into a Dockerfile (None: it can)."""
    if value.startswith("/") or ".." in value.split("/"):
        return "must be a relative path inside the job directory"
    if not SAFE_PATH.match(value):
        return (
            f"must be a relative path inside the job directory, of letters, digits and _ . + @ = , ~ / - "
            f"(not starting with -), not {value!r}"
        )
    return None


def _check_remote(value: str) -> str | None:
    if CONTROL.search(value) or " " in value or value.startswith("-"):
        return f"{value!r} is not a git remote (no spaces, control characters or leading -)"
    if "://" in value:
        try:
            password = urlsplit(value).password
        except ValueError as exc:
            return f"{value!r} is not a valid URL: {exc}"
        # A password, or a token written as the user of an http(s) URL, would be stored with the
        # manifest and shown wherever the manifest is (ssh://git@host is a plain user name).
        if password is not None or (
            "@" in urlsplit(value).netloc and value.lower().startswith(("http://", "https://"))
        ):
            return (
                "must not hold a password or token; give credentials with the deploy "
                "(rtd submit --git-username/--git-password), which keeps them secret"
            )
    return None


def _check_jobtype_extra_values(c: _Checker, extra: dict[str, Any], key: str) -> None:
    """The values of Racetrack's jobtype_extra keys that reach a Dockerfile, by their rules; and no
    control characters in any string (a newline starts a new Dockerfile instruction)."""
    checks: dict[str, Callable[[str], str | None]] = {
        **{name: relative_path_problem for name in JOBTYPE_EXTRA_PATHS},
        "python_version": lambda v: (
            None if PYTHON_VERSION.match(v) else (f"{v!r} is not a Python version like 3.11 or 3.11.4")
        ),
        "debian_version": lambda v: (
            None if DEBIAN_VERSION.match(v) else (f"{v!r} is not a Debian image suffix like slim-bookworm")
        ),
        "entrypoint_class": lambda v: None if PYTHON_NAME.match(v) else f"{v!r} is not a Python class name",
    }
    for name, value in extra.items():
        path = f"{key}.{name}"
        check = checks.get(str(name))
        problem = check(value) if check and isinstance(value, str) else None
        if problem is None and _holds_control_characters(value):
            problem = "must not hold control characters (a newline, say)"
        if problem:
            c.error(path, problem)


def _holds_control_characters(value: Any) -> bool:
    if isinstance(value, str):
        return CONTROL.search(value) is not None
    if isinstance(value, dict):
        return any(_holds_control_characters(k) or _holds_control_characters(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_control_characters(item) for item in value)
    return False


def _jobtype_extra(c: _Checker, data: dict[str, Any]) -> dict[str, Any]:
    present = [key for key in ("jobtype_extra", *DEPRECATED_EXTRA) if key in data]
    if len(present) > 1:
        c.error(present[1], f"set only jobtype_extra (found {', '.join(present)})")
        return {}
    if not present:
        return {}
    key = present[0]
    if key != "jobtype_extra":
        c.warnings.append(f"{key} is deprecated: rename it to jobtype_extra")
    extra = dict(c.mapping(data, key, key) or {})
    _check_jobtype_extra_values(c, extra, key)
    return extra


# Swarm's constraint syntax: an attribute of the node, == or !=, a value (docker service create --constraint)
PLACEMENT_CONSTRAINT = re.compile(
    r"^(node\.(id|hostname|role|platform\.os|platform\.arch|labels\.[A-Za-z0-9_.-]+)|engine\.labels\.[A-Za-z0-9_.-]+)"
    r"\s*(==|!=)\s*([^\s=!][^=!]*)$"
)


def placement_constraint_problem(value: str) -> str | None:
    if PLACEMENT_CONSTRAINT.match(value.strip()):
        return None
    return (
        f"{value!r} is not a Swarm placement constraint: write `<key> == <value>` or `<key> != <value>` with "
        "key node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.<label> "
        "or engine.labels.<label> (e.g. node.labels.gpu == true)"
    )


def _replicas(c: _Checker, data: dict[str, Any]) -> int:
    value = data.get("replicas")
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int):
        c.error("replicas", f"must be a whole number, not {_kind(value)} {value!r}")
        return 1
    if not 1 <= value <= MAX_REPLICAS:
        c.error("replicas", f"must be from 1 to {MAX_REPLICAS}, not {value}")
    return value


DURATION = re.compile(r"^(\d+)\s*(s|m|h)?\Z")
MIN_IDLE_TIMEOUT = 5
MIN_CALL_TIMEOUT = 1


def infrastructure_target_problem(value: str) -> str | None:
    if value == INFRASTRUCTURE_TARGET:
        return None
    return f"{value!r} is not installed (installed: {INFRASTRUCTURE_TARGET})"


def _duration(c: _Checker, data: dict[str, Any], field: str, minimum: int) -> int | None:
    """Seconds from `30`, `30s`, `15m` or `2h`."""
    value = data.get(field)
    if value is None:
        return None
    match = (
        DURATION.match(str(value).strip()) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    )
    if not match:
        c.error(field, f"{value!r} is not a duration like 30s, 15m or 2h")
        return None
    seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]
    if seconds < minimum:
        c.error(field, f"must be at least {minimum}s")
        return None
    return seconds


def _resources(c: _Checker, data: dict[str, Any]) -> Resources:
    raw = c.mapping(data, "resources", "resources")
    if raw is None:
        return Resources()
    c.unknown_keys(raw, RESOURCE_FIELDS, "resources.")
    values: dict[str, str | None] = {}
    numbers: dict[str, float] = {}
    for field in RESOURCE_FIELDS:
        item = raw.get(field)
        if item is None:
            values[field] = None
            continue
        try:
            number = parse_quantity(item)
        except ValueError as exc:
            c.error(f"resources.{field}", str(exc))
            values[field] = None
            continue
        if number <= 0:
            c.error(f"resources.{field}", "must be greater than zero")
        values[field] = str(item)
        numbers[field] = number
    for kind in ("memory", "cpu"):
        low, high = numbers.get(f"{kind}_min"), numbers.get(f"{kind}_max")
        if low is not None and high is not None and low > high:
            c.error(f"resources.{kind}_min", f"{values[f'{kind}_min']} is more than {kind}_max {values[f'{kind}_max']}")
    return Resources(**values)


def _kind(value: object) -> str:
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
        type(None): "empty",
    }.get(type(value), type(value).__name__)
