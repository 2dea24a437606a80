"""Benchmark: what checking a caller costs per call, in process (no HTTP, no Docker).

    .venv/bin/python bench/auth.py [--calls 200000] [--grants 20]

Builds a registry in a temporary data dir and times, on one thread, what the gateway does per
call before forwarding:
  1. baseline: auth off (RACETRACK_AUTH_REQUIRED=false), no token: `identify` answers at once;
  2. an ESC token with a family grant: `identify` from the cache, then `allows(call_job, ...)`;
  3. the same ESC holding --grants grants on other families first (the grant loop's worst case);
  4. a staff user (passes every check);
  5. a cache miss: the cache is emptied before every call, so each one reads SQLite
     (what the first call of a token costs, and every token's next call after a change).
Results go to stdout and replace the "## Auth check per call" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._report import write_section
from racetrackd.auth import access
from racetrackd.auth.access import GrantRule
from racetrackd.auth.accounts import Accounts, ChangeSignal
from racetrackd.auth.authenticator import Authenticator
from racetrackd.auth.vault import Vault
from racetrackd.db import Job, open_database
from racetrackd.settings import Settings

MARKER = "## Auth check per call"


def per_call_us(calls: int, step: Callable[[], object]) -> float:
    for _ in range(min(calls // 10, 10_000)):  # warm-up
        step()
    started = time.perf_counter()
    for _ in range(calls):
        step()
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--grants", type=int, default=20)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="racetrackd-bench-auth-"))
    settings = Settings.from_env({"RACETRACK_DATA_DIR": str(data_dir), "RACETRACK_ADMIN_TOKEN": "bench-admin"})
    open_database(settings.database_path)
    accounts = Accounts(Vault(b"bench-key"), ChangeSignal.in_data_dir(data_dir))
    accounts.ensure_bootstrap_admin("bench-admin")
    for name in ["adder", *(f"family-{i}" for i in range(args.grants))]:
        Job.create(
            name=name,
            version="1.0.0",
            manifest_yaml="",
            job_type_version="python3:1",
            image_name="",
            container_name=name,
            deployment_timestamp=0,
        )
    esc = accounts.create_esc("bench")
    accounts.add_grant(access.ESC, esc.id, GrantRule(access.CALL_JOB, "adder"), "bench")
    esc_token, _ = accounts.issue_token(access.ESC, esc.id)
    crowded = accounts.create_esc("crowded")
    for i in range(args.grants):
        accounts.add_grant(access.ESC, crowded.id, GrantRule(access.CALL_JOB, f"family-{i}"), "bench")
    accounts.add_grant(access.ESC, crowded.id, GrantRule(access.CALL_JOB, "adder"), "bench")
    crowded_token, _ = accounts.issue_token(access.ESC, crowded.id)

    checking = Authenticator.from_settings(settings, accounts)
    open_door = Authenticator.from_settings(
        Settings.from_env({"RACETRACK_DATA_DIR": str(data_dir), "RACETRACK_AUTH_REQUIRED": "false"}), accounts
    )

    def check(authenticator: Authenticator, token: str | None) -> Callable[[], object]:
        def step() -> object:
            identity = authenticator.identify(token, "127.0.0.1", "gateway")
            if not identity.allows(access.CALL_JOB, "adder", "1.0.0", "/api/v1/perform"):
                raise AssertionError("refused")
            return identity

        return step

    def miss() -> object:
        checking.forget()
        return check(checking, esc_token)()

    calls = args.calls
    rows = [
        ("auth off, no token (baseline)", per_call_us(calls, check(open_door, None))),
        ("ESC token, family grant, cached", per_call_us(calls, check(checking, esc_token))),
        (
            f"ESC token, {args.grants + 1} grants (match last), cached",
            per_call_us(calls, check(checking, crowded_token)),
        ),
        ("staff user (bootstrap admin), cached", per_call_us(calls, check(checking, "bench-admin"))),
        ("cache miss (reads SQLite)", per_call_us(max(calls // 100, 200), miss)),
    ]
    baseline = rows[0][1]
    lines = ["| caller | µs per call | × baseline |", "|---|---|---|"]
    lines += [f"| {label} | {micros:.2f} | {micros / baseline:.1f}× |" for label, micros in rows]
    for label, micros in rows:
        print(f"{label:50} {micros:8.2f} µs  {micros / baseline:6.1f}x", flush=True)
    command = " ".join([".venv/bin/python", "bench/auth.py", *sys.argv[1:]])
    section = f"""{MARKER} ({time.strftime("%Y-%m-%d")}, {os.cpu_count()} cores, `{command}`)

One thread, in process: `Authenticator.identify` then `Identity.allows(call_job, adder, 1.0.0,
/api/v1/perform)`, {calls} times per row (the cache-miss row {max(calls // 100, 200)} times), after a warm-up.
This is what the gateway adds per call for auth; the /pub figures in the gateway section include it
(there the caller is an ESC with a family grant).

{chr(10).join(lines)}
"""
    write_section(MARKER, section)
    print(f"wrote the '{MARKER}' section of docs/benchmarks.md")


if __name__ == "__main__":
    main()
