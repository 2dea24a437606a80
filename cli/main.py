"""`rtd` commands. Each prints one clear line on failure and exits non-zero; never a traceback."""

from __future__ import annotations

import json
import posixpath
import sys
import time
from pathlib import Path
from typing import Any

import click
import yaml

from cli import __version__, access, plugins
from cli.client import ApiClient, ApiError
from cli.common import EXIT_API_ERROR, EXIT_DEPLOY_FAILED, EXIT_INVALID_MANIFEST, client_for, table
from cli.config import ClientConfig, normalize_remote
from cli.packing import pack
from cli.secrets import SecretFileError, read_secret_vars
from jobmanifest import Manifest, ManifestInvalid, validate_manifest
from jobmanifest.loading import apply_overrides, find_manifest, load_manifest_dict


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            click.secho(f" !  {exc.message}", fg="red", err=True)
            if exc.hint:
                click.echo(f"    hint: {exc.hint}", err=True)
            sys.exit(EXIT_API_ERROR)


@click.group(cls=_Group)
@click.option("--remote", envvar="RTD_REMOTE", help="racetrackd URL (default from config, else http://127.0.0.1:7102).")
@click.option("--token", envvar="RTD_TOKEN", help="Auth token (default: the one saved by `rtd login`).")
@click.version_option(__version__, prog_name="rtd")
@click.pass_context
def main(ctx: click.Context, remote: str | None, token: str | None) -> None:
    """rtd: deploy and call jobs on racetrackd."""
    ctx.obj = {"remote": remote, "token": token}


EXTRA_VARS_HELP = "Override a manifest field: KEY.PATH=VALUE (VALUE is YAML). Repeatable."


def _load_manifest(directory: Path, extra_vars: tuple[str, ...]) -> Manifest:
    """The manifest from stdin (when piped) or DIR/job.yaml, with its overlay and overrides applied."""
    try:
        if not sys.stdin.isatty() and (piped := sys.stdin.read()).strip():
            data = load_manifest_dict(piped, "<stdin>", directory)
        else:
            path = find_manifest(directory)
            data = load_manifest_dict(path.read_text(), str(path), path.parent)
        manifest = validate_manifest(apply_overrides(data, list(extra_vars)))
    except ManifestInvalid as exc:
        for error in exc.errors:
            click.secho(f" !  {error}", fg="red", err=True)
        sys.exit(EXIT_INVALID_MANIFEST)
    for warning in manifest.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    return manifest


