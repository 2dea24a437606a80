"""rtd commands that make or show releases: validate, submit (deploy), rollback, build-logs, deployments, audit."""

from __future__ import annotations

import copy
import ipaddress
import json
import posixpath
import shlex
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from cli.client import ApiClient
from cli.common import client_for, complete_job_name
from cli.errors import EXIT_DEPLOY_FAILED, EXIT_INTERRUPTED, EXIT_INVALID_INPUT, EXIT_USAGE, RtdError
from cli.output import print_json, report_error, seconds, table, warn, when
from cli.packing import pack
from cli.progress import Progress
from cli.secrets import SecretFileError, read_secret_vars
from jobmanifest import Manifest, ManifestInvalid, validate_manifest
from jobmanifest.files import missing_files
from jobmanifest.loading import apply_overrides, find_manifest, load_manifest_dict
from jobmanifest.versions import is_semver

EXTRA_VARS_HELP = "Override a manifest field: KEY.PATH=VALUE (VALUE is YAML). Repeatable."
DIRECTORY = click.Path(exists=True, file_okay=False, path_type=Path)
# A job's directory, or its manifest file (a docker-image job has nothing else to send)
JOB_PATH = click.Path(exists=True, path_type=Path)
# Job types that build nothing: the manifest is the whole upload (the daemon ignores files sent along)
IMAGE_JOB_TYPES = ("docker-image",)


# How many of the build's last lines a failed submit shows without -v (the daemon keeps all of them).
FAILED_BUILD_LINES = 15


def register(main: click.Group) -> None:
    for command in (validate, submit, rollback, build_logs, deployments, audit):
        main.add_command(command)
    # `deploy` (Racetrack's word) does the same: listed once in `rtd --help`, beside submit
    alias = copy.copy(submit)
    alias.hidden = True
    main.add_command(alias, name="deploy")


def _job_path(path: Path) -> tuple[Path, Path | None]:
    """(the job's directory, the manifest file) of a path given as DIRECTORY or as its manifest file."""
    return (path.parent, path) if path.is_file() else (path, None)


def runs_prebuilt_image(manifest: Manifest) -> bool:
    """A job that runs an image built elsewhere: nothing of its directory is uploaded."""
    return manifest.jobtype.partition(":")[0] in IMAGE_JOB_TYPES


def _load_manifest(directory: Path, extra_vars: tuple[str, ...], manifest_file: Path | None = None) -> Manifest:
    """The manifest from stdin (when piped), the file given, or DIR/job.yaml, with its overlay and overrides applied."""
    try:
        if manifest_file is None and not sys.stdin.isatty() and (piped := sys.stdin.read()).strip():
            data = load_manifest_dict(piped, "<stdin>", directory)
        else:
            path = manifest_file or find_manifest(directory)
            data = load_manifest_dict(path.read_text(), str(path), path.parent)
        manifest = validate_manifest(apply_overrides(data, list(extra_vars)))
    except ManifestInvalid as exc:
        for error in exc.errors:  # every problem at once, one line each
            report_error(str(error))
        sys.exit(EXIT_INVALID_INPUT)
    for warning in manifest.warnings:
        warn(warning)
    return manifest


def _check_with_daemon(ctx: click.Context, manifest: Manifest) -> None:
    """The daemon's own checks (job types, jobtype_extra, limits), which rtd cannot make alone."""
    errors, warnings = client_for(ctx).check_manifest(manifest.raw)
    for warning in warnings:
        if warning not in manifest.warnings:  # those were printed already
            warn(warning)
    if errors:
        for error in errors:
            report_error(error)
        sys.exit(EXIT_INVALID_INPUT)


def _check_files(manifest: Manifest, directory: Path, *, from_git: bool) -> None:
    """The files the manifest names must be in DIRECTORY (exit 8 listing each, with a did-you-mean).

    A manifest with a git.remote is built from the clone, whose files DIRECTORY may not hold:
    then they are only warned about.
    """
    errors = missing_files(manifest, directory)
    if from_git:
        for error in errors:
            warn(f"{error}; the daemon builds from git.remote and checks the files of its clone")
        return
    for error in errors:
        report_error(str(error))
    if errors:
        sys.exit(EXIT_INVALID_INPUT)


