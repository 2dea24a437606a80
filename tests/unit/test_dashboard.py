"""The dashboard's pages through Flask's test client: login and redirects, scope filtering, CSRF,
deploy from the browser, maintenance mode, and that no page shows a token."""

from __future__ import annotations

import io
import re
import tarfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient

from builders.context import archive_as_tar_gz, unpack_build_context
from racetrackd import db, maintenance, metrics
from racetrackd.auth import access
from racetrackd.auth.access import GrantRule
from racetrackd.errors import ValidationError
from racetrackd.serving import Serving
from tests.plugin_zips import example_files, zip_of
from tests.unit.conftest import ADMIN_TOKEN
from tests.unit.fakes import sample_manifest
from tests.unit.test_api import add_job
from tests.unit.test_auth_api import PASSWORD, accounts_of, new_user, set_fast_password

API = "/lifecycle/api/v1"
ENTRYPOINT = b"class Adder:\n    def perform(self, a, b):\n        return a + b\n"


def browser(app: Flask, token: str = ADMIN_TOKEN) -> FlaskClient:
    """A test client holding `token` in the cookie, as a browser does after logging in."""
    client = app.test_client()
    client.set_cookie("X-Racetrack-Auth", token)
    return client


def csrf_of(page: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', page)
    assert match, "the page carries no CSRF token"
    return match.group(1)


def page_text(response: object) -> str:
    assert response.status_code == 200, response.data[:2000]
    return str(response.get_data(as_text=True))


# --- login, logout --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/dashboard/jobs", "/dashboard/admin", "/dashboard/jobs/adder/0.0.1", "/dashboard/"])
def test_pages_send_a_browser_without_a_token_to_the_login_page(app: Flask, path: str) -> None:
    response = app.test_client().get(path)

    assert response.status_code == 302
    assert response.headers["Location"].startswith("/dashboard/login?next=")


def test_a_revoked_token_in_the_cookie_leads_to_the_login_page_and_the_cookie_is_cleared(app: Flask) -> None:
    token = new_user(app)
    accounts = accounts_of(app)
    accounts.revoke_token(accounts.tokens_of(access.USER, "bob")[0].id)

    response = browser(app, token).get("/dashboard/jobs")

    assert response.status_code == 302 and "/dashboard/login" in response.headers["Location"]
    assert "X-Racetrack-Auth=;" in response.headers["Set-Cookie"]


def test_logging_in_with_a_token_sets_the_cookie_and_goes_where_the_user_was_going(app: Flask) -> None:
    client = app.test_client()

    response = client.post("/dashboard/login", data={"token": ADMIN_TOKEN, "next": "/dashboard/activity"})

    assert response.status_code == 303 and response.headers["Location"] == "/dashboard/activity"
    cookie = client.get_cookie("X-Racetrack-Auth")
    assert cookie is not None and cookie.http_only and cookie.value == ADMIN_TOKEN
    assert client.get("/dashboard/activity").status_code == 200


def test_logging_in_with_a_password_uses_a_login_token_that_logout_ends(app: Flask) -> None:
    accounts_of(app).create_user("bob")
    set_fast_password("bob")
    client = app.test_client()

    response = client.post("/dashboard/login", data={"username": "bob", "password": PASSWORD})
    assert response.status_code == 303 and response.headers["Location"] == "/dashboard/jobs"
    token = client.get_cookie("X-Racetrack-Auth")
    assert token is not None
    page = page_text(client.get("/dashboard/jobs"))

    assert client.post("/dashboard/logout").status_code == 403  # no CSRF token
    response = client.post("/dashboard/logout", data={"csrf_token": csrf_of(page)})

    assert response.status_code == 303 and response.headers["Location"] == "/dashboard/login"
    assert client.get_cookie("X-Racetrack-Auth") is None
    assert browser(app, token.value).get("/dashboard/jobs").status_code == 302  # the token was revoked


@pytest.mark.parametrize("form", [{"token": "wrong"}, {"username": "bob", "password": "wrong password"}])
def test_a_failed_login_shows_the_form_again_with_the_reason(app: Flask, form: dict[str, str]) -> None:
    client = app.test_client()

    response = client.post("/dashboard/login", data=form)

    assert response.status_code == 401
    assert 'role="alert"' in response.get_data(as_text=True)
    assert client.get_cookie("X-Racetrack-Auth") is None


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/x",
        "/lifecycle/api/v1/job",
        "/pub/job/..\\..\\evil.example",
        "/pub/job/adder/1.0.0/\r\nSet-Cookie: x=1",
        "/pub/async/new/job/adder/1.0.0/api/v1/perform",
        "/pubxyz/job/adder",
    ],
)
def test_after_login_only_dashboard_and_job_pages_are_followed(app: Flask, target: str) -> None:
    response = app.test_client().post("/dashboard/login", data={"token": ADMIN_TOKEN, "next": target})

    assert response.headers["Location"] == "/dashboard/jobs"


