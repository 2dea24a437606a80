"""rtd's command-line conventions (issue 18, item 11): NO_COLOR, Ctrl-C on `logs -f`, did-you-mean for
job names, YAML errors that name the file, plain words for a bad payload, `call --json`, the deploy
alias listed once, and `submit` showing phases with the build's last lines on failure (all with -v)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli import deploying
from cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_INVALID_INPUT, EXIT_NOT_FOUND, EXIT_USAGE
from cli.main import COMMAND_MODULES, main, registered_commands
from tests.unit.fakes import REMOTE, FakeDaemon, minimal_job_dir

JOBS = "/lifecycle/api/v1/job"
DEPLOYMENTS = "/lifecycle/api/v1/deploy"


@pytest.fixture
def daemon(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> FakeDaemon:
    return FakeDaemon(monkeypatch)


def _job(name: str) -> dict[str, Any]:
    return {"name": name, "version": "1.0.0", "status": "running", "pub_url": f"{REMOTE}/pub/job/{name}/1.0.0"}


def test_no_color_keeps_escape_codes_out_of_errors(runner: CliRunner, daemon: FakeDaemon) -> None:
    daemon.answer("GET", f"{JOBS}/nope/latest", (404, {"error": "job nope latest not found"}))
    daemon.answer("GET", DEPLOYMENTS, (200, []))
    daemon.answer("GET", JOBS, (200, []))

    coloured = runner.invoke(main, ["status", "nope"], color=True)
    plain = runner.invoke(main, ["status", "nope"], color=True, env={"NO_COLOR": "1"})

    assert "\x1b[" in coloured.stderr  # a terminal gets red, so the next assert can fail
    assert "\x1b[" not in plain.stderr
    assert plain.stderr.startswith("error: job nope latest not found\n")


def test_ctrl_c_on_logs_follow_exits_130(
    runner: CliRunner, daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    def follow(self: object, name: str, version: str, tail: int) -> Iterator[bytes]:
        yield b"listening on :7000\n"
        raise KeyboardInterrupt

    monkeypatch.setattr("cli.client.ApiClient.follow_job_logs", follow)

    result = runner.invoke(main, ["logs", "adder", "-f"])

    assert result.exit_code == EXIT_INTERRUPTED
    assert result.stdout == "listening on :7000\n"


def test_a_call_to_a_misspelt_job_suggests_the_name(runner: CliRunner, daemon: FakeDaemon) -> None:
    daemon.answer("POST", "/pub/job/addr/latest/api/v1/perform", (404, {"error": "job addr latest not found"}))
    daemon.answer("GET", JOBS, (200, [_job("adder"), _job("zebra")]))

    result = runner.invoke(main, ["call", "addr", "--data", "{}"])

    assert result.exit_code == EXIT_NOT_FOUND
    assert result.stderr.splitlines()[-1] == "hint: did you mean adder? (rtd list shows the jobs you may read)"


def test_status_of_a_misspelt_job_suggests_the_name(runner: CliRunner, daemon: FakeDaemon) -> None:
    daemon.answer("GET", f"{JOBS}/addr/latest", (404, {"error": "job addr latest not found"}))
    daemon.answer("GET", DEPLOYMENTS, (200, []))
    daemon.answer("GET", JOBS, (200, [_job("adder")]))

    result = runner.invoke(main, ["status", "addr"])

    assert result.exit_code == EXIT_NOT_FOUND
    assert "hint: did you mean adder?" in result.stderr


def test_a_yaml_error_names_the_file_and_line_without_parser_jargon(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text("name: a\nversion: 1.0.0\n  bad: [\n")

    result = runner.invoke(main, ["validate", str(tmp_path)], input="")

    assert result.exit_code == EXIT_INVALID_INPUT
    assert result.stderr == (
        f"error: manifest: {tmp_path / 'job.yaml'} is not valid YAML: "
        "line 3, column 6: mapping values are not allowed here\n"
    )


def test_a_payload_that_is_not_json_is_told_in_plain_words(runner: CliRunner, daemon: FakeDaemon) -> None:
    result = runner.invoke(main, ["call", "adder", "--data", '{"a": 1 "b": 2}'])

    assert result.exit_code == EXIT_USAGE
    first = result.stderr.splitlines()[0]
    assert "while parsing" not in first and "flow mapping" not in first
    assert first == (
        "error: Invalid value for --data: not valid JSON or YAML: expected a comma (or the closing bracket) "
        "after '{\"a\": 1' at line 1, column 9"
    )


def test_call_json_prints_the_answer_as_indented_json(runner: CliRunner, daemon: FakeDaemon) -> None:
    daemon.answer("POST", "/pub/job/adder/latest/api/v1/perform", (200, {"sum": 42, "parts": [40, 2]}))

    result = runner.invoke(main, ["call", "adder", "--json", "--data", "{}"])

    assert result.exit_code == 0, result.output
    assert result.stdout == json.dumps({"sum": 42, "parts": [40, 2]}, indent=2) + "\n"


def test_call_json_of_an_answer_that_is_not_json_fails(
    runner: CliRunner, daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon.answer("POST", "/pub/job/adder/latest/api/v1/perform", (200, "<html>hi</html>"))

    result = runner.invoke(main, ["call", "adder", "--json"])

    assert result.exit_code == EXIT_ERROR
    assert "is not JSON" in result.stderr


def test_deploy_is_listed_once_as_an_alias_of_submit(runner: CliRunner) -> None:
    listing = runner.invoke(main, ["--help"]).stdout
    commands = [line.split()[0] for line in listing.split("Commands:")[1].splitlines() if line.strip()]

    assert "submit" in commands and "deploy" not in commands
    assert "(alias: deploy)" in next(line for line in listing.splitlines() if line.strip().startswith("submit"))
    assert runner.invoke(main, ["deploy", "--help"]).exit_code == 0


def _submit_failing_build(runner: CliRunner, daemon: FakeDaemon, tmp_path: Path, *flags: str) -> Any:
    job_dir = minimal_job_dir(tmp_path)
    steps = "".join(f"Step {n}/30 : RUN step {n}\n" for n in range(1, 31))
    error = "ERROR: No matching distribution found for flask==99.0"
    failed = {
        "id": "d0123456789",
        "status": "failed",
        "phase": "building image",
        "error": f"image build failed: {error}\n--- last build output ---\n{steps}{error}",
        "job_name": "adder",
        "job_version": "1.0.0",
        "phases": [],
    }
    daemon.answer("POST", DEPLOYMENTS, (201, {"id": failed["id"]}))
    daemon.answer("GET", f"{DEPLOYMENTS}/{failed['id']}", (200, failed))
    daemon.answer("GET", f"{DEPLOYMENTS}/{failed['id']}/build-logs", (200, {"logs": steps, "offset": len(steps)}))
    return runner.invoke(main, ["submit", str(job_dir), *flags], input="")


def test_submit_shows_phases_and_on_failure_only_the_last_lines(
    runner: CliRunner, daemon: FakeDaemon, tmp_path: Path
) -> None:
    result = _submit_failing_build(runner, daemon, tmp_path)

    assert result.exit_code == 6
    assert "-----> building image (at " in result.stdout
    assert "Step 1/30" not in result.output  # the early steps stay behind -v
    assert "Step 30/30 : RUN step 30" in result.stderr
    assert result.stderr.startswith(
        "error: deployment d0123456 of adder 1.0.0 failed: image build failed: "
        "ERROR: No matching distribution found for flask==99.0\n"
    )


def test_submit_verbose_shows_every_step(runner: CliRunner, daemon: FakeDaemon, tmp_path: Path) -> None:
    result = _submit_failing_build(runner, daemon, tmp_path, "-v")

    assert result.exit_code == 6
    assert all(f"       Step {n}/30 : RUN step {n}" in result.stdout for n in range(1, 31))


def test_a_failed_submit_names_the_failing_step_even_above_the_last_lines(
    runner: CliRunner, daemon: FakeDaemon, tmp_path: Path
) -> None:
    job_dir = minimal_job_dir(tmp_path)
    pip_output = "".join(f"Collecting package{n}\n" for n in range(40))
    failed = {
        "id": "d0123456789",
        "status": "failed",
        "phase": "building image",
        "error": f"image build failed: ERROR: no\n--- last build output ---\nStep 7/9 : RUN pip install\n{pip_output}",
        "job_name": "adder",
        "job_version": "1.0.0",
        "phases": [],
    }
    daemon.answer("POST", DEPLOYMENTS, (201, {"id": failed["id"]}))
    daemon.answer("GET", f"{DEPLOYMENTS}/{failed['id']}", (200, failed))
    daemon.answer("GET", f"{DEPLOYMENTS}/{failed['id']}/build-logs", (200, {"logs": "x\n", "offset": 2}))

    result = runner.invoke(main, ["submit", str(job_dir)], input="")

    assert result.exit_code == 6
    lines = result.stderr.splitlines()
    assert lines[1:3] == ["Step 7/9 : RUN pip install", "..."]
    assert "Collecting package39" in lines and "Collecting package10" not in lines


def test_a_failed_submit_does_not_repeat_an_earlier_step_when_the_failing_one_is_shown() -> None:
    details = "Step 1/3 : FROM x\n" + "".join(f"line {n}\n" for n in range(30)) + "Step 3/3 : RUN false\nboom"

    assert deploying._last_lines(details)[-2:] == ["Step 3/3 : RUN false", "boom"]
    assert "Step 1/3 : FROM x" not in deploying._last_lines(details)


def test_every_command_a_module_registers_is_in_the_lazy_command_map() -> None:
    """rtd imports a command's module only when that command runs: the map must name each command
    the modules register, and nothing else (a missing one would be `No such command`)."""
    registered = {name: module for module in set(COMMAND_MODULES.values()) for name in registered_commands(module)}

    assert registered == COMMAND_MODULES


def test_rtd_list_does_not_load_what_only_deploys_and_scaffolds_need() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from cli.main import main\n"
        "CliRunner().invoke(main, ['list', '--help'], catch_exceptions=False)\n"
        "print(sorted(m for m in ('jinja2', 'pluginbundle', 'cli.deploying', 'cli.scaffold') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2]
    )

    assert result.stdout.strip() == "[]"
