"""Adversarial tests of who may do what: redeploys over another owner's job, the secrets and
AUTH_TOKEN a redeploy inherits, plugin installs, the failed-auth limit, ESC tokens by GET, and
family tokens of deleted families. Through Flask's test client over a FakeRuntime."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from racetrackd import db
from racetrackd.auth import access
from racetrackd.auth.access import DEPLOY_JOB, GrantRule
from racetrackd.auth.accounts import Accounts
from racetrackd.deploy import jobsecrets
from tests.plugin_zips import example_files, zip_of
from tests.unit.fakes import build_context, sample_manifest
from tests.unit.gateway_helpers import add_job

pytestmark = pytest.mark.security

API = "/lifecycle/api/v1"
SECRET = "alice-runtime-secret-value"
REMOTE = "https://git.example.com/alice/adder"


def accounts_of(app: Flask) -> Accounts:
    accounts: Accounts = app.extensions["racetrackd"].accounts
    return accounts


def user_client(app: Flask, username: str) -> FlaskClient:
    """A new plain user (the default grants of a new account) and a client sending their token."""
    accounts = accounts_of(app)
    accounts.create_user(username)
    token, _ = accounts.issue_token(access.USER, username)
    client = app.test_client()
    client.environ_base["HTTP_X_RACETRACK_AUTH"] = token
    return client


def deploy(
    client: FlaskClient,
    *,
    force: bool = False,
    secrets: dict[str, str] | None = None,
    git: bool = False,
    **manifest: Any,
) -> Any:
    body: dict[str, Any] = {"manifest": sample_manifest(**{"version": "1.0.0", **manifest}), "force": force}
    if git:
        body["manifest"]["git"] = {"remote": REMOTE}
    else:
        body["build_context"] = build_context()
    if secrets is not None:
        body["secret_vars"] = {"build_env": {}, "runtime_env": secrets}
    return client.post(f"{API}/deploy", json=body)


def finish(response: Any) -> db.Deployment:
    """The queued deployment as if the deployer had carried it out (the job now runs)."""
    assert response.status_code == 201, response.get_data(as_text=True)
    deployment = db.Deployment.get_by_id(response.get_json()["id"])
    db.Deployment.update(status=db.DeploymentStatus.DONE).where(db.Deployment.id == deployment.id).execute()
    if db.Job.find(deployment.job_name, deployment.job_version) is None:
        add_job(deployment.job_name, deployment.job_version)
    return db.Deployment.get_by_id(deployment.id)


def sealed(app: Flask, response: Any) -> jobsecrets.JobSecrets:
    """What the deployer gives the new containers (secrets, AUTH_TOKEN or not); the deployment is then done."""
    return jobsecrets.of_deployment(finish(response), app.extensions["racetrackd"].vault)


@pytest.fixture
def alice_job(app: Flask) -> FlaskClient:
    """alice, a plain user, started the adder family with a runtime secret (uploaded code)."""
    alice = user_client(app, "alice")
    first = finish(deploy(alice, secrets={"API_KEY": SECRET}))
    accounts_of(app).grant_family_owner(access.USER, "alice", first.job_name)  # as the deployer does
    return alice


# --- item 4: redeploying someone else's job -------------------------------------------------------------


def test_a_new_plain_user_may_not_force_redeploy_another_owners_job(app: Flask, alice_job: FlaskClient) -> None:
    bob = user_client(app, "bob")

    response = deploy(bob, force=True)

    assert response.status_code == 403
    body = response.get_json()
    assert body["type"] == "forbidden"
    assert "bob may not deploy job adder 1.0.0: it lacks the deploy_job scope" in body["error"]
    assert "rtd grant add user:bob deploy_job --job adder" in body["hint"]
    assert db.Deployment.select().where(db.Deployment.requested_by == "user:bob").count() == 0


def test_a_new_plain_user_may_still_start_read_and_call_families(app: Flask) -> None:
    bob = user_client(app, "bob")

    assert deploy(bob, name="bobs-job").status_code == 201
    assert bob.get(f"{API}/job").status_code == 200


def test_the_owner_redeploys_their_own_job_with_its_secrets_and_token(app: Flask, alice_job: FlaskClient) -> None:
    secrets = sealed(app, deploy(alice_job, force=True))

    assert secrets.runtime_env == {"API_KEY": SECRET} and secrets.family_token


def test_a_granted_redeploy_of_other_code_gets_neither_secrets_nor_auth_token(
    app: Flask, alice_job: FlaskClient
) -> None:
    bob = user_client(app, "bob")
    accounts_of(app).add_grant(access.USER, "bob", GrantRule(DEPLOY_JOB, "adder"), "admin")

    secrets = sealed(app, deploy(bob, force=True))  # bob's own upload

    assert secrets.runtime_env == {} and SECRET not in secrets.values()
    assert secrets.family_token is False


def test_a_granted_redeploy_naming_a_secret_file_is_refused_naming_the_field(
    app: Flask, alice_job: FlaskClient
) -> None:
    bob = user_client(app, "bob")
    accounts_of(app).add_grant(access.USER, "bob", GrantRule(DEPLOY_JOB, "adder"), "admin")

    response = deploy(bob, force=True, secret_runtime_env_file="secrets.env")

    assert response.status_code == 403
    assert response.get_json()["error"].startswith("secret_runtime_env_file: ")
    assert "full_access" in response.get_json()["error"]


def test_the_untrusted_redeploy_does_not_become_trusted_for_the_next_one(app: Flask, alice_job: FlaskClient) -> None:
    bob = user_client(app, "bob")
    accounts_of(app).add_grant(access.USER, "bob", GrantRule(DEPLOY_JOB, "adder"), "admin")
    finish(deploy(bob, force=True))

    again = sealed(app, deploy(bob, force=True))
    alice_again = sealed(app, deploy(alice_job, force=True))

    assert again.runtime_env == {} and again.family_token is False
    assert alice_again.runtime_env == {"API_KEY": SECRET} and alice_again.family_token


def test_a_granted_redeploy_from_the_same_git_remote_inherits(app: Flask) -> None:
    alice = user_client(app, "alice")
    finish(deploy(alice, git=True, secrets={"API_KEY": SECRET}))
    bob = user_client(app, "bob")
    accounts_of(app).add_grant(access.USER, "bob", GrantRule(DEPLOY_JOB, "adder"), "admin")

    same_source = sealed(app, deploy(bob, force=True, git=True))
    finish(deploy(bob, force=True, git=True))
    then_upload = sealed(app, deploy(bob, force=True))  # same caller, now with their own code

    assert same_source.runtime_env == {"API_KEY": SECRET} and same_source.family_token
    assert then_upload.runtime_env == {} and then_upload.family_token is False


def test_an_admin_redeploy_inherits_whatever_the_source(
    app: Flask, alice_job: FlaskClient, client: FlaskClient
) -> None:
    secrets = sealed(app, deploy(client, force=True))

    assert secrets.runtime_env == {"API_KEY": SECRET} and secrets.family_token


def test_git_credentials_are_never_sent_to_another_remote(app: Flask) -> None:
    alice = user_client(app, "alice")
    body_creds = {"username": "alice", "password": "alice-git-password"}
    response = alice.post(
        f"{API}/deploy",
        json={
            "manifest": {**sample_manifest(version="1.0.0"), "git": {"remote": REMOTE}},
            "git_credentials": body_creds,
        },
    )
    finish(response)
    accounts_of(app).grant_family_owner(access.USER, "alice", "adder")

    same = sealed(
        app,
        alice.post(
            f"{API}/deploy",
            json={"manifest": {**sample_manifest(version="1.0.0"), "git": {"remote": REMOTE + ".git"}}, "force": True},
        ),
    )
    other = sealed(
        app,
        alice.post(
            f"{API}/deploy",
            json={
                "manifest": {**sample_manifest(version="1.0.0"), "git": {"remote": "https://evil.example.com/x"}},
                "force": True,
            },
        ),
    )

    assert same.git_credentials == body_creds
    assert other.git_credentials is None


def test_an_upgraded_registry_keeps_users_deploying_what_they_deployed(make_app: Any) -> None:
    app = make_app()
    accounts = accounts_of(app)
    # As an older version left it: deploy_job on every job, made with the account.
    for name in ("alice", "carol"):
        accounts.create_user(name)
        accounts._grant(access.USER, name, GrantRule(DEPLOY_JOB), "admin")
    db.Deployment.create(
        job_name="adder",
        job_version="1.0.0",
        manifest_yaml="",
        status=db.DeploymentStatus.DONE,
        requested_by="user:alice",
    )
    db.RegistrySetting.delete().execute()

    accounts.ensure_bootstrap_admin("unit-test-admin-token")  # what every start does

    alice = {(g.scope, g.job_name) for g in accounts.grants(access.USER, "alice")}
    carol = {(g.scope, g.job_name) for g in accounts.grants(access.USER, "carol")}
    assert (DEPLOY_JOB, None) not in alice and (DEPLOY_JOB, "adder") in alice
    assert (DEPLOY_JOB, None) not in carol and (access.READ_JOB, None) in carol


# --- item 7: installing a plugin runs its code in the daemon ---------------------------------------------


def test_call_admin_api_is_not_enough_to_install_a_plugin(app: Flask, client: FlaskClient) -> None:
    accounts = accounts_of(app)
    accounts.create_user("operator", default_grants=False)
    accounts.add_grant(access.USER, "operator", GrantRule(access.CALL_ADMIN_API), "admin")
    token, _ = accounts.issue_token(access.USER, "operator")
    operator = app.test_client()
    operator.environ_base["HTTP_X_RACETRACK_AUTH"] = token

    refused = operator.post(f"{API}/plugin/upload/shell.zip", data=zip_of(example_files()))
    listed_after_refusal = {p["name"] for p in operator.get(f"{API}/plugin").get_json()}
    installed = client.post(f"{API}/plugin/upload/shell.zip", data=zip_of(example_files()))

    assert refused.status_code == 403
    assert "operator may not install plugins: it lacks the full_access scope" in refused.get_json()["error"]
    assert "shell-job-type" not in listed_after_refusal
    assert installed.status_code == 200 and installed.get_json()["name"] == "shell-job-type"


# --- item 10: the failed-auth limit locks out guessers, not their neighbours -----------------------------

PROXY = "10.0.0.1"
PASSWORD = "correct horse battery"


def limited_app(make_app: Any) -> Flask:
    return make_app(auth_failure_limit="3", auth_failure_window="60")


def from_address(app: Flask, address: str, token: str | None = None) -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    if token:
        client.environ_base["HTTP_X_RACETRACK_AUTH"] = token
    return client


def with_password(username: str) -> None:
    from racetrackd.auth.passwords import hash_password

    db.User.update(password_hash=hash_password(PASSWORD, iterations=1_000)).where(
        db.User.username == username
    ).execute()


def test_bad_tokens_from_one_address_do_not_lock_out_valid_tokens_behind_it(make_app: Any) -> None:
    app = limited_app(make_app)
    accounts = accounts_of(app)
    accounts.create_user("bob")
    bob_token, _ = accounts.issue_token(access.USER, "bob")
    guesses = [from_address(app, PROXY, f"rtd_guess{i}").get(f"{API}/job") for i in range(5)]

    bob = from_address(app, PROXY, bob_token).get(f"{API}/job")  # never seen before by this worker

    assert [r.status_code for r in guesses] == [401, 401, 401, 429, 429]
    assert int(guesses[-1].headers["Retry-After"]) >= 1
    assert bob.status_code == 200


def test_one_bad_token_is_limited_across_addresses(make_app: Any) -> None:
    app = limited_app(make_app)

    answers = [from_address(app, f"10.0.1.{i}", "rtd_the_same_guess").get(f"{API}/job").status_code for i in range(5)]

    assert answers == [401, 401, 401, 429, 429]
    assert from_address(app, "10.0.1.9", "rtd_another_guess").get(f"{API}/job").status_code == 401
    stored = {row.address for row in db.AuthFailure.select()}
    assert not any("rtd_the_same_guess" in key for key in stored)  # a digest is counted, not the token


def test_password_guessing_on_one_user_is_limited_across_addresses(make_app: Any) -> None:
    app = limited_app(make_app)
    accounts_of(app).create_user("alice")
    with_password("alice")

    guesses = [
        from_address(app, f"10.0.2.{i}").post(
            f"{API}/users/login", json={"username": "alice", "password": f"guess-{i}"}
        )
        for i in range(4)
    ]
    right_password = from_address(app, "10.0.2.99").post(
        f"{API}/users/login", json={"username": "alice", "password": PASSWORD}
    )

    assert [r.status_code for r in guesses] == [401, 401, 401, 429]
    assert right_password.status_code == 429 and int(right_password.headers["Retry-After"]) >= 1


def test_the_right_password_from_a_blocked_address_logs_in(make_app: Any) -> None:
    app = limited_app(make_app)
    for name in ("alice", "bob"):
        accounts_of(app).create_user(name)
    with_password("bob")
    proxy = from_address(app, PROXY)
    guesses = [proxy.post(f"{API}/users/login", json={"username": "alice", "password": "nope-nope"}) for _ in range(4)]

    bob = proxy.post(f"{API}/users/login", json={"username": "bob", "password": PASSWORD})
    wrong_for_bob = proxy.post(f"{API}/users/login", json={"username": "bob", "password": "nope-nope"})

    assert [r.status_code for r in guesses] == [401, 401, 401, 429]
    assert bob.status_code == 200 and bob.get_json()["username"] == "bob"
    assert wrong_for_bob.status_code == 429


# --- item 13: a token made by a cookie-only GET; family tokens of deleted families -----------------------


def admin_browser(app: Flask) -> FlaskClient:
    """An admin's browser: logged in, so it sends the cookie and nothing else."""
    browser = app.test_client()
    browser.set_cookie("X-Racetrack-Auth", "unit-test-admin-token")
    return browser