@pytest.mark.parametrize(
    "target", ["/pub/job/adder/1.0.0/", "/pub/job/adder/latest/docs?x=1&y=%2F", "/pub/fatman/adder/1.0.0/"]
)
def test_after_login_a_browser_returns_to_the_job_page_it_was_opening(app: Flask, target: str) -> None:
    client = app.test_client()
    assert f'value="{target.replace("&", "&amp;")}"' in page_text(
        client.get("/dashboard/login", query_string={"next": target})
    )

    response = client.post("/dashboard/login", data={"token": ADMIN_TOKEN, "next": target})

    assert response.status_code == 303 and response.headers["Location"] == target


def test_a_login_posted_from_another_site_is_refused(app: Flask) -> None:
    response = app.test_client().post(
        "/dashboard/login", data={"token": ADMIN_TOKEN}, headers={"Origin": "https://evil.example"}
    )

    assert response.status_code == 403


# --- jobs, scopes -----------------------------------------------------------------------------------


def test_the_job_list_shows_only_what_the_user_may_read(app: Flask) -> None:
    add_job("adder", "0.0.1")
    add_job("secret-job", "1.0.0")
    accounts = accounts_of(app)
    token = new_user(app, default_grants=False)
    accounts.add_grant(access.USER, "bob", GrantRule(access.READ_JOB, "adder"), "admin")

    page = page_text(browser(app, token).get("/dashboard/jobs"))

    assert "adder" in page and "secret-job" not in page
    assert browser(app, token).get("/dashboard/jobs/secret-job/1.0.0").status_code == 403
    assert browser(app, token).get("/dashboard/jobs/adder/0.0.1").status_code == 200


def test_jobs_are_grouped_by_family_and_filtered(app: Flask) -> None:
    add_job("adder", "0.0.1")
    add_job("adder", "0.0.2", status=db.JobStatus.CRASHED)
    add_job("greeter", "1.0.0")
    client = browser(app)

    page = page_text(client.get("/dashboard/jobs"))
    assert page.count('<section class="family"') == 2
    assert "1 crashed" in page and "3 of 3 job versions" in page

    crashed = page_text(client.get("/dashboard/jobs?status=crashed&partial=1"))
    assert "0.0.2" in crashed and "0.0.1" not in crashed and "greeter" not in crashed
    assert "<html" not in crashed  # the live-refresh fragment is the list alone
    assert "greeter" in page_text(client.get("/dashboard/jobs?name=GREE"))
    assert "No jobs match the filter" in page_text(client.get("/dashboard/jobs?owner=nobody@"))


