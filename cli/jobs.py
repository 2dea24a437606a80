"""rtd commands about deployed jobs: list, status, logs, call (and its curl), delete, async tasks."""

from __future__ import annotations

import difflib
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import click
import yaml
from click.core import ParameterSource

from cli.client import ApiClient, ApiError
from cli.common import client_for, complete_job_name
from cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_NOT_FOUND, RtdError, exit_code_for_status
from cli.output import print_json, seconds, table, when

DEFAULT_ENDPOINT = "/api/v1/perform"

# `rtd list -c NAME`: Racetrack's extra columns, and how each is read from a job.
COLUMNS: dict[str, tuple[str, Any]] = {
    "job_type": ("JOB TYPE", lambda j: j.get("job_type_version") or (j.get("manifest") or {}).get("jobtype") or "-"),
    "infrastructure": ("INFRASTRUCTURE", lambda j: j.get("infrastructure_target") or "-"),
    "deployed_by": ("DEPLOYED BY", lambda j: j.get("deployed_by") or "-"),
    "updated_at": ("UPDATED", lambda j: when(j.get("update_time"))),
    "last_call_at": ("LAST CALL", lambda j: when(j.get("last_call_time"))),
    "replicas": ("REPLICAS", lambda j: j.get("replicas", "-")),
    "pub_url": ("URL", lambda j: j.get("pub_url") or "-"),
}


def register(main: click.Group) -> None:
    for command in (list_jobs, status, logs, call, delete, tasks, nodes):
        main.add_command(command)


