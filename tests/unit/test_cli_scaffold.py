"""`rtd init KIND NAME` writes a job that `rtd validate` accepts as it is, and refuses what it must."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.errors import EXIT_CONFLICT, EXIT_INVALID_INPUT
from cli.main import main

FILES = {
    "python3": {"job.yaml", "entrypoint.py", "README.md"},
    "golang": {"job.yaml", "handler.go", "go.mod", "README.md"},
    "rust": {"job.yaml", "mod.rs", "README.md"},
    "dockerfile": {"job.yaml", "Dockerfile", "server.py", "README.md"},
}


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    return CliRunner()


@pytest.mark.parametrize("kind", sorted(FILES))
def test_init_writes_a_job_that_validates_as_it_is(runner: CliRunner, tmp_path: Path, kind: str) -> None:
    result = runner.invoke(main, ["init", kind, "hello", "--owner-email", "me@example.com"])

    assert result.exit_code == 0, result.output
    job = tmp_path / "hello"
    assert {path.name for path in job.iterdir()} == FILES[kind]
    assert not any(path.name.endswith(".tmpl") or "__JOB_NAME__" in path.read_text() for path in job.iterdir())
    readme = (job / "README.md").read_text()
    assert "rtd submit ." in readme and "rtd call hello" in readme

    validated = runner.invoke(main, ["validate", str(job), "--json"])
    assert validated.exit_code == 0, validated.output
    manifest = json.loads(validated.output)
    assert manifest["name"] == "hello" and manifest["owner_email"] == "me@example.com"


def test_the_python3_scaffold_answers_perform(runner: CliRunner, tmp_path: Path) -> None:
    runner.invoke(main, ["init", "python3", "hello"])
    namespace: dict[str, object] = {}
    exec((tmp_path / "hello" / "entrypoint.py").read_text(), namespace)

    job = namespace["Job"]()  # type: ignore[operator]
    assert job.perform(name="you") == "Hello, you!"
    assert job.perform(**job.docs_input_example()) == "Hello, world!"


def test_the_dockerfile_scaffold_server_answers_get_and_post(runner: CliRunner, tmp_path: Path) -> None:
    runner.invoke(main, ["init", "dockerfile", "hello"])
    with socket.socket() as probe:  # the scaffold listens on 7001; skip rather than clash with a local server
        if probe.connect_ex(("127.0.0.1", 7001)) == 0:
            pytest.skip("port 7001 is taken on this host")
    server = subprocess.Popen([sys.executable, "server.py"], cwd=tmp_path / "hello")
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                get = urllib.request.urlopen("http://127.0.0.1:7001/", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert json.load(get) == {"hello": "world"}
        post = urllib.request.Request("http://127.0.0.1:7001/perform", data=b'{"name": "you"}', method="POST")
        assert json.load(urllib.request.urlopen(post, timeout=2)) == {"hello": "you"}
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_init_refuses_a_non_empty_directory_and_leaves_it_alone(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "hello").mkdir()
    (tmp_path / "hello" / "mine.txt").write_text("keep me")

    result = runner.invoke(main, ["init", "python3", "hello"])

    assert result.exit_code == EXIT_CONFLICT
    assert "already exists and is not an empty directory" in result.output
    assert [path.name for path in (tmp_path / "hello").iterdir()] == ["mine.txt"]


def test_init_fills_an_empty_directory(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "hello").mkdir()

    assert runner.invoke(main, ["init", "python3", "hello"]).exit_code == 0
    assert (tmp_path / "hello" / "job.yaml").is_file()


@pytest.mark.parametrize("name", ["Hello", "my_job", "hello-", "a" * 41])
def test_init_refuses_a_name_the_manifest_refuses(runner: CliRunner, tmp_path: Path, name: str) -> None:
    result = runner.invoke(main, ["init", "python3", name])

    assert result.exit_code == EXIT_INVALID_INPUT
    assert "not valid in container and DNS names" in result.output
    assert list(tmp_path.iterdir()) == []


def test_init_refuses_an_unknown_kind(runner: CliRunner) -> None:
    result = runner.invoke(main, ["init", "cobol", "hello"])

    assert result.exit_code == 2
    assert "python3" in result.output and "rust" in result.output
