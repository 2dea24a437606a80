"""Daemon settings: one frozen object, read once from `RACETRACK_*` variables (and an optional YAML file).

Every setting of the daemon is declared once in `SETTINGS` below; a plugin declares its own (the
base images of its job types, e.g. RACETRACK_PYTHON_BASE_IMAGE) in the `settings:` section of its
plugin-manifest.yaml, read the same way into `Settings.plugin_settings`. `Settings.from_env`
reads them from an injected mapping so tests pass a plain dict. An unknown `RACETRACK_*` variable or an invalid
value raises `SettingsError` naming the variable, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from jobmanifest.quantities import parse_quantity
from pluginbundle import PLUGIN_MANIFEST, PluginInvalid, parse_manifest
from racetrackd import resources
from racetrackd.errors import SettingsError

ENV_PREFIX = "RACETRACK_"
BUILTIN_PLUGINS_DIR = resources.builtin_plugins_dir()
JOB_ADDRESSING_MODES = ("auto", "container-name", "container-ip", "published-port")
ORCHESTRATORS = ("docker", "swarm")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _parse_positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("expected a whole number of at least 1")
    return value


def _parse_non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("expected a whole number of at least 0")
    return value


def _parse_port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("expected a port number from 0 to 65535")
    return value


def _parse_seconds(raw: str) -> float:
    value = float(raw)
    if not value > 0:  # also rejects nan
        raise ValueError("expected a positive number of seconds")
    return value


def _parse_log_level(raw: str) -> str:
    level = raw.strip().lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
    return level


def _parse_optional_str(raw: str) -> str | None:
    return raw.strip() or None


def _parse_existing_file(raw: str) -> Path | None:
    if not raw.strip():
        return None
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ValueError(f"file {path} does not exist")
    return path


# host[:port][/path]: a host Docker reads as a registry (a dot, a port or localhost; otherwise
# `team/racetrackd/job-x` would mean Docker Hub's user "team"), then lower-case path components.
_REGISTRY = re.compile(
    r"(?P<host>localhost|\[[0-9a-fA-F:]+\]|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*)(?P<port>:[0-9]{1,5})?"
    r"(?P<path>(/[a-z0-9]+([._-][a-z0-9]+)*)*)"
)


def _parse_registry(raw: str) -> str | None:
    value = raw.strip().rstrip("/")
    if not value:
        return None
    if "://" in value:
        raise ValueError("expected host[:port][/path] without a scheme, e.g. 10.0.0.5:5000 or reg.example:5000/team")
    match = _REGISTRY.fullmatch(value)
    if match is None:
        raise ValueError("expected host[:port][/path], e.g. 10.0.0.5:5000 or reg.example:5000/team")
    host = match["host"]
    if not (match["port"] or "." in host or host == "localhost" or host.startswith("[")):
        raise ValueError(
            f"{host!r} would be read as a Docker Hub account: name the registry with a dot or a port, "
            "e.g. registry.local or registry:5000"
        )
    return value


def _parse_quantity(raw: str) -> float:
    value = parse_quantity(raw)
    if value <= 0:
        raise ValueError("expected a positive quantity like 512Mi or 500m")
    return value


def _parse_schemes(raw: str) -> frozenset[str]:
    schemes = frozenset(part.strip().lower() for part in raw.split(",") if part.strip())
    unknown = schemes - {"https", "http", "ssh", "git", "file"}
    if unknown:
        raise ValueError(f"unknown kind {sorted(unknown)[0]!r}; use https, http, ssh, git or file")
    return schemes


def _parse_addressing(raw: str) -> str:
    if raw not in JOB_ADDRESSING_MODES:
        raise ValueError(f"expected one of {', '.join(JOB_ADDRESSING_MODES)}")
    return raw


def _parse_orchestrator(raw: str) -> str:
    if raw not in ORCHESTRATORS:
        raise ValueError(f"expected one of {', '.join(ORCHESTRATORS)}")
    return raw


def _parse_instance(raw: str) -> str:
    if not raw or not all(ch.isalnum() or ch == "-" for ch in raw) or not raw[0].isalpha():
        raise ValueError("expected letters, digits and dashes, starting with a letter")
    return raw.lower()


def _default_data_dir(environ: Mapping[str, str]) -> str:
    xdg = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(xdg) / "racetrackd")


@dataclasses.dataclass(frozen=True)
class SettingSpec:
    """How one setting is named, defaulted, parsed and explained (docs/settings.md lists them all)."""

    field: str
    default: str | Callable[[Mapping[str, str]], str]  # a callable derives it from the environment
    parse: Callable[[str], Any]
    help: str

    @property
    def env_name(self) -> str:
        return ENV_PREFIX + self.field.upper()


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("host", "127.0.0.1", str, "Address the daemon listens on."),
    SettingSpec("port", "7102", _parse_port, "Port serving the control-plane API and the gateway (/pub)."),
    SettingSpec(
        "data_dir",
        _default_data_dir,
        lambda raw: Path(raw).expanduser(),
        "Directory for the SQLite registry, build contexts, logs and the admin token.",
    ),
    SettingSpec(
        "admin_token",
        "",
        _parse_optional_str,
        "Bootstrap admin token. When empty, one is generated into DATA_DIR/admin-token (mode 0600).",
    ),
    SettingSpec(
        "auth_required",
        "true",
        _parse_bool,
        "Require a token (X-Racetrack-Auth header or cookie) and check its scopes on the API and the "
        "gateway. false: anyone may do anything (a private laptop).",
    ),
    SettingSpec(
        "secret_key",
        "",
        _parse_optional_str,
        "Key that encrypts stored secrets and job-family tokens. When empty, one is generated into "
        "DATA_DIR/secret-key (mode 0600). Keep it: without it stored secrets cannot be read.",
    ),
    SettingSpec(
        "auth_failure_limit",
        "20",
        _parse_non_negative_int,
        "Failed auth attempts per RACETRACK_AUTH_FAILURE_WINDOW from one client address, with one bad "
        "token, or for one username before they get 429 (0: no limit); a valid token is never refused.",
    ),
    SettingSpec("auth_failure_window", "60", _parse_seconds, "Seconds over which failed auth attempts are counted."),
    SettingSpec(
        "login_token_ttl",
        "2678400",
        _parse_seconds,
        "Seconds a token made by a password login (rtd login --username, the dashboard) stays valid.",
    ),
    SettingSpec(
        "secure_cookie",
        "false",
        _parse_bool,
        "Mark the X-Racetrack-Auth cookie Secure (set it when users reach the daemon over HTTPS).",
    ),
    SettingSpec(
        "external_url",
        "",
        _parse_optional_str,
        "Base URL users reach the daemon at (used in pub_url). Default: http://HOST:PORT.",
    ),
    SettingSpec(
        "http_workers",
        "2",
        _parse_positive_int,
        "Gunicorn worker processes serving HTTP (each runs the gateway on an event loop).",
    ),
    SettingSpec(
        "http_threads",
        "16",
        _parse_positive_int,
        "Threads per HTTP worker for control-plane requests (the gateway needs none).",
    ),
    SettingSpec(
        "follow_streams_per_caller",
        "4",
        _parse_positive_int,
        "Follow streams (logs -f, build-logs -f) one caller (token, or address without auth) may hold "
        "open in each HTTP worker; one more gets 429.",
    ),
    SettingSpec(
        "max_follow_streams",
        "8",
        _parse_positive_int,
        "Follow streams open at once in each HTTP worker, of all callers; keep it below "
        "RACETRACK_HTTP_THREADS so the control plane keeps threads for everything else.",
    ),
    SettingSpec(
        "network",
        "racetrack",
        str,
        "Docker network shared by racetrackd and every job (jobs cannot reach each other on it when the "
        "daemon runs on the host); image builds run on `<network>-build`, made by racetrackd.",
    ),
    SettingSpec(
        "job_addressing",
        "auto",
        _parse_addressing,
        "How the gateway reaches jobs: container-name (daemon runs on the shared network), "
        "container-ip (daemon on a Linux host), published-port (host that cannot route to "
        "containers, e.g. Docker Desktop) or auto (detect).",
    ),
    SettingSpec(
        "orchestrator",
        "docker",
        _parse_orchestrator,
        "What runs jobs: docker (containers on this one engine) or swarm (each job release a Docker "
        "Swarm service, scheduled across the swarm's nodes; racetrackd runs on a manager). See docs/swarm.md.",
    ),
    SettingSpec(
        "instance",
        "main",
        _parse_instance,
        "Name of this daemon; labels every container and image it creates. "
        "A non-default name also prefixes container names, so two daemons can share one engine.",
    ),
    SettingSpec(
        "build_ca_bundle",
        "",
        _parse_existing_file,
        "CA bundle (PEM) given to image builds, for package indexes behind a TLS-intercepting proxy.",
    ),
    SettingSpec("build_pip_index_url", "", _parse_optional_str, "Package index used by pip inside image builds."),
    SettingSpec(
        "build_pip_extra_index_url",
        "",
        _parse_optional_str,
        "Extra package index(es) for pip inside image builds (space-separated).",
    ),
    SettingSpec(
        "build_pip_trusted_host",
        "",
        _parse_optional_str,
        "Host(s) pip may reach without TLS verification inside image builds (space-separated).",
    ),
    SettingSpec(
        "build_goproxy",
        "",
        _parse_optional_str,
        "GOPROXY for golang job builds (e.g. a private module proxy); empty: Go's default. "
        "A build argument: never in the job's runtime environment.",
    ),
    SettingSpec(
        "registry",
        "",
        _parse_registry,
        "Registry the jobs' images are pushed to after each build, as host[:port][/path] (e.g. "
        "10.0.0.5:5000 or reg.example:5000/team), so that every node of a swarm can pull them. "
        "Empty: images stay on the engine that built them (one host, or a single-node swarm).",
    ),
    SettingSpec(
        "registry_username",
        "",
        _parse_optional_str,
        "User racetrackd logs in to RACETRACK_REGISTRY as (with RACETRACK_REGISTRY_PASSWORD_FILE). "
        "Empty: the registry needs no login.",
    ),
    SettingSpec(
        "registry_password_file",
        "",
        _parse_existing_file,
        "File holding the password of RACETRACK_REGISTRY_USERNAME (the value itself never goes in "
        "the environment). Read when racetrackd logs in.",
    ),
    SettingSpec(
        "build_cargo_registry",
        "",
        _parse_optional_str,
        "Index URL of a crate registry for rust job builds (a crates.io mirror, or crates.io's own index); "
        "empty: only the crates Debian packages in the rust base image, offline.",
    ),
    SettingSpec("build_timeout", "1800", _parse_seconds, "Seconds an image build may take before it is stopped."),
    SettingSpec(
        "build_concurrency",
        "1",
        _parse_positive_int,
        "Deployments carried out at once; more wait in a queue (one per job version at a time).",
    ),
    SettingSpec("build_memory", "4Gi", _parse_quantity, "Memory limit of each image build step."),
    SettingSpec(
        "keep_images",
        "3",
        _parse_positive_int,
        "Images kept per job version (newest first); older ones, and those of deleted versions, are removed.",
    ),
    SettingSpec(
        "max_context_size", "2Gi", _parse_quantity, "The most a build context may unpack to (uploaded or cloned)."
    ),
    SettingSpec(
        "max_context_entries",
        "50000",
        _parse_positive_int,
        "The most files and directories an uploaded build context may hold.",
    ),
    SettingSpec(
        "max_context_ratio",
        "200",
        _parse_positive_int,
        "How many times its own size an uploaded build context may unpack to (past 64 MiB unpacked): "
        "a decompression bomb stops here before anything is written.",
    ),
    SettingSpec(
        "max_request_body",
        "1Mi",
        _parse_quantity,
        "The largest control-plane request body (login, tokens, settings); deploys and plugin "
        "uploads have their own limit. Over it: 413.",
    ),
    SettingSpec(
        "max_deploy_body",
        "256Mi",
        _parse_quantity,
        "The largest body of a deploy (its build context travels base64-encoded, 4/3 of the archive) "
        "or a plugin upload. Over it: 413.",
    ),
    SettingSpec(
        "build_log_max_size",
        "4Mi",
        _parse_quantity,
        "The most build output kept per deployment (in characters): its first and last halves, with "
        "a line saying how many lines between them were cut.",
    ),
    SettingSpec(
        "git_allowed_schemes",
        "https",
        _parse_schemes,
        "Comma-separated git remote kinds the daemon may clone: https, http, ssh, git, file.",
    ),
    SettingSpec(
        "git_allow_private_remotes",
        "false",
        _parse_bool,
        "Let the daemon clone from loopback, private and link-local addresses (its own network). "
        "false: a git.remote whose host resolves to one is refused.",
    ),
    SettingSpec(
        "job_memory_min",
        "256Mi",
        _parse_quantity,
        "Memory reserved for a job whose manifest sets no resources.memory_min.",
    ),
    SettingSpec(
        "job_memory_max", "1Gi", _parse_quantity, "Memory limit of a job whose manifest sets no resources.memory_max."
    ),
    SettingSpec(
        "job_cpu_min",
        "10m",
        _parse_quantity,
        "CPU share of a job whose manifest sets no resources.cpu_min (relative weight under contention).",
    ),
    SettingSpec(
        "job_cpu_max", "1000m", _parse_quantity, "CPU limit of a job whose manifest sets no resources.cpu_max."
    ),
    SettingSpec(
        "job_pids_limit",
        "1024",
        _parse_positive_int,
        "The most processes and threads one job container may run at once (a fork bomb stops there).",
    ),
    SettingSpec(
        "job_tmp_size",
        "128Mi",
        _parse_quantity,
        "Size of the in-memory /tmp of a job whose job type runs it on a read-only root filesystem "
        "(it counts against the job's memory).",
    ),
    SettingSpec(
        "max_job_memory", "8Gi", _parse_quantity, "The most memory any job may ask for; a manifest over it is refused."
    ),
    SettingSpec(
        "job_start_timeout",
        "180",
        _parse_seconds,
        "Seconds a new job has to answer /live and /ready before its deployment fails.",
    ),
    SettingSpec(
        "supervisor_interval",
        "5",
        _parse_seconds,
        "Seconds between the supervisor's checks of every job's container and probes.",
    ),
    SettingSpec(
        "sleep_paused_for",
        "900",
        _parse_non_negative_int,
        "Seconds a job put to sleep by its idle_timeout stays paused (its memory kept, woken in well under "
        "a second) before its containers are stopped (memory freed; waking then starts the job again). "
        "0: stopped at once.",
    ),
    SettingSpec(
        "drain_timeout",
        "30",
        _parse_seconds,
        "Seconds a replaced or stopped job has to finish the calls it is serving.",
    ),
    SettingSpec(
        "call_timeout",
        "600",
        _parse_seconds,
        "Seconds a call to a job may take (gateway, job wrapper and async calls) unless its manifest "
        "sets call_timeout; past it the caller gets 504.",
    ),
    SettingSpec(
        "maintenance_blocks_calls",
        "true",
        _parse_bool,
        "While maintenance mode is on, the gateway answers job calls 503 (as Racetrack does); false "
        "keeps jobs serving and refuses only deployments, rollbacks and deletions.",
    ),
    SettingSpec(
        "call_stats_retention",
        "604800",
        _parse_seconds,
        "Seconds the per-minute call counts of each job version (the dashboard's calls over time, "
        "the API's /stats) are kept; older minutes are deleted (7 days).",
    ),
    SettingSpec(
        "async_max_attempts",
        "2",
        _parse_positive_int,
        "Attempts of an async call when the job cannot be reached (connection refused or broken).",
    ),
    SettingSpec("async_retry_interval", "10", _parse_seconds, "Seconds between attempts of an async call."),
    SettingSpec(
        "async_task_ttl",
        "86400",
        _parse_seconds,
        "Seconds a finished async call is kept (failed ones for `rtd tasks`); a read result is "
        "dropped 30 s after it is read.",
    ),
    SettingSpec("async_concurrency", "16", _parse_positive_int, "Async calls carried out at once; more wait."),
    SettingSpec("async_max_body", "64Mi", _parse_quantity, "The largest request or answer an async call may store."),
    SettingSpec(
        "worker_poll_interval",
        "0.2",
        _parse_seconds,
        "Seconds between the deployment worker's looks for queued deployments.",
    ),
    SettingSpec("log_level", "info", _parse_log_level, "Log level: debug, info, warning, error."),
    SettingSpec(
        "config_file",
        "",
        _parse_optional_str,
        "Optional YAML file of settings (keys are the names above in lower case, without the prefix); "
        "environment variables win over it.",
    ),
)


CORE_FIELDS = frozenset(spec.field for spec in SETTINGS) | {"plugin_settings"}  # a plugin cannot redeclare them


@dataclasses.dataclass(frozen=True)
class Settings:
    host: str
    port: int
    data_dir: Path
    admin_token: str | None
    auth_required: bool
    secret_key: str | None
    auth_failure_limit: int
    auth_failure_window: float
    login_token_ttl: float
    secure_cookie: bool
    external_url: str | None
    http_workers: int
    http_threads: int
    follow_streams_per_caller: int
    max_follow_streams: int
    network: str
    job_addressing: str
    orchestrator: str
    instance: str
    build_ca_bundle: Path | None
    build_pip_index_url: str | None
    build_pip_extra_index_url: str | None
    build_pip_trusted_host: str | None
    build_goproxy: str | None
    registry: str | None
    registry_username: str | None
    registry_password_file: Path | None
    build_cargo_registry: str | None
    build_timeout: float
    build_concurrency: int
    build_memory: float
    keep_images: int
    max_context_size: float
    max_context_entries: int
    max_context_ratio: int
    max_request_body: float
    max_deploy_body: float
    build_log_max_size: float
    git_allowed_schemes: frozenset[str]
    git_allow_private_remotes: bool
    job_memory_min: float
    job_memory_max: float
    job_cpu_min: float
    job_cpu_max: float
    job_pids_limit: int
    job_tmp_size: float
    max_job_memory: float
    job_start_timeout: float
    supervisor_interval: float
    sleep_paused_for: int
    drain_timeout: float
    call_timeout: float
    maintenance_blocks_calls: bool
    call_stats_retention: float
    async_max_attempts: int
    async_retry_interval: float
    async_task_ttl: float
    async_concurrency: int
    async_max_body: float
    worker_poll_interval: float
    log_level: str
    config_file: str | None
    # Settings declared by plugins (`settings:` in plugin-manifest.yaml), e.g. python_base_image: name -> value
    plugin_settings: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from `environ` (default: the process environment); raise SettingsError on bad input.

        The settings plugins declare are read the same way, after DATA_DIR (their plugins may have
        been uploaded there): built-in plugins first, then uploaded ones."""
        environ = os.environ if environ is None else environ
        raw = _read_config_file(environ.get(ENV_PREFIX + "CONFIG_FILE", ""))
        values = _parse_specs(SETTINGS, raw, environ)
        declared = plugin_setting_specs([BUILTIN_PLUGINS_DIR, values["data_dir"] / "plugins"])
        known = {spec.env_name for spec in (*SETTINGS, *declared)}
        unknown = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in known)
        if unknown:
            raise SettingsError(
                f"unknown setting {unknown[0]}",
                hint="known settings: " + ", ".join(sorted(known)),
            )
        unknown_in_file = sorted(set(raw) - {spec.field for spec in (*SETTINGS, *declared)})
        if unknown_in_file:
            raise SettingsError(f"unknown setting {unknown_in_file[0]!r} in {environ[ENV_PREFIX + 'CONFIG_FILE']}")
        _check_registry_login(values)
        return cls(**values, plugin_settings=_parse_specs(declared, raw, environ))

    def plugin_setting(self, name: str) -> str | None:
        """The value of a setting a plugin declares; None when no plugin installed at start declared it."""
        return self.plugin_settings.get(name)

    @property
    def public_url(self) -> str:
        """Where users reach this daemon; the base of every pub_url."""
        if self.external_url:
            return self.external_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "registry.sqlite3"

    @property
    def metrics_dir(self) -> Path:
        """Where HTTP worker processes keep their Prometheus counters (emptied at each start)."""
        return self.data_dir / "metrics"

    def as_environ(self) -> dict[str, str]:
        """The settings back as RACETRACK_* variables, for child processes of the daemon."""
        env = {ENV_PREFIX + name.upper(): value for name, value in self.plugin_settings.items()}
        for spec in SETTINGS:
            value = getattr(self, spec.field)
            if value is None:
                env[spec.env_name] = ""
            elif isinstance(value, frozenset):
                env[spec.env_name] = ",".join(sorted(value))
            elif isinstance(value, bool):
                env[spec.env_name] = "true" if value else "false"
            else:
                env[spec.env_name] = str(value)
        return env