def test_the_job_page_shows_details_actions_and_a_chart_of_its_calls(app: Flask) -> None:
    job = add_job("charted", "0.0.1")  # a name no other test calls: the gateway's counters live per process
    calls = metrics.for_job("charted", "0.0.1")
    for seconds in (0.003, 0.003, 0.2):
        calls.answered(200)
        calls.job_seconds.observe(seconds)
    calls.answered(500)

    page = page_text(browser(app).get("/dashboard/jobs/charted/0.0.1"))

    assert "<title>charted 0.0.1 · racetrackd</title>" in page
    assert "owner@example.com" in page and job.image_name in page
    for action in ("Open", "Call", "Logs", "Rollback", "Delete"):
        assert f">{action}<" in page
    assert 'data-confirm="Delete job charted 0.0.1?' in page
    assert 'data-pub-path="/pub/job/charted/0.0.1"' in page
    chart = page[page.index("<svg") : page.index("</svg>")]
    assert "Calls by latency: 2 ≤ 4 ms, 0 ≤ 8 ms" in chart and "1 ≤ 256 ms</title>" in chart
    assert chart.count("<rect") == 7  # 4 ms to 256 ms, doubling
    axis = chart[chart.index('<g class="axis"') : chart.index("</g>")]
    assert axis.count("<line") == 2  # both axes drawn, named, with the count scale from 0 to the tallest bar
    assert all(f">{label}</text>" in axis for label in ("0", "2", "calls", "latency"))
    assert "3 × 200" in page and "1 × 500" in page


@pytest.mark.parametrize(
    ("path_mode", "served", "method", "endpoint"),
    [
        ("wrapper", "/pub/job/served/0.0.1/", "POST", "/api/v1/perform"),
        ("forward", "/pub/job/served/0.0.1/api/v1/", "GET", "/api/v1/"),
        ("rewrite", "/pub/job/served/0.0.1/", "GET", "/"),
    ],
)
def test_open_url_and_call_form_point_where_the_job_serves(
    app: Flask, path_mode: str, served: str, method: str, endpoint: str
) -> None:
    job = add_job("served", "0.0.1")
    job.serving = Serving(port=8080, path_mode=path_mode).to_json()
    job.save()

    page = page_text(browser(app).get("/dashboard/jobs/served/0.0.1"))

    assert f'<a class="button" href="{served}" target="_blank" rel="noopener">Open</a>' in page
    assert re.search(rf"<dt>URL</dt><dd><code>https?://[^<]*{served}</code></dd>", page)
    assert f"<option selected>{method}</option>" in page
    assert f'name="endpoint" value="{endpoint}"' in page


def test_a_dockerfile_job_without_the_wrapper_contract_is_called_like_a_web_app(app: Flask) -> None:
    job = add_job("plain", "0.0.1")
    job.serving = Serving(probes="server").to_json()  # what the deployer records for such a server
    job.save()

    page = page_text(browser(app).get("/dashboard/jobs/plain/0.0.1"))

    assert '<a class="button" href="/pub/job/plain/0.0.1/" target="_blank" rel="noopener">Open</a>' in page
    assert "<option selected>GET</option>" in page and 'name="endpoint" value="/"' in page
    assert 'data-wrapper="false"' in page


def test_redirects_a_job_answered_are_not_shown_as_errors(app: Flask) -> None:
    add_job("redirecting", "0.0.1")  # a name of its own: the gateway's counters live per process
    calls = metrics.for_job("redirecting", "0.0.1")
    for status in (200, 302, 304, 404, 502):
        calls.answered(status)

    page = page_text(browser(app).get("/dashboard/jobs/redirecting/0.0.1"))

    tones = dict((status, tone) for tone, status in re.findall(r'<span class="badge (\w+)">1 × (\d+)</span>', page))
    assert tones == {"200": "ok", "302": "neutral", "304": "neutral", "404": "bad", "502": "bad"}


def test_the_job_page_offers_only_the_actions_the_user_may_take(app: Flask) -> None:
    add_job("adder", "0.0.1")
    token = new_user(app, default_grants=False)
    accounts_of(app).add_grant(access.USER, "bob", GrantRule(access.READ_JOB), "admin")

    page = page_text(browser(app, token).get("/dashboard/jobs/adder/0.0.1"))

    assert ">Delete<" not in page and ">Rollback<" not in page
    assert "You may not call this job" in page


# --- CSRF on the JSON API ---------------------------------------------------------------------------