@main.command()
@click.argument("directory", default=".", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-e", "--extra-vars", multiple=True, help=EXTRA_VARS_HELP)
def validate(directory: Path, extra_vars: tuple[str, ...]) -> None:
    """Check DIRECTORY's job.yaml (or one piped on stdin) and print it merged, or every error."""
    click.echo(_load_manifest(directory, extra_vars).yaml, nl=False)


@main.command()
@click.argument("directory", default=".", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Redeploy a name and version that already exists.")
@click.option("-e", "--extra-vars", multiple=True, help=EXTRA_VARS_HELP)
@click.option("-q", "--quiet", is_flag=True, help="Show phases only, not the build output.")
@click.option("--local", "force_local", is_flag=True,
              help="Upload DIRECTORY even when the manifest names a git.remote.")
@click.option("--no-cache", is_flag=True, help="Build every image layer anew.")
@click.option("--git-username", envvar="RTD_GIT_USERNAME", help="For a private git.remote (env RTD_GIT_USERNAME).")
@click.option("--git-password", envvar="RTD_GIT_PASSWORD",
              help="Password or access token for a private git.remote (env RTD_GIT_PASSWORD).")
@click.pass_context
def submit(ctx: click.Context, directory: Path, force: bool, extra_vars: tuple[str, ...], quiet: bool,
           force_local: bool, no_cache: bool, git_username: str | None, git_password: str | None) -> None:
    """Build and deploy the job in DIRECTORY (its job.yaml, or one piped on stdin, and its files).

    With a git.remote in the manifest the daemon clones it (branch, directory) instead, unless --local.
    """
    manifest = _load_manifest(directory, extra_vars)
    client = client_for(ctx)
    from_git = manifest.git is not None and not force_local
    source = f"{manifest.git.remote} (git)" if from_git and manifest.git else f"{directory} (upload)"
    click.echo(f"-----> submitting {manifest.name} {manifest.version} to {client.remote} from {source}")
    credentials = None
    if git_username or git_password:
        if not (git_username and git_password):
            raise click.UsageError("give both --git-username and --git-password")
        credentials = {"username": git_username, "password": git_password}
    try:
        secret_vars, secret_warnings = read_secret_vars(manifest, directory)
    except SecretFileError as exc:
        click.secho(f" !  {exc}", fg="red", err=True)
        sys.exit(EXIT_INVALID_MANIFEST)
    for warning in secret_warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    secret_files = _secret_files(manifest)
    deployment_id = client.deploy(manifest.raw, None if from_git else pack(directory, secret_files), force,
                                  git_credentials=credentials, no_cache=no_cache, secret_vars=secret_vars)
    deployment = _follow(client, deployment_id, show_logs=not quiet)
    for warning in (deployment.get("warnings") or "").splitlines():
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    if deployment["status"] != "done":
        click.secho(f" !  deployment failed: {deployment.get('error')}", fg="red", err=True)
        sys.exit(EXIT_DEPLOY_FAILED)
    job = deployment["job"] or {}
    click.secho(f"-----> {job.get('name')} {job.get('version')} is running", fg="green")
    click.echo(f"       {job.get('pub_url')}")
    click.echo(f"       call it: rtd call {job.get('name')} --version {job.get('version')} --data '{{}}'")


main.add_command(submit, name="deploy")


def _secret_files(manifest: Manifest) -> frozenset[str]:
    names = (manifest.secret_build_env_file, manifest.secret_runtime_env_file)
    return frozenset(posixpath.normpath(Path(name).as_posix()) for name in names if name)


def _follow(client: ApiClient, deployment_id: str, show_logs: bool) -> dict[str, Any]:
    """Poll the deployment, printing each new phase (and the build output), until it ends."""
    last_phase = None
    offset = 0
    delay = 0.1
    while True:
        deployment = client.deployment(deployment_id)
        if show_logs:
            logs, offset = client.deployment_logs(deployment_id, offset)
            for line in logs.splitlines():
                click.echo(f"       {line}")
        phase = deployment.get("phase")
        if phase and phase != last_phase:
            click.echo(f"-----> {phase}")
            last_phase = phase
        if deployment["status"] != "in_progress":
            return deployment
        time.sleep(delay)
        delay = min(delay * 1.2, 1.0)  # quick deploys finish in seconds: poll finely at first


@main.command()
@click.argument("name")
@click.option("--version", "version", default="latest", show_default=True)
@click.option("--tail", default=20, show_default=True, help="Last N lines (0: all).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until interrupted.")
@click.pass_context
def logs(ctx: click.Context, name: str, version: str, tail: int, follow: bool) -> None:
    """Print a job's own output (its container's log)."""
    client = client_for(ctx)
    if not follow:
        click.echo(client.job_logs(name, version, tail), nl=False)
        return
    try:
        for chunk in client.follow_job_logs(name, version, tail):
            click.echo(chunk.decode("utf-8", errors="replace"), nl=False)
    except KeyboardInterrupt:
        pass


@main.command("build-logs")
@click.argument("name")
@click.option("--version", "version", default="latest", show_default=True)
@click.option("--tail", default=0, show_default=True, help="Last N lines only (0: all).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing while the build runs.")
@click.pass_context
def build_logs(ctx: click.Context, name: str, version: str, tail: int, follow: bool) -> None:
    """Print the build log of a job's latest deployment."""
    client = client_for(ctx)
    if not follow:
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


@main.command()
@click.argument("name")
@click.option("--version", "version", default="latest", show_default=True)
@click.option("--to", "deployment_id", default=None, help="Deployment id to go back to (default: the release before).")
@click.pass_context
def rollback(ctx: click.Context, name: str, version: str, deployment_id: str | None) -> None:
    """Run an earlier release of a job version again, from its image (no rebuild)."""
    client = client_for(ctx)
    rollback_id = client.rollback(name, version, deployment_id)
    click.echo(f"-----> rolling back {name} {version}")
    deployment = _follow(client, rollback_id, show_logs=False)
    if deployment["status"] != "done":
        click.secho(f" !  rollback failed: {deployment.get('error')}", fg="red", err=True)
        sys.exit(EXIT_DEPLOY_FAILED)
    click.secho(f"-----> {name} {deployment['job_version']} runs the release of deployment "
                f"{deployment['rollback_of']}", fg="green")


@main.command()
@click.argument("name", required=False)
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
@click.pass_context
def deployments(ctx: click.Context, name: str | None, limit: int, as_json: bool) -> None:
    """List recent deployments (of one job when NAME is given), newest first."""
    items = client_for(ctx).deployments(name, limit)
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    rows = [("ID", "JOB", "VERSION", "KIND", "STATUS", "WHEN", "BY", "SECONDS")]
    for d in items:
        seconds = sum(p["duration"] or 0 for p in d.get("phases") or [])
        rows.append((d["id"][:8], d["job_name"], d["job_version"], d.get("kind", "deploy"), d["status"],
                     time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d["create_time"])),
                     d.get("deployed_by") or "-", f"{seconds:.1f}"))
    table(rows)
    for d in items:
        if d["status"] == "failed" and d.get("error"):
            click.echo(f"{d['id'][:8]}: {d['error'].splitlines()[0]}")


