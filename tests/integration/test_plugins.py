"""Job-type plugins on a real daemon: the worked example of docs/plugins.md (a `shell` job type) bundled
with rtd, installed as a ZIP at run time and deployed without a restart; two versions side by side;
replace and remove; hooks; broken plugins refused or reported while the daemon keeps serving; admin only.
"""

from __future__ import annotations

import io
import shutil
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from tests.integration.conftest import REPO, Daemon, _remove_labelled, launch_daemon
from tests.plugin_zips import EXAMPLE_PLUGIN, example_files, zip_of

API = "/lifecycle/api/v1"
EXAMPLE_JOB = REPO / "docs" / "examples" / "shell-job"


def bundle(daemon: Daemon, out: Path, *version: str) -> Path:
    """`rtd plugin bundle` of the example plugin (at another version when given); the ZIP's path."""
    extra = ("--plugin-version", version[0]) if version else ()
    result = daemon.rtd("plugin", "bundle", str(EXAMPLE_PLUGIN), "--out", str(out), *extra, check=True)
    path = Path(result.stdout.split("bundled ", 1)[1].strip())
    assert path.is_file(), result.stdout
    return path


def job_type_versions(daemon: Daemon) -> list[str]:
    response = daemon.api("GET", f"{API}/plugin/job_type/versions")
    assert response.status_code == 200, response.text
    return list(response.json())


def perform(daemon: Daemon, name: str, version: str, payload: dict[str, Any]) -> Any:
    response = daemon.api("POST", f"/pub/job/{name}/{version}/api/v1/perform", json=payload)
    assert response.status_code == 200, response.text
    return response.json()


def upload(
    daemon: Daemon, filename: str, data: bytes, replace: bool = False, token: str | None = None
) -> requests.Response:
    headers = {"X-Racetrack-Auth": token} if token else {}
    return daemon.api(
        "POST", f"{API}/plugin/upload/{filename}", params={"replace": int(replace)}, data=data, headers=headers
    )