def test_a_change_made_with_the_cookie_alone_needs_the_pages_csrf_token(app: Flask) -> None:
    add_job("adder", "0.0.1")
    client = browser(app)
    token = csrf_of(page_text(client.get("/dashboard/jobs")))

    refused = client.delete(f"{API}/job/adder/0.0.1")
    wrong = client.delete(f"{API}/job/adder/0.0.1", headers={"X-CSRF-Token": "0" * 64})

    assert refused.status_code == 403 and "X-CSRF-Token" in refused.get_json()["error"]
    assert wrong.status_code == 403
    assert client.get(f"{API}/job/adder/0.0.1").status_code == 200  # reading needs none
    assert client.delete(f"{API}/job/adder/0.0.1", headers={"X-CSRF-Token": token}).status_code == 204


def test_programs_sending_the_token_as_a_header_need_no_csrf_token(client: FlaskClient) -> None:
    add_job("adder", "0.0.1")

    assert client.delete(f"{API}/job/adder/0.0.1").status_code == 204


def test_the_csrf_token_belongs_to_one_login(app: Flask) -> None:
    add_job("adder", "0.0.1")
    bobs_token = csrf_of(page_text(browser(app, new_user(app)).get("/dashboard/jobs")))

    response = browser(app).delete(f"{API}/job/adder/0.0.1", headers={"X-CSRF-Token": bobs_token})

    assert response.status_code == 403


# --- tokens are shown once --------------------------------------------------------------------------


def test_no_page_shows_a_token(app: Flask) -> None:
    accounts = accounts_of(app)
    esc = accounts.create_esc("billing", None)
    esc_token, _ = accounts.issue_token(access.ESC, esc.id, description="billing's")
    user_token = new_user(app)
    accounts.add_grant(access.USER, "bob", GrantRule(access.FULL_ACCESS), "admin")

    for path in ("/dashboard/admin", "/dashboard/profile", "/dashboard/jobs"):
        page = page_text(browser(app, user_token).get(path))
        assert esc_token not in page and user_token not in page and ADMIN_TOKEN not in page
    assert "billing&#39;s" in page_text(browser(app, user_token).get("/dashboard/admin"))


def test_the_profile_shows_the_login_command_and_the_users_tokens(app: Flask) -> None:
    token = new_user(app)

    page = page_text(browser(app, token).get("/dashboard/profile"))

    assert "rtd login --username bob --remote http://127.0.0.1:7102" in page
    assert "user:bob" in page and 'data-api-url="/lifecycle/api/v1/auth/tokens"' in page


# --- admin ------------------------------------------------------------------------------------------


def test_admin_pages_refuse_users_without_full_access(app: Flask) -> None:
    response = browser(app, new_user(app)).get("/dashboard/admin")

    assert response.status_code == 403
    assert "full_access" in response.get_data(as_text=True)
    assert ">Admin<" not in page_text(browser(app, new_user(app, "carol")).get("/dashboard/jobs"))


def test_the_admin_page_lists_users_escs_grants_endpoints_and_job_types(app: Flask) -> None:
    accounts = accounts_of(app)
    accounts.create_user("carol")
    accounts.create_esc("billing", None)
    add_job("adder", "0.0.1")
    db.PublicEndpoint.create(job_name="adder", job_version="0.0.1", endpoint="/api/v1/perform")

    page = page_text(browser(app).get("/dashboard/admin"))

    assert "carol" in page and "billing" in page and "python3:1.0.0" in page
    assert "waiting for approval" in page and ">Approve<" in page
    assert "Turn maintenance mode on" in page


