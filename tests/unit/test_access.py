"""Scopes, grants and identities (racetrackd/auth/access.py): who may do what, with no storage behind it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from racetrackd.auth import access
from racetrackd.auth.access import (
    ANYONE,
    CALL_ADMIN_API,
    CALL_JOB,
    DELETE_JOB,
    DEPLOY_JOB,
    DEPLOY_NEW_FAMILY,
    ESC,
    FULL_ACCESS,
    JOB_FAMILY,
    READ_JOB,
    SCOPES,
    USER,
    GrantRule,
    Identity,
    forbidden,
    parse_subject,
    path_within,
)
from racetrackd.errors import ForbiddenError

BOUNDED = settings(max_examples=200, deadline=None, database=None)

ACTION_SCOPES = [scope for scope in SCOPES if scope != FULL_ACCESS]


def user(*grants: GrantRule, unrestricted: bool = False) -> Identity:
    return Identity(kind=USER, name="bob", grants=grants, unrestricted=unrestricted)


# --- grants: all jobs, a family, a version, an endpoint ------------------------------------------


def test_a_grant_on_all_jobs_covers_every_job_and_version_for_its_scope_only() -> None:
    bob = user(GrantRule(READ_JOB))

    assert bob.allows(READ_JOB, "adder", "1.0.0")
    assert bob.allows(READ_JOB, "other", "9.9.9")
    assert bob.allows(READ_JOB)  # an action naming no job
    assert not bob.allows(CALL_JOB, "adder", "1.0.0")
    assert not bob.allows(DELETE_JOB, "adder", "1.0.0")


def test_a_family_grant_covers_every_version_of_that_family_and_no_other_family() -> None:
    bob = user(GrantRule(DELETE_JOB, job_name="adder"))

    assert bob.allows(DELETE_JOB, "adder", "1.0.0")
    assert bob.allows(DELETE_JOB, "adder", "2.3.4")
    assert not bob.allows(DELETE_JOB, "adder-two", "1.0.0")
    assert not bob.allows(DELETE_JOB, "other", "1.0.0")
    assert not bob.allows(DELETE_JOB)  # "every job" is more than one family


def test_a_version_grant_covers_that_version_only() -> None:
    bob = user(GrantRule(DEPLOY_JOB, job_name="adder", job_version="1.0.0"))

    assert bob.allows(DEPLOY_JOB, "adder", "1.0.0")
    assert not bob.allows(DEPLOY_JOB, "adder", "1.0.1")
    assert not bob.allows(DEPLOY_JOB, "other", "1.0.0")
    assert not bob.allows(DEPLOY_JOB, "adder")


def test_an_endpoint_grant_covers_that_endpoint_and_below_it() -> None:
    bob = user(GrantRule(CALL_JOB, job_name="adder", endpoint="/api/v1/perform"))

    assert bob.allows(CALL_JOB, "adder", "1.0.0", "/api/v1/perform")
    assert bob.allows(CALL_JOB, "adder", "2.0.0", "/api/v1/perform/sub")
    assert not bob.allows(CALL_JOB, "adder", "1.0.0", "/api/v1/other")
    assert not bob.allows(CALL_JOB, "adder", "1.0.0", "/api/v1/performance")
    assert not bob.allows(CALL_JOB, "adder", "1.0.0", "/")
    assert not bob.allows(CALL_JOB, "other", "1.0.0", "/api/v1/perform")


def test_an_endpoint_grant_does_not_cover_api_actions_on_the_job() -> None:
    """API actions name no endpoint: a grant limited to one endpoint must not leak into them."""
    bob = user(
        GrantRule(READ_JOB, job_name="adder", endpoint="/api/v1/perform"),
        GrantRule(CALL_JOB, job_name="adder", endpoint="/"),
    )

    assert not bob.allows(READ_JOB, "adder", "1.0.0")
    assert not bob.allows(CALL_JOB, "adder", "1.0.0")
    assert bob.allows(CALL_JOB, "adder", "1.0.0", "/anything")


def test_a_grant_without_endpoint_covers_every_endpoint() -> None:
    bob = user(GrantRule(CALL_JOB, job_name="adder"))

    assert bob.allows(CALL_JOB, "adder", "1.0.0", "/")
    assert bob.allows(CALL_JOB, "adder", "1.0.0", "/api/v1/perform")


@pytest.mark.parametrize("scope", ACTION_SCOPES)
def test_full_access_covers_every_scope(scope: str) -> None:
    admin = user(GrantRule(FULL_ACCESS))

    assert admin.allows(scope, "adder", "1.0.0")
    assert admin.allows(scope, "adder", "1.0.0", "/api/v1/perform")
    assert admin.allows(FULL_ACCESS)


@pytest.mark.parametrize("scope", ACTION_SCOPES)
def test_full_access_on_one_family_stays_in_that_family(scope: str) -> None:
    owner = user(GrantRule(FULL_ACCESS, job_name="adder"))

    assert owner.allows(scope, "adder", "1.0.0")
    assert not owner.allows(scope, "other", "1.0.0")
    assert not owner.allows(FULL_ACCESS)  # not an admin: admin actions name no job


def test_a_scope_is_not_implied_by_another() -> None:
    """Only full_access stands for other scopes: call_job does not give read_job, deploy does not give delete."""
    for held in ACTION_SCOPES:
        identity = user(GrantRule(held))
        for wanted in ACTION_SCOPES:
            assert identity.allows(wanted, "adder", "1.0.0") == (wanted == held), (held, wanted)


def test_no_grant_allows_nothing() -> None:
    nobody = user()

    for scope in SCOPES:
        assert not nobody.allows(scope, "adder", "1.0.0")
        assert not nobody.allows(scope)


def test_an_unrestricted_identity_is_allowed_everything() -> None:
    staff = user(unrestricted=True)

    for scope in SCOPES:
        assert staff.allows(scope)
        assert staff.allows(scope, "adder", "1.0.0", "/api/v1/perform")
    assert ANYONE.allows(DELETE_JOB, "adder", "1.0.0")
    assert ANYONE.allows(FULL_ACCESS)


def test_several_grants_add_up() -> None:
    bob = user(GrantRule(READ_JOB, job_name="adder"), GrantRule(READ_JOB, job_name="other", job_version="2.0.0"))

    assert bob.allows(READ_JOB, "adder", "1.0.0")
    assert bob.allows(READ_JOB, "other", "2.0.0")
    assert not bob.allows(READ_JOB, "other", "1.0.0")
    assert not bob.allows(READ_JOB, "third", "1.0.0")


def test_may_see_any_answers_for_a_family_with_any_family_or_all_jobs_grant() -> None:
    assert user(GrantRule(READ_JOB)).may_see_any(READ_JOB, "adder")
    assert user(GrantRule(READ_JOB, job_name="adder", job_version="1.0.0")).may_see_any(READ_JOB, "adder")
    assert user(GrantRule(FULL_ACCESS, job_name="adder")).may_see_any(READ_JOB, "adder")
    assert not user(GrantRule(READ_JOB, job_name="other")).may_see_any(READ_JOB, "adder")
    assert not user(GrantRule(READ_JOB, job_name="adder", endpoint="/x")).may_see_any(READ_JOB, "adder")
    assert not user(GrantRule(CALL_JOB)).may_see_any(READ_JOB, "adder")
    assert user(unrestricted=True).may_see_any(READ_JOB, "adder")


def test_default_scopes_of_new_users_and_family_owners() -> None:
    # deploy_job on every job is not a default: deploying over a family needs ownership or a grant
    assert set(access.NEW_USER_SCOPES) == {READ_JOB, CALL_JOB, DEPLOY_NEW_FAMILY}
    assert set(access.FAMILY_OWNER_SCOPES) == {READ_JOB, CALL_JOB, DEPLOY_JOB, DELETE_JOB}
    assert access.OPEN_JOB_PATHS == ("/health", "/live", "/ready")
    assert FULL_ACCESS not in access.NEW_USER_SCOPES and CALL_ADMIN_API not in access.NEW_USER_SCOPES


# --- how identities are named ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name", "display"),
    [
        (USER, "alice", "alice"),
        (ESC, "a1b2c3", "ESC a1b2c3"),
        (JOB_FAMILY, "adder", "Job family adder"),
    ],
)
def test_identities_are_named_by_kind(kind: str, name: str, display: str) -> None:
    identity = Identity(kind=kind, name=name)

    assert identity.subject == f"{kind}:{name}"
    assert identity.display == display


def test_the_anonymous_caller_has_no_display_name() -> None:
    assert ANYONE.display is None
    assert ANYONE.subject == "anonymous:anonymous"


# --- path_within: segment-wise prefixes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "prefix"),
    [
        ("/api/v1", "/api/v1"),
        ("/api/v1/", "/api/v1"),
        ("/api/v1/perform", "/api/v1"),
        ("/api/v1/perform/deeper", "/api/v1"),
        ("/api/v1/perform", "/api/v1/"),
        ("/anything/at/all", "/"),
        ("/", "/"),
        ("/health", "/health"),
    ],
)
def test_path_within_accepts_the_prefix_and_paths_below_it(path: str, prefix: str) -> None:
    assert path_within(path, prefix)


@pytest.mark.parametrize(
    ("path", "prefix"),
    [
        ("/api/v10", "/api/v1"),
        ("/api/v1x/perform", "/api/v1"),
        ("/api", "/api/v1"),
        ("/", "/api/v1"),
        ("/other/api/v1", "/api/v1"),
        ("/healthz", "/health"),
        ("/health-check", "/health"),
    ],
)
def test_path_within_refuses_siblings_and_parents(path: str, prefix: str) -> None:
    assert not path_within(path, prefix)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/perform/../admin",
        "/api/v1/../../admin",
        "/api/v1/./perform",
        "/api/v1/..",
        "/api/v1/.",
        "/api/v1/perform/../../v1/perform",  # even when it would resolve back inside
    ],
)
def test_dot_segments_never_match_a_prefix(path: str) -> None:
    """A job may resolve dot segments: they must never carry a call past an open or granted prefix."""
    assert not path_within(path, "/api/v1")


def test_names_that_merely_contain_dots_are_not_dot_segments() -> None:
    assert path_within("/api/v1/file.txt", "/api/v1")
    assert path_within("/api/v1/...", "/api/v1")
    assert path_within("/api/v1/.hidden", "/api/v1")


SEGMENT = st.text(alphabet="abcxyz019-_.", min_size=1, max_size=6).filter(lambda s: s not in (".", ".."))
SEGMENTS = st.lists(SEGMENT, min_size=1, max_size=4)


@BOUNDED
@given(prefix=SEGMENTS, rest=st.lists(SEGMENT, max_size=3))
def test_every_path_below_a_prefix_is_within_it(prefix: list[str], rest: list[str]) -> None:
    base = "/" + "/".join(prefix)

    assert path_within("/".join([base, *rest]), base)
    assert path_within(base + "/", base)


@BOUNDED
@given(prefix=SEGMENTS, suffix=SEGMENT, rest=st.lists(SEGMENT, max_size=2))
def test_a_longer_last_segment_is_never_within(prefix: list[str], suffix: str, rest: list[str]) -> None:
    base = "/" + "/".join(prefix)

    assert not path_within("/".join([base + suffix, *rest]), base)


@BOUNDED
@given(
    prefix=SEGMENTS,
    before=st.lists(SEGMENT, max_size=2),
    dots=st.sampled_from([".", ".."]),
    after=st.lists(SEGMENT, max_size=2),
)
def test_a_path_with_a_dot_segment_is_never_within_a_prefix(
    prefix: list[str], before: list[str], dots: str, after: list[str]
) -> None:
    base = "/" + "/".join(prefix)

    assert not path_within("/".join([base, *before, dots, *after]), base)


RULE_PARTS = st.tuples(
    st.sampled_from([None, "adder", "other"]),
    st.sampled_from([None, "1.0.0", "2.0.0"]),
    st.sampled_from([None, "/", "/api/v1", "/api/v1/perform"]),
)
QUERIES = st.tuples(
    st.sampled_from(ACTION_SCOPES),
    st.sampled_from([None, "adder", "other"]),
    st.sampled_from([None, "1.0.0", "2.0.0"]),
    st.sampled_from([None, "/", "/api/v1", "/api/v1/perform", "/api/v10", "/api/v1/../x"]),
)


@BOUNDED
@given(parts=RULE_PARTS, query=QUERIES)
def test_full_access_covers_exactly_what_the_same_grant_of_any_scope_covers(
    parts: tuple[str | None, str | None, str | None], query: tuple[str, str | None, str | None, str | None]
) -> None:
    job_name, job_version, endpoint = parts
    scope, *target = query
    full = GrantRule(FULL_ACCESS, job_name, job_version, endpoint)
    same = GrantRule(scope, job_name, job_version, endpoint)

    assert full.covers(scope, *target) == same.covers(scope, *target)


@BOUNDED
@given(parts=RULE_PARTS, query=QUERIES)
def test_a_narrower_grant_never_covers_more_than_the_grant_on_all_jobs(
    parts: tuple[str | None, str | None, str | None], query: tuple[str, str | None, str | None, str | None]
) -> None:
    job_name, job_version, endpoint = parts
    scope, *target = query

    if GrantRule(scope, job_name, job_version, endpoint).covers(scope, *target):
        assert GrantRule(scope).covers(scope, *target)
        assert GrantRule(scope, job_name).covers(scope, *target)


# --- subjects as the CLI and the API spell them ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("user:alice", (USER, "alice")),
        ("esc:a1b2c3", (ESC, "a1b2c3")),
        ("job_family:adder", (JOB_FAMILY, "adder")),
        ("family:adder", (JOB_FAMILY, "adder")),
        ("user:alice@example.com", (USER, "alice@example.com")),
        ("user:a:b", (USER, "a:b")),
    ],
)
def test_parse_subject(text: str, expected: tuple[str, str]) -> None:
    assert parse_subject(text) == expected


@pytest.mark.parametrize(
    "text", ["alice", "user:", ":alice", "group:admins", "", "USER:alice", "anonymous:x", "jobfamily:adder"]
)
def test_parse_subject_refuses_anything_else_and_says_how_to_spell_one(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_subject(text)

    message = str(caught.value)
    assert repr(text) in message
    assert "user:NAME" in message and "esc:ID" in message and "job_family:NAME" in message


# --- the 403 ----------------------------------------------------------------------------------------


def test_forbidden_names_the_caller_scope_and_job_and_the_command_that_grants_it() -> None:
    error = forbidden(user(), DELETE_JOB, "delete", "adder", "1.0.0")

    assert isinstance(error, ForbiddenError)
    assert error.status_code == 403
    assert error.to_dict()["type"] == "forbidden"
    assert error.message == "bob may not delete job adder 1.0.0: it lacks the delete_job scope"
    assert error.hint == "an admin can grant it: rtd grant add user:bob delete_job --job adder"


def test_forbidden_on_an_endpoint_names_it() -> None:
    esc = Identity(kind=ESC, name="a1b2c3")

    error = forbidden(esc, CALL_JOB, "call", "adder", "1.0.0", "/api/v1/perform")

    assert (
        error.message
        == "ESC a1b2c3 may not call job adder 1.0.0 (endpoint /api/v1/perform): it lacks the call_job scope"
    )
    assert error.hint is not None and "rtd grant add esc:a1b2c3 call_job --job adder" in error.hint


def test_forbidden_for_a_job_family_names_it_as_a_subject() -> None:
    family = Identity(kind=JOB_FAMILY, name="caller")

    error = forbidden(family, CALL_JOB, "call", "adder", "1.0.0")

    assert error.message.startswith("Job family caller may not call job adder 1.0.0")
    assert error.hint == "an admin can grant it: rtd grant add job_family:caller call_job --job adder"


def test_forbidden_without_a_job_grants_on_all_jobs() -> None:
    error = forbidden(user(), FULL_ACCESS, "list users")

    assert error.message == "bob may not list users: it lacks the full_access scope"
    assert error.hint == "an admin can grant it: rtd grant add user:bob full_access"
    assert "--job" not in (error.hint or "")


def test_forbidden_without_a_version_leaves_no_trailing_space() -> None:
    error = forbidden(user(), DEPLOY_NEW_FAMILY, "deploy the new job family adder")

    assert error.message == "bob may not deploy the new job family adder: it lacks the deploy_new_family scope"
    error = forbidden(user(), READ_JOB, "read", "adder")
    assert error.message == "bob may not read job adder: it lacks the read_job scope"