@pytest.fixture(scope="module")
def shell(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The daemon with the example plugin 1.0.0 installed by `rtd plugin install` and shell-hello 1.0.0 deployed."""
    out = tmp_path_factory.mktemp("bundles")
    pid = daemon.process.pid if daemon.process else None
    daemon.rtd("plugin", "install", str(bundle(daemon, out)), check=True)
    daemon.rtd("submit", str(EXAMPLE_JOB), check=True)
    assert daemon.process is not None and daemon.process.pid == pid and daemon.process.poll() is None
    yield daemon
    for version in ("1.0.0", "1.5.0", "2.0.0"):
        daemon.api("DELETE", f"{API}/plugin/shell-job-type/{version}")


def test_a_plugin_zip_installed_at_run_time_serves_a_job_of_its_type_with_its_hooks(shell: Daemon) -> None:
    answer = perform(shell, "shell-hello", "1.0.0", {"name": "racetrack"})

    assert answer["message"] == "hi, racetrack"  # the script ran, with the manifest's jobtype_extra.greeting
    assert answer["job_type"] == "shell:1.0.0"
    # The plugin's job_runtime_env hook set this variable in the job's container.
    assert answer["identity"] == "shell-hello 1.0.0 (shell:1.0.0)"
    listed = {p["name"]: p for p in shell.api("GET", f"{API}/plugin").json()}
    assert listed["shell-job-type"]["job_types"] == ["shell:1.0.0"]
    assert listed["shell-job-type"]["hooks"] == ["job_runtime_env", "validate_job_manifest"]
    assert listed["shell-job-type"]["builtin"] is False and listed["shell-job-type"]["error"] is None
    assert listed["python3-job-type"]["builtin"] is True


def test_list_commands_show_plugins_and_job_type_versions(shell: Daemon) -> None:
    plugins = shell.rtd("plugin", "list", check=True).stdout
    versions = shell.rtd("plugin", "list", "--job-types", check=True).stdout.split()

    assert "shell-job-type" in plugins and "uploaded" in plugins and "built-in" in plugins
    assert "python3:1.0.0" in versions and "shell:1.0.0" in versions


def test_the_validation_hook_refuses_a_manifest_naming_the_field(shell: Daemon) -> None:
    result = shell.rtd("submit", str(EXAMPLE_JOB), "-e", "version=1.0.1", "-e", "jobtype_extra.script=hello.txt")

    assert result.returncode != 0
    assert "jobtype_extra.script: must name a .sh file, not 'hello.txt'" in result.stderr, result.stderr


def test_two_versions_of_a_job_type_serve_side_by_side_then_one_is_removed(shell: Daemon, tmp_path: Path) -> None:
    shell.rtd("plugin", "install", str(bundle(shell, tmp_path, "2.0.0")), check=True)
    assert [v for v in job_type_versions(shell) if v.startswith("shell:")] == ["shell:1.0.0", "shell:2.0.0"]
    shell.rtd("submit", str(EXAMPLE_JOB), "-e", "version=2.0.0", "-e", "jobtype=shell:2.*", check=True)

    assert perform(shell, "shell-hello", "1.0.0", {})["job_type"] == "shell:1.0.0"
    assert perform(shell, "shell-hello", "2.0.0", {})["job_type"] == "shell:2.0.0"

    shell.rtd("plugin", "remove", "shell-job-type", "--version", "2.0.0", check=True)
    assert "shell:2.0.0" not in job_type_versions(shell)
    # A job built with the removed version keeps serving; a new deployment of that version is refused by name.
    assert perform(shell, "shell-hello", "2.0.0", {})["job_type"] == "shell:2.0.0"
    refused = shell.rtd("submit", str(EXAMPLE_JOB), "-e", "version=2.0.1", "-e", "jobtype=shell:2.0.0")
    assert refused.returncode != 0
    assert "jobtype: 'shell:2.0.0' is not installed (installed: " in refused.stderr, refused.stderr
    assert "shell:1.0.0" in refused.stderr.split("installed: ", 1)[1]


def test_replace_removes_the_other_versions_of_the_plugin(shell: Daemon, tmp_path: Path) -> None:
    shell.rtd("plugin", "install", str(bundle(shell, tmp_path, "1.5.0")), check=True)
    assert "shell:1.5.0" in job_type_versions(shell)

    shell.rtd("plugin", "install", str(bundle(shell, tmp_path)), "--replace", check=True)

    assert [v for v in job_type_versions(shell) if v.startswith("shell:")] == ["shell:1.0.0"]
    assert perform(shell, "shell-hello", "1.0.0", {"name": "again"})["message"] == "hi, again"


def test_an_installed_plugin_downloads_as_a_zip_that_installs_again(shell: Daemon, tmp_path: Path) -> None:
    shell.rtd("plugin", "download", "shell-job-type", "1.0.0", "--out-dir", str(tmp_path), check=True)
    data = (tmp_path / "shell-job-type-1.0.0.zip").read_bytes()

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert {"plugin-manifest.yaml", "Dockerfile.j2", "plugin.py", "shell_wrapper.py"} <= set(archive.namelist())
    assert upload(shell, "again.zip", data).status_code == 200


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"../escape.txt": "x", "plugin-manifest.yaml": "name: x\nversion: 1.0.0\n"}, "points outside the plugin"),
        ({"Dockerfile.j2": "FROM x\n"}, "plugin-manifest.yaml not found at the ZIP's top level"),
        (
            {"plugin-manifest.yaml": "name: shell-job-type\nversion: one\ncategory: job-type\n"},
            "version: 'one' is not a semantic version",
        ),
    ],
)
def test_a_bad_zip_is_refused_naming_the_problem_and_nothing_installed_is_lost(
    shell: Daemon, files: dict[str, str], message: str
) -> None:
    before = job_type_versions(shell)

    refused = upload(shell, "bad.zip", zip_of(files))

    assert refused.status_code == 400, refused.text
    assert message in refused.json()["error"]
    assert job_type_versions(shell) == before
    assert perform(shell, "shell-hello", "1.0.0", {"name": "still"})["message"] == "hi, still"


def test_a_template_that_does_not_render_or_hooks_that_do_not_load_are_refused(shell: Daemon) -> None:
    misspelt = upload(shell, "bad.zip", zip_of(example_files(**{"Dockerfile.j2": "FROM {{ base_imag }}\n"})))
    broken_hooks = upload(shell, "bad.zip", zip_of(example_files(**{"plugin.py": "raise RuntimeError('no luck')\n"})))
    not_zip = upload(shell, "bad.zip", b"not a zip at all")

    assert misspelt.status_code == 400 and "'base_imag' is undefined" in misspelt.json()["error"]
    assert broken_hooks.status_code == 400
    assert "plugin.py failed to load: RuntimeError: no luck" in broken_hooks.json()["error"]
    assert not_zip.status_code == 400 and "not a readable ZIP file" in not_zip.json()["error"]
    assert perform(shell, "shell-hello", "1.0.0", {})["job_type"] == "shell:1.0.0"


def test_built_in_plugins_cannot_be_removed(shell: Daemon) -> None:
    refused = shell.api("DELETE", f"{API}/plugin/python3-job-type/1.0.0")

    assert refused.status_code == 403
    assert "built in and cannot be removed" in refused.json()["error"]


def test_only_admins_install_or_remove_plugins_and_any_user_lists_them(shell: Daemon) -> None:
    username = f"plugin-user-{uuid.uuid4().hex[:6]}"
    assert shell.api("POST", f"{API}/users", json={"username": username}).status_code == 201
    token = shell.api("POST", f"{API}/users/{username}/tokens", json={}).json()["token"]
    as_user = {"X-Racetrack-Auth": token}

    install = upload(shell, "shell.zip", zip_of(example_files()), token=token)
    remove = shell.api("DELETE", f"{API}/plugin/shell-job-type/1.0.0", headers=as_user)
    listed = shell.api("GET", f"{API}/plugin", headers=as_user)
    anonymous = requests.get(f"{shell.url}{API}/plugin", timeout=30)

    assert install.status_code == 403 and remove.status_code == 403
    assert "full_access" in install.json()["error"]
    assert listed.status_code == 200 and "shell-job-type" in {p["name"] for p in listed.json()}
    assert anonymous.status_code == 401
    assert "shell:1.0.0" in job_type_versions(shell)


def test_a_broken_plugin_on_disk_is_reported_and_the_daemon_starts_and_serves(
    tmp_path: Path, docker_client: docker.DockerClient, base_image: str
) -> None:
    plugins = tmp_path / "data" / "plugins"
    shutil.copytree(EXAMPLE_PLUGIN, plugins / "shell-job-type-1.0.0")
    (plugins / "broken-1.0.0").mkdir()
    (plugins / "broken-1.0.0" / "plugin-manifest.yaml").write_text(
        "name: broken\nversion: 1.0.0\ncategory: job-type\njob_types:\n  broken: {dockerfile_template: missing.j2}\n"
    )

    started = launch_daemon(tmp_path / "data", docker_client, base_image)
    try:
        listed = {p["name"]: p for p in started.api("GET", f"{API}/plugin").json()}
        versions = job_type_versions(started)
        log = started.log_path.read_text()
    finally:
        started.stop()
        _remove_labelled(docker_client, started.instance)

    assert "file missing.j2 not found in the plugin" in listed["broken"]["error"]
    assert listed["broken"]["job_types"] == []
    assert "python3:1.0.0" in versions and "shell:1.0.0" in versions
    assert not [v for v in versions if v.startswith("broken:")]
    assert "skipping broken job-type plugin" in log and "missing.j2" in log
