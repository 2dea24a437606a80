"""`rtd validate` and the local checks of `rtd submit`: merged output, -e overrides, piped manifests, overlays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from click.testing import CliRunner

from cli.errors import EXIT_INVALID_INPUT, EXIT_UNREACHABLE
from cli.main import main

MANIFEST = {
    "name": "adder",
    "owner_email": "owner@example.com",
    "version": "1.0.0",
    "jobtype": "python3:latest",
    "jobtype_extra": {"entrypoint_path": "entrypoint.py"},
    "runtime_env": {"LEVEL": "info"},
}


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "adder"
    directory.mkdir()
    (directory / "job.yaml").write_text(yaml.safe_dump(MANIFEST, sort_keys=False))
    (directory / "entrypoint.py").write_text("class Adder:\n    def perform(self, a, b):\n        return a + b\n")
    return directory


def validate(runner: CliRunner, *args: str, stdin: str = "") -> Any:
    # stdin="" (the default here): not a TTY but empty, so rtd reads DIR/job.yaml.
    return runner.invoke(main, ["validate", *args], input=stdin)


# --- rtd validate --------------------------------------------------------------------------------


def test_validate_prints_the_manifest_with_its_defaults(runner: CliRunner, job_dir: Path) -> None:
    (job_dir / "job.yaml").write_text(yaml.safe_dump({k: v for k, v in MANIFEST.items() if k != "version"}))

    result = validate(runner, str(job_dir))

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert yaml.safe_load(result.stdout) == {
        **{k: v for k, v in MANIFEST.items() if k != "version"},
        "version": "0.0.1",
    }


def test_validate_defaults_to_the_current_directory(
    runner: CliRunner, job_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(job_dir)

    result = validate(runner)

    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == MANIFEST


def test_validate_applies_extra_vars(runner: CliRunner, job_dir: Path) -> None:
    result = validate(
        runner,
        str(job_dir),
        "-e",
        "version=1.1.0",
        "--extra-vars",
        "replicas=3",
        "-e",
        "jobtype_extra.entrypoint_class=Adder",
        "-e",
        "labels.team=maths",
        "-e",
        "runtime_env.LEVEL='42'",
    )

    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == {
        **MANIFEST,
        "version": "1.1.0",
        "replicas": 3,
        "jobtype_extra": {"entrypoint_path": "entrypoint.py", "entrypoint_class": "Adder"},
        "labels": {"team": "maths"},
        "runtime_env": {"LEVEL": "42"},
    }


def test_an_extra_var_can_fix_an_invalid_manifest(runner: CliRunner, job_dir: Path) -> None:
    (job_dir / "job.yaml").write_text(yaml.safe_dump({**MANIFEST, "version": 1.0}))

    assert validate(runner, str(job_dir)).exit_code == EXIT_INVALID_INPUT
    assert validate(runner, str(job_dir), "-e", "version=2.0.0").exit_code == 0


def test_an_extra_var_is_validated_like_the_file(runner: CliRunner, job_dir: Path) -> None:
    result = validate(runner, str(job_dir), "-e", "replicas=many")

    assert result.exit_code == EXIT_INVALID_INPUT
    assert result.stderr == "error: replicas: must be a whole number, not a string 'many'\n"
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("name.first=x", "error: name: is not a mapping; cannot set a key inside it\n"),
        ("replicas", "error: -e: 'replicas' must be KEY.PATH=VALUE\n"),
    ],
)
def test_a_bad_extra_var_exits_3(runner: CliRunner, job_dir: Path, override: str, message: str) -> None:
    result = validate(runner, str(job_dir), "-e", override)

    assert result.exit_code == EXIT_INVALID_INPUT
    assert result.stderr == message


def test_validate_reads_a_piped_manifest_instead_of_job_yaml(runner: CliRunner, tmp_path: Path) -> None:
    piped = {**MANIFEST, "name": "piped", "version": "3.0.0"}
    (tmp_path / "entrypoint.py").write_text("")  # the files it names are looked for in DIR

    result = validate(runner, str(tmp_path), "-e", "replicas=2", stdin=yaml.safe_dump(piped))

    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == {**piped, "replicas": 2}


def test_a_piped_manifest_wins_over_the_directorys_job_yaml(runner: CliRunner, job_dir: Path) -> None:
    result = validate(runner, str(job_dir), stdin=yaml.safe_dump({**MANIFEST, "name": "piped"}))

    assert yaml.safe_load(result.stdout)["name"] == "piped"


def test_whitespace_on_stdin_counts_as_nothing_piped(runner: CliRunner, job_dir: Path) -> None:
    result = validate(runner, str(job_dir), stdin="\n  \n")

    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == MANIFEST


def test_an_invalid_piped_manifest_is_named_stdin(runner: CliRunner, tmp_path: Path) -> None:
    result = validate(runner, str(tmp_path), stdin="name: [adder\n")

    assert result.exit_code == EXIT_INVALID_INPUT
    assert result.stderr.startswith("error: manifest: <stdin> is not valid YAML")


def test_validate_merges_an_extends_overlay(runner: CliRunner, job_dir: Path) -> None:
    (job_dir / "base.yaml").write_text(yaml.safe_dump(MANIFEST))
    (job_dir / "job.yaml").write_text(
        "extends: base.yaml\nversion: 1.0.1\nruntime_env:\n  EXTRA: '1'\npublic_endpoints: [/api/v1/perform]\n"
    )

    result = validate(runner, str(job_dir), "-e", "runtime_env.LEVEL=debug")

    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == {
        **MANIFEST,
        "version": "1.0.1",
        "runtime_env": {"LEVEL": "debug", "EXTRA": "1"},
        "public_endpoints": ["/api/v1/perform"],
    }
    assert "extends" not in result.stdout


def test_a_piped_overlay_extends_a_base_in_the_directory(runner: CliRunner, job_dir: Path) -> None:
    (job_dir / "base.yaml").write_text(yaml.safe_dump(MANIFEST))

    result = validate(runner, str(job_dir), stdin="extends: base.yaml\nreplicas: 4\n")

    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == {**MANIFEST, "replicas": 4}


def test_a_missing_base_manifest_exits_3(runner: CliRunner, job_dir: Path) -> None:
    (job_dir / "job.yaml").write_text("extends: base.yaml\n")

    result = validate(runner, str(job_dir))

    assert result.exit_code == EXIT_INVALID_INPUT
    assert result.stderr == f"error: extends: base manifest base.yaml not found next to {job_dir / 'job.yaml'}\n"


def test_validate_prints_deprecation_warnings_and_succeeds(runner: CliRunner, job_dir: Path) -> None:
    data = {**MANIFEST, "lang": MANIFEST["jobtype"]}
    del data["jobtype"]
    (job_dir / "job.yaml").write_text(yaml.safe_dump(data))

    result = validate(runner, str(job_dir))

    assert result.exit_code == 0, result.output
    assert result.stderr == "warning: lang is deprecated: rename it to jobtype\n"
    assert yaml.safe_load(result.stdout)["lang"] == "python3:latest"


def test_validate_lists_every_error_on_stderr_and_prints_nothing_on_stdout(runner: CliRunner, job_dir: Path) -> None:
    (job_dir / "job.yaml").write_text("name: My_Job\nversion: one\njobtype: python3:latest\n")

    result = validate(runner, str(job_dir))

    assert result.exit_code == EXIT_INVALID_INPUT
    assert result.stdout == ""
    assert [line.split(":")[1].strip() for line in result.stderr.splitlines()] == ["name", "owner_email", "version"]


def test_validate_never_talks_to_a_daemon(runner: CliRunner, job_dir: Path, requests_made: list[str]) -> None:
    assert validate(runner, str(job_dir)).exit_code == 0
    assert requests_made == []


def test_validate_of_a_directory_without_job_yaml(runner: CliRunner, tmp_path: Path) -> None:
    result = validate(runner, str(tmp_path))

    assert result.exit_code == EXIT_INVALID_INPUT
    assert result.stderr == f"error: manifest: no job.yaml in {tmp_path}\n"


# --- rtd submit: checked locally before any request ------------------------------------------------


@pytest.mark.parametrize("command", ["submit", "deploy"])
def test_submit_of_an_invalid_manifest_exits_3_without_any_request(
    runner: CliRunner, job_dir: Path, requests_made: list[str], command: str
) -> None:
    (job_dir / "job.yaml").write_text(yaml.safe_dump({**MANIFEST, "name": "My_Job", "jobtyp": "python3:latest"}))

    result = runner.invoke(main, [command, str(job_dir)], input="")

    assert result.exit_code == EXIT_INVALID_INPUT
    assert "error: jobtyp: unknown field (did you mean 'jobtype'?)" in result.stderr
    assert "error: name: 'My_Job' is not valid in container and DNS names" in result.stderr
    assert "submitting" not in result.output
    assert requests_made == []


def test_submit_with_an_invalid_extra_var_exits_3_without_any_request(
    runner: CliRunner, job_dir: Path, requests_made: list[str]
) -> None:
    result = runner.invoke(main, ["submit", str(job_dir), "-e", "version=1.0"], input="")

    assert result.exit_code == EXIT_INVALID_INPUT
    assert result.stderr == 'error: version: 1.0 is a number; write a semantic version as a string, like "1.0.0"\n'
    assert requests_made == []


def test_submit_of_an_invalid_piped_manifest_exits_3_without_any_request(
    runner: CliRunner, job_dir: Path, requests_made: list[str]
) -> None:
    result = runner.invoke(main, ["submit", str(job_dir)], input="name: adder\n")

    assert result.exit_code == EXIT_INVALID_INPUT
    assert "error: owner_email: required" in result.stderr
    assert requests_made == []


def test_submit_of_a_valid_manifest_sends_it_merged(
    runner: CliRunner, job_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The contrast to the tests above: a valid manifest gets as far as the (refused) deploy request.
    bodies: list[dict[str, Any]] = []

    def refuse(self: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
        bodies.append({"request": f"{method} {url}", **kwargs.get("json", {})})
        raise requests.ConnectionError("connection refused (unit tests open no sockets)")

    monkeypatch.setattr(requests.Session, "request", refuse)

    result = runner.invoke(main, ["submit", str(job_dir), "-e", "version=1.2.0", "--force"], input="")

    assert result.exit_code == EXIT_UNREACHABLE
    assert "-----> submitting adder 1.2.0 to http://127.0.0.1:9" in result.stdout
    assert "cannot reach racetrackd at http://127.0.0.1:9" in result.stderr
    (body,) = bodies
    assert body["request"] == "POST http://127.0.0.1:9/lifecycle/api/v1/deploy"
    assert body["manifest"] == {**MANIFEST, "version": "1.2.0"}
    assert body["force"] is True
    assert body["build_context"]


@pytest.mark.parametrize(
    ("options", "uploaded"),
    [([], False), (["--local"], True), (["--build-context", "local"], True), (["--build-context", "git"], False)],
)
def test_submit_takes_racetracks_build_context_option(
    runner: CliRunner, job_dir: Path, monkeypatch: pytest.MonkeyPatch, options: list[str], uploaded: bool
) -> None:
    # `racetrack deploy --build-context local` is what Racetrack users type: rtd takes it too.
    (job_dir / "job.yaml").write_text(
        yaml.safe_dump({**MANIFEST, "git": {"remote": "https://github.com/example/adder"}}, sort_keys=False)
    )
    bodies: list[dict[str, Any]] = []

    def refuse(self: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
        bodies.append(kwargs.get("json", {}))
        raise requests.ConnectionError("connection refused (unit tests open no sockets)")

    monkeypatch.setattr(requests.Session, "request", refuse)

    result = runner.invoke(main, ["submit", str(job_dir), *options], input="")

    assert result.exit_code == EXIT_UNREACHABLE, result.output
    (body,) = bodies
    assert bool(body["build_context"]) is uploaded


@pytest.mark.parametrize(("options", "uploaded"), [([], True), (["--build-context", "git"], False)])
def test_submit_uploads_racetrack_samples_to_a_daemon_on_loopback_as_racetracks_client_does(
    runner: CliRunner, job_dir: Path, monkeypatch: pytest.MonkeyPatch, options: list[str], uploaded: bool
) -> None:
    # Racetrack's samples: owner sample@example.com, git.remote its GitHub repository; rtd's remote
    # in these tests is http://127.0.0.1:9.
    manifest = {**MANIFEST, "owner_email": "sample@example.com", "git": {"remote": "https://github.com/x/racetrack"}}
    (job_dir / "job.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    bodies: list[dict[str, Any]] = []

    def refuse(self: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
        bodies.append(kwargs.get("json", {}))
        raise requests.ConnectionError("connection refused (unit tests open no sockets)")

    monkeypatch.setattr(requests.Session, "request", refuse)

    result = runner.invoke(main, ["submit", str(job_dir), *options], input="")

    assert result.exit_code == EXIT_UNREACHABLE, result.output
    (body,) = bodies
    assert bool(body["build_context"]) is uploaded
    assert ("(upload)" in result.stdout) is uploaded


def test_submit_build_context_git_without_a_git_remote_is_a_usage_error(runner: CliRunner, job_dir: Path) -> None:
    result = runner.invoke(main, ["submit", str(job_dir), "--build-context", "git"], input="")

    assert result.exit_code == 2
    assert "error: --build-context git: the manifest names no git.remote to clone" in result.stderr


# --- the files a manifest names: checked in DIR, with a did-you-mean ------------------------------


def test_validate_reports_a_misspelt_entrypoint_with_a_did_you_mean(runner: CliRunner, job_dir: Path) -> None:
    (job_dir / "job.yaml").write_text(
        yaml.safe_dump({**MANIFEST, "jobtype_extra": {"entrypoint_path": "entrypont.py"}}, sort_keys=False)
    )

    result = validate(runner, str(job_dir))

    assert result.exit_code == EXIT_INVALID_INPUT
    assert result.stderr == (
        f"error: jobtype_extra.entrypoint_path: file entrypont.py not found in {job_dir} "
        "(did you mean entrypoint.py?)\n"
    )
    assert result.stdout == ""


def test_validate_reports_every_missing_file_at_once(runner: CliRunner, job_dir: Path) -> None:
    extra = {"entrypoint_path": "src/job.py", "requirements_path": "requirements.txt"}
    (job_dir / "job.yaml").write_text(yaml.safe_dump({**MANIFEST, "jobtype_extra": extra}))
    (job_dir / "src").mkdir()
    (job_dir / "src" / "jobs.py").write_text("")

    result = validate(runner, str(job_dir))

    assert result.exit_code == EXIT_INVALID_INPUT
    assert result.stderr.splitlines() == [
        f"error: jobtype_extra.entrypoint_path: file src/job.py not found in {job_dir} (did you mean src/jobs.py?)",
        f"error: jobtype_extra.requirements_path: file requirements.txt not found in {job_dir}",
    ]


@pytest.mark.parametrize("jobtype", ["dockerfile:latest", "docker-proxy:latest"])
def test_validate_needs_the_dockerfile_of_a_job_that_brings_its_own(
    runner: CliRunner, tmp_path: Path, jobtype: str
) -> None:
    manifest = {"name": "web", "owner_email": "o@example.com", "version": "1.0.0", "jobtype": jobtype}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(manifest))
    (tmp_path / "dockerfile").write_text("FROM scratch\n")  # wrong case: Docker looks for Dockerfile

    result = validate(runner, str(tmp_path))

    assert result.exit_code == EXIT_INVALID_INPUT
    assert result.stderr == (
        f"error: jobtype_extra.dockerfile_path: file Dockerfile not found in {tmp_path} (did you mean dockerfile?)\n"
    )
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    assert validate(runner, str(tmp_path)).exit_code == 0


def test_validate_refuses_a_file_that_links_out_of_the_directory(
    runner: CliRunner, job_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "outside.py").write_text("")
    (job_dir / "entrypoint.py").unlink()
    (job_dir / "entrypoint.py").symlink_to(tmp_path / "outside.py")

    result = validate(runner, str(job_dir))

    assert result.exit_code == EXIT_INVALID_INPUT
    assert result.stderr == f"error: jobtype_extra.entrypoint_path: entrypoint.py is a link to outside {job_dir}\n"


def test_validate_only_warns_for_a_git_manifest_whose_files_are_in_the_clone(runner: CliRunner, tmp_path: Path) -> None:
    manifest = {**MANIFEST, "git": {"remote": "https://example.com/jobs.git"}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(manifest))

    result = validate(runner, str(tmp_path))

    assert result.exit_code == 0, result.output
    assert "jobtype_extra.entrypoint_path: file entrypoint.py not found" in result.stderr
    assert "the daemon builds from git.remote" in result.stderr


def test_submit_checks_the_files_before_uploading(runner: CliRunner, job_dir: Path, requests_made: list[str]) -> None:
    (job_dir / "entrypoint.py").rename(job_dir / "Entrypoint.py")

    result = runner.invoke(main, ["submit", str(job_dir)], input="")

    assert result.exit_code == EXIT_INVALID_INPUT
    assert result.stderr == (
        f"error: jobtype_extra.entrypoint_path: file entrypoint.py not found in {job_dir} "
        "(did you mean Entrypoint.py?)\n"
    )
    assert requests_made == []
