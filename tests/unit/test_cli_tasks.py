"""`rtd tasks` and `rtd call --async`: arguments, the requests they make, what they print, exit codes."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from click.testing import CliRunner

from cli.errors import EXIT_AUTH, EXIT_CONFLICT, EXIT_ERROR, EXIT_INVALID_INPUT, EXIT_NOT_FOUND, EXIT_UNREACHABLE
from cli.main import main
from tests.unit.fakes import FakeDaemon


@pytest.fixture
def daemon(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> FakeDaemon:
    return FakeDaemon(monkeypatch)


def task(task_id: str, state: str = "failed", error: str | None = None, attempts: int = 2) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "status": state,
        "state": state,
        "job_name": "adder",
        "job_version": "1.0.0",
        "method": "POST",
        "path": "/pub/job/adder/1.0.0/api/v1/perform",
        "caller": "admin",
        "attempts": attempts,
        "error": error,
        "response_status": None,
        "created_at": 1_700_000_000.0,
        "started_at": None,
        "ended_at": None,
        "duration": None,
    }


# --- without a daemon ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "request_made"),
    [
        (["tasks"], "GET http://127.0.0.1:9/lifecycle/api/v1/async/tasks"),
        (["tasks", "adder", "--state", "failed"], "GET http://127.0.0.1:9/lifecycle/api/v1/async/tasks"),
        (["tasks", "--retry", "abc-123"], "POST http://127.0.0.1:9/lifecycle/api/v1/async/tasks/abc-123/retry"),
        (["call", "adder", "--async"], "POST http://127.0.0.1:9/pub/async/new/job/adder/latest/api/v1/perform"),
        (
            ["call", "adder", "--async", "--version", "1.x", "--endpoint", "api/v1/add"],
            "POST http://127.0.0.1:9/pub/async/new/job/adder/1.x/api/v1/add",
        ),
    ],
)
def test_an_unreachable_daemon_is_one_clear_line_and_exit_7(
    runner: CliRunner, requests_made: list[str], args: list[str], request_made: str
) -> None:
    result = runner.invoke(main, args)

    assert result.exit_code == EXIT_UNREACHABLE
    assert "error: cannot reach racetrackd at http://127.0.0.1:9" in result.output
    assert "hint:" in result.output
    assert "Traceback" not in result.output
    assert requests_made == [request_made]


@pytest.mark.parametrize(
    "args",
    [
        ["tasks", "--state", "bogus"],
        ["tasks", "--limit", "many"],
        ["tasks", "--retry"],
        ["call", "adder", "--async", "--data", "{not: [valid"],
        ["call", "adder", "--async", "--method", "HEAD"],
    ],
)
def test_bad_arguments_are_usage_errors_before_any_request(
    runner: CliRunner, requests_made: list[str], args: list[str]
) -> None:
    result = runner.invoke(main, args)

    assert result.exit_code == 2
    error, hint = result.stderr.splitlines()
    assert error.startswith("error: ") and hint.startswith("hint: main") and hint.endswith(" --help shows the usage")
    assert requests_made == []


# --- rtd tasks -----------------------------------------------------------------------------------


def test_tasks_asks_with_its_filters_and_the_token(runner: CliRunner, daemon: FakeDaemon) -> None:
    daemon.answer("GET", "/lifecycle/api/v1/async/tasks", (200, []))

    result = runner.invoke(main, ["--token", "tok", "tasks", "adder", "--state", "failed", "--limit", "5"])

    assert result.exit_code == 0, result.output
    [(method, _, kwargs, headers)] = daemon.calls
    assert kwargs["params"] == {"limit": 5, "state": "failed", "job_name": "adder"}
    assert headers["X-Racetrack-Auth"] == "tok"


def test_tasks_defaults_to_the_newest_fifty_of_every_state(runner: CliRunner, daemon: FakeDaemon) -> None:
    daemon.answer("GET", "/lifecycle/api/v1/async/tasks", (200, []))

    result = runner.invoke(main, ["tasks"])

    assert result.exit_code == 0
    assert daemon.calls[0][2]["params"] == {"limit": 50}
    assert result.output == "no async tasks\n"


def test_tasks_prints_a_table_with_the_first_line_of_each_error(runner: CliRunner, daemon: FakeDaemon) -> None:
    long_error = "connection refused (the job may be starting or has died) " + "x" * 60 + "\nsecond line"
    daemon.answer(
        "GET",
        "/lifecycle/api/v1/async/tasks",
        (
            200,
            [
                task("t-failed", "failed", long_error, attempts=2),
                task("t-done", "completed", None, attempts=1),
            ],
        ),
    )

    result = runner.invoke(main, ["tasks"])

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TASK", "JOB", "STATE", "ATTEMPTS", "CREATED", "ERROR"]
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1_700_000_000))
    assert lines[1].startswith("t-failed  adder 1.0.0  failed     2         " + created)
    assert lines[1].endswith(long_error.splitlines()[0][:80])
    assert "second line" not in result.stdout
    assert lines[2].split()[:4] == ["t-done", "adder", "1.0.0", "completed"]
    assert lines[2].rstrip() == lines[2]  # no trailing blanks where there is no error


def test_tasks_json_prints_what_the_daemon_said(runner: CliRunner, daemon: FakeDaemon) -> None:
    items = [task("t-1"), task("t-2", "queued")]
    daemon.answer("GET", "/lifecycle/api/v1/async/tasks", (200, items))

    result = runner.invoke(main, ["tasks", "--json"])

    assert result.exit_code == 0
    assert json.loads(result.stdout) == items


def test_tasks_retry_queues_the_task_again(runner: CliRunner, daemon: FakeDaemon) -> None:
    daemon.answer("POST", "/lifecycle/api/v1/async/tasks/t-1/retry", (200, task("t-1", "queued", attempts=0)))

    result = runner.invoke(main, ["tasks", "--retry", "t-1"])

    assert result.exit_code == 0, result.output
    assert result.stdout == "queued async task t-1 again (adder 1.0.0)\n"
    assert [call[0] for call in daemon.calls] == ["POST"]  # no listing afterwards


@pytest.mark.parametrize(
    ("status", "body", "expected", "exit_code"),
    [
        (
            409,
            {"error": "async task t-1 is completed; only failed tasks can be retried", "type": "already-exists"},
            "error: async task t-1 is completed; only failed tasks can be retried",
            EXIT_CONFLICT,
        ),
        (
            404,
            {
                "error": "async task t-1 not found",
                "type": "not-found",
                "hint": "tasks are kept for a while after they end, then removed",
            },
            "error: async task t-1 not found\nhint: tasks are kept for a while after they end, then removed",
            EXIT_NOT_FOUND,
        ),
        (
            401,
            {"error": "invalid auth token", "type": "unauthorized"},
            "error: invalid auth token\nhint: log in with: rtd login TOKEN (or rtd login --username NAME)",
            EXIT_AUTH,
        ),
    ],
)
def test_tasks_retry_refused_prints_the_daemons_error(
    runner: CliRunner, daemon: FakeDaemon, status: int, body: dict[str, str], expected: str, exit_code: int
) -> None:
    daemon.answer("POST", "/lifecycle/api/v1/async/tasks/t-1/retry", (status, body))

    result = runner.invoke(main, ["tasks", "--retry", "t-1"])

    assert result.exit_code == exit_code
    assert result.stderr.rstrip("\n") == expected
    assert result.stdout == ""


def test_tasks_when_the_daemon_fails_is_exit_1(runner: CliRunner, daemon: FakeDaemon) -> None:
    daemon.answer("GET", "/lifecycle/api/v1/async/tasks", (500, "Internal Server Error"))

    result = runner.invoke(main, ["tasks"])

    assert result.exit_code == EXIT_ERROR
    assert "Internal Server Error" in result.stderr and "Traceback" not in result.output


# --- rtd call --async ----------------------------------------------------------------------------

NEW = "/pub/async/new/job/adder/latest/api/v1/perform"
POLL = "/pub/async/task/t-1/poll"


def test_call_async_starts_a_task_polls_until_done_and_prints_the_answer(runner: CliRunner, daemon: FakeDaemon) -> None:
    daemon.answer("POST", "/pub/async/new/job/adder/1.x/api/v1/add", (201, {"task_id": "t-1", "status": "ongoing"}))
    daemon.answer("GET", POLL, (202, {"status": "ongoing"}), (202, {"status": "ongoing"}), (200, {"sum": 42}))

    result = runner.invoke(
        main, ["call", "adder", "--async", "--version", "1.x", "--endpoint", "/api/v1/add", "--data", "a: 40\nb: 2"]
    )

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"sum": 42}
    assert result.stderr == "-----> async task t-1\n"
    submitted, *polls = daemon.calls
    assert submitted[2]["json"] == {"a": 40, "b": 2}  # YAML data sent as JSON
    assert len(polls) == 3
    assert all(poll[0] == "GET" and poll[2]["params"] == {"wait": 30} for poll in polls)
    assert all(poll[2]["timeout"] >= 40 for poll in polls)  # longer than the daemon's long poll


def test_call_async_with_get_sends_no_body(runner: CliRunner, daemon: FakeDaemon) -> None:
    daemon.answer("GET", NEW, (201, {"task_id": "t-1", "status": "ongoing"}))
    daemon.answer("GET", POLL, (200, "plain answer"))

    result = runner.invoke(main, ["call", "adder", "--async", "--method", "GET"])

    assert result.exit_code == 0, result.output
    assert result.stdout == "plain answer\n"
    assert "json" not in daemon.calls[0][2]


def test_call_async_to_an_unknown_job_is_exit_3_without_polling(runner: CliRunner, daemon: FakeDaemon) -> None:
    daemon.answer(
        "POST",
        NEW,
        (
            404,
            {
                "error": "job adder latest not found",
                "type": "job-not-found",
                "job_name": "adder",
                "job_version": "latest",
                "request_id": "r",
            },
        ),
    )

    result = runner.invoke(main, ["call", "adder", "--async"])

    assert result.exit_code == EXIT_NOT_FOUND
    assert "error: job adder latest not found" in result.stderr
    assert len(daemon.calls) == 1


def test_call_async_whose_task_failed_prints_the_failure_and_exits_1(runner: CliRunner, daemon: FakeDaemon) -> None:
    failed = task("t-1", "failed", "connection refused (after 2 attempt(s))")
    daemon.answer("POST", NEW, (201, {"task_id": "t-1", "status": "ongoing"}))
    daemon.answer("GET", POLL, (202, {"status": "ongoing"}), (500, failed))

    result = runner.invoke(main, ["call", "adder", "--async"])

    assert result.exit_code == EXIT_ERROR
    assert result.stderr.startswith("-----> async task t-1\nerror: adder latest /api/v1/perform answered 500: ")
    assert "connection refused (after 2 attempt(s))" in result.stderr
    assert result.stdout == ""


def test_call_async_prints_the_jobs_own_error_answer_and_exits_8(runner: CliRunner, daemon: FakeDaemon) -> None:
    daemon.answer("POST", NEW, (201, {"task_id": "t-1", "status": "ongoing"}))
    daemon.answer("GET", POLL, (422, {"error": "a must be a number"}))

    result = runner.invoke(main, ["call", "adder", "--async"])

    assert result.exit_code == EXIT_INVALID_INPUT
    assert "error: adder latest /api/v1/perform answered 422: a must be a number" in result.stderr
