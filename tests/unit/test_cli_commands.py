"""rtd's output and local logic against a fake daemon: progress lines, list columns, status, call --curl,
named remotes, version skew, completion, and errors that are one line with their exit code."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from cli import __version__, deploying
from cli.config import ClientConfig
from cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_INVALID_INPUT, EXIT_NOT_FOUND, EXIT_UNREACHABLE
from cli.main import main
from cli.progress import Progress
from tests.unit.fakes import REMOTE, FakeDaemon, minimal_job_dir

JOBS = "/lifecycle/api/v1/job"
DEPLOYMENTS = "/lifecycle/api/v1/deploy"


@pytest.fixture
def daemon(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> FakeDaemon:
    return FakeDaemon(monkeypatch)


def job(name: str = "adder", version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "status": "running",
        "pub_url": f"{REMOTE}/pub/job/{name}/{version}",
        "deployed_by": "alice",
        "update_time": 1_700_000_000,
        "last_call_time": None,
        "replicas": 2,
        "replica_internal_names": ["10.0.0.2:7000"],
        "error": None,
        "image_tag": "racetrackd/job-adder:1",
        "job_type_version": "python3:1.0.0",
        "infrastructure_target": "docker",
        "idle_timeout": None,
        "infrastructure_stats": {"crash_count": 3},
        "manifest": {"jobtype": "python3:latest"},
        **extra,
    }


def deployment(status: str = "done", version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    return {
        "id": "d0123456789",
        "status": status,
        "phase": None,
        "error": None,
        "job_name": "adder",
        "job_version": version,
        "deployed_by": "alice",
        "create_time": 1_700_000_000,
        "kind": "deploy",
        "phases": [
            {"name": "building image", "started_at": 1.0, "duration": 30.25},
            {"name": "starting Job server", "started_at": 31.0, "duration": 2.0},
        ],
        **extra,
    }


# --- progress ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_in_a_log_is_plain_lines_with_the_time_since_the_start() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = Progress(stream, clock, tty=False)

    progress.phase("building image")
    clock.now += 12.34
    progress.tick()
    progress.phase("building image")  # the same phase again: nothing new
    progress.line("       Step 1/9")
    progress.phase("starting Job server")
    progress.done()

    assert stream.getvalue() == (
        "-----> building image (at 0.0 s)\n       Step 1/9\n-----> starting Job server (at 12.3 s)\n"
    )


def test_progress_on_a_terminal_turns_a_spinner_that_lines_replace() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = Progress(stream, clock, tty=True)

    progress.phase("building image")
    clock.now += 5
    progress.tick()
    progress.line("       Step 1/9")
    progress.done()

    out = stream.getvalue()
    assert "\r/ building image 5 s\033[K" in out
    assert out.endswith("\r/ building image 5 s\033[K\r\033[K       Step 1/9\n")  # spinner cleared before a line


# --- list ----------------------------------------------------------------------------------------


def test_list_shows_name_version_status_and_the_chosen_columns(runner: CliRunner, daemon: FakeDaemon) -> None:
    daemon.answer("GET", JOBS, (200, [job("zeta"), job()]))

    plain = runner.invoke(main, ["list"])
    wide = runner.invoke(main, ["list", "-c", "deployed_by", "-c", "job_type", "-c", "last_call_at"])

    assert plain.stdout.splitlines() == ["NAME   VERSION  STATUS", "adder  1.0.0    running", "zeta   1.0.0    running"]
    assert re.split(r"\s{2,}", wide.stdout.splitlines()[0])[3:] == ["DEPLOYED BY", "JOB TYPE", "LAST CALL"]
    assert wide.stdout.splitlines()[1].split()[3:] == ["alice", "python3:1.0.0", "-"]


def test_list_json_and_an_empty_list(runner: CliRunner, daemon: FakeDaemon) -> None:
    daemon.answer("GET", JOBS, (200, [job()]), (200, []))

    assert json.loads(runner.invoke(main, ["list", "--json"]).stdout) == [job()]
    assert runner.invoke(main, ["list"]).stdout.startswith("no jobs")


# --- status --------------------------------------------------------------------------------------


def test_status_is_one_screen(runner: CliRunner, daemon: FakeDaemon) -> None:
    daemon.answer("GET", f"{JOBS}/adder/latest", (200, job(error="probe failed")))
    daemon.answer("GET", DEPLOYMENTS, (200, [deployment(version="0.9.0", id="older"), deployment()]))

    result = runner.invoke(main, ["status", "adder"])

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:6] == [
        "adder 1.0.0",
        "  status:       running",
        f"  url:          {REMOTE}/pub/job/adder/1.0.0",
        "  replicas:     2 (1 ready)",
        "  crashes:      3",
        "  last error:   probe failed",
    ]
    assert "last deployment d0123456 (deploy, done) by alice at " in result.stdout
    assert lines[-3:] == [
        f"  {'building image':<30} 30.2 s",
        f"  {'starting Job server':<30} 2.0 s",
        f"  {'total':<30} 32.2 s",
    ]


def test_status_shows_the_url_that_serves_a_forward_mode_job(runner: CliRunner, daemon: FakeDaemon) -> None:
    served = f"{REMOTE}/pub/job/web/1.0.0/api/v1/"
    daemon.answer("GET", f"{JOBS}/web/latest", (200, job("web", path_mode="forward", serving_url=served)))
    daemon.answer("GET", DEPLOYMENTS, (200, []))

    result = runner.invoke(main, ["status", "web"])

    assert result.exit_code == 0, result.output
    assert f"  url:          {served}" in result.stdout.splitlines()


def test_status_of_a_job_whose_deployment_failed_says_why(runner: CliRunner, daemon: FakeDaemon) -> None:
    daemon.answer("GET", f"{JOBS}/adder/latest", (404, {"error": "job adder latest not found"}))
    daemon.answer("GET", DEPLOYMENTS, (200, [deployment("failed", error="image build failed at step 3\nmore")]))

    result = runner.invoke(main, ["status", "adder"])

    assert result.exit_code == EXIT_NOT_FOUND
    assert result.stderr.splitlines() == [
        "error: adder 1.0.0 is not deployed: deployment d0123456 failed: image build failed at step 3",
        "hint: rtd build-logs adder --version 1.0.0; fix it and rtd submit again",
    ]


# --- call --curl ---------------------------------------------------------------------------------


def test_curl_uses_rtd_token_not_the_token(runner: CliRunner, daemon: FakeDaemon) -> None:
    result = runner.invoke(main, ["call", "adder", "/api/v1/add", "a: 1", "--curl"], env={"RTD_TOKEN": "s3cret"})

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"curl -sS -X POST {REMOTE}/pub/job/adder/latest/api/v1/add "
        "-H \"X-Racetrack-Auth: $(rtd token)\" -H 'Content-Type: application/json' "
        "-d '{\"a\": 1}'"
    )
    assert daemon.calls == []  # printed, not called


def test_curl_names_the_remote_given_by_flag_and_sends_no_body_with_get(runner: CliRunner, daemon: FakeDaemon) -> None:
    result = runner.invoke(
        main, ["--remote", REMOTE, "call", "adder", "--method", "GET", "--curl"], env={"RTD_TOKEN": "s3cret"}
    )

    assert result.stdout.strip() == (
        f"curl -sS -X GET {REMOTE}/pub/job/adder/latest/api/v1/perform "
        f'-H "X-Racetrack-Auth: $(rtd --remote {REMOTE} token)"'
    )


def test_curl_with_a_token_flag_refers_to_rtd_token_env_and_show_token_writes_it(
    runner: CliRunner, daemon: FakeDaemon
) -> None:
    by_flag = runner.invoke(main, ["--token", "s3cret", "call", "adder", "--curl"])
    shown = runner.invoke(main, ["--token", "s3cret", "call", "adder", "--curl", "--show-token"])

    assert '"X-Racetrack-Auth: $RTD_TOKEN"' in by_flag.stdout and "s3cret" not in by_flag.stdout
    assert "'X-Racetrack-Auth: s3cret'" in shown.stdout


def test_endpoint_and_payload_are_given_once(runner: CliRunner, daemon: FakeDaemon) -> None:
    twice = runner.invoke(main, ["call", "adder", "/api/v1/add", "--endpoint", "/x"])

    assert twice.exit_code == 2 and "give the endpoint once" in twice.output


# --- remotes -------------------------------------------------------------------------------------


def test_named_remotes_resolve_and_tokens_stay_per_url(tmp_path: Path) -> None:
    config = ClientConfig(path=tmp_path / "rtd.yaml")
    config.add_remote("prod", "racetrack.example.com:7102/lifecycle")
    config.remote = "prod"
    config.tokens["http://racetrack.example.com:7102"] = "prod-token"
    config.save()

    loaded = ClientConfig.load({"RTD_CONFIG": str(tmp_path / "rtd.yaml")})
    assert loaded.resolve(None, None, {}) == ("http://racetrack.example.com:7102", "prod-token")
    assert loaded.resolve(None, None, {"RTD_REMOTE": "prod"}) == ("http://racetrack.example.com:7102", "prod-token")
    assert loaded.resolve("other:1", None, {}) == ("http://other:1", None)
    assert loaded.name_of("http://racetrack.example.com:7102") == "prod"
    assert (tmp_path / "rtd.yaml").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("name", ["my.host", "host:1", "a/b", "_x", ""])
def test_a_remote_name_that_could_be_a_host_is_refused(runner: CliRunner, name: str) -> None:
    result = runner.invoke(main, ["remote", "add", name, "http://host:1"])

    assert result.exit_code == EXIT_INVALID_INPUT
    assert result.stderr.startswith("error: remote name")


def test_remote_add_use_list_remove(runner: CliRunner, tmp_path: Path) -> None:
    env = {"RTD_REMOTE": ""}  # the runner's default RTD_REMOTE would win over the config file
    assert runner.invoke(main, ["remote", "add", "prod", "https://rt.example.com"], env=env).exit_code == 0
    assert runner.invoke(main, ["remote", "add", "dev", "dev:7102", "--use"], env=env).exit_code == 0

    listed = runner.invoke(main, ["remote", "list"], env=env).stdout.splitlines()
    assert [line.split() for line in listed[1:]] == [
        ["*", "dev", "http://dev:7102", "no"],
        ["prod", "https://rt.example.com", "no"],
    ]
    assert runner.invoke(main, ["remote", "use", "prod"], env=env).exit_code == 0
    assert runner.invoke(main, ["remote"], env=env).stdout == "prod https://rt.example.com (no token)\n"
    assert json.loads(runner.invoke(main, ["remote", "--json"], env=env).stdout) == {
        "name": "prod",
        "url": "https://rt.example.com",
        "logged_in": False,
    }

    removed = runner.invoke(main, ["remote", "remove", "prod"], env=env)
    assert removed.exit_code == 0 and "the current remote is http://127.0.0.1:7102 again" in removed.stderr
    saved = yaml.safe_load((tmp_path / "rtd.yaml").read_text())
    assert saved["remotes"] == {"dev": "http://dev:7102"} and saved["remote"] is None
    assert runner.invoke(main, ["remote", "remove", "prod"], env=env).exit_code == EXIT_NOT_FOUND


# --- version -------------------------------------------------------------------------------------


def test_version_warns_when_major_minor_differ(runner: CliRunner, daemon: FakeDaemon) -> None:
    daemon.answer("GET", "/lifecycle/api/v1/info", (200, {"git_version": "9.4.0"}))

    result = runner.invoke(main, ["version"])

    assert result.exit_code == 0
    assert result.stdout == f"rtd {__version__}\nracetrackd 9.4.0 at {REMOTE}\n"
    assert result.stderr.startswith(f"warning: rtd {__version__} and racetrackd 9.4.0 differ in major.minor")


def test_version_shows_the_memory_the_daemon_reports(runner: CliRunner, daemon: FakeDaemon) -> None:
    memory = {
        "pss_bytes": 90 * 2**20,
        "processes": [
            {"role": "daemon", "pss_bytes": 40 * 2**20, "rss_bytes": 60 * 2**20},
            {"role": "http worker", "pss_bytes": 50 * 2**20, "rss_bytes": 70 * 2**20},
        ],
    }
    daemon.answer("GET", "/lifecycle/api/v1/info", (200, {"git_version": __version__, "daemon_memory": memory}))

    result = runner.invoke(main, ["version"])
    as_json = runner.invoke(main, ["version", "--json"])

    assert result.stdout.splitlines()[2] == "racetrackd memory: 90.0 MiB PSS (daemon 40.0, http worker 50.0)"
    assert json.loads(as_json.stdout)["server_memory"] == memory


def test_version_of_the_same_minor_does_not_warn(runner: CliRunner, daemon: FakeDaemon) -> None:
    major, minor, _ = __version__.split(".")
    daemon.answer("GET", "/lifecycle/api/v1/info", (200, {"git_version": f"{major}.{minor}.99"}))

    result = runner.invoke(main, ["version", "--json"])

    assert json.loads(result.stdout) == {"client": __version__, "server": f"{major}.{minor}.99", "remote": REMOTE}
    assert result.stderr == ""


# --- completion and errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shell", "marker"),
    [("bash", "complete -o nosort -F"), ("zsh", "#compdef rtd"), ("fish", "complete --no-files --command rtd")],
)
def test_completion_prints_the_shells_script(runner: CliRunner, shell: str, marker: str) -> None:
    result = runner.invoke(main, ["completion", shell])

    assert result.exit_code == 0
    assert marker in result.stdout and "_RTD_COMPLETE" in result.stdout


def test_a_bug_in_rtd_is_one_line_not_a_traceback(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("pub_url")

    monkeypatch.setattr("cli.client.ApiClient.jobs", broken)

    result = runner.invoke(main, ["list"])

    assert result.exit_code == EXIT_ERROR
    assert result.stderr.splitlines() == [
        "error: rtd failed unexpectedly: KeyError: 'pub_url'",
        "hint: run again with RTD_DEBUG=1 for the traceback, and report it",
    ]


def test_an_answer_that_is_not_json_is_one_line(runner: CliRunner, daemon: FakeDaemon) -> None:
    daemon.answer("GET", JOBS, (200, "<html>a proxy's login page</html>"))

    result = runner.invoke(main, ["list"])

    assert result.exit_code == EXIT_ERROR
    assert result.stderr.startswith(f"error: {REMOTE} answered /job with something other than racetrackd's JSON")


def test_remote_use_of_an_unknown_name_is_refused_but_a_url_is_taken(runner: CliRunner) -> None:
    typo = runner.invoke(main, ["remote", "use", "prdo"], env={"RTD_REMOTE": ""})
    url = runner.invoke(main, ["remote", "use", "rt.example.com:7102"], env={"RTD_REMOTE": ""})

    assert typo.exit_code == EXIT_NOT_FOUND and typo.stderr.startswith("error: no remote named prdo")
    assert url.exit_code == 0 and url.stdout.startswith("using http://rt.example.com:7102")


def test_version_prints_the_clients_even_when_the_daemon_is_down(runner: CliRunner) -> None:
    result = runner.invoke(main, ["version"])

    assert result.exit_code == EXIT_UNREACHABLE
    assert result.stdout == f"rtd {__version__}\n"
    assert result.stderr.startswith(f"error: cannot reach racetrackd at {REMOTE}")


def test_submit_json_keeps_stdout_for_the_deployment(runner: CliRunner, daemon: FakeDaemon, tmp_path: Path) -> None:
    job_dir = minimal_job_dir(tmp_path)
    done = deployment(job=job())
    daemon.answer("POST", DEPLOYMENTS, (201, {"id": done["id"]}))
    daemon.answer(
        "GET",
        f"{DEPLOYMENTS}/{done['id']}",
        (200, {**done, "status": "in_progress", "phase": "building image"}),
        (200, done),
    )
    daemon.answer("GET", f"{DEPLOYMENTS}/{done['id']}/build-logs", (200, {"logs": "Step 1/2\n", "offset": 9}))

    result = runner.invoke(main, ["submit", str(job_dir), "--json", "-v"], input="")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["id"] == done["id"]
    assert "-----> building image (at " in result.stderr and "       Step 1/2" in result.stderr


def test_ctrl_c_while_waiting_says_the_deployment_goes_on(
    runner: CliRunner, daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(self: Progress, seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Progress, "wait", interrupted)
    daemon.answer("POST", "/lifecycle/api/v1/job/adder/latest/rollback", (201, {"id": "r0123456789"}))
    daemon.answer("GET", f"{DEPLOYMENTS}/r0123456789", (200, deployment("in_progress", phase="starting Job server")))

    result = runner.invoke(main, ["rollback", "adder"])

    assert result.exit_code == EXIT_INTERRUPTED
    assert result.stderr.splitlines() == [
        "error: stopped watching; deployment r0123456 goes on in racetrackd",
        "hint: rtd build-logs NAME -f follows it; rtd status NAME shows how it ended",
    ]


def test_status_of_an_unknown_job_hints_at_the_list(runner: CliRunner, daemon: FakeDaemon) -> None:
    daemon.answer("GET", f"{JOBS}/nope/latest", (404, {"error": "job nope latest not found"}))
    daemon.answer("GET", DEPLOYMENTS, (200, []))
    daemon.answer("GET", JOBS, (200, [job("adder")]))  # asked for a did-you-mean: none is close to nope

    result = runner.invoke(main, ["status", "nope"])

    assert result.exit_code == EXIT_NOT_FOUND
    assert result.stderr == "error: job nope latest not found\nhint: rtd list shows the jobs you may read\n"


@pytest.mark.parametrize(
    ("path_mode", "hint"),
    [
        (None, "call it: rtd call adder --version 0.0.1 --data '{}'"),
        ("wrapper", "call it: rtd call adder --version 0.0.1 --data '{}'"),
        ("forward", 'open it: curl -H "X-Racetrack-Auth: $(rtd token)" http://h:7102/pub/job/adder/0.0.1/api/v1/'),
        ("rewrite", 'open it: curl -H "X-Racetrack-Auth: $(rtd token)" http://h:7102/pub/job/adder/0.0.1/'),
    ],
)
def test_submit_suggests_a_first_call_that_fits_the_job_type(path_mode: str | None, hint: str) -> None:
    job = {"name": "adder", "version": "0.0.1", "pub_url": "http://h:7102/pub/job/adder/0.0.1", "path_mode": path_mode}

    assert deploying._how_to_call(job) == hint


def test_submit_suggests_the_jobs_own_example_request_as_the_first_call(
    runner: CliRunner, daemon: FakeDaemon, tmp_path: Path
) -> None:
    job_dir = minimal_job_dir(tmp_path)
    job = {"name": "adder", "version": "1.0.0", "pub_url": f"{REMOTE}/pub/job/adder/1.0.0", "path_mode": "wrapper"}
    done = deployment(job=job)
    daemon.answer("POST", DEPLOYMENTS, (201, {"id": done["id"]}))
    daemon.answer("GET", f"{DEPLOYMENTS}/{done['id']}", (200, done))
    example = {"a": 40, "b": "it's"}
    spec = {
        "paths": {"/api/v1/perform": {"post": {"requestBody": {"content": {"application/json": {"example": example}}}}}}
    }
    daemon.answer("GET", "/pub/job/adder/1.0.0/openapi.json", (200, spec))

    result = runner.invoke(main, ["submit", str(job_dir)], input="")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        """       call it: rtd call adder --version 1.0.0 --data '{"a": 40, "b": "it'"'"'s"}'"""
    )


@pytest.mark.parametrize(
    ("example", "data"),
    [(None, "'{}'"), ({"numbers": [40, 2]}, """'{"numbers": [40, 2]}'"""), ({"x": "y" * 300}, "'{}'")],
)
def test_the_first_call_uses_a_short_example_only(example: Any, data: str) -> None:
    job = {"name": "adder", "version": "0.0.1", "pub_url": "http://h:7102/pub/job/adder/0.0.1", "path_mode": None}

    assert deploying._how_to_call(job, example) == f"call it: rtd call adder --version 0.0.1 --data {data}"


# --- the hint after a failed deployment points where there is something to see --------------------


def _failed_submit(runner: CliRunner, daemon: FakeDaemon, tmp_path: Path, build_output: str) -> Any:
    job_dir = minimal_job_dir(tmp_path)
    failed = deployment("failed", error="git.directory: 'jobs' does not exist in the repository", phases=[])
    daemon.answer("POST", DEPLOYMENTS, (201, {"id": failed["id"]}))
    daemon.answer("GET", f"{DEPLOYMENTS}/{failed['id']}", (200, failed))
    daemon.answer(
        "GET", f"{DEPLOYMENTS}/{failed['id']}/build-logs", (200, {"logs": build_output, "offset": len(build_output)})
    )
    return runner.invoke(main, ["submit", str(job_dir), "-q"], input="")


def test_a_deployment_that_failed_before_the_build_does_not_send_you_to_empty_build_logs(
    runner: CliRunner, daemon: FakeDaemon, tmp_path: Path
) -> None:
    result = _failed_submit(runner, daemon, tmp_path, build_output="")

    assert result.exit_code == 6
    hint = result.stderr.splitlines()[-1]
    assert "rtd build-logs" not in hint.replace("so rtd build-logs has nothing to show", "")
    assert hint.startswith("hint: it failed before any image was built")
    assert "rtd submit again" in hint and "rtd status adder --version 1.0.0" in hint


def test_a_deployment_that_failed_in_the_build_points_at_build_logs(
    runner: CliRunner, daemon: FakeDaemon, tmp_path: Path
) -> None:
    result = _failed_submit(runner, daemon, tmp_path, build_output="Step 1/9 : FROM python\n")

    assert result.exit_code == 6
    assert result.stderr.splitlines()[-1] == "hint: rtd build-logs adder --version 1.0.0 shows the whole build output"


def test_a_job_that_failed_as_it_started_points_at_its_log_not_the_build(
    runner: CliRunner, daemon: FakeDaemon, tmp_path: Path
) -> None:
    job_dir = minimal_job_dir(tmp_path)
    phases = [{"name": name, "started_at": 1.0, "duration": 1.0} for name in ("building image", "starting Job server")]
    error = "job initialization error: RuntimeError: no model\n--- last 20 lines of the job's log ---\nTraceback"
    failed = deployment("failed", error=error, phases=phases)
    daemon.answer("POST", DEPLOYMENTS, (201, {"id": failed["id"]}))
    daemon.answer("GET", f"{DEPLOYMENTS}/{failed['id']}", (200, failed))
    daemon.answer(
        "GET", f"{DEPLOYMENTS}/{failed['id']}/build-logs", (200, {"logs": "Step 1/9 : FROM x\n", "offset": 18})
    )

    result = runner.invoke(main, ["submit", str(job_dir), "-q"], input="")

    assert result.exit_code == 6
    assert "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "hint: the image built, then adder 1.0.0 failed as it started (its log's last lines are above): "
        "fix the code or its settings and rtd submit again (rtd status adder --version 1.0.0 shows what runs now)"
    )


def test_a_git_remote_that_cannot_be_fetched_points_at_submit_local(
    runner: CliRunner, daemon: FakeDaemon, tmp_path: Path
) -> None:
    job_dir = minimal_job_dir(tmp_path, "git: {remote: https://github.com/example/adder}\n")
    error = "cannot fetch https://github.com/example/adder: Could not resolve host: github.com"
    failed = deployment("failed", error=error, phases=[{"name": "fetching the source code", "started_at": 1.0}])
    daemon.answer("POST", DEPLOYMENTS, (201, {"id": failed["id"]}))
    daemon.answer("GET", f"{DEPLOYMENTS}/{failed['id']}", (200, failed))
    daemon.answer("GET", f"{DEPLOYMENTS}/{failed['id']}/build-logs", (200, {"logs": "", "offset": 0}))

    result = runner.invoke(main, ["submit", str(job_dir), "-q"], input="")

    assert result.exit_code == 6
    assert result.stderr.splitlines()[-1] == (
        "hint: to build from this directory instead of cloning git.remote: rtd submit --local; "
        "else fix git.remote / git.branch (rtd validate shows them) and rtd submit again"
    )


def test_a_failed_rollback_points_at_status_not_build_logs(runner: CliRunner, daemon: FakeDaemon) -> None:
    failed = deployment("failed", error="the job did not become ready", kind="rollback", rollback_of="d00000000")
    daemon.answer("POST", "/lifecycle/api/v1/job/adder/latest/rollback", (201, {"id": failed["id"]}))
    daemon.answer("GET", f"{DEPLOYMENTS}/{failed['id']}", (200, failed))
    daemon.answer("GET", f"{DEPLOYMENTS}/{failed['id']}/build-logs", (200, {"logs": "", "offset": 0}))

    result = runner.invoke(main, ["rollback", "adder"])

    assert result.exit_code == 6
    assert result.stderr.splitlines()[-1] == (
        "hint: rtd status adder --version 1.0.0 shows what runs now; rtd deployments adder lists its releases"
    )


def test_rollback_to_an_older_version_sends_it_and_says_what_runs_now(runner: CliRunner, daemon: FakeDaemon) -> None:
    done = deployment(version="2.0.0", kind="rollback", rollback_of="d1000000000")
    daemon.answer("POST", "/lifecycle/api/v1/job/adder/latest/rollback", (201, {"id": done["id"]}))
    daemon.answer("GET", f"{DEPLOYMENTS}/{done['id']}", (200, done))
    daemon.answer("GET", f"{DEPLOYMENTS}/d1000000000", (200, deployment(version="1.0.0", id="d1000000000")))

    result = runner.invoke(main, ["rollback", "adder", "--to", "1.0.0"])

    assert result.exit_code == 0, result.output
    posted = [kwargs["json"] for method, _, kwargs, _ in daemon.calls if method == "POST"]
    assert posted == [{"to_version": "1.0.0"}]
    assert "-----> adder 2.0.0 runs the release of deployment d1000000000, from version 1.0.0 (took" in result.stdout


def test_rollback_to_a_deployment_id_sends_the_id(runner: CliRunner, daemon: FakeDaemon) -> None:
    done = deployment(kind="rollback", rollback_of="d1000000000")
    daemon.answer("POST", "/lifecycle/api/v1/job/adder/latest/rollback", (201, {"id": done["id"]}))
    daemon.answer("GET", f"{DEPLOYMENTS}/{done['id']}", (200, done))
    daemon.answer("GET", f"{DEPLOYMENTS}/d1000000000", (200, deployment(id="d1000000000")))

    result = runner.invoke(main, ["rollback", "adder", "--to", "d1000000000"])

    assert result.exit_code == 0, result.output
    posted = [kwargs["json"] for method, _, kwargs, _ in daemon.calls if method == "POST"]
    assert posted == [{"deployment_id": "d1000000000"}]
    assert "-----> adder 1.0.0 runs the release of deployment d1000000000 (took" in result.stdout


# --- swarm mode: where replicas run -------------------------------------------------------------------


def test_status_in_swarm_mode_lists_each_replica_with_its_node(runner: CliRunner, daemon: FakeDaemon) -> None:
    replicas = [
        {"name": "job-adder-v-1-0-0-d0123456.1", "node": "node-1", "state": "running", "error": None},
        {"name": "job-adder-v-1-0-0-d0123456.2", "node": None, "state": "pending", "error": "no suitable node"},
    ]
    daemon.answer("GET", f"{JOBS}/adder/latest", (200, job(orchestrator="swarm", replica_details=replicas)))
    daemon.answer("GET", DEPLOYMENTS, (200, []))

    result = runner.invoke(main, ["status", "adder"])

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    at = lines.index("  replicas on nodes:")
    assert lines[at + 1].split() == ["job-adder-v-1-0-0-d0123456.1", "node-1", "running"]
    assert lines[at + 2].split(None, 3) == ["job-adder-v-1-0-0-d0123456.2", "no", "node", "pending (no suitable node)"]


def test_nodes_lists_each_node_with_the_jobs_on_it(runner: CliRunner, daemon: FakeDaemon) -> None:
    node = {"role": "manager", "state": "ready", "availability": "active", "address": "10.0.0.1", "leader": True}
    tasks = [{"job_name": "adder", "job_version": "1.0.0", "replica": "x.1", "state": "running"}]
    nodes = [{"hostname": "n1", **node, "tasks": tasks}, {**node, "hostname": "n2", "leader": False, "tasks": []}]
    daemon.answer("GET", "/lifecycle/api/v1/nodes", (200, {"orchestrator": "swarm", "nodes": nodes}))

    result = runner.invoke(main, ["nodes"])

    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == ["HOSTNAME", "ROLE", "STATE", "AVAILABILITY", "ADDRESS", "TASKS"]
    assert rows[1] == ["n1", "manager", "(leader)", "ready", "active", "10.0.0.1", "adder", "1.0.0"]
    assert rows[2] == ["n2", "manager", "ready", "active", "10.0.0.1", "-"]


def test_nodes_in_docker_mode_says_there_is_no_swarm(runner: CliRunner, daemon: FakeDaemon) -> None:
    engine = {"hostname": "box", "role": "engine", "state": "ready", "availability": "active", "address": "local"}
    daemon.answer(
        "GET", "/lifecycle/api/v1/nodes", (200, {"orchestrator": "docker", "nodes": [{**engine, "tasks": []}]})
    )

    result = runner.invoke(main, ["nodes"])

    assert result.exit_code == 0, result.output
    assert "RACETRACK_ORCHESTRATOR=docker" in result.stdout.splitlines()[0]
    assert "box" in result.stdout


# --- rtd validate --with-daemon: what only the daemon knows ----------------------------------------


def _job_dir(tmp_path: Path, manifest: str) -> Path:
    job_dir = tmp_path / "adder"
    job_dir.mkdir()
    (job_dir / "job.yaml").write_text(manifest)
    (job_dir / "e.py").write_text("")
    return job_dir


def test_validate_with_daemon_lists_each_problem_the_daemon_finds(
    runner: CliRunner, daemon: FakeDaemon, tmp_path: Path
) -> None:
    job_dir = _job_dir(
        tmp_path,
        "name: adder\nversion: 1.0.0\nowner_email: a@example.com\njobtype: python3:latest\n"
        "jobtype_extra: {entrypoint_path: e.py, entrypoint_clas: Adder}\n",
    )
    refused = {
        "error": "invalid manifest",
        "type": "invalid-manifest",
        "errors": [
            {
                "field": "jobtype_extra.entrypoint_clas",
                "message": "not a setting of job type python3 (did you mean 'entrypoint_class'?)",
            }
        ],
    }
    daemon.answer("POST", "/lifecycle/api/v1/manifest/check", (400, refused))

    local = runner.invoke(main, ["validate", str(job_dir)], input="")
    checked = runner.invoke(main, ["validate", str(job_dir), "--with-daemon"], input="")

    assert local.exit_code == 0, local.output
    assert checked.exit_code == 8
    assert checked.stderr == (
        "error: jobtype_extra.entrypoint_clas: not a setting of job type python3 (did you mean 'entrypoint_class'?)\n"
    )
    assert checked.stdout == ""
    (call,) = daemon.calls
    assert call[2]["json"]["manifest"]["jobtype_extra"]["entrypoint_clas"] == "Adder"


def test_validate_with_daemon_adds_the_daemons_own_warnings_once(
    runner: CliRunner, daemon: FakeDaemon, tmp_path: Path
) -> None:
    job_dir = _job_dir(
        tmp_path,
        "name: adder\nversion: 1.0.0\nowner_email: a@example.com\nlang: python3:latest\n"
        "jobtype_extra: {entrypoint_path: e.py, debian_version: bookworm}\n",
    )
    warnings = ["lang is deprecated: rename it to jobtype", "jobtype_extra.debian_version: accepted, not acted on"]
    daemon.answer("POST", "/lifecycle/api/v1/manifest/check", (200, {"warnings": warnings}))

    result = runner.invoke(main, ["validate", str(job_dir), "--with-daemon"], input="")

    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "warning: lang is deprecated: rename it to jobtype",
        "warning: jobtype_extra.debian_version: accepted, not acted on",
    ]
    assert "name: adder" in result.stdout