def test_grants_and_tokens_of_deleted_jobs_are_marked_on_the_admin_page(app: Flask) -> None:
    accounts = accounts_of(app)
    accounts.create_user("carol")
    add_job("kept", "0.0.1")
    gone = add_job("gone", "0.0.1")
    accounts.family_token("gone")
    accounts.add_grant(access.JOB_FAMILY, "gone", GrantRule(access.CALL_JOB, "kept"), "admin")
    for job_name, version in (("gone", "0.0.1"), ("gone", None), ("kept", None), ("upcoming", None)):
        accounts.add_grant(access.USER, "carol", GrantRule(access.CALL_JOB, job_name, version), "admin")
    gone.delete_instance()  # as deleting the job does (the API's delete also revokes the family's token)
    db.DeletedJob.create(name="gone", version="0.0.1")

    page = page_text(browser(app).get("/dashboard/admin"))

    grants = page[page.index('id="grants-h"') : page.index("<h3>Grant</h3>")]
    cells = [[re.sub(r"<[^>]+>", "", cell).strip() for cell in row.split("</td>")] for row in grants.split("<tr>")[2:]]
    marked = {
        (c[0], c[2].removesuffix(" job deleted"), c[3]): c[2].endswith("job deleted") for c in cells if c[2] != "all"
    }
    assert marked == {
        ("job_family:gone", "kept", "all"): True,  # its subject's family is gone
        ("user:carol", "gone", "0.0.1"): True,
        ("user:carol", "gone", "all"): True,
        ("user:carol", "kept", "all"): False,
        ("user:carol", "upcoming", "all"): False,  # granted ahead of a first deployment
    }
    assert grants.count(">Remove</button>") == len(cells)  # each with its remove action
    tokens = page[page.index('id="tokens-h"') : page.index('id="grants-h"')]
    family_row = next(row for row in tokens.split("<tr>") if "job_family:gone" in row)
    assert "job deleted" in family_row and ">Revoke</button>" in family_row


def test_the_admin_page_lists_plugins_offers_an_upload_and_removes_only_uploaded_ones(app: Flask) -> None:
    app.extensions["racetrackd"].plugins.install("shell.zip", zip_of(example_files()))

    page = browser(app).get("/dashboard/admin").get_data(as_text=True)

    assert 'id="plugin-upload"' in page and 'type="file"' in page
    rows = {row.split("</td>")[0]: row for row in re.findall(r"<tr>\s*<td>(.*?)</tr>", page, re.S)}
    builtin = next(row for name, row in rows.items() if name.startswith("python3-job-type"))
    uploaded = next(row for name, row in rows.items() if name.startswith("shell-job-type"))
    assert "built in" in builtin and ">Remove<" not in builtin
    assert "uploaded" in uploaded and ">Remove<" in uploaded and "/lifecycle/api/v1/plugin/shell-job-type/" in uploaded


# --- deploy from the browser ------------------------------------------------------------------------


def test_a_manifest_with_mistakes_is_shown_again_with_every_field_named(app: Flask) -> None:
    client = browser(app)
    csrf = csrf_of(page_text(client.get("/dashboard/deploy")))
    text = "name: Bad_Name\nowner_email: x@example.com\njobtype: python3:latest\nreplicas: 0\n"

    response = client.post("/dashboard/deploy", data={"manifest": text, "csrf_token": csrf})

    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "<code>name</code>" in page and "<code>replicas</code>" in page
    assert "Bad_Name" in page  # the pasted text is kept
    assert db.Deployment.select().count() == 0


def test_a_deploy_form_without_its_csrf_token_is_refused(app: Flask) -> None:
    response = browser(app).post("/dashboard/deploy", data={"manifest": yaml.safe_dump(sample_manifest())})

    assert response.status_code == 403 and db.Deployment.select().count() == 0


