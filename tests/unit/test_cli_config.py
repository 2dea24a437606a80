"""The rtd CLI: where it finds the daemon and token (cli/config.py), and commands that fail before any request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
import yaml
from click.testing import CliRunner

from cli.config import DEFAULT_REMOTE, ClientConfig, config_path, normalize_remote
from cli.errors import EXIT_INVALID_INPUT, EXIT_UNREACHABLE
from cli.main import main


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("localhost:7102", "http://localhost:7102"),
        ("127.0.0.1:7102/", "http://127.0.0.1:7102"),
        ("http://racetrack.local:7102/", "http://racetrack.local:7102"),
        ("https://racetrack.example.com", "https://racetrack.example.com"),
        ("https://racetrack.example.com/lifecycle", "https://racetrack.example.com"),
        ("https://racetrack.example.com/lifecycle/", "https://racetrack.example.com"),
        ("racetrack.local:7102/lifecycle", "http://racetrack.local:7102"),
        ("  http://host:1  ", "http://host:1"),
    ],
)
def test_normalize_remote(given: str, expected: str) -> None:
    assert normalize_remote(given) == expected


def test_config_path_honours_rtd_config_then_xdg(tmp_path: Path) -> None:
    assert config_path({"RTD_CONFIG": str(tmp_path / "rtd.yaml")}) == tmp_path / "rtd.yaml"
    assert config_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "rtd" / "config.yaml"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "rtd.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "remote": "file-host:1/",
                "tokens": {
                    "http://file-host:1": "file-token",
                    "http://env-host:2": "env-host-token",
                    "http://flag-host:3": "flag-host-token",
                    DEFAULT_REMOTE: "default-token",
                },
            }
        )
    )
    return path


def test_resolve_prefers_the_flag(config_file: Path) -> None:
    config = ClientConfig.load({"RTD_CONFIG": str(config_file)})
    environ = {"RTD_REMOTE": "env-host:2", "RTD_TOKEN": "env-token"}

    assert config.resolve("flag-host:3", "flag-token", environ) == ("http://flag-host:3", "flag-token")


def test_resolve_prefers_the_environment_over_the_file(config_file: Path) -> None:
    config = ClientConfig.load({"RTD_CONFIG": str(config_file)})

    assert config.resolve(None, None, {"RTD_REMOTE": "env-host:2", "RTD_TOKEN": "env-token"}) == (
        "http://env-host:2",
        "env-token",
    )
    # Without RTD_TOKEN, the token saved for the chosen remote is used.
    assert config.resolve(None, None, {"RTD_REMOTE": "env-host:2"}) == ("http://env-host:2", "env-host-token")


def test_resolve_falls_back_to_the_file(config_file: Path) -> None:
    config = ClientConfig.load({"RTD_CONFIG": str(config_file)})

    assert config.resolve(None, None, {}) == ("http://file-host:1", "file-token")


def test_resolve_falls_back_to_the_default(tmp_path: Path) -> None:
    config = ClientConfig.load({"RTD_CONFIG": str(tmp_path / "absent.yaml")})

    assert config.resolve(None, None, {}) == (DEFAULT_REMOTE, None)


def test_a_token_saved_for_another_remote_is_not_sent(config_file: Path) -> None:
    config = ClientConfig.load({"RTD_CONFIG": str(config_file)})

    assert config.resolve("http://elsewhere:9", None, {}) == ("http://elsewhere:9", None)


def test_save_writes_mode_0600_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "rtd" / "config.yaml"
    config = ClientConfig(path=path, remote="http://host:1", tokens={"http://host:1": "secret"})

    config.save()

    assert path.stat().st_mode & 0o777 == 0o600
    loaded = ClientConfig.load({"RTD_CONFIG": str(path)})
    assert (loaded.remote, loaded.tokens) == ("http://host:1", {"http://host:1": "secret"})


def test_save_tightens_an_existing_world_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("remote: null\n")
    path.chmod(0o644)

    ClientConfig(path=path, remote=None, tokens={"http://host:1": "secret"}).save()

    assert path.stat().st_mode & 0o777 == 0o600


# --- rtd commands that fail before talking to a daemon -------------------------------------------


def test_submit_without_job_yaml_fails_clearly(runner: CliRunner, tmp_path: Path, requests_made: list[str]) -> None:
    job_dir = tmp_path / "empty-job"
    job_dir.mkdir()

    result = runner.invoke(main, ["submit", str(job_dir)])

    assert result.exit_code != 0
    assert f"no job.yaml in {job_dir}" in result.output
    assert "Traceback" not in result.output
    assert requests_made == []


def test_submit_with_invalid_job_yaml_names_the_file(
    runner: CliRunner, tmp_path: Path, requests_made: list[str]
) -> None:
    (tmp_path / "job.yaml").write_text("name: [adder\n")

    result = runner.invoke(main, ["submit", str(tmp_path)])

    assert result.exit_code == EXIT_INVALID_INPUT
    assert f"error: manifest: {tmp_path / 'job.yaml'} is not valid YAML" in result.output
    assert "Traceback" not in result.output
    assert requests_made == []


def test_submit_with_a_job_yaml_that_is_not_a_mapping_fails(
    runner: CliRunner, tmp_path: Path, requests_made: list[str]
) -> None:
    (tmp_path / "job.yaml").write_text("- name: adder\n")

    result = runner.invoke(main, ["submit", str(tmp_path)])

    assert result.exit_code == EXIT_INVALID_INPUT
    assert result.output == f"error: manifest: {tmp_path / 'job.yaml'} must hold a mapping of fields\n"
    assert requests_made == []


def test_submit_of_a_missing_directory_fails(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["deploy", str(tmp_path / "absent")])

    assert result.exit_code != 0
    assert "does not exist" in result.output


@pytest.mark.parametrize("data", ["{a: 1", '{"a": 1,', "[unclosed", "a: b: c"])
def test_call_with_invalid_data_names_the_option(runner: CliRunner, data: str, requests_made: list[str]) -> None:
    result = runner.invoke(main, ["call", "adder", "--data", data])

    assert result.exit_code == 2
    assert "--data" in result.output
    assert "not valid JSON or YAML" in result.output
    assert requests_made == []


def test_an_unreachable_daemon_is_one_clear_line(runner: CliRunner, requests_made: list[str]) -> None:
    result = runner.invoke(main, ["list"])

    assert result.exit_code == EXIT_UNREACHABLE
    assert "cannot reach racetrackd at http://127.0.0.1:9" in result.output
    assert "hint:" in result.output
    assert "Traceback" not in result.output
    assert requests_made == ["GET http://127.0.0.1:9/lifecycle/api/v1/job"]


def test_call_reads_the_payload_from_a_file_or_stdin_as_curl_does(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = {"numbers": list(range(50_000))}  # a payload too long for the command line
    (tmp_path / "payload.json").write_text(json.dumps(payload))
    posted: list[object] = []

    def refuse(self: requests.Session, method: str, url: str, **kwargs: object) -> requests.Response:
        posted.append(kwargs.get("json"))
        raise requests.ConnectionError("connection refused (unit tests open no sockets)")

    monkeypatch.setattr(requests.Session, "request", refuse)

    from_file = runner.invoke(main, ["call", "adder", "--data", f"@{tmp_path / 'payload.json'}"])
    as_argument = runner.invoke(main, ["call", "adder", "/api/v1/perform", f"@{tmp_path / 'payload.json'}"])
    from_stdin = runner.invoke(main, ["call", "adder", "--data", "@-"], input="a: 40\nb: 2\n")

    assert [from_file.exit_code, as_argument.exit_code, from_stdin.exit_code] == [EXIT_UNREACHABLE] * 3
    assert posted == [payload, payload, {"a": 40, "b": 2}]


def test_call_with_a_payload_file_that_cannot_be_read_names_it(
    runner: CliRunner, tmp_path: Path, requests_made: list[str]
) -> None:
    result = runner.invoke(main, ["call", "adder", "--data", f"@{tmp_path / 'absent.json'}"])

    assert result.exit_code == 2
    assert f"cannot read {tmp_path / 'absent.json'}: No such file or directory" in result.output
    assert requests_made == []
