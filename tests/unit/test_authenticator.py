"""The authenticator (racetrackd/auth/authenticator.py): token → identity from memory, dropped on any auth change in any
process; failed attempts limited per client address; last use written in batches."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from racetrackd import db
from racetrackd.auth import access
from racetrackd.auth import accounts as accounts_module
from racetrackd.auth import authenticator as auth_module
from racetrackd.auth.access import ANYONE, DELETE_JOB, READ_JOB, GrantRule, Identity
from racetrackd.auth.accounts import Accounts, ChangeSignal
from racetrackd.auth.authenticator import LAST_USE_RESOLUTION, Authenticator, FailureLimiter
from racetrackd.auth.vault import Vault
from racetrackd.db import AuthFailure, AuthToken, open_database
from racetrackd.errors import TooManyAuthFailures, UnauthorizedError
from racetrackd.settings import Settings

CLIENT = "10.0.0.1"
OTHER_CLIENT = "10.0.0.2"


class FakeClock:
    """Stands in for the `time` module of racetrackd.auth.authenticator and racetrackd.auth.accounts: time moves when told."""

    def __init__(self) -> None:
        self.now = time.time()
        self.mono = 1_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(auth_module, "time", fake)
    monkeypatch.setattr(accounts_module, "time", fake)
    return fake


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def make_accounts(data_dir: Path) -> Iterator[Callable[[], Accounts]]:
    """Accounts over one registry; each call maps the change signal anew, as another process would."""
    open_database(data_dir / "registry.sqlite3")
    yield lambda: Accounts(Vault(b"unit-test-secret-key"), ChangeSignal.in_data_dir(data_dir))
    if not db.database.is_closed():
        db.database.close()


@pytest.fixture
def accounts(make_accounts: Callable[[], Accounts]) -> Accounts:
    return make_accounts()


def authenticator(accounts: Accounts, *, required: bool = True, limit: int = 3, window: float = 60.0) -> Authenticator:
    return Authenticator(accounts, required=required, limiter=FailureLimiter(limit, window))


def bob_token(accounts: Accounts, expiry_time: float | None = None) -> tuple[str, int]:
    accounts.create_user("bob")
    token, row = accounts.issue_token(access.USER, "bob", expiry_time=expiry_time)
    return token, row.id


def count_lookups(monkeypatch: pytest.MonkeyPatch, accounts: Accounts) -> list[str]:
    """Every token the accounts are asked about (each is a registry query)."""
    asked: list[str] = []
    real = accounts.identity_for

    def counting(token: str) -> Identity | None:
        asked.append(token)
        return real(token)

    monkeypatch.setattr(accounts, "identity_for", counting)
    return asked


# --- the cache -------------------------------------------------------------------------------------


def test_a_known_token_is_answered_from_memory_after_the_first_lookup(
    accounts: Accounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, _ = bob_token(accounts)
    auth = authenticator(accounts)
    asked = count_lookups(monkeypatch, accounts)

    first = auth.identify(token, CLIENT, "api")
    for _ in range(5):
        assert auth.identify(token, CLIENT, "gateway") == first

    assert first.subject == "user:bob"
    assert asked == [token]


def test_any_auth_change_drops_the_cache(accounts: Accounts, monkeypatch: pytest.MonkeyPatch) -> None:
    token, _ = bob_token(accounts)
    auth = authenticator(accounts)
    asked = count_lookups(monkeypatch, accounts)
    auth.identify(token, CLIENT, "api")

    accounts.create_esc("billing")  # no signal: a new ESC changes no cached answer
    auth.identify(token, CLIENT, "api")
    assert len(asked) == 1

    accounts.add_grant(access.USER, "bob", GrantRule(DELETE_JOB, "adder"), "admin")
    bob = auth.identify(token, CLIENT, "api")
    assert len(asked) == 2
    assert bob.allows(DELETE_JOB, "adder", "1.0.0")


def test_a_change_behind_the_accounts_back_is_not_seen_until_the_signal_rings(accounts: Accounts) -> None:
    """What makes the signal necessary: the cache really answers without the registry."""
    token, token_id = bob_token(accounts)
    auth = authenticator(accounts)
    auth.identify(token, CLIENT, "api")

    AuthToken.update(active=False).where(AuthToken.id == token_id).execute()  # no ring

    assert auth.identify(token, CLIENT, "api").name == "bob"
    accounts.changes.ring()
    with pytest.raises(UnauthorizedError):
        auth.identify(token, CLIENT, "api")


def test_a_revoke_is_seen_by_the_very_next_identify(accounts: Accounts) -> None:
    token, token_id = bob_token(accounts)
    auth = authenticator(accounts)
    assert auth.identify(token, CLIENT, "api").name == "bob"

    accounts.revoke_token(token_id)

    with pytest.raises(UnauthorizedError, match="invalid, expired or revoked auth token"):
        auth.identify(token, CLIENT, "api")


def test_a_revoke_in_another_process_is_seen_by_the_very_next_identify(make_accounts: Callable[[], Accounts]) -> None:
    here, there = make_accounts(), make_accounts()  # two processes: one registry, one auth-changes file each mapped
    token, token_id = bob_token(there)
    gateway = authenticator(here)
    assert gateway.identify(token, CLIENT, "gateway").name == "bob"
    assert gateway.identify(token, CLIENT, "gateway").name == "bob"  # cached now

    there.revoke_token(token_id)

    with pytest.raises(UnauthorizedError):
        gateway.identify(token, CLIENT, "gateway")


def test_a_grant_removed_in_another_process_is_seen_at_once(make_accounts: Callable[[], Accounts]) -> None:
    here, there = make_accounts(), make_accounts()
    token, _ = bob_token(there)
    grant = there.add_grant(access.USER, "bob", GrantRule(DELETE_JOB, "adder"), "admin")
    auth = authenticator(here)
    assert auth.identify(token, CLIENT, "api").allows(DELETE_JOB, "adder", "1.0.0")

    there.remove_grant(grant.id)

    assert not auth.identify(token, CLIENT, "api").allows(DELETE_JOB, "adder", "1.0.0")


def test_a_user_deactivated_in_another_process_is_refused_at_once(make_accounts: Callable[[], Accounts]) -> None:
    here, there = make_accounts(), make_accounts()
    token, _ = bob_token(there)
    auth = authenticator(here)
    auth.identify(token, CLIENT, "api")

    there.update_user("bob", {"is_active": False})

    with pytest.raises(UnauthorizedError):
        auth.identify(token, CLIENT, "api")


def test_an_expired_token_stops_working_without_any_signal(accounts: Accounts, clock: FakeClock) -> None:
    token, _ = bob_token(accounts, expiry_time=clock.now + 30)
    auth = authenticator(accounts)
    assert auth.identify(token, CLIENT, "api").name == "bob"
    signal = accounts.changes.current()

    clock.advance(31)

    with pytest.raises(UnauthorizedError):
        auth.identify(token, CLIENT, "api")
    assert accounts.changes.current() == signal


def test_a_token_used_just_before_its_expiry_still_works(accounts: Accounts, clock: FakeClock) -> None:
    token, _ = bob_token(accounts, expiry_time=clock.now + 30)
    auth = authenticator(accounts)
    auth.identify(token, CLIENT, "api")

    clock.advance(29)

    assert auth.identify(token, CLIENT, "api").name == "bob"


def test_forget_empties_the_cache(accounts: Accounts, monkeypatch: pytest.MonkeyPatch) -> None:
    token, _ = bob_token(accounts)
    auth = authenticator(accounts)
    asked = count_lookups(monkeypatch, accounts)
    auth.identify(token, CLIENT, "api")

    auth.forget()
    auth.identify(token, CLIENT, "api")

    assert len(asked) == 2


# --- missing and bad tokens --------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, ""])
def test_no_token_is_401_saying_which_header(accounts: Accounts, token: str | None) -> None:
    with pytest.raises(UnauthorizedError) as caught:
        authenticator(accounts).identify(token, CLIENT, "api")

    assert caught.value.message == "missing X-Racetrack-Auth header"
    assert caught.value.hint is not None and "rtd login" in caught.value.hint


def test_an_unknown_token_is_401(accounts: Accounts) -> None:
    with pytest.raises(UnauthorizedError) as caught:
        authenticator(accounts).identify("rtd_guess", CLIENT, "api")

    assert caught.value.message == "invalid, expired or revoked auth token"
    assert caught.value.status_code == 401


# --- auth switched off -----------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "rtd_unknown-token"])
def test_with_auth_off_a_caller_without_a_known_token_is_anyone(accounts: Accounts, token: str | None) -> None:
    identity = authenticator(accounts, required=False).identify(token, CLIENT, "api")

    assert identity is ANYONE
    assert identity.allows(DELETE_JOB, "adder", "1.0.0")


def test_with_auth_off_a_known_token_is_named_but_unrestricted(accounts: Accounts) -> None:
    accounts.create_user("bob", default_grants=False)
    token, _ = accounts.issue_token(access.USER, "bob")

    identity = authenticator(accounts, required=False).identify(token, CLIENT, "api")

    assert identity.display == "bob"
    assert identity.unrestricted
    assert identity.allows(DELETE_JOB, "adder", "1.0.0")


def test_with_auth_off_bad_tokens_do_not_block_the_address(accounts: Accounts) -> None:
    auth = authenticator(accounts, required=False, limit=1)

    for _ in range(5):
        assert auth.identify("rtd_wrong", CLIENT, "api") is ANYONE


def test_with_auth_off_failed_password_logins_do_not_block_tokens(accounts: Accounts) -> None:
    auth = authenticator(accounts, required=False, limit=1)
    auth.limiter.record(CLIENT)  # a wrong password at POST /users/login counts here
    auth.limiter.record(CLIENT)

    assert auth.identify("rtd_wrong", CLIENT, "api") is ANYONE


# --- too many failures -------------------------------------------------------------------------------


def test_after_the_limit_an_address_gets_429_with_a_retry_after(accounts: Accounts, clock: FakeClock) -> None:
    auth = authenticator(accounts, limit=3, window=60)
    for _ in range(3):
        with pytest.raises(UnauthorizedError):
            auth.identify("rtd_guess", CLIENT, "gateway")

    with pytest.raises(TooManyAuthFailures) as caught:
        auth.identify("rtd_another-guess", CLIENT, "gateway")

    assert caught.value.status_code == 429
    assert 0 < caught.value.retry_after <= 61
    assert CLIENT in caught.value.message
    assert f"try again in {caught.value.retry_after} s" in caught.value.message


def test_a_blocked_address_writes_no_more_failures(accounts: Accounts, clock: FakeClock) -> None:
    auth = authenticator(accounts, limit=2)
    for _ in range(2):
        with pytest.raises(UnauthorizedError):
            auth.identify("rtd_guess", CLIENT, "api")
    written = AuthFailure.select().count()

    for _ in range(5):
        with pytest.raises(TooManyAuthFailures):
            auth.identify("rtd_guess", CLIENT, "api")

    assert AuthFailure.select().count() == written


def test_a_cached_valid_token_from_a_blocked_address_still_passes(accounts: Accounts, clock: FakeClock) -> None:
    token, _ = bob_token(accounts)
    auth = authenticator(accounts, limit=3)
    auth.identify(token, CLIENT, "gateway")  # known good
    for _ in range(3):
        with pytest.raises(UnauthorizedError):
            auth.identify("rtd_guess", CLIENT, "gateway")
    with pytest.raises(TooManyAuthFailures):
        auth.identify("rtd_guess", CLIENT, "gateway")

    assert auth.identify(token, CLIENT, "gateway").name == "bob"


def test_a_valid_token_not_yet_seen_from_a_blocked_address_passes_too(accounts: Accounts, clock: FakeClock) -> None:
    token, _ = bob_token(accounts)
    auth = authenticator(accounts, limit=3)
    for _ in range(3):
        with pytest.raises(UnauthorizedError):
            auth.identify("rtd_guess", CLIENT, "gateway")

    assert auth.identify(token, CLIENT, "gateway").name == "bob"
    with pytest.raises(TooManyAuthFailures):
        auth.identify("rtd_other_guess", CLIENT, "gateway")


def test_a_known_good_caller_from_a_blocked_address_survives_an_unrelated_auth_change(
    accounts: Accounts, clock: FakeClock
) -> None:
    token, _ = bob_token(accounts)
    auth = authenticator(accounts, limit=3)
    auth.identify(token, CLIENT, "gateway")
    for _ in range(3):
        with pytest.raises(UnauthorizedError):
            auth.identify("rtd_guess", CLIENT, "gateway")

    accounts.create_user("carol")  # someone, somewhere, is given an account

    assert auth.identify(token, CLIENT, "gateway").name == "bob"


def test_other_addresses_are_not_blocked(accounts: Accounts, clock: FakeClock) -> None:
    auth = authenticator(accounts, limit=2)
    for _ in range(2):
        with pytest.raises(UnauthorizedError):
            auth.identify("rtd_guess", CLIENT, "api")

    with pytest.raises(UnauthorizedError):  # a plain 401: this address (and this token) failed only now
        auth.identify("rtd_other_guess", OTHER_CLIENT, "api")


def test_missing_tokens_do_not_count_as_failures(accounts: Accounts, clock: FakeClock) -> None:
    auth = authenticator(accounts, limit=2)

    for _ in range(5):
        with pytest.raises(UnauthorizedError):
            auth.identify(None, CLIENT, "api")

    assert auth.limiter.blocked_for(CLIENT) == 0


def test_a_block_ends_when_the_window_has_passed(accounts: Accounts, clock: FakeClock) -> None:
    auth = authenticator(accounts, limit=2, window=10)
    for _ in range(2):
        with pytest.raises(UnauthorizedError):
            auth.identify("rtd_guess", CLIENT, "api")
    with pytest.raises(TooManyAuthFailures):
        auth.identify("rtd_guess", CLIENT, "api")

    clock.advance(10.5)

    with pytest.raises(UnauthorizedError):
        auth.identify("rtd_guess", CLIENT, "api")


def test_a_block_with_real_time_ends_after_a_short_window(accounts: Accounts) -> None:
    """The same, on the real monotonic clock."""
    auth = authenticator(accounts, limit=1, window=0.2)
    with pytest.raises(UnauthorizedError):
        auth.identify("rtd_guess", CLIENT, "api")
    with pytest.raises(TooManyAuthFailures):
        auth.identify("rtd_guess", CLIENT, "api")

    time.sleep(0.25)

    with pytest.raises(UnauthorizedError):
        auth.identify("rtd_guess", CLIENT, "api")


def test_the_limiter_counts_over_a_sliding_window(accounts: Accounts, clock: FakeClock) -> None:
    limiter = FailureLimiter(limit=3, window=10)

    limiter.record(CLIENT)
    clock.advance(6)
    limiter.record(CLIENT)
    limiter.record(CLIENT)
    assert limiter.blocked_for(CLIENT) == 5  # until the first failure is 10 s old (rounded up)

    clock.advance(4.5)  # the first failure has left the window
    assert limiter.blocked_for(CLIENT) == 0
    limiter.record(CLIENT)
    assert limiter.blocked_for(CLIENT) > 0
    assert limiter.blocked_for(OTHER_CLIENT) == 0


def test_the_limit_holds_across_http_workers(accounts: Accounts, clock: FakeClock) -> None:
    one_worker, other_worker = FailureLimiter(limit=3, window=60), FailureLimiter(limit=3, window=60)

    one_worker.record(CLIENT)
    other_worker.record(CLIENT)
    assert one_worker.blocked_for(CLIENT) == 0
    one_worker.record(CLIENT)

    assert other_worker.blocked_for(CLIENT) > 0 and one_worker.blocked_for(CLIENT) > 0


def test_the_retry_after_never_says_zero(accounts: Accounts, clock: FakeClock) -> None:
    limiter = FailureLimiter(limit=1, window=1)
    limiter.record(CLIENT)

    clock.advance(0.999)

    assert limiter.blocked_for(CLIENT) >= 1


def test_a_limit_of_zero_never_blocks(accounts: Accounts, clock: FakeClock) -> None:
    limiter = FailureLimiter(limit=0, window=60)

    for _ in range(100):
        limiter.record(CLIENT)

    assert limiter.blocked_for(CLIENT) == 0


def test_the_limiter_is_built_from_the_settings(accounts: Accounts, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(auth_failure_limit="7", auth_failure_window="12", auth_required="false")

    auth = Authenticator.from_settings(settings, accounts)

    assert (auth.limiter.limit, auth.limiter.window, auth.required) == (7, 12.0, False)


# --- last use ------------------------------------------------------------------------------------------


def test_flush_last_use_writes_when_a_token_was_last_used(accounts: Accounts, clock: FakeClock) -> None:
    token, token_id = bob_token(accounts)
    auth = authenticator(accounts)
    auth.identify(token, CLIENT, "api")
    assert AuthToken.get_by_id(token_id).last_use_time is None  # a call costs no write

    auth.flush_last_use()

    assert AuthToken.get_by_id(token_id).last_use_time == pytest.approx(clock.now)


def test_last_use_is_written_at_most_once_a_minute_per_token(
    accounts: Accounts, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, token_id = bob_token(accounts)
    auth = authenticator(accounts)
    auth.identify(token, CLIENT, "api")
    auth.flush_last_use()
    first = clock.now

    clock.advance(LAST_USE_RESOLUTION / 2)
    auth.identify(token, CLIENT, "api")
    auth.flush_last_use()
    assert AuthToken.get_by_id(token_id).last_use_time == pytest.approx(first)

    clock.advance(LAST_USE_RESOLUTION)
    auth.identify(token, CLIENT, "api")
    auth.flush_last_use()
    assert AuthToken.get_by_id(token_id).last_use_time == pytest.approx(clock.now)


def test_flushing_without_use_writes_nothing(accounts: Accounts, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[dict[int, float]] = []
    monkeypatch.setattr(accounts, "mark_used", written.append)

    authenticator(accounts).flush_last_use()

    assert written == []


def test_recording_last_use_does_not_drop_any_cache(accounts: Accounts, clock: FakeClock) -> None:
    token, _ = bob_token(accounts)
    auth = authenticator(accounts)
    auth.identify(token, CLIENT, "api")
    signal = accounts.changes.current()

    auth.flush_last_use()

    assert accounts.changes.current() == signal


def test_identities_carry_what_the_token_was_granted(accounts: Accounts) -> None:
    accounts.create_user("bob", default_grants=False)
    accounts.add_grant(access.USER, "bob", GrantRule(READ_JOB, "adder"), "admin")
    token, _ = accounts.issue_token(access.USER, "bob")

    bob = authenticator(accounts).identify(token, CLIENT, "api")

    assert bob.grants == (GrantRule(READ_JOB, "adder"),)
    assert bob.allows(READ_JOB, "adder", "1.0.0") and not bob.allows(READ_JOB, "other", "1.0.0")