@pytest.mark.parametrize("archive", ["zip", "tar.gz"])
def test_a_manifest_and_a_job_directory_upload_queue_a_deployment(app: Flask, tmp_path: Path, archive: str) -> None:
    client = browser(app)
    csrf = csrf_of(page_text(client.get("/dashboard/deploy")))
    packed = io.BytesIO()
    if archive == "zip":
        with zipfile.ZipFile(packed, "w") as zipped:
            zipped.writestr("entrypoint.py", ENTRYPOINT)
    else:
        with tarfile.open(fileobj=packed, mode="w:gz") as tar:
            info = tarfile.TarInfo("entrypoint.py")
            info.size = len(ENTRYPOINT)
            tar.addfile(info, io.BytesIO(ENTRYPOINT))
    manifest = io.BytesIO(yaml.safe_dump(sample_manifest()).encode())

    response = client.post(
        "/dashboard/deploy",
        content_type="multipart/form-data",
        data={
            "csrf_token": csrf,
            "manifest": "",
            "manifest_file": (manifest, "job.yaml"),
            "build_context": (io.BytesIO(packed.getvalue()), f"adder.{archive}"),
        },
    )

    deployment = db.Deployment.get()
    assert response.status_code == 303
    assert response.headers["Location"] == f"/dashboard/deployments/{deployment.id}"
    assert deployment.job_name == "adder" and deployment.deployed_by == "admin"
    unpack_build_context(Path(deployment.build_context_path), tmp_path / "job")
    assert (tmp_path / "job" / "entrypoint.py").read_bytes() == ENTRYPOINT
    page = page_text(client.get(response.headers["Location"]))
    assert 'data-status="in_progress"' in page and "queued" in page


def test_the_deployment_page_shows_the_build_log_and_follows_on_from_its_end(app: Flask) -> None:
    deployment = db.Deployment.create(job_name="adder", job_version="0.0.1", manifest_yaml="", deployed_by="admin")
    deployment.append_logs("Step 1/3 : FROM base\n")
    deployment.append_logs("Step 2/3 : COPY job/ /src/job/\n")

    page = page_text(browser(app).get(f"/dashboard/deployments/{deployment.id}"))

    assert "Step 1/3 : FROM base\nStep 2/3 : COPY job/ /src/job/" in page
    assert f'data-log-offset="{deployment.build_logs_since(0)[1]}"' in page


def test_a_zip_that_would_unpack_past_the_limit_is_refused_before_it_is_inflated() -> None:
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("big.bin", b"\0" * 2_000_000)

    with pytest.raises(ValidationError, match="build_context: unpacks to more than"):
        archive_as_tar_gz(packed.getvalue(), max_bytes=1_000_000)


def test_a_zip_entry_outside_the_directory_is_refused_when_unpacked(tmp_path: Path) -> None:
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as zipped:
        zipped.writestr("../escape.py", b"x")
    archive = tmp_path / "context.tar.gz"
    archive.write_bytes(archive_as_tar_gz(packed.getvalue()))

    with pytest.raises(ValidationError, match="points outside the context"):
        unpack_build_context(archive, tmp_path / "job")
    assert not (tmp_path / "escape.py").exists()


# --- deployments, activity --------------------------------------------------------------------------


def test_deployments_and_activity_show_only_readable_jobs_and_filter(app: Flask, client: FlaskClient) -> None:
    for name in ("adder", "classified"):
        db.Deployment.create(
            job_name=name, job_version="0.0.1", manifest_yaml=yaml.safe_dump(sample_manifest(name=name))
        )
        db.AuditEvent.record("job_deployed", name, "0.0.1", "admin")
    db.AuditEvent.record("job_deleted", "adder", "0.0.1", "admin")
    token = new_user(app, default_grants=False)
    accounts_of(app).add_grant(access.USER, "bob", GrantRule(access.READ_JOB, "adder"), "admin")
    bob = browser(app, token)

    deployments = page_text(bob.get("/dashboard/deployments"))
    activity = page_text(bob.get("/dashboard/activity"))
    deleted = page_text(browser(app).get("/dashboard/activity?event_type=job_deleted"))

    assert "adder 0.0.1" in deployments and "classified" not in deployments
    assert "Job adder 0.0.1 deployed by admin" in activity and "classified" not in activity
    assert "Job adder 0.0.1 deleted by admin" in deleted and "deployed by" not in deleted