def test_a_cookie_only_get_does_not_make_an_esc_token(app: Flask, client: FlaskClient) -> None:
    esc = accounts_of(app).create_esc("billing", "billing")

    forged = admin_browser(app).get(f"{API}/auth/token/esc/{esc.id}")  # what an <img src> on any page sends

    assert forged.status_code == 403 and forged.get_json()["type"] == "forbidden"
    assert "X-Racetrack-Auth header" in forged.get_json()["error"]
    assert accounts_of(app).tokens_of(access.ESC, esc.id) == []


def test_esc_tokens_are_still_made_by_header_get_and_by_post_with_csrf(app: Flask, client: FlaskClient) -> None:
    from racetrackd.api import csrf_token

    esc = accounts_of(app).create_esc("billing", "billing")
    browser = admin_browser(app)
    with app.test_request_context():
        csrf = csrf_token("unit-test-admin-token")

    by_header = client.get(f"{API}/auth/token/esc/{esc.id}")  # Racetrack's clients
    post_without_csrf = browser.post(f"{API}/auth/token/esc/{esc.id}")
    post_with_csrf = browser.post(f"{API}/auth/token/esc/{esc.id}", headers={"X-CSRF-Token": csrf})

    assert by_header.status_code == 200 and by_header.get_json()["token"].startswith("rtd_")
    assert post_without_csrf.status_code == 403
    assert post_with_csrf.status_code == 200 and post_with_csrf.get_json()["token"].startswith("rtd_")
    assert len(accounts_of(app).tokens_of(access.ESC, esc.id)) == 2


