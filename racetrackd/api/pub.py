"""The gateway: `ANY /pub/job/<name>/<version>/<path>` forwarded to the job's container."""

from __future__ import annotations

from flask import Blueprint, Response, g, request

from racetrackd import jobs, waking
from racetrackd.api import authenticate_request, services

bp = Blueprint("pub", __name__)

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@bp.before_request
def _authenticate() -> None:
    authenticate_request(calling_job=True)


# Separate endpoints for the legacy /fatman/ paths: Werkzeug redirects between rules of one
# endpoint that share defaults.
@bp.route("/job/<name>/<version>/", methods=METHODS, defaults={"path": ""}, strict_slashes=False)
@bp.route("/job/<name>/<version>/<path:path>", methods=METHODS)
@bp.route("/fatman/<name>/<version>/", methods=METHODS, defaults={"path": ""}, strict_slashes=False,
          endpoint="forward_fatman")
@bp.route("/fatman/<name>/<version>/<path:path>", methods=METHODS, endpoint="forward_fatman")
def forward(name: str, version: str, path: str) -> Response:
    job = jobs.resolve_job(name, version)
    svc = services()
    if job.status in waking.ASLEEP:  # scaled to zero: this call wakes it (slower, not an error)
        job = waking.wake(job, svc.runtime, svc.addressing, svc.settings.job_start_timeout)
    kind = "fatman" if request.endpoint == "pub.forward_fatman" else "job"
    public_prefix = f"/pub/{kind}/{name}/{version}"  # as the caller wrote it, e.g. with `latest`
    return svc.gateway.forward(request, job, path, g.caller, public_prefix)