def test_the_phase_column_shows_where_each_deployment_is_or_ended(app: Flask) -> None:
    def deployment(name: str, phases: list[str], status: str | None) -> None:
        row = db.Deployment.create(job_name=name, job_version="0.0.1", manifest_yaml="")
        for phase in phases:
            row.set_phase(phase)
        if status:
            row.finish(status, "boom" if status == "failed" else None)

    deployment("running", ["building image"], None)
    deployment("finished", ["building image", "starting Job server"], "done")
    deployment("broken", ["building image"], "failed")

    page = page_text(browser(app).get("/dashboard/deployments"))

    cells = dict(re.findall(r"<td>(\w+) 0\.0\.1</td>.*?</span></td><td>([^<]*)</td>", page, re.S))
    assert cells == {"running": "building image", "finished": "starting Job server", "broken": "building image"}


# --- maintenance mode -------------------------------------------------------------------------------


def test_maintenance_mode_refuses_deployments_and_deletions_with_503_and_shows_a_banner(
    app: Flask, client: FlaskClient
) -> None:
    add_job("adder", "0.0.1")
    bob = FlaskClient(app)
    bob.environ_base["HTTP_X_RACETRACK_AUTH"] = new_user(app)

    assert bob.put(f"{API}/maintenance", json={"maintenance_mode": True}).status_code == 403
    switched = client.put(f"{API}/maintenance", json={"maintenance_mode": True, "message": "engine upgrade"})
    assert switched.status_code == 200 and switched.get_json()["changed_by"] == "admin"

    refused = client.post(f"{API}/deploy", json={"manifest": sample_manifest(name="other")})
    assert refused.status_code == 503 and refused.get_json()["type"] == "maintenance-mode"
    assert "engine upgrade" in refused.get_json()["error"]
    assert client.delete(f"{API}/job/adder/0.0.1").status_code == 503
    assert client.post(f"{API}/job/adder/0.0.1/rollback").status_code == 503
    banner = page_text(browser(app).get("/dashboard/jobs"))
    assert "Maintenance mode:" in banner and "deletions and job calls are refused" in banner
    assert "so are calls to jobs" in page_text(browser(app).get("/dashboard/admin"))
    assert bob.get(f"{API}/maintenance").get_json()["maintenance_mode"] is True

    client.put(f"{API}/maintenance", json={"maintenance_mode": False})
    assert client.delete(f"{API}/job/adder/0.0.1").status_code == 204
    assert "Maintenance mode:" not in page_text(browser(app).get("/dashboard/jobs"))