@click.command()
@click.argument("path", default=".", type=JOB_PATH)
@click.option("-e", "--extra-vars", multiple=True, help=EXTRA_VARS_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the merged manifest as JSON.")
@click.option(
    "--with-daemon",
    is_flag=True,
    help="Also have racetrackd check it as a deploy would (its job types and their settings, its limits).",
)
@click.pass_context
def validate(ctx: click.Context, path: Path, extra_vars: tuple[str, ...], as_json: bool, with_daemon: bool) -> None:
    """Check PATH's job.yaml (PATH: a job's directory or its manifest file; or one piped on stdin) and
    print it merged, or every error (exit 8).

    Locally by default (no daemon needed). --with-daemon adds what only the daemon knows: that the
    job type is installed there, that the jobtype_extra settings are that job type's, the host's limits."""
    directory, manifest_file = _job_path(path)
    manifest = _load_manifest(directory, extra_vars, manifest_file)
    if not runs_prebuilt_image(manifest):
        _check_files(manifest, directory, from_git=manifest.git is not None)
    if with_daemon:
        _check_with_daemon(ctx, manifest)
    if as_json:
        print_json(manifest.raw)
        return
    click.echo(manifest.yaml, nl=False)


@click.command(short_help="Build and deploy the job in PATH (alias: deploy).")
@click.argument("path", default=".", type=JOB_PATH)
@click.option("--force", is_flag=True, help="Redeploy a name and version that already exists.")
@click.option("-e", "--extra-vars", multiple=True, help=EXTRA_VARS_HELP)
@click.option("-v", "--verbose", is_flag=True, help="Show the whole build output (Step N/M ...) as it comes.")
@click.option("-q", "--quiet", is_flag=True, hidden=True)  # phases only: now the default, kept for old scripts
@click.option(
    "--local", "force_local", is_flag=True, help="Upload DIRECTORY even when the manifest names a git.remote."
)
@click.option(
    "--build-context",
    type=click.Choice(["local", "git"]),
    default=None,
    help="Racetrack's spelling: local is --local; git clones git.remote (the default when there is one).",
)
@click.option("--no-cache", is_flag=True, help="Build every image layer anew.")
@click.option("--git-username", envvar="RTD_GIT_USERNAME", help="For a private git.remote (env RTD_GIT_USERNAME).")
@click.option(
    "--git-password",
    envvar="RTD_GIT_PASSWORD",
    help="Password or access token for a private git.remote (env RTD_GIT_PASSWORD).",
)
@click.option(
    "--registry-username",
    envvar="RTD_REGISTRY_USERNAME",
    help="For a docker-image job's private registry (env RTD_REGISTRY_USERNAME).",
)
@click.option(
    "--registry-password",
    envvar="RTD_REGISTRY_PASSWORD",
    help="Password or token for a docker-image job's private registry, kept sealed and used only to "
    "pull (env RTD_REGISTRY_PASSWORD).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print only the finished deployment as JSON (progress goes to stderr)."
)
@click.pass_context
def submit(
    ctx: click.Context,
    path: Path,
    force: bool,
    extra_vars: tuple[str, ...],
    verbose: bool,
    quiet: bool,
    force_local: bool,
    build_context: str | None,
    no_cache: bool,
    git_username: str | None,
    git_password: str | None,
    registry_username: str | None,
    registry_password: str | None,
    as_json: bool,
) -> None:
    """Build and deploy the job in PATH: a job's directory (its job.yaml, or one piped on stdin, and
    its files) or its manifest file.

    Shows each phase as it begins; on failure, the last lines of the build (-v: all of them, as they come).
    Also: rtd deploy.

    With a git.remote in the manifest the daemon clones it (branch, directory) instead, unless --local
    (or, as with Racetrack's client, owner_email is sample@example.com and the daemon is on loopback).
    A docker-image job (jobtype_extra.image) builds nothing: only its manifest is sent (rtd submit job.yaml).
    """
    directory, manifest_file = _job_path(path)
    manifest = _load_manifest(directory, extra_vars, manifest_file)
    image_only = runs_prebuilt_image(manifest)
    if build_context == "git" and manifest.git is None and not image_only:
        raise RtdError("--build-context git: the manifest names no git.remote to clone", exit_code=EXIT_USAGE)
    client = client_for(ctx)
    force_local = force_local or build_context == "local"
    if build_context is None and manifest.git is not None and _racetrack_sample_on_loopback(manifest, client.remote):
        force_local = True
    from_git = manifest.git is not None and not force_local and not image_only
    if not from_git and not image_only:  # the daemon checks a clone's files itself; the upload's before sending
        _check_files(manifest, directory, from_git=False)
    credentials = _credentials("git", git_username, git_password)
    registry_credentials = _credentials("registry", registry_username, registry_password)
    try:
        secret_vars, secret_warnings = read_secret_vars(manifest, directory)
    except SecretFileError as exc:
        raise RtdError(str(exc), exit_code=EXIT_INVALID_INPUT) from exc
    for warning in secret_warnings:
        warn(warning)
    progress = Progress(sys.stderr if as_json else None)
    source = (
        f"{manifest.git.remote} (git)"
        if from_git and manifest.git
        else f"image {manifest.jobtype_extra.get('image')} (manifest only)"
        if image_only
        else f"{directory} (upload)"
    )
    progress.step(f"submitting {manifest.name} {manifest.version} to {client.remote} from {source}")
    deployment_id = client.deploy(
        manifest.raw,
        None if from_git or image_only else pack(directory, _secret_files(manifest)),
        force,
        git_credentials=credentials,
        no_cache=no_cache,
        secret_vars=secret_vars,
        registry_credentials=registry_credentials,
    )
    deployment = follow(client, deployment_id, progress, show_logs=verbose and not quiet)
    for warning in (deployment.get("warnings") or "").splitlines():
        warn(warning)
    if as_json:
        print_json(deployment)
    if deployment["status"] != "done":
        _fail("deployment", deployment, client, shown_logs=verbose and not quiet)
    if as_json:
        return
    job = deployment["job"] or {}
    progress.step(f"{job.get('name')} {job.get('version')} is running (took {progress.elapsed:.1f} s)")
    click.echo(f"       {job.get('pub_url')}")
    example = client.perform_example(job["name"], job["version"]) if _calls_perform(job) else None
    click.echo(f"       {_how_to_call(job, example)}")


def _racetrack_sample_on_loopback(manifest: Manifest, remote: str) -> bool:
    """Racetrack's client uploads the directory (as --build-context local) when the owner is
    sample@example.com and the daemon is on this machine: Racetrack's samples name its GitHub
    repository as git.remote, which never holds what was just edited here. rtd does the same."""
    if manifest.owner_email != SAMPLE_OWNER:
        return False
    host = urlsplit(remote).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _credentials(kind: str, username: str | None, password: str | None) -> dict[str, str] | None:
    if not (username or password):
        return None
    if not (username and password):
        raise click.UsageError(f"give both --{kind}-username and --{kind}-password")
    return {"username": username, "password": password}


def _secret_files(manifest: Manifest) -> frozenset[str]:
    names = (manifest.secret_build_env_file, manifest.secret_runtime_env_file)
    return frozenset(posixpath.normpath(Path(name).as_posix()) for name in names if name)


def follow(client: ApiClient, deployment_id: str, progress: Progress, show_logs: bool) -> dict[str, Any]:
    """Poll the deployment, showing each new phase (and the build output), until it ends."""
    offset = 0
    delay = 0.1
    try:
        while True:
            deployment = client.deployment(deployment_id)
            if show_logs:
                logs, offset = client.deployment_logs(deployment_id, offset)
                for line in logs.splitlines():
                    progress.line(f"       {line}")
            if deployment.get("phase"):
                progress.phase(deployment["phase"])
            if deployment["status"] != "in_progress":
                return deployment
            progress.wait(delay)
            delay = min(delay * 1.2, 1.0)  # quick deploys finish in seconds: poll finely at first
    except KeyboardInterrupt:
        raise RtdError(
            f"stopped watching; deployment {deployment_id[:8]} goes on in racetrackd",
            hint="rtd build-logs NAME -f follows it; rtd status NAME shows how it ended",
            exit_code=EXIT_INTERRUPTED,
        ) from None
    finally:
        progress.done()


def _fail(what: str, deployment: dict[str, Any], client: ApiClient, shown_logs: bool = False) -> None:
    """Report a failed deployment or rollback and exit 6. Its error may carry the build's last lines;
    they are shown (at most FAILED_BUILD_LINES) unless -v has already shown the whole output."""
    message, _, details = (deployment.get("error") or "no error recorded").partition("\n")
    name, version = deployment["job_name"], deployment["job_version"]
    report_error(f"{what} {deployment['id'][:8]} of {name} {version} failed: {message}")
    if details and not shown_logs:
        click.echo("\n".join(_last_lines(details)), err=True)
    click.echo(f"hint: {_failure_hint(what, deployment, client)}", err=True)
    sys.exit(EXIT_DEPLOY_FAILED)


def _last_lines(details: str) -> list[str]:
    """The last FAILED_BUILD_LINES lines of a failure's details, led by the build step that failed
    (`Step 7/9 : RUN pip install ...`) when it is further up."""
    lines = details.splitlines()
    shown = lines[-FAILED_BUILD_LINES:]
    if any(line.startswith("Step ") for line in shown):
        return shown
    steps = [line for line in lines[: len(lines) - len(shown)] if line.startswith("Step ")]
    return [steps[-1], "..."] + shown if steps else shown


SAMPLE_OWNER = "sample@example.com"

# A longer example request is not worth a line of the submit output: the API page shows it.
MAX_EXAMPLE_CHARS = 200

# The daemon's phases after the build (Racetrack's names): a failure in them is the job's start-up.
STARTUP_PHASES = frozenset({"starting Job server", "initializing Job entrypoint"})


def _failure_hint(what: str, deployment: dict[str, Any], client: ApiClient) -> str:
    """Where to look next. `rtd build-logs` only helps when a build wrote something: a deployment that
    failed earlier (manifest, files, git clone) or a rollback (no build) has none to show."""
    name, version = deployment["job_name"], deployment["job_version"]
    phases = {phase.get("name") for phase in deployment.get("phases") or []}
    if what != "rollback" and phases & STARTUP_PHASES:
        # The image built; the job's own code or settings failed as it started. Its last log lines
        # are in the error (the failed containers are gone, so rtd logs has nothing to show).
        return (
            f"the image built, then {name} {version} failed as it started (its log's last lines are above): "
            f"fix the code or its settings and rtd submit again (rtd status {name} --version {version} "
            "shows what runs now)"
        )
    try:
        built = bool(client.deployment_logs(deployment["id"], 0)[0].strip())
    except RtdError:  # the hint is a courtesy: an unanswered question must not hide the error
        built = False
    if built:
        return f"rtd build-logs {name} --version {version} shows the whole build output"
    if what == "rollback":
        return f"rtd status {name} --version {version} shows what runs now; rtd deployments {name} lists its releases"
    if (deployment.get("error") or "").startswith("cannot fetch "):
        # Often a git.remote copied from an example, or one this daemon cannot reach: the files are
        # right here, and --local sends them instead (as Racetrack's --build-context local).
        return (
            "to build from this directory instead of cloning git.remote: rtd submit --local; else fix git.remote / "
            "git.branch (rtd validate shows them) and rtd submit again"
        )
    return (
        "it failed before any image was built (so rtd build-logs has nothing to show): "
        f"fix what the error names, check it with rtd validate, and rtd submit again (rtd status {name} "
        f"--version {version} shows what runs now)"
    )


@click.command()
@click.argument("name", shell_complete=complete_job_name)
@click.option("--version", "version", default="latest", show_default=True)
@click.option(
    "--to",
    "to",
    default=None,
    help="Deployment id, or an older VERSION whose running release to go back to "
    "(default: the release before; with only one release, the newest older version's).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the finished rollback as JSON.")
@click.pass_context
def rollback(ctx: click.Context, name: str, version: str, to: str | None, as_json: bool) -> None:
    """Run an earlier release of a job version again, from its image (no rebuild)."""
    client = client_for(ctx)
    progress = Progress(sys.stderr if as_json else None)
    to_version = to if to is not None and is_semver(to) else None  # deployment ids are hex, never x.y.z
    rollback_id = client.rollback(name, version, None if to_version else to, to_version)
    progress.step(f"rolling back {name} {version}")
    deployment = follow(client, rollback_id, progress, show_logs=False)
    if as_json:
        print_json(deployment)
    if deployment["status"] != "done":
        _fail("rollback", deployment, client)
    if not as_json:
        progress.step(
            f"{name} {deployment['job_version']} {_now_running(client, deployment)} (took {progress.elapsed:.1f} s)"
        )


def _now_running(client: ApiClient, rollback: dict[str, Any]) -> str:
    """What the version runs now: the release it went back to, naming its version when another's."""
    target_id = rollback["rollback_of"]
    try:
        target_version = client.deployment(target_id)["job_version"]
    except RtdError:  # a courtesy: the rollback itself is done
        target_version = rollback["job_version"]
    if target_version == rollback["job_version"]:
        return f"runs the release of deployment {target_id}"
    return f"runs the release of deployment {target_id}, from version {target_version}"


@click.command("build-logs")
@click.argument("name", shell_complete=complete_job_name)
@click.option("--version", "version", default="latest", show_default=True)
@click.option("--tail", default=0, show_default=True, help="Last N lines only (0: all).")
@click.option("-f", "--follow", "follow_build", is_flag=True, help="Keep printing while the build runs.")
@click.pass_context
def build_logs(ctx: click.Context, name: str, version: str, tail: int, follow_build: bool) -> None:
    """Print the build log of a job's latest deployment."""
    client = client_for(ctx)
    if not follow_build:
        click.echo(client.job_build_logs(name, version, tail), nl=False)
        return
    deployment_id = client.latest_deployment_id(name, version)
    offset = 0
    while True:
        deployment = client.deployment(deployment_id)
        logs, offset = client.deployment_logs(deployment_id, offset)
        click.echo(logs, nl=False)
        if deployment["status"] != "in_progress":
            return
        time.sleep(0.5)


@click.command()
@click.argument("name", required=False, shell_complete=complete_job_name)
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
@click.pass_context
def deployments(ctx: click.Context, name: str | None, limit: int, as_json: bool) -> None:
    """List recent deployments (of one job when NAME is given), newest first."""
    items = client_for(ctx).deployments(name, limit)
    if as_json:
        print_json(items)
        return
    if not items:
        click.echo("no deployments" + (f" of {name}" if name else ""))
        return
    rows: list[tuple[str, ...]] = [("ID", "JOB", "VERSION", "KIND", "STATUS", "WHEN", "BY", "TOOK")]
    for d in items:
        took = sum(p["duration"] or 0 for p in d.get("phases") or [])
        rows.append(
            (
                d["id"][:8],
                d["job_name"],
                d["job_version"],
                d.get("kind", "deploy"),
                d["status"],
                when(d["create_time"]),
                d.get("deployed_by") or "-",
                seconds(took),
            )
        )
    table(rows)
    for d in items:
        if d["status"] == "failed" and d.get("error"):
            click.echo(f"{d['id'][:8]}: {d['error'].splitlines()[0]}")


@click.command()
@click.argument("name", required=False, shell_complete=complete_job_name)
@click.option("--version", "version", default=None)
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the events as JSON.")
@click.pass_context
def audit(ctx: click.Context, name: str | None, version: str | None, limit: int, as_json: bool) -> None:
    """What happened to jobs, and who did it (newest first)."""
    events = client_for(ctx).audit(name, version, limit)
    if as_json:
        print_json(events)
        return
    for event in events:
        click.echo(f"{when(event['timestamp'])}  {event['explanation']}")


def _calls_perform(job: dict[str, Any]) -> bool:
    return (job.get("path_mode") or "wrapper") == "wrapper"


def _how_to_call(job: dict[str, Any], example: Any = None) -> str:
    """A first call to try: perform for a job keeping the wrapper contract (with the job's own example
    request when it has a short one, so that the suggestion answers), else its server's root page."""
    mode = job.get("path_mode") or "wrapper"
    if mode == "wrapper":
        data = json.dumps(example) if example is not None else "{}"
        if len(data) > MAX_EXAMPLE_CHARS:
            data = "{}"
        return f"call it: rtd call {job.get('name')} --version {job.get('version')} --data {shlex.quote(data)}"
    root = f"{job.get('pub_url')}/api/v1/" if mode == "forward" else f"{job.get('pub_url')}/"
    return f'open it: curl -H "X-Racetrack-Auth: $(rtd token)" {root}'