def family_caller(app: Flask, token: str) -> Any:
    caller = app.test_client()
    caller.environ_base["HTTP_X_RACETRACK_AUTH"] = token
    return caller.get(f"{API}/users/validate_user_auth")


def test_a_family_token_stops_working_when_its_last_version_is_deleted(app: Flask, client: FlaskClient) -> None:
    add_job("adder", "1.0.0")
    add_job("adder", "2.0.0")
    token = accounts_of(app).family_token("adder")  # the AUTH_TOKEN its containers got
    assert family_caller(app, token).status_code == 200

    assert client.delete(f"{API}/job/adder/1.0.0").status_code == 204
    still = family_caller(app, token)
    assert client.delete(f"{API}/job/adder/2.0.0").status_code == 204
    gone = family_caller(app, token)

    assert still.status_code == 200  # a version is left
    assert gone.status_code == 401


def test_a_family_deployed_again_gets_a_new_working_token(app: Flask, client: FlaskClient) -> None:
    add_job("adder", "1.0.0")
    old = accounts_of(app).family_token("adder")
    assert client.delete(f"{API}/job/adder/1.0.0").status_code == 204
    add_job("adder", "1.0.1")  # deployed again

    new = accounts_of(app).family_token("adder")

    assert new != old
    assert family_caller(app, new).status_code == 200 and family_caller(app, old).status_code == 401


def test_a_second_auth_cookie_planted_by_a_page_is_refused_by_the_control_plane(app: Flask) -> None:
    client = app.test_client(use_cookies=False)  # a browser, as far as its Cookie header goes
    # As the browser sends them: the planted cookie (narrower path) first.
    response = client.get(
        "/lifecycle/api/v1/job",
        environ_overrides={"HTTP_COOKIE": "X-Racetrack-Auth=attackers-token; X-Racetrack-Auth=unit-test-admin-token"},
    )

    assert response.status_code == 401
    assert "several different X-Racetrack-Auth cookies" in response.get_json()["error"]
    assert (
        client.get(
            "/lifecycle/api/v1/job", environ_overrides={"HTTP_COOKIE": "X-Racetrack-Auth=unit-test-admin-token"}
        ).status_code
        == 200
    )
