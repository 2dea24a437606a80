"""The dashboard's pages: thin handlers that read through the service modules and render templates."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import yaml
from flask import Blueprint, g, redirect, render_template, request, url_for
from werkzeug.datastructures import FileStorage
from werkzeug.wrappers import Response

from builders.context import ContextLimits, archive_as_tar_gz
from racetrackd import __version__, audit, maintenance, metrics, naming, resources
from racetrackd.api import caller, clear_login_cookie, require, services, set_login_cookie
from racetrackd.auth import access
from racetrackd.auth import login as logins  # `login` is the page (dashboard.login)
from racetrackd.auth.accounts import ADMIN_USERNAME
from racetrackd.dashboard import present
from racetrackd.dashboard.session import CSRF_FIELD, check_same_origin, open_session, safe_next, session_csrf_token
from racetrackd.db import Deployment, Esc, Job, User
from racetrackd.deploy import releases
from racetrackd.deploy import requests as deployments
from racetrackd.deploy.requests import DeployRequest
from racetrackd.errors import ManifestError, RacetrackError, UnauthorizedError, ValidationError
from racetrackd.jobs import queries as jobs
from racetrackd.manifest import accept_manifest
from racetrackd.serving import Serving, served_root
from racetrackd.settings import Settings

STATIC_DIR = resources.dashboard_static_dir()

bp = Blueprint(
    "dashboard",
    __name__,
    template_folder=str(resources.templates_dir()),
    static_folder=str(STATIC_DIR),
    static_url_path="/static",
)

OPEN_ENDPOINTS = {"dashboard.login", "dashboard.static"}
LIVE_PAGE_SIZE = 200


@bp.before_request
def _authenticate() -> Response | None:
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    try:
        open_session()
    except UnauthorizedError:
        return clear_login_cookie(redirect(url_for("dashboard.login", next=request.full_path.rstrip("?"))))
    return None


@bp.errorhandler(RacetrackError)
def _error_page(error: RacetrackError) -> tuple[str, int]:
    return render_template("dashboard/error.html", title=f"Error {error.status_code}", error=error), error.status_code


@bp.context_processor
def _page_context() -> dict[str, Any]:
    identity = g.get("identity")
    return {
        "identity": identity,
        "is_admin": identity is not None and identity.allows(access.FULL_ACCESS),
        "csrf_field": CSRF_FIELD,
        "csrf_token": session_csrf_token() if identity is not None else "",
        "asset": _asset_url,
        "daemon_version": __version__,
        "tone": lambda status: present.STATUS_TONES.get(status or "", "neutral"),
        "ago": present.ago,
        "when": present.when,
        "seconds": present.seconds,
        "phase_of": present.phase_of,
        "answer_tone": present.answer_tone,
        "public_url": services().settings.public_url,
        "now": time.time(),
        "maintenance": maintenance.current() if identity is not None else None,
        "maintenance_blocks_calls": services().settings.maintenance_blocks_calls,
    }


# ---- login, logout, profile
@bp.get("/")
def home() -> Response:
    return redirect(url_for("dashboard.job_list"))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int] | str:
    target = safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("dashboard/login.html", title="Log in", next=target, error=None, username="")
    check_same_origin()
    username = request.form.get("username", "").strip()
    try:
        token = request.form.get("token", "").strip()
        if token:
            services().authenticator.identify(token, request.remote_addr or "", "dashboard")
        else:
            svc = services()
            _, token = logins.password_login(
                svc.accounts,
                svc.authenticator.limiter,
                username,
                request.form.get("password", ""),
                request.remote_addr or "",
                svc.settings.login_token_ttl,
            )
    except RacetrackError as exc:
        return render_template(
            "dashboard/login.html", title="Log in", next=target, error=exc.message, username=username
        ), exc.status_code
    return set_login_cookie(redirect(target, code=303), token)


@bp.post("/logout")
def logout() -> Response:
    logins.end_login(services().accounts, caller())
    return clear_login_cookie(redirect(url_for("dashboard.login"), code=303))


@bp.get("/profile")
def profile() -> str:
    identity = caller()
    svc = services()
    return render_template(
        "dashboard/profile.html",
        title="Profile",
        tokens=svc.accounts.tokens_of(identity.kind, identity.name),
        grants=svc.accounts.grants(identity.kind, identity.name),
    )


# ---- jobs
@bp.get("/jobs")
def job_list() -> str:
    identity = caller()
    rows = present.job_rows(job for job in jobs.list_jobs() if identity.allows(access.READ_JOB, job.name, job.version))
    filters = {key: request.args.get(key, "").strip() for key in present.JOB_FILTERS}
    shown = present.filter_rows(rows, filters)
    template = "dashboard/_job_families.html" if request.args.get("partial") else "dashboard/jobs.html"
    return render_template(
        template,
        title="Jobs",
        families=present.families(shown),
        filters=filters,
        total=len(rows),
        shown=len(shown),
        statuses=sorted({row.job.status for row in rows}),
        jobtypes=sorted({row.job.job_type_version for row in rows}),
    )


@bp.get("/jobs/<name>/<version>")
def job_page(name: str, version: str) -> str:
    job = jobs.resolve_job(name, version)
    identity = require(access.READ_JOB, job.name, job.version, doing="read")
    versions = [
        row
        for row in present.job_rows(Job.family(job.name))
        if identity.allows(access.READ_JOB, row.job.name, row.job.version)
    ]
    history = deployments.recent_deployments(10, job.name)
    calls = metrics.job_calls(job.name, job.version)
    bars = present.latency_bars(calls)
    row = present.job_rows([job])[0]
    serving = Serving.from_json(job.serving)
    return render_template(
        "dashboard/job.html",
        title=f"{job.name} {job.version}",
        job=job,
        row=row,
        manifest=row.manifest,
        versions=sorted(versions, key=lambda r: r.job.create_time, reverse=True),
        history=[d for d in history if d.job_version == job.version],
        current=releases.current_release(job),
        calls=calls,
        bars=bars,
        bar_width=present.bar_width(bars),
        chart_width=present.CHART_WIDTH,
        chart_height=present.CHART_HEIGHT,
        pub_path=naming.pub_path(job.name, job.version),
        # Where the job's own `/` answers: Open, the URL shown, and the Call form's first endpoint
        served_root=served_root(serving.path_mode),
        wrapper=serving.wrapper,
        may_call=identity.allows(access.CALL_JOB, job.name, job.version),
        may_deploy=identity.allows(access.DEPLOY_JOB, job.name, job.version),
        may_delete=identity.allows(access.DELETE_JOB, job.name, job.version),
        placement=_replicas_on_nodes(job),
    )


def _replicas_on_nodes(job: Job) -> list[dict[str, Any]]:
    """swarm mode: where each replica runs; the page still renders when the swarm does not answer."""
    orchestrator = services().orchestrator
    if orchestrator.kind != "swarm":
        return []
    try:
        return jobs.replica_details(orchestrator, job)
    except RacetrackError as exc:
        return [{"name": "?", "node": None, "state": "unknown", "error": exc.message}]


# ---- deploy from the browser
@bp.get("/deploy")
def deploy_form() -> str:
    return _deploy_page("", None)


@bp.post("/deploy")
def deploy() -> Response | tuple[str, int]:
    manifest_text = _uploaded_text(request.files.get("manifest_file")) or request.form.get("manifest", "")
    try:
        svc = services()
        deploy_request = _deploy_form(manifest_text, request.files.get("build_context"), svc.settings)
        deployment = deployments.request_deployment(svc.settings, svc.plugins, svc.vault, deploy_request)
    except RacetrackError as exc:
        return _deploy_page(manifest_text, exc), exc.status_code
    return redirect(url_for("dashboard.deployment_page", deployment_id=deployment.id), code=303)


def _deploy_form(manifest_text: str, upload: FileStorage | None, settings: Settings) -> DeployRequest:
    """The deploy form as a DeployRequest: the uploaded archive (tar, tar.gz or zip) goes in as it is,
    a zip repacked as tar.gz within the build-context limits."""
    manifest = accept_manifest(_manifest_mapping(manifest_text), settings)
    archive = None
    if upload is not None and upload.filename:
        limits = ContextLimits(int(settings.max_context_size), settings.max_context_entries, settings.max_context_ratio)
        archive = archive_as_tar_gz(upload.read(), limits=limits)
    return DeployRequest(
        manifest=manifest, requester=caller(), archive=archive, force=request.form.get("force") == "on"
    )


def _deploy_page(manifest_text: str, error: RacetrackError | None) -> str:
    field_errors = error.errors if isinstance(error, ManifestError) else []
    return render_template(
        "dashboard/deploy.html",
        title="Deploy a job",
        manifest_text=manifest_text,
        error=error,
        field_errors=field_errors,
    )


def _uploaded_text(upload: FileStorage | None) -> str:
    if upload is None or not upload.filename:
        return ""
    try:
        return upload.read().decode()
    except UnicodeDecodeError:
        raise ValidationError("manifest_file: not a UTF-8 text file") from None


def _manifest_mapping(text: str) -> Any:
    if not text.strip():
        raise ValidationError("manifest: paste the job's job.yaml or choose the file")
    try:
        manifest = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError(f"manifest: not valid YAML: {exc}") from None
    if not isinstance(manifest, dict):
        raise ValidationError("manifest: must be a YAML mapping (name, owner_email, jobtype, ...)")
    return manifest


# ---- deployments and activity
@bp.get("/deployments")
def deployment_list() -> str:
    identity = caller()
    job_name = request.args.get("job_name", "").strip()
    recent = deployments.recent_deployments(LIVE_PAGE_SIZE, job_name or None)
    return render_template(
        "dashboard/deployments.html",
        title="Deployments",
        job_name=job_name,
        deployments=[d for d in recent if identity.allows(access.READ_JOB, d.job_name, d.job_version)],
    )


@bp.get("/deployments/<deployment_id>")
def deployment_page(deployment_id: str) -> str:
    deployment = deployments.get_deployment(deployment_id)
    require(access.READ_JOB, deployment.job_name, deployment.job_version, doing="read")
    build_log, log_offset = deployment.build_logs_since(0)  # the page's script follows on from log_offset
    return render_template(
        "dashboard/deployment.html",
        title=f"Deployment of {deployment.job_name} {deployment.job_version}",
        deployment=deployment,
        phases=deployment.phase_timeline(),
        duration=_duration(deployment),
        build_log=build_log,
        log_offset=log_offset,
    )


def _duration(deployment: Deployment) -> float | None:
    if deployment.status == "in_progress":
        return None
    return float(deployment.update_time - deployment.create_time)


@bp.get("/activity")
def activity() -> str:
    identity = caller()
    filters = {key: request.args.get(key, "").strip() for key in ("job_name", "job_version", "event_type", "executor")}
    events = audit.activity(
        filters["job_name"] or None,
        filters["job_version"] or None,
        LIVE_PAGE_SIZE,
        event_type=filters["event_type"] or None,
        executor=filters["executor"] or None,
    )
    shown = [event for event in events if identity.allows(access.READ_JOB, event.job_name, event.job_version)]
    return render_template(
        "dashboard/activity.html",
        title="Activity",
        filters=filters,
        events=shown,
        explain=audit.explain,
        event_types=audit.EVENT_TYPES,
    )


# ---- administration
@bp.get("/admin")
def admin() -> str:
    require(access.FULL_ACCESS, doing="administer racetrackd")
    svc = services()
    running: dict[str, int] = {}
    for job in jobs.list_jobs():
        running[job.job_type_version] = running.get(job.job_type_version, 0) + 1
    return render_template(
        "dashboard/admin.html",
        title="Administration",
        users=list(User.select().order_by(User.username)),
        escs=list(Esc.select().order_by(Esc.name)),
        tokens=svc.accounts.tokens_of(),
        grants=svc.accounts.grants(),
        deleted=present.DeletedJobs.now(),
        public_endpoints=svc.accounts.public_endpoints(),
        job_types=svc.plugins.job_types(),
        plugins=svc.plugins.plugins(),
        jobs_by_type=running,
        scopes=access.SCOPES,
        bootstrap_admin=ADMIN_USERNAME,
    )


# ---- assets
_ASSET_VERSIONS: dict[str, str] = {}


def _asset_url(name: str) -> str:
    """The static file's URL with a digest of its content, so browsers may cache it for long."""
    version = _ASSET_VERSIONS.get(name)
    if version is None:
        version = _ASSET_VERSIONS[name] = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]
    return url_for("dashboard.static", filename=name, v=version)


@bp.after_request
def _headers(response: Response) -> Response:
    if request.endpoint == "dashboard.static":
        response.cache_control.public = True
        response.cache_control.max_age = 86400 * 30 if request.args.get("v") else 300
    else:
        response.cache_control.no_store = True  # pages show live state and are per user
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        )
    return response