def _check_registry_login(values: Mapping[str, Any]) -> None:
    """A registry login needs all three: a half-set one would fail only at the first push."""
    user, password_file = values["registry_username"], values["registry_password_file"]
    if (user is None) != (password_file is None):
        given, missing = ("USERNAME", "PASSWORD_FILE") if user else ("PASSWORD_FILE", "USERNAME")
        raise SettingsError(
            f"{ENV_PREFIX}REGISTRY_{given} is set without {ENV_PREFIX}REGISTRY_{missing}",
            hint="set both to log in to the registry, or neither",
        )
    if user is not None and values["registry"] is None:
        raise SettingsError(
            f"{ENV_PREFIX}REGISTRY_USERNAME is set without {ENV_PREFIX}REGISTRY",
            hint="name the registry to push to, e.g. RACETRACK_REGISTRY=10.0.0.5:5000",
        )


def _read_config_file(path: str) -> dict[str, str]:
    if not path:
        return {}
    file = Path(path).expanduser()
    try:
        loaded = yaml.safe_load(file.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"{ENV_PREFIX}CONFIG_FILE={path!r} cannot be read: {exc}") from exc
    if not isinstance(loaded, dict):
        raise SettingsError(f"{ENV_PREFIX}CONFIG_FILE={path!r} must hold a mapping of settings")
    return {
        key: ("" if value is None else str(value).lower() if isinstance(value, bool) else str(value))
        for key, value in loaded.items()
    }