@click.command("list")
@click.option(
    "-c",
    "--column",
    "columns",
    multiple=True,
    type=click.Choice([*COLUMNS, "all"]),
    help="Add a column (repeatable; all: every one). Always shown: NAME VERSION STATUS.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
@click.pass_context
def list_jobs(ctx: click.Context, columns: tuple[str, ...], as_json: bool) -> None:
    """List deployed jobs you may read."""
    jobs = client_for(ctx).jobs()
    if as_json:
        print_json(jobs)
        return
    if not jobs:
        click.echo("no jobs (rtd submit DIR deploys one)")
        return
    chosen = list(COLUMNS) if "all" in columns else list(dict.fromkeys(columns))
    rows: list[tuple[object, ...]] = [("NAME", "VERSION", "STATUS", *(COLUMNS[c][0] for c in chosen))]
    for job in sorted(jobs, key=lambda j: (j["name"], j["version"])):
        rows.append((job["name"], job["version"], job["status"], *(COLUMNS[c][1](job) for c in chosen)))
    table(rows)


@click.command()
@click.argument("name", shell_complete=complete_job_name)
@click.option("--version", "version", default="latest", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the job and its last deployment as JSON.")
@click.pass_context
def status(ctx: click.Context, name: str, version: str, as_json: bool) -> None:
    """A job's state at a glance: status, last error, crashes, replicas, URL, last deployment and its phases."""
    client = client_for(ctx)
    try:
        job = client.job(name, version)
    except ApiError as exc:
        if exc.status == 404:
            _explain_missing(client, name, version, exc)
        raise
    deployment = _latest_deployment(client, job["name"], job["version"])
    if as_json:
        print_json({"job": job, "last_deployment": deployment})
        return
    stats = job.get("infrastructure_stats") or {}
    ready = len(job.get("replica_internal_names") or [])
    fields = [
        ("status", job["status"]),
        # Where the job's server answers (under /api/v1/ for a forward-mode job); older daemons: pub_url
        ("url", job.get("serving_url") or job["pub_url"]),
        ("replicas", f"{job.get('replicas', 1)} ({ready} ready)"),
        ("crashes", stats.get("crash_count", 0)),
        ("last error", (job.get("error") or "-").strip()),
        ("deployed by", f"{job.get('deployed_by') or '-'} at {when(job.get('update_time'))}"),
        ("last call", when(job.get("last_call_time"))),
        ("image", job.get("image_tag") or "-"),
    ]
    source = job.get("source_image")
    if source:  # a docker-image job: the image it names, and the exact one its release runs
        fields.append(("source image", source["reference"]))
        fields.append(("pinned", source.get("digest") or f"{source['image_id']} (no registry digest)"))
    if job.get("idle_timeout"):
        fields.insert(3, ("idle timeout", f"{job['idle_timeout']} s"))
    click.echo(f"{job['name']} {job['version']}")
    for label, value in fields:
        click.echo(f"  {label + ':':<13} {value}")
    _print_replicas(job.get("replica_details") or [], job.get("orchestrator") == "swarm")
    if deployment is None:
        return
    click.echo(
        f"last deployment {deployment['id'][:8]} ({deployment.get('kind', 'deploy')}, {deployment['status']}) "
        f"by {deployment.get('deployed_by') or '-'} at {when(deployment['create_time'])}"
    )
    phases = deployment.get("phases") or []
    for phase in phases:
        click.echo(
            f"  {phase['name']:<30} {seconds(phase['duration']) if phase['duration'] is not None else 'running'}"
        )
    if phases:
        click.echo(f"  {'total':<30} {seconds(sum(p['duration'] or 0 for p in phases))}")
    if deployment["status"] == "failed" and deployment.get("error"):
        click.echo(f"  error: {deployment['error'].splitlines()[0]}")


def _print_replicas(replicas: list[dict[str, Any]], swarm: bool) -> None:
    """One line per replica; in swarm mode with the node it runs on (and Swarm's reason when it does not)."""
    if not swarm or not replicas:
        return
    click.echo("  replicas on nodes:")
    for replica in replicas:
        where = replica.get("node") or "no node"
        line = f"    {replica['name']:<40} {where:<20} {replica['state']}"
        if replica.get("error"):
            line += f" ({replica['error']})"
        click.echo(line)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the nodes as JSON.")
@click.pass_context
def nodes(ctx: click.Context, as_json: bool) -> None:
    """The nodes jobs run on (swarm mode: the swarm's; docker mode: this engine) and the replicas on each."""
    found = client_for(ctx).nodes()
    if as_json:
        print_json(found)
        return
    if found.get("orchestrator") != "swarm":
        click.echo("racetrackd runs jobs on one Docker engine (RACETRACK_ORCHESTRATOR=docker): no swarm nodes")
    rows: list[tuple[object, ...]] = [("HOSTNAME", "ROLE", "STATE", "AVAILABILITY", "ADDRESS", "TASKS")]
    for node in found.get("nodes") or []:
        tasks = ", ".join(sorted(f"{t['job_name']} {t['job_version']}" for t in node.get("tasks") or [])) or "-"
        role = node["role"] + (" (leader)" if node.get("leader") else "")
        rows.append((node["hostname"], role, node["state"], node["availability"], node["address"], tasks))
    table(rows)


def _latest_deployment(client: ApiClient, name: str, version: str) -> dict[str, Any] | None:
    return next((d for d in client.deployments(name, 100) if d["job_version"] == version), None)


def _explain_missing(client: ApiClient, name: str, version: str, exc: ApiError) -> None:
    """A job that is not there may have failed its deployment: say so instead of only 'not found'."""
    try:
        tried = [d for d in client.deployments(name, 20) if version in ("latest", d["job_version"])]
    except ApiError:
        return
    if tried and tried[0]["status"] == "failed":
        last = tried[0]
        reason = (last.get("error") or "no error recorded").splitlines()[0]
        raise RtdError(
            f"{name} {last['job_version']} is not deployed: deployment {last['id'][:8]} failed: {reason}",
            hint=f"rtd build-logs {name} --version {last['job_version']}; fix it and rtd submit again",
            exit_code=EXIT_NOT_FOUND,
        ) from exc
    if tried and tried[0]["status"] == "in_progress":
        raise RtdError(
            f"{name} {tried[0]['job_version']} is still being deployed ({tried[0].get('phase')})",
            hint=f"rtd build-logs {name} --version {tried[0]['job_version']} -f",
            exit_code=EXIT_NOT_FOUND,
        ) from exc
    if not tried:
        raise RtdError(
            exc.message,
            hint=did_you_mean(client, name) or exc.hint or "rtd list shows the jobs you may read",
            exit_code=EXIT_NOT_FOUND,
        ) from exc


def did_you_mean(client: ApiClient, name: str) -> str | None:
    """`did you mean adder?` for a job name that is close to one the caller may read; None when none is
    (or the list cannot be had: the hint is a courtesy)."""
    try:
        names = sorted({str(job["name"]) for job in client.jobs()})
    except RtdError:
        return None
    close = difflib.get_close_matches(name, [n for n in names if n != name], n=3, cutoff=0.6)
    return f"did you mean {' or '.join(close)}? (rtd list shows the jobs you may read)" if close else None


@click.command()
@click.argument("name", shell_complete=complete_job_name)
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
    except KeyboardInterrupt:  # the usual way to stop following: no error line, but the shell's code for Ctrl-C
        click.echo("", err=True)
        sys.exit(EXIT_INTERRUPTED)


@click.command()
@click.argument("name", shell_complete=complete_job_name)
@click.argument("endpoint_arg", metavar="[ENDPOINT]", required=False)
@click.argument("payload_arg", metavar="[PAYLOAD]", required=False)
@click.option("--version", "version", default="latest", show_default=True)
@click.option("--endpoint", default=None, help=f"The job's path (default {DEFAULT_ENDPOINT}); or give ENDPOINT.")
@click.option(
    "--data",
    default=None,
    help="JSON (or YAML) payload (default {}), @FILE to read it from FILE, @- from stdin; or give PAYLOAD.",
)
@click.option("--method", default="POST", show_default=True, type=click.Choice(["GET", "POST", "PUT", "DELETE"]))
@click.option(
    "--async",
    "as_task",
    is_flag=True,
    help="Run it as an async call (kept by the daemon, retried if the job is unreachable) and wait.",
)
@click.option("--curl", "as_curl", is_flag=True, help="Print the equivalent curl command instead of calling.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the answer as indented JSON, for scripts and jq (exit 1 when the job answers something else).",
)
@click.option("--show-token", is_flag=True, help="With --curl: write the token itself, not $(rtd token).")
@click.pass_context
def call(
    ctx: click.Context,
    name: str,
    endpoint_arg: str | None,
    payload_arg: str | None,
    version: str,
    endpoint: str | None,
    data: str | None,
    method: str,
    as_task: bool,
    as_curl: bool,
    as_json: bool,
    show_token: bool,
) -> None:
    """Call a job's endpoint through the gateway and print the response.

    \b
    rtd call adder /api/v1/perform '{"a": 40, "b": 2}'
    rtd call adder --data 'a: 40
    b: 2'
    """
    if endpoint_arg is not None and endpoint is not None:
        raise click.UsageError("give the endpoint once: as ENDPOINT or --endpoint")
    if payload_arg is not None and data is not None:
        raise click.UsageError("give the payload once: as PAYLOAD or --data")
    endpoint = "/" + (endpoint_arg or endpoint or DEFAULT_ENDPOINT).lstrip("/")
    payload = _parse_payload(
        payload_arg if payload_arg is not None else data, "PAYLOAD" if payload_arg is not None else "--data"
    )
    client = client_for(ctx)
    if as_curl:
        click.echo(curl_command(ctx, client, name, version, endpoint, payload, method, show_token))
        return
    if as_task:
        task_id = client.call_async(name, version, endpoint, payload, method)
        click.echo(f"-----> async task {task_id}", err=True)
        response = client.poll_task(task_id)
        while response.status_code == 202:
            response = client.poll_task(task_id)
    else:
        response = client.call(name, version, endpoint, payload, method)
    if response.status_code >= 400:
        message = response.text.strip()
        try:
            message = str(response.json().get("error") or message)
        except (ValueError, AttributeError):
            pass
        hint = did_you_mean(client, name) if response.status_code == 404 else None
        raise RtdError(
            f"{name} {version} {endpoint} answered {response.status_code}: {message}",
            hint=hint,
            exit_code=exit_code_for_status(response.status_code),
        )
    if as_json:
        try:
            body = response.json()
        except ValueError:
            raise RtdError(
                f"{name} {version} {endpoint} answered {response.status_code} with something that is not JSON "
                f"({response.headers.get('Content-Type') or 'no Content-Type'})",
                hint="call it without --json to see the answer as it is",
                exit_code=EXIT_ERROR,
            ) from None
        print_json(body)
        return
    click.echo(response.text.rstrip())


def _parse_payload(text: str | None, where: str) -> Any:
    """The payload as JSON or YAML; `@FILE` reads it from FILE and `@-` from stdin, as curl does. A bad
    one is told in plain words, with where it went wrong, not in the YAML parser's terms ('while
    parsing a flow mapping ...'): most people meant JSON."""
    if text is None:
        return {}
    if text.startswith("@"):
        text = _read_payload_file(text[1:], where)
    try:
        # JSON first: the YAML parser, pure Python, takes seconds over a payload of a few MiB.
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise click.BadParameter(_where_it_breaks(text), param_hint=where) from exc


def _read_payload_file(path: str, where: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise click.BadParameter(f"cannot read {path}: {reason}", param_hint=where) from exc


def _where_it_breaks(text: str) -> str:
    """`not valid JSON or YAML: expected a comma (or the closing bracket) after '{"a": 1' at line 1, column 9`
    for what looks like JSON; for what looks like YAML, the line and column of the problem."""
    if not text.lstrip().startswith(("{", "[")):
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or "cannot be read"
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            return f"not valid JSON or YAML: {problem}{where}"
        return "not valid JSON or YAML"
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        before = text[max(0, exc.pos - 12) : exc.pos].splitlines()[-1:] or [""]
        reason = {
            "Expecting ',' delimiter": "expected a comma (or the closing bracket)",
            "Expecting ':' delimiter": "expected a colon after the key",
            "Expecting property name enclosed in double quotes": 'expected a key in double quotes (like "a")',
            "Expecting value": "expected a value",
            "Extra data": "unexpected text after the end",
            "Unterminated string starting at": "a string is not closed with a double quote",
        }.get(exc.msg, exc.msg.lower())
        after = f" after {before[0].strip()!r}" if before[0].strip() else ""
        return f"not valid JSON or YAML: {reason}{after} at line {exc.lineno}, column {exc.colno}"
    return "not valid JSON or YAML"  # valid JSON is valid YAML: not reached, but never a traceback


def curl_command(
    ctx: click.Context,
    client: ApiClient,
    name: str,
    version: str,
    endpoint: str,
    payload: Any,
    method: str,
    show_token: bool,
) -> str:
    """The curl command doing the same call. The token is `$(rtd token)`, so it stays out of shell history
    and screenshots, unless `show_token`."""
    root = ctx.find_root()
    url = f"{client.remote}/pub/job/{name}/{version}{endpoint}"
    parts = ["curl", "-sS", "-X", method, shlex.quote(url)]
    token = client.token
    if token:
        if show_token:
            parts += ["-H", shlex.quote(f"X-Racetrack-Auth: {token}")]
        elif root.get_parameter_source("token") == ParameterSource.COMMANDLINE:
            parts += ["-H", '"X-Racetrack-Auth: $RTD_TOKEN"']  # the token given with --token: rtd token cannot know it
        else:
            remote_flag = ""
            if root.get_parameter_source("remote") == ParameterSource.COMMANDLINE:
                remote_flag = f"--remote {shlex.quote(str(root.params['remote']))} "
            parts += ["-H", f'"X-Racetrack-Auth: $(rtd {remote_flag}token)"']
    if method != "GET":
        parts += ["-H", shlex.quote("Content-Type: application/json"), "-d", shlex.quote(json.dumps(payload))]
    return " ".join(parts)


@click.command()
@click.argument("name", shell_complete=complete_job_name)
@click.option("--version", "version", required=True, help="Exact version to delete.")
@click.pass_context
def delete(ctx: click.Context, name: str, version: str) -> None:
    """Delete a job version: its container stops and it leaves the registry."""
    client_for(ctx).delete_job(name, version)
    click.echo(f"deleted {name} {version}")


@click.command()
@click.argument("name", required=False, shell_complete=complete_job_name)
@click.option(
    "--state",
    type=click.Choice(["queued", "running", "completed", "failed"]),
    default=None,
    help="Only tasks in this state.",
)
@click.option("--retry", "retry_id", metavar="TASK_ID", default=None, help="Queue a failed task again.")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the tasks as JSON.")
@click.pass_context
def tasks(
    ctx: click.Context, name: str | None, state: str | None, retry_id: str | None, limit: int, as_json: bool
) -> None:
    """Async calls (newest first): their state, attempts and errors; --retry queues a failed one again."""
    client = client_for(ctx)
    if retry_id:
        task = client.retry_task(retry_id)
        if as_json:
            print_json(task)
            return
        click.echo(f"queued async task {task['task_id']} again ({task['job_name']} {task['job_version']})")
        return
    found = client.tasks(state, name, limit)
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo("no async tasks")
        return
    rows = [("TASK", "JOB", "STATE", "ATTEMPTS", "CREATED", "ERROR")]
    for task in found:
        rows.append(
            (
                task["task_id"],
                f"{task['job_name']} {task['job_version']}",
                task["state"],
                str(task["attempts"]),
                when(task["created_at"]),
                (task["error"] or "").splitlines()[0][:80] if task["error"] else "",
            )
        )
    table(rows)
