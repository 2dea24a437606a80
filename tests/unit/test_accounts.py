"""Users, ESCs, tokens, grants and public endpoints in a real SQLite registry (racetrackd/auth/accounts.py)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import racetrackd.auth.accounts as accounts_module
from racetrackd import db
from racetrackd.auth import access
from racetrackd.auth.access import CALL_JOB, DELETE_JOB, DEPLOY_JOB, DEPLOY_NEW_FAMILY, READ_JOB, GrantRule
from racetrackd.auth.accounts import ADMIN_USERNAME, TOKEN_PREFIX, Accounts, ChangeSignal, token_hash
from racetrackd.auth.passwords import ALGORITHM, ITERATIONS, hash_password
from racetrackd.auth.vault import Vault
from racetrackd.db import AuthToken, open_database
from racetrackd.errors import ConflictError, NotFoundError, ValidationError
from tests.unit.gateway_helpers import add_job

SECRET_KEY = b"unit-test-secret-key"
FAST_ITERATIONS = 1_000  # the hash names its iterations, so checks of these are fast


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def accounts(data_dir: Path) -> Iterator[Accounts]:
    open_database(data_dir / "registry.sqlite3")
    yield Accounts(Vault(SECRET_KEY), ChangeSignal.in_data_dir(data_dir))
    if not db.database.is_closed():
        db.database.close()


def stored_bytes(data_dir: Path) -> bytes:
    """Everything the registry holds on disk (the database and its WAL)."""
    return b"".join(path.read_bytes() for path in sorted(data_dir.glob("registry.sqlite3*")))


def user_with_token(
    accounts: Accounts, username: str = "bob", *, is_staff: bool = False, default_grants: bool = True
) -> str:
    accounts.create_user(username, is_staff=is_staff, default_grants=default_grants)
    token, _ = accounts.issue_token(access.USER, username)
    return token


def set_fast_password(username: str, password: str) -> None:
    """A valid password hash with few iterations (the format carries them): login checks cost no time."""
    db.User.update(password_hash=hash_password(password, iterations=FAST_ITERATIONS)).where(
        db.User.username == username
    ).execute()


# --- tokens ----------------------------------------------------------------------------------------


def test_a_token_is_stored_only_as_its_sha256(accounts: Accounts, data_dir: Path) -> None:
    accounts.create_user("bob")
    token, row = accounts.issue_token(access.USER, "bob", description="laptop")

    assert token.startswith(TOKEN_PREFIX) and len(token) > 40
    stored = AuthToken.get_by_id(row.id)
    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest() == token_hash(token)
    assert stored.sealed_token is None
    on_disk = stored_bytes(data_dir)
    assert stored.token_hash.encode() in on_disk  # the scan does see the row
    assert token.encode() not in on_disk


def test_each_token_is_new(accounts: Accounts) -> None:
    accounts.create_user("bob")

    tokens = {accounts.issue_token(access.USER, "bob")[0] for _ in range(5)}

    assert len(tokens) == 5


def test_an_issued_token_identifies_its_holder(accounts: Accounts) -> None:
    token = user_with_token(accounts)

    identity = accounts.identity_for(token)

    assert identity is not None
    assert (identity.kind, identity.name, identity.unrestricted) == (access.USER, "bob", False)
    assert identity.token_id == AuthToken.get(AuthToken.token_hash == token_hash(token)).id


def test_an_unknown_token_identifies_nobody(accounts: Accounts) -> None:
    user_with_token(accounts)

    assert accounts.identity_for("rtd_not-a-real-token") is None
    assert accounts.identity_for("") is None


def test_a_revoked_token_identifies_nobody_and_other_tokens_keep_working(accounts: Accounts) -> None:
    accounts.create_user("bob")
    token, row = accounts.issue_token(access.USER, "bob")
    other, _ = accounts.issue_token(access.USER, "bob")

    accounts.revoke_token(row.id)

    assert accounts.identity_for(token) is None
    assert accounts.identity_for(other) is not None
    assert accounts.get_token(row.id).active is False


def test_revoking_an_unknown_token_is_not_found(accounts: Accounts) -> None:
    with pytest.raises(NotFoundError, match="token 999 not found"):
        accounts.revoke_token(999)


def test_revoke_tokens_of_a_subject_by_origin(accounts: Accounts) -> None:
    accounts.create_user("bob")
    login, _ = accounts.issue_token(access.USER, "bob", origin="login")
    api, _ = accounts.issue_token(access.USER, "bob")

    assert accounts.revoke_tokens_of(access.USER, "bob", origin="login") == 1

    assert accounts.identity_for(login) is None
    assert accounts.identity_for(api) is not None
    assert accounts.revoke_tokens_of(access.USER, "bob") == 1
    assert accounts.identity_for(api) is None


def test_an_expired_token_identifies_nobody(accounts: Accounts) -> None:
    accounts.create_user("bob")
    token, row = accounts.issue_token(access.USER, "bob", expiry_time=time.time() + 3600)
    assert accounts.identity_for(token) is not None

    AuthToken.update(expiry_time=time.time() - 1).where(AuthToken.id == row.id).execute()  # an hour later

    assert accounts.identity_for(token) is None


def test_an_identity_carries_its_tokens_expiry(accounts: Accounts) -> None:
    accounts.create_user("bob")
    expiry = time.time() + 3600
    token, _ = accounts.issue_token(access.USER, "bob", expiry_time=expiry)

    identity = accounts.identity_for(token)

    assert identity is not None and identity.expires_at == pytest.approx(expiry)


def test_a_token_cannot_be_issued_already_expired(accounts: Accounts) -> None:
    accounts.create_user("bob")

    with pytest.raises(ValidationError, match="^expiry_time: must be in the future$"):
        accounts.issue_token(access.USER, "bob", expiry_time=time.time() - 1)


@pytest.mark.parametrize(
    ("kind", "name", "error", "message"),
    [
        (access.USER, "nobody", NotFoundError, "user nobody not found"),
        (access.ESC, "nope", NotFoundError, "ESC nope not found"),
        (access.JOB_FAMILY, "ghost", NotFoundError, "job family ghost not found"),
        ("group", "admins", ValidationError, "subject: kind 'group' is not one of user, esc, job_family"),
    ],
)
def test_tokens_are_issued_only_to_existing_subjects(
    accounts: Accounts, kind: str, name: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        accounts.issue_token(kind, name)

    assert str(caught.value) == message
    assert AuthToken.select().count() == 0


def test_a_token_of_an_inactive_user_identifies_nobody_until_reactivated(accounts: Accounts) -> None:
    token = user_with_token(accounts)

    accounts.update_user("bob", {"is_active": False})
    assert accounts.identity_for(token) is None

    accounts.update_user("bob", {"is_active": True})
    assert accounts.identity_for(token) is not None


def test_a_deleted_users_tokens_and_grants_go_with_it(accounts: Accounts) -> None:
    token = user_with_token(accounts)

    accounts.delete_user("bob")

    assert accounts.identity_for(token) is None
    assert accounts.tokens_of(access.USER, "bob") == []
    assert accounts.grants(access.USER, "bob") == []
    with pytest.raises(NotFoundError):
        accounts.get_user("bob")


def test_the_bootstrap_admin_cannot_be_deleted(accounts: Accounts) -> None:
    accounts.ensure_bootstrap_admin("bootstrap-token")

    with pytest.raises(ValidationError, match="^username: the bootstrap admin cannot be deleted"):
        accounts.delete_user(ADMIN_USERNAME)

    assert accounts.identity_for("bootstrap-token") is not None


def test_a_deleted_escs_token_identifies_nobody(accounts: Accounts) -> None:
    esc = accounts.create_esc("billing", "billing-esc")
    token, _ = accounts.issue_token(access.ESC, esc.id)
    identity = accounts.identity_for(token)
    assert identity is not None and (identity.kind, identity.name) == (access.ESC, "billing-esc")

    accounts.delete_esc("billing")  # by name

    assert accounts.identity_for(token) is None
    assert accounts.tokens_of(access.ESC, "billing-esc") == []


def test_an_esc_token_survives_if_only_the_esc_row_goes(accounts: Accounts) -> None:
    """identity_for checks the ESC still exists, not only the token row."""
    esc = accounts.create_esc("billing")
    token, _ = accounts.issue_token(access.ESC, esc.id)

    db.Esc.delete().where(db.Esc.id == esc.id).execute()

    assert accounts.identity_for(token) is None


def test_staff_users_are_unrestricted_and_others_are_not(accounts: Accounts) -> None:
    staff = user_with_token(accounts, "carol", is_staff=True)
    plain = user_with_token(accounts, "bob")

    carol, bob = accounts.identity_for(staff), accounts.identity_for(plain)

    assert carol is not None and carol.unrestricted
    assert carol.allows(access.FULL_ACCESS)
    assert bob is not None and not bob.unrestricted
    assert not bob.allows(access.FULL_ACCESS)


def test_new_users_may_read_call_and_start_families_but_not_redeploy_or_delete(accounts: Accounts) -> None:
    token = user_with_token(accounts)

    bob = accounts.identity_for(token)

    assert bob is not None
    assert set(bob.grants) == {GrantRule(scope) for scope in (READ_JOB, CALL_JOB, DEPLOY_NEW_FAMILY)}
    assert bob.allows(READ_JOB, "anything", "1.0.0") and bob.allows(CALL_JOB, "anything", "1.0.0", "/x")
    assert not bob.allows(DELETE_JOB, "anything", "1.0.0")
    assert not bob.allows(DEPLOY_JOB, "anything", "1.0.0")


def test_a_user_made_without_default_grants_may_do_nothing(accounts: Accounts) -> None:
    token = user_with_token(accounts, default_grants=False)

    bob = accounts.identity_for(token)

    assert bob is not None and bob.grants == ()
    assert not bob.allows(READ_JOB, "adder", "1.0.0")


def test_the_first_deployer_of_a_family_owns_it(accounts: Accounts) -> None:
    token = user_with_token(accounts, default_grants=False)

    accounts.grant_family_owner(access.USER, "bob", "adder")
    accounts.grant_family_owner(access.USER, "bob", "adder")  # again: nothing doubled

    bob = accounts.identity_for(token)
    assert bob is not None
    assert sorted(g.scope for g in accounts.grants(access.USER, "bob")) == sorted(access.FAMILY_OWNER_SCOPES)
    for scope in access.FAMILY_OWNER_SCOPES:
        assert bob.allows(scope, "adder", "3.0.0")
        assert not bob.allows(scope, "other", "1.0.0")
    assert all(g.granted_by == "first deploy" for g in accounts.grants(access.USER, "bob"))


def test_a_job_family_gets_no_ownership_of_what_it_deploys(accounts: Accounts) -> None:
    accounts.grant_family_owner(access.JOB_FAMILY, "caller", "adder")

    assert accounts.grants() == []


def test_duplicate_usernames_conflict(accounts: Accounts) -> None:
    accounts.create_user("bob")

    with pytest.raises(ConflictError, match="user bob already exists"):
        accounts.create_user("bob")


@pytest.mark.parametrize("username", ["", "-bob", "bob smith", "bob/../admin", "a" * 151, None, 42])
def test_bad_usernames_are_refused_naming_the_field(accounts: Accounts, username: object) -> None:
    with pytest.raises(ValidationError, match="^username: "):
        accounts.create_user(username)

    assert db.User.select().count() == 0


def test_update_user_refuses_unknown_fields_and_non_booleans(accounts: Accounts) -> None:
    accounts.create_user("bob")

    with pytest.raises(ValidationError, match="^is_superuser: not a user field"):
        accounts.update_user("bob", {"is_superuser": True})
    with pytest.raises(ValidationError, match="^is_staff: must be true or false$"):
        accounts.update_user("bob", {"is_staff": "yes"})

    assert accounts.get_user("bob").is_staff is False


# --- grants ----------------------------------------------------------------------------------------


def test_a_grant_takes_effect_for_the_holders_token(accounts: Accounts) -> None:
    token = user_with_token(accounts, default_grants=False)

    grant = accounts.add_grant(access.USER, "bob", GrantRule(DELETE_JOB, "adder", "1.0.0"), "admin")

    assert (grant.scope, grant.job_name, grant.job_version, grant.endpoint, grant.granted_by) == (
        DELETE_JOB,
        "adder",
        "1.0.0",
        None,
        "admin",
    )
    bob = accounts.identity_for(token)
    assert bob is not None and bob.allows(DELETE_JOB, "adder", "1.0.0")
    accounts.remove_grant(grant.id)
    bob = accounts.identity_for(token)
    assert bob is not None and not bob.allows(DELETE_JOB, "adder", "1.0.0")


def test_removing_an_unknown_grant_is_not_found(accounts: Accounts) -> None:
    with pytest.raises(NotFoundError, match="grant 41 not found"):
        accounts.remove_grant(41)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (GrantRule("superpowers"), "scope: 'superpowers' is not one of read_job, deploy_job"),
        (GrantRule(READ_JOB, job_version="1.0.0"), "job_version: needs job_name"),
        (GrantRule(CALL_JOB, "adder", endpoint="api/v1/perform"), "endpoint: must start with /"),
        (GrantRule(CALL_JOB, endpoint="/api/v1/perform"), "endpoint: needs job_name"),
    ],
)
def test_invalid_grants_are_refused_naming_the_field(accounts: Accounts, rule: GrantRule, message: str) -> None:
    accounts.create_user("bob", default_grants=False)

    with pytest.raises(ValidationError) as caught:
        accounts.add_grant(access.USER, "bob", rule, "admin")

    assert str(caught.value).startswith(message)
    assert accounts.grants() == []


@pytest.mark.parametrize(
    ("kind", "name", "message"),
    [
        (access.USER, "nobody", "user nobody not found"),
        (access.ESC, "nope", "ESC nope not found"),
        (access.JOB_FAMILY, "ghost", "job family ghost not found"),
    ],
)
def test_a_grant_to_an_unknown_subject_is_not_found(accounts: Accounts, kind: str, name: str, message: str) -> None:
    with pytest.raises(NotFoundError) as caught:
        accounts.add_grant(kind, name, GrantRule(READ_JOB), "admin")

    assert str(caught.value) == message
    assert caught.value.status_code == 404


def test_a_job_family_that_has_a_job_may_be_granted(accounts: Accounts) -> None:
    add_job("caller", "1.0.0")

    grant = accounts.add_grant(access.JOB_FAMILY, "caller", GrantRule(CALL_JOB, "adder"), "admin")

    assert grant.subject_kind == access.JOB_FAMILY and grant.subject_name == "caller"


def test_a_fully_specified_duplicate_grant_conflicts(accounts: Accounts) -> None:
    accounts.create_user("bob", default_grants=False)
    rule = GrantRule(CALL_JOB, "adder", "1.0.0", "/api/v1/perform")
    accounts.add_grant(access.USER, "bob", rule, "admin")

    with pytest.raises(ConflictError, match="user:bob already has this grant"):
        accounts.add_grant(access.USER, "bob", rule, "admin")

    assert len(accounts.grants(access.USER, "bob")) == 1


@pytest.mark.parametrize(
    "rule",
    [
        GrantRule(access.CALL_ADMIN_API),
        GrantRule(READ_JOB, "adder"),
        GrantRule(DEPLOY_JOB, "adder", "1.0.0"),
    ],
)
def test_a_duplicate_grant_conflicts(accounts: Accounts, rule: GrantRule) -> None:
    accounts.create_user("bob", default_grants=False)
    accounts.add_grant(access.USER, "bob", rule, "admin")

    with pytest.raises(ConflictError):
        accounts.add_grant(access.USER, "bob", rule, "admin")

    assert len(accounts.grants(access.USER, "bob")) == 1


def test_removing_a_grant_given_twice_takes_the_permission_away(accounts: Accounts) -> None:
    token = user_with_token(accounts, default_grants=False)
    rule = GrantRule(DELETE_JOB, "adder")
    first = accounts.add_grant(access.USER, "bob", rule, "admin")
    try:
        accounts.add_grant(access.USER, "bob", rule, "admin")  # e.g. `rtd grant add` run twice
    except ConflictError:
        pass

    accounts.remove_grant(first.id)

    bob = accounts.identity_for(token)
    assert bob is not None and not bob.allows(DELETE_JOB, "adder", "1.0.0")


def test_every_change_rings_the_change_signal(accounts: Accounts) -> None:
    """Each of these can change an answer the authenticators have cached."""
    seen = [accounts.changes.current()]

    def rang() -> bool:
        now = accounts.changes.current()
        moved = now != seen[-1]
        seen.append(now)
        return moved

    accounts.create_user("bob")
    assert rang()
    token, row = accounts.issue_token(access.USER, "bob")
    grant = accounts.add_grant(access.USER, "bob", GrantRule(DELETE_JOB, "adder"), "admin")
    assert rang()
    accounts.remove_grant(grant.id)
    assert rang()
    accounts.update_user("bob", {"is_staff": True})
    assert rang()
    accounts.revoke_token(row.id)
    assert rang()
    accounts.revoke_tokens_of(access.USER, "bob")
    assert rang()
    accounts.grant_family_owner(access.USER, "bob", "adder")
    assert rang()
    accounts.delete_user("bob")
    assert rang()
    esc = accounts.create_esc("billing")
    accounts.delete_esc(esc.id)
    assert rang()
    accounts.ensure_bootstrap_admin("bootstrap-token")
    assert rang()


def test_the_change_signal_is_shared_through_its_file(data_dir: Path) -> None:
    one = ChangeSignal.in_data_dir(data_dir)
    other = ChangeSignal.in_data_dir(data_dir)
    before = other.current()

    one.ring()

    assert other.current() != before
    assert other.current() == one.current()
    assert len(one.current()) == ChangeSignal.SIZE
    assert (data_dir / "auth-changes").stat().st_mode & 0o777 == 0o600


# --- job-family tokens ------------------------------------------------------------------------------


def test_a_family_token_is_stable_and_identifies_the_family(accounts: Accounts) -> None:
    token = accounts.family_token("adder")

    assert accounts.family_token("adder") == token
    assert accounts.family_token("other") != token
    identity = accounts.identity_for(token)
    assert identity is not None and identity.subject == "job_family:adder" and not identity.unrestricted
    assert AuthToken.select().where(AuthToken.subject_name == "adder").count() == 1


def test_a_family_token_is_sealed_at_rest(accounts: Accounts, data_dir: Path) -> None:
    token = accounts.family_token("adder")

    row = AuthToken.get(AuthToken.token_hash == token_hash(token))
    assert row.sealed_token and token not in row.sealed_token
    assert accounts.vault.open(row.sealed_token) == token
    on_disk = stored_bytes(data_dir)
    assert row.token_hash.encode() in on_disk
    assert token.encode() not in on_disk


def test_a_revoked_family_token_is_replaced_by_a_new_one(accounts: Accounts) -> None:
    token = accounts.family_token("adder")

    accounts.revoke_tokens_of(access.JOB_FAMILY, "adder")

    renewed = accounts.family_token("adder")
    assert renewed != token
    assert accounts.identity_for(token) is None
    assert accounts.identity_for(renewed) is not None


def test_a_family_token_is_readable_by_another_daemon_with_the_same_key_only(
    accounts: Accounts, data_dir: Path
) -> None:
    token = accounts.family_token("adder")

    restarted = Accounts(Vault(SECRET_KEY), ChangeSignal.in_data_dir(data_dir))
    assert restarted.family_token("adder") == token

    other_key = Accounts(Vault(b"another key"), ChangeSignal.in_data_dir(data_dir))
    with pytest.raises(Exception, match="cannot be decrypted"):
        other_key.family_token("adder")


# --- the bootstrap admin ------------------------------------------------------------------------------


def test_the_bootstrap_admin_is_a_staff_user_holding_the_admin_token(accounts: Accounts) -> None:
    accounts.ensure_bootstrap_admin("first-admin-token")

    admin = accounts.identity_for("first-admin-token")
    assert admin is not None and admin.subject == "user:admin" and admin.unrestricted
    assert accounts.get_user(ADMIN_USERNAME).is_staff


def test_a_new_bootstrap_token_replaces_the_earlier_one(accounts: Accounts) -> None:
    accounts.ensure_bootstrap_admin("first-admin-token")
    accounts.ensure_bootstrap_admin("first-admin-token")  # every worker runs it: no second row
    assert AuthToken.select().where(AuthToken.origin == "bootstrap").count() == 1

    accounts.ensure_bootstrap_admin("second-admin-token")

    assert accounts.identity_for("first-admin-token") is None
    assert accounts.identity_for("second-admin-token") is not None
    accounts.ensure_bootstrap_admin("first-admin-token")  # back to the first: it works again
    assert accounts.identity_for("first-admin-token") is not None
    assert accounts.identity_for("second-admin-token") is None


def test_the_bootstrap_token_keeps_the_admins_other_tokens(accounts: Accounts) -> None:
    accounts.ensure_bootstrap_admin("first-admin-token")
    personal, _ = accounts.issue_token(access.USER, ADMIN_USERNAME)

    accounts.ensure_bootstrap_admin("second-admin-token")

    assert accounts.identity_for(personal) is not None


def test_the_bootstrap_token_cannot_be_another_subjects_token(accounts: Accounts) -> None:
    token = user_with_token(accounts)

    with pytest.raises(ValidationError, match="^RACETRACK_ADMIN_TOKEN: is already the token of another subject"):
        accounts.ensure_bootstrap_admin(token)

    bob = accounts.identity_for(token)
    assert bob is not None and bob.name == "bob" and not bob.unrestricted


def test_the_bootstrap_token_restores_a_locked_out_admin(accounts: Accounts) -> None:
    accounts.ensure_bootstrap_admin("admin-token")
    accounts.update_user(ADMIN_USERNAME, {"is_active": False, "is_staff": False})
    assert accounts.identity_for("admin-token") is None

    accounts.ensure_bootstrap_admin("admin-token")  # the daemon restarts

    admin = accounts.identity_for("admin-token")
    assert admin is not None and admin.unrestricted


# --- passwords -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "password: must have at least 8 characters"),
        ("1234567890123", "password: must not be only digits"),
        ("Password1", "password: is one of the most common passwords; choose another"),
        (12345678, "password: must be a string"),
    ],
)
def test_a_weak_password_is_refused_naming_the_field(accounts: Accounts, password: object, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        accounts.create_user("bob", password)

    assert str(caught.value) == message
    assert db.User.select().count() == 0


def test_a_password_is_stored_hashed_and_checks_at_login(accounts: Accounts, data_dir: Path) -> None:
    accounts.create_user("bob", "correct horse battery")

    stored = accounts.get_user("bob").password_hash
    assert isinstance(stored, str)
    algorithm, iterations, salt, _ = stored.split("$")
    assert (algorithm, int(iterations)) == (ALGORITHM, ITERATIONS) and salt
    assert b"correct horse battery" not in stored_bytes(data_dir)
    user = accounts.check_login("bob", "correct horse battery")
    assert user is not None and user.username == "bob" and user.last_login_time is not None
    assert accounts.get_user("bob").last_login_time == pytest.approx(time.time(), abs=30)


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("bob", "wrong horse battery"),
        ("bob", ""),
        ("nobody", "correct horse battery"),
        ("bob", None),
        (None, "correct horse battery"),
        ("BOB", "correct horse battery"),
    ],
)
def test_a_wrong_login_is_none(accounts: Accounts, username: object, password: object) -> None:
    accounts.create_user("bob")
    set_fast_password("bob", "correct horse battery")

    assert accounts.check_login(username, password) is None
    assert accounts.get_user("bob").last_login_time is None


def test_an_inactive_user_cannot_log_in_even_with_the_right_password(accounts: Accounts) -> None:
    accounts.create_user("bob", is_active=False)
    set_fast_password("bob", "correct horse battery")

    assert accounts.check_login("bob", "correct horse battery") is None
    accounts.update_user("bob", {"is_active": True})
    assert accounts.check_login("bob", "correct horse battery") is not None


def test_a_user_without_a_password_cannot_log_in_with_one(accounts: Accounts) -> None:
    accounts.create_user("bob")

    assert accounts.check_login("bob", "") is None
    assert accounts.check_login("bob", "anything at all") is None


def test_change_password_needs_the_old_one_and_a_strong_new_one(accounts: Accounts) -> None:
    accounts.create_user("bob")
    set_fast_password("bob", "correct horse battery")
    before = accounts.get_user("bob").password_hash

    with pytest.raises(ValidationError, match="^old_password: does not match$"):
        accounts.change_password("bob", "wrong", "a brand new passphrase")
    with pytest.raises(ValidationError, match="^new_password: must have at least 8 characters$"):
        accounts.change_password("bob", "correct horse battery", "short")
    assert accounts.get_user("bob").password_hash == before


def test_a_new_password_ends_the_users_other_password_logins_but_not_tokens_or_this_one(accounts: Accounts) -> None:
    accounts.create_user("bob")
    set_fast_password("bob", "correct horse battery")
    this_login, this_row = accounts.issue_token(access.USER, "bob", origin="login")
    other_login, _ = accounts.issue_token(access.USER, "bob", origin="login")
    api_token, _ = accounts.issue_token(access.USER, "bob")

    accounts.change_password("bob", "correct horse battery", "a brand new passphrase", keep_token_id=this_row.id)

    assert accounts.identity_for(other_login) is None
    assert accounts.identity_for(this_login) is not None
    assert accounts.identity_for(api_token) is not None


def test_an_unknown_username_costs_a_password_hash_too(accounts: Accounts, monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[str] = []
    real = accounts_module.verify_password

    def counting(password: str, encoded: str | None) -> bool:
        checked.append(encoded or "")
        return real(password, encoded)

    monkeypatch.setattr(accounts_module, "verify_password", counting)
    monkeypatch.setattr(accounts_module, "_unusable_hash", lambda: hash_password("x", iterations=FAST_ITERATIONS))

    assert accounts.check_login("nobody", "whatever password") is None
    assert len(checked) == 1 and checked[0].startswith("pbkdf2_sha256$")


# --- ESCs ---------------------------------------------------------------------------------------------


def test_escs_get_an_id_and_unique_names(accounts: Accounts) -> None:
    made = accounts.create_esc("  billing  ")

    assert made.name == "billing" and made.id
    assert accounts.get_esc(made.id).name == "billing"
    assert accounts.get_esc("billing").id == made.id
    with pytest.raises(ConflictError):
        accounts.create_esc("billing")
    with pytest.raises(ConflictError):
        accounts.create_esc("other", made.id)


@pytest.mark.parametrize(
    ("name", "esc_id", "field"),
    [
        ("", None, "name: "),
        ("   ", None, "name: "),
        (None, None, "name: "),
        ("billing", "-bad", "id: "),
        ("billing", "a b", "id: "),
        ("billing", 7, "id: "),
    ],
)
def test_invalid_escs_are_refused_naming_the_field(
    accounts: Accounts, name: object, esc_id: object, field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        accounts.create_esc(name, esc_id)

    assert str(caught.value).startswith(field)


# --- public endpoints --------------------------------------------------------------------------------


def test_public_endpoints_stay_closed_until_approved(accounts: Accounts) -> None:
    accounts.request_public_endpoints("adder", "1.0.0", ["/api/v1/public", "/docs"])
    accounts.request_public_endpoints("adder", "1.0.0", ["/api/v1/public"])  # a redeploy asks again

    requested = accounts.public_endpoints("adder", "1.0.0")
    assert [(row.endpoint, row.active) for row in requested] == [("/api/v1/public", False), ("/docs", False)]
    assert accounts.public_endpoints(active=True) == []

    approved = accounts.set_public_endpoint(requested[0].id, True, "admin")

    assert (approved.active, approved.approved_by) == (True, "admin")
    assert [row.endpoint for row in accounts.public_endpoints("adder", "1.0.0", active=True)] == ["/api/v1/public"]
    closed = accounts.set_public_endpoint(requested[0].id, False, "admin")
    assert (closed.active, closed.approved_by) == (False, None)


def test_approving_an_unknown_public_endpoint_is_not_found(accounts: Accounts) -> None:
    with pytest.raises(NotFoundError, match="public endpoint request 5 not found"):
        accounts.set_public_endpoint(5, True, "admin")
