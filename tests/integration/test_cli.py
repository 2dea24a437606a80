"""rtd against a real daemon: every command a user types, what it prints, and its exit code.

One job is built for the whole module (builds cost tens of seconds here); the tests run in file
order and the last one deletes it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli import __version__
from cli.errors import (
    EXIT_AUTH,
    EXIT_CONFLICT,
    EXIT_INVALID_INPUT,
    EXIT_NOT_FOUND,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)
from tests.integration.conftest import REPO, Daemon, run_rtd

pytestmark = pytest.mark.integration

JOB = "cli-adder"
VERSION = "0.0.1"


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def failed(result: subprocess.CompletedProcess[str], exit_code: int) -> str:
    """The error output of a command that had to fail with `exit_code`: one `error:` line, never a traceback."""
    assert result.returncode == exit_code, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return result.stderr


@pytest.fixture(scope="module")
def submitted(daemon: Daemon) -> subprocess.CompletedProcess[str]:
    """The sample adder, deployed by rtd under its own name (the one build of this module)."""
    result = daemon.rtd("submit", str(REPO / "samples" / "adder"), "-e", f"name={JOB}", "--force")
    ok(result)
    return result


@pytest.fixture(scope="module")
def deployment(daemon: Daemon, submitted: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    listed: list[dict[str, Any]] = json.loads(ok(daemon.rtd("deployments", JOB, "--json")))
    return listed[0]


def test_submit_shows_each_phase_with_its_time_and_ends_with_the_url(
    daemon: Daemon, submitted: subprocess.CompletedProcess[str]
) -> None:
    out = submitted.stdout

    assert f"-----> submitting {JOB} {VERSION} to {daemon.url}" in out
    assert "-----> building image (at " in out
    assert "-----> starting Job server (at " in out
    assert f"-----> {JOB} {VERSION} is running (took " in out
    assert f"{daemon.url}/pub/job/{JOB}/{VERSION}" in out
    assert "\r" not in out  # no spinner when stdout is not a terminal


def test_list_shows_name_version_status_and_chosen_columns(daemon: Daemon, submitted: Any) -> None:
    plain = ok(daemon.rtd("list")).splitlines()
    wide = ok(daemon.rtd("list", "-c", "pub_url", "-c", "deployed_by")).splitlines()
    every = ok(daemon.rtd("list", "-c", "all")).splitlines()

    assert plain[0].split() == ["NAME", "VERSION", "STATUS"]
    assert [JOB, VERSION, "running"] in [line.split() for line in plain]
    assert wide[0].split() == ["NAME", "VERSION", "STATUS", "URL", "DEPLOYED", "BY"]
    assert [JOB, VERSION, "running", f"{daemon.url}/pub/job/{JOB}/{VERSION}", "admin"] in [
        line.split() for line in wide
    ]
    assert all(heading in every[0] for heading in ("JOB TYPE", "LAST CALL", "UPDATED", "REPLICAS", "URL"))


def test_list_json_is_the_jobs(daemon: Daemon, submitted: Any) -> None:
    jobs = json.loads(ok(daemon.rtd("list", "--json")))

    job = next(j for j in jobs if j["name"] == JOB)
    assert (job["version"], job["status"]) == (VERSION, "running")


def test_an_unknown_column_is_a_usage_error(daemon: Daemon) -> None:
    result = daemon.rtd("list", "-c", "colour")

    assert result.returncode == EXIT_USAGE and "colour" in result.stderr


def test_status_shows_the_job_and_its_last_deployment_on_one_screen(daemon: Daemon, deployment: dict[str, Any]) -> None:
    out = ok(daemon.rtd("status", JOB))

    lines = out.splitlines()
    assert lines[0] == f"{JOB} {VERSION}"
    fields = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in lines[1:9]}
    assert fields["status"] == "running"
    assert fields["url"] == f"{daemon.url}/pub/job/{JOB}/{VERSION}/"  # where the job's own / answers (serving_url)
    assert fields["replicas"] == "1 (1 ready)"
    assert fields["crashes"] == "0"
    assert fields["last error"] == "-"
    assert f"last deployment {deployment['id'][:8]} (deploy, done) by admin" in out
    assert "building image" in out and "total" in out


def test_status_json_has_the_job_and_the_deployment(daemon: Daemon, deployment: dict[str, Any]) -> None:
    status = json.loads(ok(daemon.rtd("status", JOB, "--version", VERSION, "--json")))

    assert status["job"]["status"] == "running"
    assert status["job"]["infrastructure_stats"]["crash_count"] == 0
    assert status["last_deployment"]["id"] == deployment["id"]


def test_call_with_positional_endpoint_and_payload_json_or_yaml(daemon: Daemon, submitted: Any) -> None:
    assert ok(daemon.rtd("call", JOB, "/api/v1/perform", '{"a": 40, "b": 2}')).strip() == "42"
    assert ok(daemon.rtd("call", JOB, "api/v1/perform", "a: 1\nb: 2")).strip() == "3"
    assert ok(daemon.rtd("call", JOB, "--data", '{"a": 5, "b": 5}')).strip() == "10"  # the option form still works


def test_call_curl_prints_a_command_that_does_the_same_call_without_the_token_in_it(
    daemon: Daemon, submitted: Any, tmp_path: Path
) -> None:
    command = ok(daemon.rtd("call", JOB, "/api/v1/perform", '{"a": 40, "b": 2}', "--curl")).strip()

    assert command.startswith("curl ")
    assert daemon.token not in command
    assert "$(rtd token)" in command
    # The printed command, run by a shell where rtd is installed and logged in, gives the same answer.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "rtd").write_text(f'#!/bin/sh\nexec {sys.executable} -m cli "$@"\n')
    (bin_dir / "rtd").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "RTD_REMOTE": daemon.url,
        "RTD_TOKEN": daemon.token,
    }
    ran = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "42"


def test_call_curl_show_token_writes_the_token(daemon: Daemon, submitted: Any) -> None:
    command = ok(daemon.rtd("call", JOB, "--curl", "--show-token"))

    assert f"X-Racetrack-Auth: {daemon.token}" in command


def test_logs_print_the_jobs_output(daemon: Daemon, submitted: Any) -> None:
    ok(daemon.rtd("call", JOB, "--data", '{"a": 1, "b": 1}'))

    out = ok(daemon.rtd("logs", JOB, "--tail", "50"))

    assert out.strip(), "the job has written nothing to its log"


def test_build_logs_print_the_build_output(daemon: Daemon, submitted: Any) -> None:
    out = ok(daemon.rtd("build-logs", JOB))

    assert "Successfully built" in out or "Successfully tagged" in out, out[-2000:]


def test_deployments_list_the_release(daemon: Daemon, deployment: dict[str, Any]) -> None:
    out = ok(daemon.rtd("deployments", JOB))

    header, *rows = out.splitlines()
    assert header.split() == ["ID", "JOB", "VERSION", "KIND", "STATUS", "WHEN", "BY", "TOOK"]
    assert rows[0].split()[:5] == [deployment["id"][:8], JOB, VERSION, "deploy", "done"]
    assert rows[0].split()[7] == "admin"


def test_rollback_without_an_earlier_release_is_not_found(daemon: Daemon, submitted: Any) -> None:
    stderr = failed(daemon.rtd("rollback", JOB), EXIT_NOT_FOUND)

    assert "no earlier release" in stderr


def test_rollback_to_a_release_runs_its_image_again_and_shows_progress(
    daemon: Daemon, deployment: dict[str, Any]
) -> None:
    out = ok(daemon.rtd("rollback", JOB, "--version", VERSION, "--to", deployment["id"]))

    assert f"-----> rolling back {JOB} {VERSION}" in out
    assert f"-----> {JOB} {VERSION} runs the release of deployment {deployment['id']} (took " in out
    assert ok(daemon.rtd("call", JOB, "--data", '{"a": 2, "b": 2}')).strip() == "4"
    kinds = [d["kind"] for d in json.loads(ok(daemon.rtd("deployments", JOB, "--json")))]
    assert kinds[0] == "rollback"


def test_submitting_the_same_version_again_without_force_is_a_conflict(daemon: Daemon, submitted: Any) -> None:
    stderr = failed(daemon.rtd("submit", str(REPO / "samples" / "adder"), "-e", f"name={JOB}"), EXIT_CONFLICT)

    assert JOB in stderr and "hint:" in stderr


def test_version_prints_client_and_server_versions(daemon: Daemon) -> None:
    result = daemon.rtd("version")
    as_json = json.loads(ok(daemon.rtd("version", "--json")))

    client, server, memory = ok(result).splitlines()
    assert (client, server) == (f"rtd {__version__}", f"racetrackd {__version__} at {daemon.url}")
    assert memory.startswith("racetrackd memory: ") and "MiB PSS" in memory  # the daemon's own footprint
    assert "warning" not in result.stderr  # same major.minor
    assert as_json.pop("server_memory")["pss_bytes"] > 0
    assert as_json == {"client": __version__, "server": __version__, "remote": daemon.url}


def test_named_remotes_are_added_used_listed_and_removed(daemon: Daemon, tmp_path: Path) -> None:
    config = tmp_path / "rtd.yaml"
    env = {"RTD_CONFIG": str(config)}  # no RTD_REMOTE, RTD_TOKEN: everything comes from the config file

    ok(run_rtd(env, "remote", "add", "local", daemon.url))
    ok(run_rtd(env, "remote", "add", "elsewhere", "127.0.0.1:9"))
    assert "using" in ok(run_rtd(env, "remote", "use", "local"))
    assert "as admin" in ok(run_rtd(env, "login", daemon.token))

    assert ok(run_rtd(env, "remote")).strip() == f"local {daemon.url} (logged in)"
    listed = [line.split() for line in ok(run_rtd(env, "remote", "list")).splitlines()]
    assert ["*", "local", daemon.url, "yes"] in listed
    assert ["elsewhere", "http://127.0.0.1:9", "no"] in listed
    assert ok(run_rtd(env, "list", "--json")).startswith("[")  # talks to `local` with its saved token
    assert ok(run_rtd(env, "--remote", "local", "version")).startswith("rtd ")  # --remote takes a name
    saved = yaml.safe_load(config.read_text())
    assert saved["remote"] == "local" and saved["tokens"] == {daemon.url: daemon.token}
    assert config.stat().st_mode & 0o777 == 0o600

    ok(run_rtd(env, "remote", "remove", "local"))
    assert daemon.url not in (yaml.safe_load(config.read_text())["tokens"] or {})
    failed(run_rtd(env, "remote", "remove", "local"), EXIT_NOT_FOUND)


def test_a_misspelt_job_gets_a_did_you_mean_and_call_json_prints_json(daemon: Daemon, submitted: Any) -> None:
    stderr = failed(daemon.rtd("call", "cli-addr", "--data", "{}"), EXIT_NOT_FOUND)

    assert stderr.splitlines()[-1] == f"hint: did you mean {JOB}? (rtd list shows the jobs you may read)"
    assert json.loads(ok(daemon.rtd("call", JOB, "--json", "--data", '{"a": 40, "b": 2}'))) == 42


def test_an_unknown_job_is_not_found(daemon: Daemon) -> None:
    stderr = failed(daemon.rtd("status", "no-such-job"), EXIT_NOT_FOUND)

    assert "no-such-job" in stderr
    failed(daemon.rtd("call", "no-such-job"), EXIT_NOT_FOUND)
    failed(daemon.rtd("logs", "no-such-job"), EXIT_NOT_FOUND)


def test_a_bad_token_is_an_auth_error_with_a_hint(daemon: Daemon) -> None:
    result = run_rtd(
        {
            "RTD_REMOTE": daemon.url,
            "RTD_TOKEN": "rtd_not-a-real-token",
            "RTD_CONFIG": str(daemon.data_dir / "rtd-config.yaml"),
        },
        "list",
    )

    stderr = failed(result, EXIT_AUTH)
    assert "\nhint: " in stderr and "rtd login" in stderr


def test_an_unreachable_daemon_is_exit_7_with_a_hint(daemon: Daemon) -> None:
    with socket.socket() as sock:  # a port nothing listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        result = run_rtd(
            {"RTD_REMOTE": url, "RTD_TOKEN": daemon.token, "RTD_CONFIG": str(daemon.data_dir / "rtd-config.yaml")},
            "list",
        )

    stderr = failed(result, EXIT_UNREACHABLE)
    assert f"error: cannot reach racetrackd at {url}" in stderr and "hint: " in stderr


def test_an_invalid_manifest_is_exit_8_before_any_request(daemon: Daemon, tmp_path: Path) -> None:
    job_dir = tmp_path / "bad"
    shutil.copytree(REPO / "samples" / "adder", job_dir)
    (job_dir / "job.yaml").write_text("name: cli-bad\nversion: one\njobtype: python3:latest\n")

    stderr = failed(daemon.rtd("submit", str(job_dir)), EXIT_INVALID_INPUT)

    assert "version" in stderr and "owner_email" in stderr
    assert not [d for d in json.loads(ok(daemon.rtd("deployments", "cli-bad", "--json")))]


def test_completion_prints_a_script_and_completes_job_names_from_the_daemon(daemon: Daemon, submitted: Any) -> None:
    script = ok(daemon.rtd("completion", "bash"))
    assert "_RTD_COMPLETE" in script and "complete " in script

    env = {
        "RTD_REMOTE": daemon.url,
        "RTD_TOKEN": daemon.token,
        "_RTD_COMPLETE": "bash_complete",
        "COMP_WORDS": "rtd status cli-a",
        "COMP_CWORD": "2",
    }
    completed = ok(run_rtd(env))
    assert f"plain,{JOB}" in completed.splitlines()

    offline = ok(run_rtd({**env, "RTD_REMOTE": "http://127.0.0.1:9"}))
    assert offline.strip() == ""  # offline: no names, no error in the user's shell


def test_maintenance_mode_refuses_changes_with_the_admins_message_until_off(daemon: Daemon, submitted: Any) -> None:
    assert ok(daemon.rtd("maintenance")).strip() == "maintenance mode: off"
    perform = f"/pub/job/{JOB}/{VERSION}/api/v1/perform"
    try:
        shown = ok(daemon.rtd("maintenance", "on", "-m", "disk swap until 14:00"))
        assert "maintenance mode: ON" in shown and "by admin" in shown and "disk swap until 14:00" in shown

        refused = failed(daemon.rtd("delete", JOB, "--version", VERSION), EXIT_CONFLICT)
        assert "maintenance mode" in refused and "disk swap until 14:00" in refused
        assert json.loads(ok(daemon.rtd("maintenance", "--json")))["maintenance_mode"] is True
        # Job calls are refused too, as Racetrack 2.33 does (RACETRACK_MAINTENANCE_BLOCKS_CALLS=true).
        call = eventually_answered(daemon, perform, 503)
        assert call.json()["type"] == "maintenance-mode" and "disk swap until 14:00" in call.json()["error"]
        assert "maintenance mode" in failed(
            daemon.rtd("call", JOB, "/api/v1/perform", '{"a": 40, "b": 2}'), EXIT_CONFLICT
        )
        assert daemon.api("GET", "/health").status_code == 200  # the daemon's own probes stay open
    finally:
        assert ok(daemon.rtd("maintenance", "off")).strip() == "maintenance mode: off"
    assert eventually_answered(daemon, perform, 200).json() == 42
    assert JOB in ok(daemon.rtd("list"))


def eventually_answered(daemon: Daemon, path: str, status: int) -> Any:
    """The gateway sees maintenance mode switch on its routing table's next refresh (0.1 s)."""
    deadline = time.monotonic() + 5
    while True:
        response = daemon.api("POST", path, json={"a": 40, "b": 2})
        if response.status_code == status or time.monotonic() > deadline:
            assert response.status_code == status, response.text
            return response
        time.sleep(0.1)


def test_delete_removes_the_job_last(daemon: Daemon, submitted: Any) -> None:
    assert ok(daemon.rtd("delete", JOB, "--version", VERSION)).strip() == f"deleted {JOB} {VERSION}"

    failed(daemon.rtd("status", JOB, "--version", VERSION), EXIT_NOT_FOUND)
    assert JOB not in [j["name"] for j in json.loads(ok(daemon.rtd("list", "--json")))]