def _parse_specs(specs: tuple[SettingSpec, ...], raw: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, Any]:
    """Each spec's value: from the environment, else the config file (`raw`), else its default."""
    values: dict[str, Any] = {}
    for spec in specs:
        text = environ.get(spec.env_name, raw.get(spec.field))
        if text is None:
            text = spec.default(environ) if callable(spec.default) else spec.default
        try:
            values[spec.field] = spec.parse(str(text))
        except ValueError as exc:
            raise SettingsError(f"{spec.env_name}={text!r} is invalid: {exc}") from exc
    return values


def plugin_setting_specs(plugin_roots: Iterable[Path]) -> tuple[SettingSpec, ...]:
    """The settings declared by the plugins under `plugin_roots` (`settings:` of plugin-manifest.yaml).

    A setting two plugins declare is the first one's (built-in plugins come first). A plugin whose
    manifest cannot be read is skipped here: the plugin store reports it.
    """
    specs: dict[str, SettingSpec] = {}
    for root in plugin_roots:
        if not root.is_dir():
            continue
        for manifest_file in sorted(root.glob(f"*/{PLUGIN_MANIFEST}")):
            try:
                manifest = parse_manifest(manifest_file.read_text())
            except (OSError, UnicodeDecodeError, PluginInvalid):
                continue
            for name, declared in manifest.settings.items():
                if name not in specs and name not in CORE_FIELDS:
                    specs[name] = SettingSpec(name, declared["default"], str, declared["help"])
    return tuple(specs.values())
