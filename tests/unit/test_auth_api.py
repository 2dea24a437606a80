"""The auth HTTP API (racetrackd/api/auth.py) and the scope checks of the lifecycle API, through Flask's
test client over a FakeRuntime."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from racetrackd import db
from racetrackd.auth import access
from racetrackd.auth.access import CALL_JOB, DEPLOY_JOB, DEPLOY_NEW_FAMILY, READ_JOB, GrantRule
from racetrackd.auth.accounts import Accounts
from racetrackd.auth.passwords import hash_password
from tests.unit.conftest import ADMIN_TOKEN
from tests.unit.fakes import build_context, sample_manifest
from tests.unit.gateway_helpers import add_job

API = "/lifecycle/api/v1"
PASSWORD = "correct horse battery"


def accounts_of(app: Flask) -> Accounts:
    accounts: Accounts = app.extensions["racetrackd"].accounts
    return accounts


def client_with(app: Flask, token: str) -> FlaskClient:
    test_client = app.test_client()
    test_client.environ_base["HTTP_X_RACETRACK_AUTH"] = token
    return test_client


def new_user(app: Flask, username: str = "bob", *, default_grants: bool = True, is_active: bool = True) -> str:
    """A user and one API token of theirs (no password: hashing is slow and not under test here)."""
    accounts = accounts_of(app)
    accounts.create_user(username, default_grants=default_grants, is_active=is_active)
    token, _ = accounts.issue_token(access.USER, username)
    return token


def set_fast_password(username: str, password: str = PASSWORD) -> None:
    """A valid hash with few iterations (the stored format carries them), so logins cost no time."""
    db.User.update(password_hash=hash_password(password, iterations=1_000)).where(
        db.User.username == username
    ).execute()


def assert_error(response: Any, status: int, error_type: str) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    body = response.get_json()
    assert body["type"] == error_type
    assert isinstance(body["error"], str) and body["error"]
    return str(body["error"])


def login(app: Flask, username: str = "bob", password: str = PASSWORD) -> Any:
    return app.test_client().post(f"{API}/users/login", json={"username": username, "password": password})


# --- password login, the cookie, logout ------------------------------------------------------------


def test_login_returns_a_token_and_sets_an_httponly_samesite_cookie(app: Flask) -> None:
    accounts_of(app).create_user("bob")
    set_fast_password("bob")

    response = login(app)

    assert response.status_code == 200
    body = response.get_json()
    assert body["username"] == "bob" and body["subject"] == "user:bob" and body["is_staff"] is False
    token = body["token"]
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"X-Racetrack-Auth={token};")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie
    assert "Max-Age=2678400" in cookie
    row = db.AuthToken.get(db.AuthToken.token_hash == hashlib.sha256(token.encode()).hexdigest())
    assert row.origin == "login" and row.expiry_time == pytest.approx(time.time() + 2678400, abs=60)


def test_the_login_cookie_is_secure_and_lives_as_configured(make_app: Callable[..., Flask]) -> None:
    app = make_app(secure_cookie="true", login_token_ttl="3600")
    accounts_of(app).create_user("bob")
    set_fast_password("bob")

    response = login(app)

    cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie and "Max-Age=3600" in cookie
    token = response.get_json()["token"]
    row = db.AuthToken.get(db.AuthToken.token_hash == hashlib.sha256(token.encode()).hexdigest())
    assert row.expiry_time == pytest.approx(time.time() + 3600, abs=60)


@pytest.mark.parametrize(
    "body",
    [
        {"username": "bob", "password": "wrong horse battery"},
        {"username": "nobody", "password": PASSWORD},
        {"username": "bob"},
        {},
    ],
)
def test_a_wrong_login_is_401_json_and_sets_no_cookie(app: Flask, body: dict[str, str]) -> None:
    accounts_of(app).create_user("bob")
    set_fast_password("bob")

    response = app.test_client().post(f"{API}/users/login", json=body)

    assert assert_error(response, 401, "unauthorized") == "invalid username or password"
    assert "Set-Cookie" not in response.headers
    assert db.AuthToken.select().where(db.AuthToken.origin == "login").count() == 0


def test_the_cookie_alone_authenticates_later_requests(app: Flask) -> None:
    accounts_of(app).create_user("bob")
    set_fast_password("bob")
    browser = app.test_client()
    assert browser.post(f"{API}/users/login", json={"username": "bob", "password": PASSWORD}).status_code == 200

    response = browser.get(f"{API}/users/validate_user_auth")

    assert response.status_code == 200
    assert response.get_json()["subject"] == "user:bob"
    cookie = browser.get_cookie("X-Racetrack-Auth")
    assert cookie is not None and cookie.http_only


def test_logout_revokes_the_login_token_and_clears_the_cookie(app: Flask) -> None:
    accounts_of(app).create_user("bob")
    set_fast_password("bob")
    browser = app.test_client()
    token = browser.post(f"{API}/users/login", json={"username": "bob", "password": PASSWORD}).get_json()["token"]

    response = browser.post(f"{API}/users/logout")

    assert response.status_code == 200 and response.get_json() == {"logged_out": True}
    assert "X-Racetrack-Auth=;" in response.headers["Set-Cookie"]
    assert browser.get_cookie("X-Racetrack-Auth") is None
    assert_error(client_with(app, token).get(f"{API}/users/validate_user_auth"), 401, "unauthorized")


def test_logout_leaves_a_long_lived_api_token_alone(app: Flask) -> None:
    token = new_user(app)

    assert client_with(app, token).get(f"{API}/users/logout").status_code == 200

    assert client_with(app, token).get(f"{API}/users/validate_user_auth").status_code == 200


def test_logout_needs_a_token(app: Flask) -> None:
    assert_error(app.test_client().post(f"{API}/users/logout"), 401, "unauthorized")


def test_validate_user_auth_describes_the_caller(app: Flask, client: FlaskClient) -> None:
    token = new_user(app)

    bob = client_with(app, token).get(f"{API}/users/validate_user_auth").get_json()
    admin = client.get(f"{API}/users/validate_user_auth").get_json()

    assert bob == {"username": "bob", "token": token, "is_staff": False, "subject": "user:bob"}
    assert admin == {"username": "admin", "token": ADMIN_TOKEN, "is_staff": True, "subject": "user:admin"}


def test_validate_user_auth_refuses_a_bad_token(app: Flask) -> None:
    assert_error(client_with(app, "rtd_nope").get(f"{API}/users/validate_user_auth"), 401, "unauthorized")


def test_too_many_wrong_logins_are_429_with_retry_after(make_app: Callable[..., Flask]) -> None:
    app = make_app(auth_failure_limit="3")
    browser = app.test_client()
    for _ in range(3):
        response = browser.post(f"{API}/users/login", json={"username": "nobody", "password": "wrong password"})
        assert_error(response, 401, "unauthorized")

    response = browser.post(f"{API}/users/login", json={"username": "nobody", "password": "wrong password"})

    assert_error(response, 429, "too-many-auth-failures")
    assert int(response.headers["Retry-After"]) > 0


# --- self-registration ------------------------------------------------------------------------------


def test_a_registered_user_cannot_log_in_until_an_admin_activates_them(app: Flask, client: FlaskClient) -> None:
    response = app.test_client().post(f"{API}/users/register", json={"username": "dave", "password": PASSWORD})

    assert response.status_code == 201
    assert response.get_json()["is_active"] is False and response.get_json()["has_password"] is True
    assert_error(login(app, "dave"), 401, "unauthorized")

    assert client.patch(f"{API}/users/dave", json={"is_active": True}).get_json()["is_active"] is True

    assert login(app, "dave").status_code == 200


def test_registration_cannot_make_staff(app: Flask) -> None:
    response = app.test_client().post(
        f"{API}/users/register", json={"username": "eve", "is_staff": True, "is_active": True}
    )

    assert response.status_code == 201
    assert response.get_json()["is_staff"] is False and response.get_json()["is_active"] is False
    user = accounts_of(app).get_user("eve")
    assert (user.is_staff, user.is_active) == (False, False)


@pytest.mark.parametrize(
    ("body", "status", "error_type", "start"),
    [
        ({"username": "dave", "password": "short"}, 400, "validation-error", "password: "),
        ({"username": "bad name", "password": PASSWORD}, 400, "validation-error", "username: "),
        ({"username": "bob"}, 409, "already-exists", "user bob already exists"),
    ],
)
def test_bad_registrations_are_refused_naming_the_field(
    app: Flask, body: dict[str, str], status: int, error_type: str, start: str
) -> None:
    accounts_of(app).create_user("bob")

    message = assert_error(app.test_client().post(f"{API}/users/register", json=body), status, error_type)

    assert message.startswith(start)


# --- change password --------------------------------------------------------------------------------


def test_change_password(app: Flask) -> None:
    token = new_user(app)
    set_fast_password("bob")
    bob = client_with(app, token)

    wrong = bob.put(f"{API}/users/change_password", json={"old_password": "not it", "new_password": "new passphrase"})
    weak = bob.put(f"{API}/users/change_password", json={"old_password": PASSWORD, "new_password": "12345678"})
    assert assert_error(wrong, 400, "validation-error") == "old_password: does not match"
    assert assert_error(weak, 400, "validation-error").startswith("new_password: ")

    response = bob.put(
        f"{API}/users/change_password", json={"old_password": PASSWORD, "new_password": "new passphrase"}
    )

    assert response.status_code == 200 and response.get_json() == {"changed": True}
    assert_error(login(app, "bob", PASSWORD), 401, "unauthorized")
    assert login(app, "bob", "new passphrase").status_code == 200


def test_only_users_change_passwords(app: Flask) -> None:
    esc = accounts_of(app).create_esc("billing")
    token, _ = accounts_of(app).issue_token(access.ESC, esc.id)

    response = client_with(app, token).put(
        f"{API}/users/change_password", json={"old_password": "x", "new_password": "new passphrase"}
    )

    assert assert_error(response, 403, "forbidden") == f"ESC {esc.id} is not a user"


# --- administration is for admins --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/users", None),
        ("POST", "/users", {"username": "mallory"}),
        ("PATCH", "/users/bob", {"is_staff": True}),
        ("DELETE", "/users/carol", None),
        ("GET", "/users/carol", None),
        ("GET", "/users/carol/tokens", None),
        ("POST", "/users/carol/tokens", {}),
        ("GET", "/escs", None),
        ("POST", "/escs", {"name": "billing"}),
        ("GET", "/auth/grants?subject=user:carol", None),
        ("POST", "/auth/grants", {"subject": "user:bob", "scope": "full_access"}),
        ("GET", "/auth/tokens?all=true", None),
        ("GET", "/auth/tokens?subject=user:carol", None),
        ("POST", "/auth/tokens", {"subject": "user:carol"}),
        ("GET", "/auth/public-endpoints", None),
        ("PUT", "/auth/public-endpoints/1", {"active": True}),
    ],
)
def test_a_non_admin_user_gets_403_json_on_administration(
    app: Flask, method: str, path: str, body: dict[str, Any] | None
) -> None:
    token = new_user(app)
    new_user(app, "carol")
    accounts_of(app).request_public_endpoints("adder", "1.0.0", ["/public"])

    response = client_with(app, token).open(f"{API}{path}", method=method, json=body)

    message = assert_error(response, 403, "forbidden")
    assert message.startswith("bob may not ")
    assert "full_access" in message
    assert "rtd grant add user:bob full_access" in response.get_json()["hint"]
    assert not accounts_of(app).get_user("bob").is_staff
    assert db.User.select().where(db.User.username == "mallory").count() == 0
    assert accounts_of(app).public_endpoints(active=True) == []


def test_a_user_holding_full_access_administers(app: Flask) -> None:
    token = new_user(app)
    accounts_of(app).add_grant(access.USER, "bob", GrantRule(access.FULL_ACCESS), "admin")

    response = client_with(app, token).get(f"{API}/users")

    assert response.status_code == 200
    assert {user["username"] for user in response.get_json()} == {"admin", "bob"}


def test_admin_manages_users(client: FlaskClient, app: Flask) -> None:
    created = client.post(f"{API}/users", json={"username": "bob", "is_staff": False})
    assert created.status_code == 201
    assert created.get_json()["username"] == "bob" and created.get_json()["has_password"] is False

    assert_error(client.post(f"{API}/users", json={"username": "bob"}), 409, "already-exists")
    assert client.get(f"{API}/users/bob").get_json()["is_active"] is True
    assert assert_error(client.patch(f"{API}/users/bob", json={"is_root": True}), 400, "validation-error").startswith(
        "is_root: "
    )
    assert client.patch(f"{API}/users/bob", json={"is_staff": True}).get_json()["is_staff"] is True
    token, _ = accounts_of(app).issue_token(access.USER, "bob")
    assert client_with(app, token).get(f"{API}/users").status_code == 200  # staff now

    assert client.delete(f"{API}/users/bob").status_code == 204

    assert_error(client.get(f"{API}/users/bob"), 404, "not-found")
    assert_error(client_with(app, token).get(f"{API}/users"), 401, "unauthorized")


def test_the_bootstrap_admin_cannot_be_deleted_over_http(client: FlaskClient) -> None:
    message = assert_error(client.delete(f"{API}/users/admin"), 400, "validation-error")

    assert message.startswith("username: ")
    assert client.get(f"{API}/users/admin").get_json()["bootstrap_admin"] is True


def test_a_user_reads_their_own_profile(app: Flask) -> None:
    token = new_user(app)

    response = client_with(app, token).get(f"{API}/users/bob")

    assert response.status_code == 200 and response.get_json()["username"] == "bob"
    assert "password_hash" not in response.get_json()


# --- ESCs and their tokens ----------------------------------------------------------------------------


def test_an_escs_token_appears_once_in_the_answer_that_makes_it(app: Flask, client: FlaskClient) -> None:
    esc = client.post(f"{API}/escs", json={"name": "billing"})
    assert esc.status_code == 201
    esc_id = esc.get_json()["id"]

    made = client.post(f"{API}/escs/{esc_id}/auth_token", json={"description": "prod"})

    assert made.status_code == 201
    body = made.get_json()
    token = body["token"]
    assert body["subject"] == f"esc:{esc_id}" and body["active"] is True and body["description"] == "prod"
    digest = hashlib.sha256(token.encode()).hexdigest()
    for path in (
        f"/escs/{esc_id}/auth_data",
        f"/auth/tokens?subject=esc:{esc_id}",
        "/auth/tokens?all=true",
        f"/escs/{esc_id}",
        "/escs",
    ):
        answer = client.get(f"{API}{path}")
        assert answer.status_code == 200, path
        assert token not in answer.get_data(as_text=True), path
        assert digest not in answer.get_data(as_text=True), path
    listed = client.get(f"{API}/escs/{esc_id}/auth_data").get_json()
    assert [row["id"] for row in listed] == [body["id"]]
    assert "token" not in listed[0]


def test_an_esc_token_authenticates_as_the_esc(app: Flask, client: FlaskClient) -> None:
    esc_id = client.post(f"{API}/escs", json={"name": "billing", "id": "billing-1"}).get_json()["id"]
    token = client.post(f"{API}/escs/{esc_id}/auth_token", json={}).get_json()["token"]

    me = client_with(app, token).get(f"{API}/users/validate_user_auth").get_json()

    assert me["subject"] == "esc:billing-1" and me["username"] == "ESC billing-1" and me["is_staff"] is False


def test_racetracks_get_esc_token_path_makes_a_new_token(app: Flask, client: FlaskClient) -> None:
    esc_id = client.post(f"{API}/escs", json={"name": "billing"}).get_json()["id"]

    first = client.get(f"{API}/auth/token/esc/{esc_id}").get_json()["token"]
    second = client.get(f"{API}/auth/token/esc/{esc_id}").get_json()["token"]

    assert first != second
    for token in (first, second):
        assert client_with(app, token).get(f"{API}/users/validate_user_auth").status_code == 200


def test_revoking_an_esc_token(app: Flask, client: FlaskClient) -> None:
    esc_id = client.post(f"{API}/escs", json={"name": "billing"}).get_json()["id"]
    made = client.post(f"{API}/escs/{esc_id}/auth_token", json={}).get_json()
    esc = client_with(app, made["token"])
    assert esc.get(f"{API}/users/validate_user_auth").status_code == 200

    assert client.delete(f"{API}/escs/{esc_id}/auth_token/{made['id']}").status_code == 204

    assert_error(esc.get(f"{API}/users/validate_user_auth"), 401, "unauthorized")
    listed = client.get(f"{API}/escs/{esc_id}/auth_data").get_json()
    assert (listed[0]["active"], listed[0]["revoked"]) == (False, True)


def test_an_escs_token_cannot_be_revoked_through_another_esc(client: FlaskClient, app: Flask) -> None:
    one = client.post(f"{API}/escs", json={"name": "one"}).get_json()["id"]
    two = client.post(f"{API}/escs", json={"name": "two"}).get_json()["id"]
    made = client.post(f"{API}/escs/{one}/auth_token", json={}).get_json()

    assert_error(client.delete(f"{API}/escs/{two}/auth_token/{made['id']}"), 404, "not-found")

    assert client_with(app, made["token"]).get(f"{API}/users/validate_user_auth").status_code == 200


def test_deleting_an_esc_ends_its_tokens(client: FlaskClient, app: Flask) -> None:
    esc_id = client.post(f"{API}/escs", json={"name": "billing"}).get_json()["id"]
    token = client.post(f"{API}/escs/{esc_id}/auth_token", json={}).get_json()["token"]

    assert client.delete(f"{API}/escs/{esc_id}").status_code == 204

    assert_error(client_with(app, token).get(f"{API}/users/validate_user_auth"), 401, "unauthorized")
    assert_error(client.get(f"{API}/escs/{esc_id}"), 404, "not-found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"expires_in": -5}, "expires_in: "),
        ({"expires_in": "soon"}, "expires_in: "),
        ({"expiry_time": True}, "expiry_time: "),
        ({"expiry_time": 1}, "expiry_time: "),  # long past
        ({"description": 7}, "description: "),
    ],
)
def test_bad_token_requests_are_400_naming_the_field(client: FlaskClient, body: dict[str, Any], field: str) -> None:
    esc_id = client.post(f"{API}/escs", json={"name": "billing"}).get_json()["id"]

    message = assert_error(client.post(f"{API}/escs/{esc_id}/auth_token", json=body), 400, "validation-error")

    assert message.startswith(field)


def test_a_token_that_expires_in_a_while(client: FlaskClient) -> None:
    made = client.post(f"{API}/auth/tokens", json={"expires_in": 600}).get_json()

    assert made["expiry_time"] == pytest.approx(time.time() + 600, abs=5)
    assert made["subject"] == "user:admin" and made["expired"] is False


# --- tokens: your own, unless admin ---------------------------------------------------------------------


def test_a_user_lists_only_their_own_tokens(app: Flask, client: FlaskClient) -> None:
    bob_token = new_user(app)
    new_user(app, "carol")
    bob = client_with(app, bob_token)

    mine = bob.get(f"{API}/auth/tokens").get_json()
    by_name = bob.get(f"{API}/users/bob/tokens").get_json()

    assert {row["subject"] for row in mine} == {"user:bob"}
    assert [row["id"] for row in by_name] == [row["id"] for row in mine]
    assert_error(bob.get(f"{API}/auth/tokens?subject=user:carol"), 403, "forbidden")
    assert_error(bob.get(f"{API}/users/carol/tokens"), 403, "forbidden")
    assert_error(bob.get(f"{API}/auth/tokens?all=true"), 403, "forbidden")
    carols = client.get(f"{API}/auth/tokens?subject=user:carol").get_json()
    assert {row["subject"] for row in carols} == {"user:carol"}
    everyone = client.get(f"{API}/auth/tokens?all=true").get_json()
    assert {"user:admin", "user:bob", "user:carol"} <= {row["subject"] for row in everyone}


def test_a_user_makes_and_revokes_their_own_tokens(app: Flask) -> None:
    bob = client_with(app, new_user(app))

    made = bob.post(f"{API}/auth/tokens", json={"description": "ci"})
    assert made.status_code == 201
    extra = made.get_json()
    assert extra["subject"] == "user:bob"
    assert client_with(app, extra["token"]).get(f"{API}/users/validate_user_auth").status_code == 200

    revoked = bob.delete(f"{API}/auth/tokens/{extra['id']}")

    assert revoked.status_code == 200 and revoked.get_json()["revoked"] is True
    assert "token" not in revoked.get_json()
    assert_error(client_with(app, extra["token"]).get(f"{API}/users/validate_user_auth"), 401, "unauthorized")


def test_a_user_cannot_revoke_someone_elses_token(app: Flask) -> None:
    bob = client_with(app, new_user(app))
    carol_token = new_user(app, "carol")
    carol_id = accounts_of(app).tokens_of(access.USER, "carol")[0].id
    admin_id = accounts_of(app).tokens_of(access.USER, "admin")[0].id

    assert_error(bob.delete(f"{API}/auth/tokens/{carol_id}"), 403, "forbidden")
    assert_error(bob.delete(f"{API}/auth/tokens/{admin_id}"), 403, "forbidden")

    assert client_with(app, carol_token).get(f"{API}/users/validate_user_auth").status_code == 200
    assert app.test_client().get(f"{API}/job", headers={"X-Racetrack-Auth": ADMIN_TOKEN}).status_code == 200


def test_revoking_an_unknown_token_is_404(client: FlaskClient) -> None:
    assert_error(client.delete(f"{API}/auth/tokens/4242"), 404, "not-found")


def test_a_bad_subject_is_400_naming_the_field(client: FlaskClient) -> None:
    message = assert_error(client.get(f"{API}/auth/tokens?subject=alice"), 400, "validation-error")

    assert message.startswith("subject: ")


# --- grants ---------------------------------------------------------------------------------------------


def test_admin_grants_and_removes_a_scope(app: Flask, client: FlaskClient) -> None:
    token = new_user(app, default_grants=False)
    add_job("adder", "1.0.0")
    bob = client_with(app, token)
    assert_error(bob.get(f"{API}/job/adder/1.0.0"), 403, "forbidden")

    made = client.post(f"{API}/auth/grants", json={"subject": "user:bob", "scope": "read_job", "job_name": "adder"})

    assert made.status_code == 201
    grant = made.get_json()
    assert (
        grant["subject"],
        grant["scope"],
        grant["job_name"],
        grant["job_version"],
        grant["endpoint"],
        grant["granted_by"],
    ) == ("user:bob", "read_job", "adder", None, None, "admin")
    assert bob.get(f"{API}/job/adder/1.0.0").status_code == 200
    assert [g["id"] for g in bob.get(f"{API}/auth/grants").get_json()] == [grant["id"]]
    assert client.delete(f"{API}/auth/grants/{grant['id']}").status_code == 204
    assert_error(bob.get(f"{API}/job/adder/1.0.0"), 403, "forbidden")
    assert_error(client.delete(f"{API}/auth/grants/{grant['id']}"), 404, "not-found")


def test_a_user_sees_only_their_own_grants_and_an_admin_all(app: Flask, client: FlaskClient) -> None:
    bob = client_with(app, new_user(app))
    new_user(app, "carol")

    assert {g["subject"] for g in bob.get(f"{API}/auth/grants").get_json()} == {"user:bob"}
    assert {g["subject"] for g in client.get(f"{API}/auth/grants").get_json()} == {"user:bob", "user:carol"}
    assert {g["subject"] for g in client.get(f"{API}/auth/grants?subject=user:carol").get_json()} == {"user:carol"}


@pytest.mark.parametrize(
    ("body", "status", "error_type", "start"),
    [
        ({"subject": "bob", "scope": "read_job"}, 400, "validation-error", "subject: "),
        ({"subject": 7, "scope": "read_job"}, 400, "validation-error", "subject: "),
        ({"subject": "user:bob"}, 400, "validation-error", "scope: "),
        ({"subject": "user:bob", "scope": "everything"}, 400, "validation-error", "scope: "),
        (
            {"subject": "user:bob", "scope": "read_job", "job_version": "1.0.0"},
            400,
            "validation-error",
            "job_version: ",
        ),
        (
            {"subject": "user:bob", "scope": "call_job", "job_name": "adder", "endpoint": "api"},
            400,
            "validation-error",
            "endpoint: ",
        ),
        ({"subject": "user:bob", "scope": "read_job", "job_name": ""}, 400, "validation-error", "job_name: "),
        ({"subject": "user:nobody", "scope": "read_job"}, 404, "not-found", "user nobody not found"),
        ({"subject": "esc:nope", "scope": "read_job"}, 404, "not-found", "ESC nope not found"),
        ({"subject": "job_family:ghost", "scope": "call_job"}, 404, "not-found", "job family ghost not found"),
    ],
)
def test_bad_grants_are_refused_naming_the_field(
    app: Flask, client: FlaskClient, body: dict[str, Any], status: int, error_type: str, start: str
) -> None:
    new_user(app, default_grants=False)

    message = assert_error(client.post(f"{API}/auth/grants", json=body), status, error_type)

    assert message.startswith(start)
    assert db.Grant.select().count() == 0


def test_an_identical_endpoint_grant_is_409(app: Flask, client: FlaskClient) -> None:
    new_user(app, default_grants=False)
    body = {
        "subject": "user:bob",
        "scope": "call_job",
        "job_name": "adder",
        "job_version": "1.0.0",
        "endpoint": "/api/v1/perform",
    }
    assert client.post(f"{API}/auth/grants", json=body).status_code == 201

    assert_error(client.post(f"{API}/auth/grants", json=body), 409, "already-exists")


def test_an_identical_family_grant_is_409(app: Flask, client: FlaskClient) -> None:
    new_user(app, default_grants=False)
    body = {"subject": "user:bob", "scope": "delete_job", "job_name": "adder"}
    assert client.post(f"{API}/auth/grants", json=body).status_code == 201

    assert_error(client.post(f"{API}/auth/grants", json=body), 409, "already-exists")


def test_racetracks_allow_esc_path_grants_a_scope_on_a_family(app: Flask, client: FlaskClient) -> None:
    add_job("adder", "1.0.0")
    esc_id = client.post(f"{API}/escs", json={"name": "billing"}).get_json()["id"]
    esc = client_with(app, client.post(f"{API}/escs/{esc_id}/auth_token", json={}).get_json()["token"])
    assert_error(esc.get(f"{API}/auth/allowed/job/adder/1.0.0/scope/call_job"), 403, "forbidden")

    made = client.post(f"{API}/auth/allow/esc/{esc_id}/job/adder/scope/call_job")

    assert made.status_code == 201
    assert (made.get_json()["subject"], made.get_json()["scope"], made.get_json()["job_name"]) == (
        f"esc:{esc_id}",
        "call_job",
        "adder",
    )
    assert esc.get(f"{API}/auth/allowed/job/adder/1.0.0/scope/call_job").status_code == 202
    assert_error(esc.get(f"{API}/auth/allowed/job/adder/1.0.0/scope/read_job"), 403, "forbidden")


def test_racetracks_allow_esc_path_finds_the_esc_by_name_too(app: Flask, client: FlaskClient) -> None:
    esc_id = client.post(f"{API}/escs", json={"name": "billing"}).get_json()["id"]

    made = client.post(f"{API}/auth/allow/esc/billing/job/adder/scope/read_job")

    assert made.status_code == 201 and made.get_json()["subject"] == f"esc:{esc_id}"


def test_racetracks_allow_job_family_path(app: Flask, client: FlaskClient) -> None:
    add_job("adder", "1.0.0")
    add_job("caller", "1.0.0")
    family = client_with(app, accounts_of(app).family_token("caller"))
    assert_error(family.get(f"{API}/auth/can-call-job/adder/1.0.0/api/v1/perform"), 403, "forbidden")

    made = client.post(f"{API}/auth/allow/job_family/caller/job/adder/scope/call_job")

    assert made.status_code == 201 and made.get_json()["subject"] == "job_family:caller"
    answer = family.get(f"{API}/auth/can-call-job/adder/1.0.0/api/v1/perform")
    assert answer.status_code == 200 and answer.get_json()["caller"] == "Job family caller"
    assert_error(client.post(f"{API}/auth/allow/job_family/ghost/job/adder/scope/call_job"), 404, "not-found")
    assert_error(client.post(f"{API}/auth/allow/job_family/caller/job/adder/scope/fly"), 400, "validation-error")


def test_allowed_job_answers_202_or_403_naming_the_scope(app: Flask) -> None:
    add_job("adder", "1.0.0")
    bob = client_with(app, new_user(app))

    allowed = bob.get(f"{API}/auth/allowed/job/adder/1.0.0/scope/read_job")
    refused = bob.get(f"{API}/auth/allowed/job/adder/1.0.0/scope/delete_job")

    assert allowed.status_code == 202 and allowed.get_json() == {"allowed": True}
    assert "delete_job" in assert_error(refused, 403, "forbidden")
    assert bob.get(f"{API}/auth/allowed/job/adder/latest/scope/call_job").status_code == 202
    assert_error(bob.get(f"{API}/auth/allowed/job/adder/1.0.0/scope/nonsense"), 400, "validation-error")
    assert_error(bob.get(f"{API}/auth/allowed/job/missing/1.0.0/scope/read_job"), 404, "job-not-found")


def test_allowed_job_endpoint_checks_endpoint_grants(app: Flask) -> None:
    add_job("adder", "1.0.0")
    token = new_user(app, default_grants=False)
    accounts_of(app).add_grant(access.USER, "bob", GrantRule(CALL_JOB, "adder", endpoint="/api/v1/perform"), "admin")
    bob = client_with(app, token)
    base = f"{API}/auth/allowed/job_endpoint/adder/1.0.0/scope/call_job/endpoint"

    assert bob.get(f"{base}/api/v1/perform").status_code == 202
    assert bob.get(f"{base}/api/v1/perform/deeper").status_code == 202
    assert "(endpoint /api/v1/other)" in assert_error(bob.get(f"{base}/api/v1/other"), 403, "forbidden")
    assert_error(bob.get(f"{API}/auth/allowed/job/adder/1.0.0/scope/call_job"), 403, "forbidden")


def test_can_call_job_allows_open_paths_and_refuses_the_rest(app: Flask) -> None:
    add_job("adder", "1.0.0")
    nobody = client_with(app, new_user(app, default_grants=False))

    assert nobody.get(f"{API}/auth/can-call-job/adder/1.0.0/health").status_code == 200
    message = assert_error(nobody.get(f"{API}/auth/can-call-job/adder/1.0.0/api/v1/perform"), 403, "forbidden")
    assert "call_job" in message and "adder" in message


# --- lifecycle endpoints check scopes --------------------------------------------------------------


def test_a_user_without_read_job_gets_403_and_does_not_see_the_job_listed(app: Flask) -> None:
    add_job("adder", "1.0.0")
    add_job("other", "2.0.0")
    token = new_user(app, default_grants=False)
    accounts_of(app).add_grant(access.USER, "bob", GrantRule(READ_JOB, "other"), "admin")
    bob = client_with(app, token)

    message = assert_error(bob.get(f"{API}/job/adder/1.0.0"), 403, "forbidden")

    assert "read_job" in message and "adder" in message
    assert bob.get(f"{API}/job/other/2.0.0").status_code == 200
    assert [job["name"] for job in bob.get(f"{API}/job").get_json()] == ["other"]


def test_a_version_grant_shows_that_version_only(app: Flask) -> None:
    add_job("adder", "1.0.0")
    add_job("adder", "2.0.0")
    token = new_user(app, default_grants=False)
    accounts_of(app).add_grant(access.USER, "bob", GrantRule(READ_JOB, "adder", "2.0.0"), "admin")
    bob = client_with(app, token)

    assert [job["version"] for job in bob.get(f"{API}/job").get_json()] == ["2.0.0"]
    assert_error(bob.get(f"{API}/job/adder/1.0.0"), 403, "forbidden")
    assert bob.get(f"{API}/job/adder/latest").get_json()["version"] == "2.0.0"


def test_deployments_and_audit_are_filtered_by_read_job(app: Flask, client: FlaskClient) -> None:
    add_job("adder", "1.0.0")
    for name in ("adder", "other"):
        db.Deployment.create(job_name=name, job_version="1.0.0", manifest_yaml="", status="done")
        db.AuditEvent.record("job_deployed", name, "1.0.0", "admin")
    token = new_user(app, default_grants=False)
    accounts_of(app).add_grant(access.USER, "bob", GrantRule(READ_JOB, "other"), "admin")
    bob = client_with(app, token)
    hidden = db.Deployment.get(db.Deployment.job_name == "adder").id

    assert {d["job_name"] for d in bob.get(f"{API}/deploy").get_json()} == {"other"}
    assert {e["job_name"] for e in bob.get(f"{API}/audit/activity").get_json()} == {"other"}
    assert_error(bob.get(f"{API}/deploy/{hidden}"), 403, "forbidden")
    assert_error(bob.get(f"{API}/deploy/{hidden}/build-logs"), 403, "forbidden")
    assert {d["job_name"] for d in client.get(f"{API}/deploy").get_json()} == {"adder", "other"}


def test_job_logs_need_read_job(app: Flask) -> None:
    add_job("adder", "1.0.0")
    db.Deployment.create(job_name="adder", job_version="1.0.0", manifest_yaml="", status="done", build_logs="built\n")
    bob = client_with(app, new_user(app, default_grants=False))

    for path in ("logs", "logs/plain", "build-logs"):
        assert_error(bob.get(f"{API}/job/adder/1.0.0/{path}"), 403, "forbidden")


def test_delete_needs_delete_job_and_the_403_says_so(app: Flask, runtime: Any) -> None:
    add_job("adder", "1.0.0")
    token = new_user(app)  # new users may read, call and deploy, not delete
    bob = client_with(app, token)

    response = bob.delete(f"{API}/job/adder/1.0.0")

    message = assert_error(response, 403, "forbidden")
    assert message == "bob may not delete job adder 1.0.0: it lacks the delete_job scope"
    assert "rtd grant add user:bob delete_job --job adder" in response.get_json()["hint"]
    assert db.Job.find("adder", "1.0.0") is not None
    accounts_of(app).grant_family_owner(access.USER, "bob", "adder")

    assert bob.delete(f"{API}/job/adder/1.0.0").status_code == 204
    assert db.Job.find("adder", "1.0.0") is None
    assert db.DeletedJob.get().deleted_by == "bob"


def test_rollback_needs_deploy_job(app: Flask) -> None:
    add_job("adder", "1.0.0")
    token = new_user(app, default_grants=False)
    accounts_of(app).add_grant(access.USER, "bob", GrantRule(READ_JOB, "adder"), "admin")

    response = client_with(app, token).post(f"{API}/job/adder/1.0.0/rollback", json={})

    assert "deploy_job" in assert_error(response, 403, "forbidden")
    assert db.Deployment.select().count() == 0


def deploy_body(name: str = "adder", version: str = "1.0.0") -> dict[str, Any]:
    return {"manifest": sample_manifest(name=name, version=version), "build_context": build_context()}


def esc_client(app: Flask, *grants: GrantRule) -> FlaskClient:
    accounts = accounts_of(app)
    esc = accounts.create_esc("deployer", "deployer")
    for rule in grants:
        accounts.add_grant(access.ESC, esc.id, rule, "admin")
    token, _ = accounts.issue_token(access.ESC, esc.id)
    return client_with(app, token)


def test_deploying_a_new_family_needs_deploy_new_family(app: Flask) -> None:
    esc = esc_client(app, GrantRule(READ_JOB))

    response = esc.post(f"{API}/deploy", json=deploy_body())

    message = assert_error(response, 403, "forbidden")
    assert message == ("ESC deployer may not deploy the new job family adder: it lacks the deploy_new_family scope")
    assert "rtd grant add esc:deployer deploy_new_family" in response.get_json()["hint"]
    assert db.Deployment.select().count() == 0


def test_an_esc_with_deploy_new_family_may_start_a_family(app: Flask) -> None:
    esc = esc_client(app, GrantRule(DEPLOY_NEW_FAMILY))

    response = esc.post(f"{API}/deploy", json=deploy_body())

    assert response.status_code == 201
    deployment = db.Deployment.get_by_id(response.get_json()["id"])
    assert (deployment.deployed_by, deployment.requested_by) == ("ESC deployer", "esc:deployer")


def test_deploy_new_family_is_not_enough_for_an_existing_family(app: Flask) -> None:
    add_job("adder", "1.0.0")
    esc = esc_client(app, GrantRule(DEPLOY_NEW_FAMILY))

    response = esc.post(f"{API}/deploy", json=deploy_body(version="1.1.0"))

    assert "deploy_job" in assert_error(response, 403, "forbidden")
    assert db.Deployment.select().count() == 0


def test_deploy_job_on_the_family_allows_a_new_version(app: Flask) -> None:
    add_job("adder", "1.0.0")
    esc = esc_client(app, GrantRule(DEPLOY_JOB, "adder"))

    assert esc.post(f"{API}/deploy", json=deploy_body(version="1.1.0")).status_code == 201
    assert_error(esc.post(f"{API}/deploy", json=deploy_body(name="fresh")), 403, "forbidden")


def test_a_family_whose_first_deployment_is_under_way_is_not_new_any_more(app: Flask, client: FlaskClient) -> None:
    assert client.post(f"{API}/deploy", json=deploy_body(version="1.0.0")).status_code == 201  # queued, not done
    esc = esc_client(app, GrantRule(DEPLOY_NEW_FAMILY))

    response = esc.post(f"{API}/deploy", json=deploy_body(version="1.1.0"))

    assert "deploy_job" in assert_error(response, 403, "forbidden")


# --- public endpoints ------------------------------------------------------------------------------


def test_public_endpoints_are_listed_and_approved_by_an_admin(app: Flask, client: FlaskClient) -> None:
    add_job("adder", "1.0.0")
    accounts_of(app).request_public_endpoints("adder", "1.0.0", ["/api/v1/public", "/docs"])
    bob = client_with(app, new_user(app))

    pending = client.get(f"{API}/auth/public-endpoints?pending=true").get_json()
    assert [(row["endpoint"], row["active"]) for row in pending] == [("/api/v1/public", False), ("/docs", False)]
    assert bob.get(f"{API}/job/adder/1.0.0/public-endpoints").get_json() == []

    approved = client.put(f"{API}/auth/public-endpoints/{pending[0]['id']}", json={"active": True})

    assert approved.status_code == 200
    assert (approved.get_json()["active"], approved.get_json()["approved_by"]) == (True, "admin")
    assert [row["endpoint"] for row in bob.get(f"{API}/job/adder/1.0.0/public-endpoints").get_json()] == [
        "/api/v1/public"
    ]
    assert [row["endpoint"] for row in client.get(f"{API}/auth/public-endpoints?pending=true").get_json()] == ["/docs"]
    assert len(client.get(f"{API}/auth/public-endpoints").get_json()) == 2
    assert client.get(f"{API}/auth/public-endpoints?job_name=other").get_json() == []


def test_deleting_a_version_drops_its_public_endpoint_approvals(app: Flask, client: FlaskClient) -> None:
    add_job("adder", "1.0.0")
    add_job("adder", "2.0.0")
    accounts = accounts_of(app)
    accounts.request_public_endpoints("adder", "1.0.0", ["/public"])
    accounts.request_public_endpoints("adder", "2.0.0", ["/public"])
    for row in accounts.public_endpoints():
        accounts.set_public_endpoint(row.id, True, "admin")

    assert client.delete(f"{API}/job/adder/1.0.0").status_code == 204

    assert [(row.job_version, row.active) for row in accounts.public_endpoints("adder")] == [("2.0.0", True)]


def test_the_public_endpoints_of_a_job_need_read_job(app: Flask) -> None:
    add_job("adder", "1.0.0")
    nobody = client_with(app, new_user(app, default_grants=False))

    assert_error(nobody.get(f"{API}/job/adder/1.0.0/public-endpoints"), 403, "forbidden")


@pytest.mark.parametrize("body", [{"active": "yes"}, {}, {"active": 1}])
def test_approving_needs_a_boolean(app: Flask, client: FlaskClient, body: dict[str, Any]) -> None:
    accounts_of(app).request_public_endpoints("adder", "1.0.0", ["/public"])
    request_id = accounts_of(app).public_endpoints()[0].id

    message = assert_error(client.put(f"{API}/auth/public-endpoints/{request_id}", json=body), 400, "validation-error")

    assert message.startswith("active: ")
    assert accounts_of(app).public_endpoints(active=True) == []


def test_approving_an_unknown_request_is_404(client: FlaskClient) -> None:
    assert_error(client.put(f"{API}/auth/public-endpoints/99", json={"active": True}), 404, "not-found")


def test_a_public_endpoint_is_open_to_can_call_job(app: Flask, client: FlaskClient) -> None:
    add_job("adder", "1.0.0")
    accounts_of(app).request_public_endpoints("adder", "1.0.0", ["/api/v1/public"])
    nobody = client_with(app, new_user(app, default_grants=False))
    path = f"{API}/auth/can-call-job/adder/1.0.0/api/v1/public/item"
    assert_error(nobody.get(path), 403, "forbidden")

    client.put(f"{API}/auth/public-endpoints/{accounts_of(app).public_endpoints()[0].id}", json={"active": True})

    assert nobody.get(path).status_code == 200
    assert_error(nobody.get(f"{API}/auth/can-call-job/adder/1.0.0/api/v1/public/../admin"), 403, "forbidden")


# --- too many failures --------------------------------------------------------------------------------


def test_429_with_retry_after_once_an_address_sent_too_many_wrong_tokens(make_app: Callable[..., Flask]) -> None:
    app = make_app(auth_failure_limit="3")
    admin = client_with(app, ADMIN_TOKEN)
    assert admin.get(f"{API}/job").status_code == 200  # known good before the guessing starts
    for attempt in range(3):
        assert_error(client_with(app, f"rtd_guess-{attempt}").get(f"{API}/job"), 401, "unauthorized")

    response = client_with(app, "rtd_guess-3").get(f"{API}/job")

    assert_error(response, 429, "too-many-auth-failures")
    assert 0 < int(response.headers["Retry-After"]) <= 61
    assert admin.get(f"{API}/job").status_code == 200


def test_wrong_tokens_from_another_address_do_not_block_this_one(make_app: Callable[..., Flask]) -> None:
    app = make_app(auth_failure_limit="2")
    for attempt in range(3):
        app.test_client().get(
            f"{API}/job", headers={"X-Racetrack-Auth": f"rtd_guess-{attempt}"}, environ_base={"REMOTE_ADDR": "10.6.6.6"}
        )

    response = app.test_client().get(
        f"{API}/job", headers={"X-Racetrack-Auth": "rtd_typo"}, environ_base={"REMOTE_ADDR": "10.1.1.1"}
    )

    assert_error(response, 401, "unauthorized")


def test_open_endpoints_need_no_token(make_app: Callable[..., Flask]) -> None:
    app = make_app()

    assert app.test_client().get(f"{API}/info").status_code == 200
    assert app.test_client().post(f"{API}/users/login", json={}).status_code == 401  # reached, and refused


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/users"),
        ("GET", "/escs"),
        ("GET", "/auth/tokens"),
        ("GET", "/auth/grants"),
        ("GET", "/users/validate_user_auth"),
        ("GET", "/auth/public-endpoints"),
        ("POST", "/auth/tokens"),
        ("GET", "/auth/allowed/job/adder/1.0.0/scope/read_job"),
    ],
)
def test_auth_endpoints_need_a_token(app: Flask, method: str, path: str) -> None:
    response = app.test_client().open(f"{API}{path}", method=method, json={})

    assert "X-Racetrack-Auth" in assert_error(response, 401, "unauthorized")