def test_the_banner_says_jobs_keep_serving_when_maintenance_does_not_block_calls(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(maintenance_blocks_calls="false")
    maintenance.switch(True, "", "admin")

    banner = page_text(browser(app).get("/dashboard/jobs"))

    assert "rollbacks and deletions are refused" in banner and "job calls" not in banner
    assert "running jobs keep serving calls" in page_text(browser(app).get("/dashboard/admin"))


def test_maintenance_mode_takes_true_or_false(client: FlaskClient) -> None:
    response = client.put(f"{API}/maintenance", json={"maintenance_mode": "yes"})

    assert response.status_code == 400 and "maintenance_mode" in response.get_json()["error"]


# --- assets -----------------------------------------------------------------------------------------


def test_assets_are_served_by_the_daemon_and_cached_while_pages_are_not(app: Flask) -> None:
    client = browser(app)
    page = client.get("/dashboard/jobs")
    css = re.search(r'href="(/dashboard/static/dashboard.css\?v=[0-9a-f]+)"', page.get_data(as_text=True))
    assert css

    asset = client.get(css.group(1))
    unauthenticated = app.test_client().get("/dashboard/static/dashboard.js")

    assert asset.status_code == 200 and "max-age=2592000" in asset.headers["Cache-Control"]
    assert unauthenticated.status_code == 200  # the login page needs them too
    assert "no-store" in page.headers["Cache-Control"]
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    asset.close()
    unauthenticated.close()


def test_every_page_links_a_favicon_the_daemon_serves(app: Flask) -> None:
    login = app.test_client().get("/dashboard/login").get_data(as_text=True)
    link = re.search(r'<link rel="icon" type="image/svg\+xml" href="([^"]+)">', login)
    assert link, "the login page links no favicon"

    icon = app.test_client().get(link.group(1))

    assert icon.status_code == 200 and icon.mimetype == "image/svg+xml"
    assert icon.get_data(as_text=True).lstrip().startswith("<svg")
    icon.close()


def test_with_auth_off_the_pages_open_without_logging_in(make_app: Callable[..., Flask]) -> None:
    app = make_app(auth_required="false")
    add_job("adder", "0.0.1")
    client = app.test_client()

    for path in ("/dashboard/jobs", "/dashboard/jobs/adder/0.0.1", "/dashboard/admin", "/dashboard/profile"):
        assert client.get(path).status_code == 200, path
    assert client.delete(f"{API}/job/adder/0.0.1").status_code == 204  # no token, nothing to forge


def test_the_job_page_charts_calls_errors_and_latency_over_the_last_hour_or_day(app: Flask) -> None:
    from racetrackd import callstats

    add_job("timed", "0.0.1")
    now = time.time()
    for minutes_ago, calls in ((50, [(200, 0.02)] * 4 + [(502, 0.001)]), (49, [(200, 0.3)]), (10, [(200, 0.02)] * 2)):
        tally = callstats.CallTally(lambda at=now - minutes_ago * 60: at)
        for status, seconds in calls:
            tally.record("timed", "0.0.1", status, seconds)
        callstats.write(tally.take())
    client = browser(app)

    hour = page_text(client.get("/dashboard/jobs/timed/0.0.1"))
    day = page_text(client.get("/dashboard/jobs/timed/0.0.1?range=24h"))
    odd = page_text(client.get("/dashboard/jobs/timed/0.0.1?range=forever"))

    section = hour[hour.index('id="over-time"') : hour.index("</section>", hour.index('id="over-time"'))]
    assert '<a href="?range=1h#over-time" aria-current="true">Last hour</a>' in section
    assert "Last hour: 8 calls, 1 errors; latency p50" in section
    calls_chart, latency_chart = section.split("<svg")[1:3]
    assert "Calls per 1 min, last hour: 8 calls, 1 errors; at most 5 in one step</title>" in calls_chart
    assert calls_chart.count('<rect class="calls"') == 3 and calls_chart.count('<rect class="errors"') == 1
    assert all(f">{label}</text>" in calls_chart for label in ("0", "5", "calls", "−60 min", "−30 min", "now"))
    assert "UTC: 5 calls, 1 errors, p50" in calls_chart  # each step's tooltip
    # minutes 50 and 49 ago make one line; 10 minutes ago stands alone (a dot): no calls between
    assert latency_chart.count('<polyline class="p50"') == 1 and latency_chart.count('<circle class="p50"') == 1
    assert latency_chart.count('<polyline class="p95"') == 1
    assert all(f">{label}</text>" in latency_chart for label in ("latency", "0", "−60 min", "now"))
    assert '<a href="?range=24h#over-time" aria-current="true">Last 24 h</a>' in day
    assert "Calls per 15 min, last 24 h: 8 calls" in day and ">−24 h</text>" in day and ">−12 h</text>" in day
    assert 'aria-current="true">Last hour</a>' in odd


def test_the_job_page_says_when_there_were_no_calls_in_the_time_shown(app: Flask) -> None:
    add_job("untimed", "0.0.1")

    page = page_text(browser(app).get("/dashboard/jobs/untimed/0.0.1?range=24h"))

    assert "Last 24 h: 0 calls, 0 errors" in page
    assert "No calls in this time" in page and 'class="chart timeline"' not in page


def test_the_daemons_root_address_leads_to_the_dashboard(app: Flask) -> None:
    # What `racetrackd start` prints (http://127.0.0.1:7102), opened in a browser.
    answer = app.test_client().get("/")

    assert answer.status_code == 302
    assert answer.headers["Location"] == "/dashboard/"