@main.command()
@click.argument("name", required=False)
@click.option("--version", "version", default=None)
@click.option("--limit", default=50, show_default=True)
@click.pass_context
def audit(ctx: click.Context, name: str | None, version: str | None, limit: int) -> None:
    """What happened to jobs, and who did it (newest first)."""
    for event in client_for(ctx).audit(name, version, limit):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event["timestamp"]))
        click.echo(f"{when}  {event['explanation']}")


@main.command()
@click.argument("name", required=False)
@click.option("--state", type=click.Choice(["queued", "running", "completed", "failed"]), default=None,
              help="Only tasks in this state.")
@click.option("--retry", "retry_id", metavar="TASK_ID", default=None, help="Queue a failed task again.")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the tasks as JSON.")
@click.pass_context
def tasks(ctx: click.Context, name: str | None, state: str | None, retry_id: str | None, limit: int,
          as_json: bool) -> None:
    """Async calls (newest first): their state, attempts and errors; --retry queues a failed one again."""
    client = client_for(ctx)
    if retry_id:
        task = client.retry_task(retry_id)
        click.echo(f"queued async task {task['task_id']} again ({task['job_name']} {task['job_version']})")
        return
    found = client.tasks(state, name, limit)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        click.echo("no async tasks")
        return
    rows = [("TASK", "JOB", "STATE", "ATTEMPTS", "CREATED", "ERROR")]
    for task in found:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(task["created_at"]))
        rows.append((task["task_id"], f"{task['job_name']} {task['job_version']}", task["state"],
                     str(task["attempts"]), created, (task["error"] or "").splitlines()[0][:80] if task["error"] else ""))
    table(rows)


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
@click.pass_context
def list_jobs(ctx: click.Context, as_json: bool) -> None:
    """List deployed jobs."""
    jobs = client_for(ctx).jobs()
    if as_json:
        click.echo(json.dumps(jobs, indent=2))
        return
    rows = [("NAME", "VERSION", "STATUS", "URL")]
    rows += [(j["name"], j["version"], j["status"], j["pub_url"]) for j in jobs]
    table(rows)


@main.command()
@click.argument("name")
@click.option("--version", "version", default="latest", show_default=True)
@click.option("--endpoint", default="/api/v1/perform", show_default=True)
@click.option("--data", default="{}", show_default=True, help="JSON (or YAML) payload.")
@click.option("--method", default="POST", show_default=True, type=click.Choice(["GET", "POST", "PUT", "DELETE"]))
@click.option("--async", "as_task", is_flag=True,
              help="Run it as an async call (kept by the daemon, retried if the job is unreachable) and wait.")
@click.pass_context
def call(ctx: click.Context, name: str, version: str, endpoint: str, data: str, method: str, as_task: bool) -> None:
    """Call a job's endpoint through the gateway and print the response."""
    try:
        payload = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise click.BadParameter(f"not valid JSON or YAML: {exc}", param_hint="--data") from exc
    client = client_for(ctx)
    if as_task:
        task_id = client.call_async(name, version, endpoint, payload, method)
        click.echo(f"-----> async task {task_id}", err=True)
        response = client.poll_task(task_id)
        while response.status_code == 202:
            response = client.poll_task(task_id)
    else:
        response = client.call(name, version, endpoint, payload, method)
    if response.status_code >= 400:
        click.secho(f" !  {response.status_code}: {response.text.strip()}", fg="red", err=True)
        sys.exit(EXIT_API_ERROR)
    click.echo(response.text.rstrip())


@main.command()
@click.argument("name")
@click.option("--version", "version", required=True, help="Exact version to delete.")
@click.pass_context
def delete(ctx: click.Context, name: str, version: str) -> None:
    """Delete a job version: its container stops and it leaves the registry."""
    client_for(ctx).delete_job(name, version)
    click.echo(f"deleted {name} {version}")


@main.command()
@click.pass_context
def remote(ctx: click.Context) -> None:
    """Print the remote rtd talks to."""
    config = ClientConfig.load()
    url, token = config.resolve(ctx.obj.get("remote"), ctx.obj.get("token"))
    click.echo(f"{normalize_remote(url)} ({'logged in' if token else 'no token'})")


access.register(main)
plugins.register(main)
