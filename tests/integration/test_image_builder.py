"""The image builder through the real daemon: sources (git and uploads), build logs, caching,
phases and guard rails. Job code is samples/adder's entrypoint wherever possible, so builds reuse
the cached wrapper layers and take seconds."""

from __future__ import annotations

import base64
import gzip
import io
import re
import sqlite3
import tarfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests
import yaml

from cli.errors import EXIT_DEPLOY_FAILED
from cli.packing import pack
from tests.integration.conftest import REPO, Daemon
from tests.integration.git_servers import GitRepo, GitServer, git_daemon, git_http  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration

ADDER_CODE = (REPO / "samples" / "adder" / "entrypoint.py").read_text()
PHASES = ["fetching the source code", "building image", "starting Job server", "initializing Job entrypoint"]
WRAPPER_VENV_STEP = "python3 -m venv /opt/racetrack/wrapper-venv"
REQUIREMENTS_STEP = "pip install -r /opt/racetrack/job-requirements.txt"
JOB_CODE_STEP = "COPY --chown=job:job job/ /src/job/"
WRONG_PASSWORD = "wr0ng-Pa55w0rd-4c2d8e"


# --- helpers ---------------------------------------------------------------------------------------
def manifest(name: str, version: str = "1.0.0", **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "owner_email": "tests@example.com",
        "version": version,
        "jobtype": "python3:latest",
        "jobtype_extra": {"entrypoint_path": "entrypoint.py", "entrypoint_class": "AdderModel"},
    }
    extra = fields.pop("jobtype_extra", {})
    data["jobtype_extra"].update(extra)
    data.update(fields)
    return data


def job_dir(
    root: Path,
    name: str,
    version: str = "1.0.0",
    code: str = ADDER_CODE,
    files: dict[str, str] | None = None,
    **fields: Any,
) -> Path:
    """A job directory: job.yaml, entrypoint.py (the adder by default) and `files`."""
    directory = root / f"{name}-{version}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "job.yaml").write_text(yaml.safe_dump(manifest(name, version, **fields), sort_keys=False))
    (directory / "entrypoint.py").write_text(code)
    for relative, content in (files or {}).items():
        (directory / relative).parent.mkdir(parents=True, exist_ok=True)
        (directory / relative).write_text(content)
    return directory


def post_deploy(daemon: Daemon, body: dict[str, Any]) -> requests.Response:
    return daemon.api("POST", "/lifecycle/api/v1/deploy", json=body)


def deploy_api(daemon: Daemon, manifest_data: dict[str, Any], build_context: str | None = None, **extra: Any) -> str:
    response = post_deploy(daemon, {"manifest": manifest_data, "build_context": build_context, **extra})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def deployment(daemon: Daemon, deployment_id: str) -> dict[str, Any]:
    response = daemon.api("GET", f"/lifecycle/api/v1/deploy/{deployment_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_deployment(daemon: Daemon, deployment_id: str, timeout: float = 900) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = deployment(daemon, deployment_id)
        if current["status"] != "in_progress":
            return current
        time.sleep(0.25)
    raise AssertionError(f"deployment {deployment_id} still in progress after {timeout} s")


def latest_deployment(daemon: Daemon, name: str) -> dict[str, Any]:
    listed = daemon.api("GET", "/lifecycle/api/v1/deploy", params={"limit": 500}).json()
    return next(d for d in listed if d["job_name"] == name)  # newest first


def build_logs(daemon: Daemon, deployment_id: str) -> str:
    return str(daemon.api("GET", f"/lifecycle/api/v1/deploy/{deployment_id}/build-logs").json()["logs"])


def perform(daemon: Daemon, name: str, version: str, payload: dict[str, Any] | None = None) -> Any:
    response = daemon.api("POST", f"/pub/job/{name}/{version}/api/v1/perform", json=payload or {"a": 40, "b": 2})
    assert response.status_code == 200, response.text
    return response.json()


def job_container(daemon: Daemon, name: str, version: str) -> Any:
    canonical = f"{daemon.instance}-job-{name}-v-{version.replace('.', '-')}"
    return next(c for c in daemon.containers() if c.name == canonical)


def exec_in_job(daemon: Daemon, name: str, version: str, *command: str) -> str:
    code, output = job_container(daemon, name, version).exec_run(list(command))
    assert code == 0, output
    return str(output.decode())


def job_images(daemon: Daemon, name: str, version: str) -> list[Any]:
    labels = [f"racetrackd.instance={daemon.instance}", f"job-name={name}", f"job-version={version}"]
    for _ in range(5):  # the SDK inspects each listed image: one the daemon removes meanwhile fails the list
        try:
            return list(daemon.docker.images.list(filters={"label": labels}))
        except docker.errors.ImageNotFound:
            time.sleep(0.2)
    return list(daemon.docker.images.list(filters={"label": labels}))


def steps(log: str) -> dict[str, str]:
    """Classic `docker build` output split into {step instruction: its output}."""
    blocks: dict[str, str] = {}
    current = None
    for line in log.splitlines():
        match = re.match(r"^Step \d+/\d+ : (.*)$", line)
        if match:
            current = match.group(1)
            blocks[current] = ""
        elif current is not None:
            blocks[current] += line + "\n"
    return blocks


def step_output(log: str, fragment: str) -> str:
    matching = [output for step, output in steps(log).items() if fragment in step]
    assert matching, f"no build step with {fragment!r} in:\n{log}"
    return matching[0]


def targz(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return base64.b64encode(buffer.getvalue()).decode()


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info, data


def link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def registry_value(daemon: Daemon, column: str, deployment_id: str) -> Any:
    connection = sqlite3.connect(f"file:{daemon.data_dir / 'registry.sqlite3'}?mode=ro", uri=True, timeout=10)
    try:
        row = connection.execute(f"SELECT {column} FROM deployment WHERE id = ?", (deployment_id,)).fetchone()
    finally:
        connection.close()
    return None if row is None else row[0]


def sleepy_code(seconds: float) -> str:
    """The adder, but its module takes `seconds` to import: the deployment stays busy that long."""
    return f"import time\n\ntime.sleep({seconds})\n\n\n" + ADDER_CODE


# --- sources: git ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def public_repo(git_daemon: GitServer) -> tuple[GitServer, GitRepo, str, str]:  # noqa: F811
    """`calc.git`: main has jobs/adder (a + b); branch feature adds 1000."""
    repo = git_daemon.create_repo("calc", {"README.md": "calculators\n", "jobs/adder/entrypoint.py": ADDER_CODE})
    main_sha = repo.head()
    feature_sha = repo.commit(
        {"jobs/adder/entrypoint.py": ADDER_CODE.replace("return a + b", "return a + b + 1000")},
        "add 1000",
        branch="feature",
    )
    repo.checkout("main")
    return git_daemon, repo, main_sha, feature_sha


def test_submit_with_git_remote_clones_branch_and_builds_its_directory(
    daemon: Daemon, public_repo: tuple[GitServer, GitRepo, str, str], tmp_path: Path
) -> None:
    server, _, main_sha, feature_sha = public_repo
    remote = server.remote("calc")
    # The local entrypoint answers -1: if it were uploaded, the answer would show it.
    directory = job_dir(
        tmp_path,
        "ib-git-source",
        "1.0.0",
        code=ADDER_CODE.replace("return a + b", "return -1"),
        git={"remote": remote, "branch": "feature", "directory": "jobs/adder"},
    )

    result = daemon.rtd("submit", str(directory))

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"from {remote} (git)" in result.stdout
    assert perform(daemon, "ib-git-source", "1.0.0") == 1042
    done = latest_deployment(daemon, "ib-git-source")
    assert done["status"] == "done"
    assert done["git_commit"] == feature_sha != main_sha
    assert f"fetched {remote} at {feature_sha}" in build_logs(daemon, done["id"])
    image = daemon.docker.images.get(done["job"]["image_tag"])
    assert image.labels["racetrackd.job-type"].startswith("python3")
    assert done["job"]["image_tag"].endswith(f":1.0.0-{done['id'][:8]}")  # the deployment is in the tag
    assert image.labels["job-name"] == "ib-git-source"
    assert image.labels["job-version"] == "1.0.0"
    assert exec_in_job(daemon, "ib-git-source", "1.0.0", "printenv", "GIT_VERSION").strip() == feature_sha
    health = daemon.api("GET", "/pub/job/ib-git-source/1.0.0/health").json()
    assert health["git_version"] == feature_sha
    # Only the job's directory is in the image, and no git history.
    files = exec_in_job(daemon, "ib-git-source", "1.0.0", "find", "/src/job")
    assert "README.md" not in files and ".git" not in files and "/src/job/entrypoint.py" in files


def test_git_remote_without_branch_builds_the_default_branch(
    daemon: Daemon, public_repo: tuple[GitServer, GitRepo, str, str]
) -> None:
    server, _, main_sha, _ = public_repo
    data = manifest("ib-git-source", "1.1.0", git={"remote": server.remote("calc"), "directory": "jobs/adder"})

    done = wait_deployment(daemon, deploy_api(daemon, data))

    assert done["status"] == "done", done["error"]
    assert done["git_commit"] == main_sha
    assert perform(daemon, "ib-git-source", "1.1.0") == 42
    assert f"GIT_VERSION={main_sha}" in daemon.docker.images.get(done["job"]["image_tag"]).attrs["Config"]["Env"]


def test_submit_local_uploads_the_directory_despite_a_git_remote(
    daemon: Daemon, public_repo: tuple[GitServer, GitRepo, str, str], tmp_path: Path
) -> None:
    server, *_ = public_repo
    directory = job_dir(
        tmp_path,
        "ib-git-source",
        "1.2.0",
        code=ADDER_CODE.replace("return a + b", "return -1"),
        git={"remote": server.remote("calc"), "branch": "feature", "directory": "jobs/adder"},
    )

    result = daemon.rtd("submit", "--local", str(directory))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "(upload)" in result.stdout
    assert perform(daemon, "ib-git-source", "1.2.0") == -1
    done = latest_deployment(daemon, "ib-git-source")
    assert done["git_commit"] is None
    assert "GIT_VERSION=" in daemon.docker.images.get(done["job"]["image_tag"]).attrs["Config"]["Env"]


def test_git_remote_of_a_kind_not_allowed_is_refused_at_submit(daemon: Daemon) -> None:
    # The session daemon allows https,http,git,file; the default (https only) is checked in unit tests.
    data = manifest("ib-git-ssh", git={"remote": "git@git.example.com:org/repo.git"})

    response = post_deploy(daemon, {"manifest": data, "build_context": None})

    assert response.status_code == 400, response.text
    assert "ssh remotes are not allowed" in response.text
    assert not [d for d in daemon.api("GET", "/lifecycle/api/v1/deploy").json() if d["job_name"] == "ib-git-ssh"]


# --- sources: a private repository over http with Basic auth -----------------------------------
@pytest.fixture(scope="module")
def private_repo(git_http: GitServer) -> GitServer:  # noqa: F811
    git_http.create_repo("private-adder", {"entrypoint.py": ADDER_CODE})
    return git_http


def test_private_repo_without_credentials_fails_saying_none_were_sent(
    daemon: Daemon, private_repo: GitServer, tmp_path: Path
) -> None:
    directory = job_dir(tmp_path, "ib-private", "0.1.0", git={"remote": private_repo.remote("private-adder")})

    result = daemon.rtd("submit", str(directory))

    assert result.returncode == EXIT_DEPLOY_FAILED, result.stdout + result.stderr
    assert "needs credentials and none were sent" in result.stderr
    failed = latest_deployment(daemon, "ib-private")
    assert failed["status"] == "failed"
    assert "needs credentials and none were sent" in failed["error"]


def test_private_repo_with_wrong_credentials_fails_saying_they_were_rejected(
    daemon: Daemon, private_repo: GitServer
) -> None:
    data = manifest("ib-private", "0.2.0", git={"remote": private_repo.remote("private-adder")})

    deployment_id = deploy_api(daemon, data, git_credentials={"username": "rtd-tester", "password": WRONG_PASSWORD})
    failed = wait_deployment(daemon, deployment_id)

    assert failed["status"] == "failed"
    assert "the git credentials were rejected" in failed["error"]
    assert WRONG_PASSWORD not in daemon.api("GET", f"/lifecycle/api/v1/deploy/{deployment_id}").text
    assert WRONG_PASSWORD not in daemon.api("GET", f"/lifecycle/api/v1/deploy/{deployment_id}/build-logs").text
    assert WRONG_PASSWORD not in daemon.log_path.read_text()
    assert registry_value(daemon, "git_credentials", deployment_id) is None


def test_private_repo_with_right_credentials_deploys_and_the_password_appears_nowhere(
    daemon: Daemon, private_repo: GitServer, tmp_path: Path
) -> None:
    password = private_repo.password
    assert password and private_repo.username
    directory = job_dir(tmp_path, "ib-private", "1.0.0", git={"remote": private_repo.remote("private-adder")})
    # A slow deployment ahead in the queue, so the private one waits and its stored credentials can be seen.
    blocker = deploy_api(
        daemon, manifest("ib-private-blocker"), pack(job_dir(tmp_path, "ib-private-blocker", code=sleepy_code(6)))
    )
    outcome: dict[str, Any] = {}
    submitter = threading.Thread(
        target=lambda: outcome.update(
            result=daemon.rtd(
                "submit", "--git-username", private_repo.username or "", "--git-password", password, str(directory)
            )
        )
    )
    submitter.start()
    queued_id = None
    deadline = time.monotonic() + 30
    while queued_id is None and time.monotonic() < deadline:
        queued = [
            d
            for d in daemon.api("GET", "/lifecycle/api/v1/deploy").json()
            if d["job_name"] == "ib-private" and d["job_version"] == "1.0.0"
        ]
        queued_id = queued[0]["id"] if queued else None
        time.sleep(0.1)
    assert queued_id is not None
    sealed = registry_value(daemon, "secrets", queued_id)
    blocker_status = deployment(daemon, blocker)["status"]
    submitter.join(timeout=600)
    result = outcome["result"]

    assert blocker_status == "in_progress"  # so the private deployment was still queued when read
    assert sealed and password not in sealed and private_repo.username not in sealed  # stored encrypted
    assert result.returncode == 0, result.stdout + result.stderr
    assert perform(daemon, "ib-private", "1.0.0") == 42
    # Kept (sealed) with the deployment, so a rollback or recreation can fetch the same source again.
    kept = registry_value(daemon, "secrets", queued_id)
    assert kept and password not in kept
    done = deployment(daemon, queued_id)
    assert done["status"] == "done" and done["git_commit"]
    outputs = {
        "rtd stdout": result.stdout,
        "rtd stderr": result.stderr,
        "deployment": daemon.api("GET", f"/lifecycle/api/v1/deploy/{queued_id}").text,
        "deployments": daemon.api("GET", "/lifecycle/api/v1/deploy").text,
        "build logs": daemon.api("GET", f"/lifecycle/api/v1/deploy/{queued_id}/build-logs").text,
        "job build logs": daemon.api("GET", "/lifecycle/api/v1/job/ib-private/1.0.0/build-logs/plain").text,
        "job": daemon.api("GET", "/lifecycle/api/v1/job/ib-private/1.0.0").text,
        "daemon log": daemon.log_path.read_text(errors="replace"),
    }
    leaks = [where for where, text in outputs.items() if password in text]
    assert not leaks, f"the git password appears in: {leaks}"
    files = [path for path in daemon.data_dir.rglob("*") if path.is_file() and password.encode() in path.read_bytes()]
    assert not files, f"the git password is stored in plain text in {files}"
    assert wait_deployment(daemon, blocker)["status"] == "done"


# --- sources: uploaded build contexts ------------------------------------------------------------
def test_gitignore_and_racetrackignore_leave_files_out_of_the_image(daemon: Daemon, tmp_path: Path) -> None:
    directory = job_dir(
        tmp_path,
        "ib-ignored",
        files={
            ".gitignore": "*.log\nbuild/\n",
            ".racetrackignore": "secret.txt\n!keep.log\n",
            "debug.log": "noise\n",
            "keep.log": "wanted\n",
            "build/output.bin": "artifact\n",
            "secret.txt": "do not ship\n",
            "data/table.csv": "a,b\n",
        },
    )

    daemon.rtd("submit", str(directory), check=True)

    files = set(exec_in_job(daemon, "ib-ignored", "1.0.0", "find", "/src/job", "-type", "f").split())
    assert perform(daemon, "ib-ignored", "1.0.0") == 42
    assert {"/src/job/entrypoint.py", "/src/job/job.yaml", "/src/job/keep.log", "/src/job/data/table.csv"} <= files
    assert not {"/src/job/debug.log", "/src/job/build/output.bin", "/src/job/secret.txt"} & files


def _escape_cases(tmp_dir: Path, tag: str) -> dict[str, tuple[list[tuple[tarfile.TarInfo, bytes | None]], Path]]:
    up = "../" * 24  # from the daemon's unpack directory to / at any depth
    tmp = str(tmp_dir).lstrip("/")
    return {
        "dot-dot entry": ([regular(f"{up}{tmp}/escape-{tag}.txt", b"escaped\n")], tmp_dir / f"escape-{tag}.txt"),
        "absolute entry": ([regular(f"{tmp_dir}/absolute-{tag}.txt", b"escaped\n")], tmp_dir / f"absolute-{tag}.txt"),
        "symlink to a relative path outside": (
            [link("out", f"{up}{tmp}", tarfile.SYMTYPE), regular(f"out/via-symlink-{tag}.txt", b"escaped\n")],
            tmp_dir / f"via-symlink-{tag}.txt",
        ),
        "symlink to an absolute path": (
            [link("etc", str(tmp_dir), tarfile.SYMTYPE), regular(f"etc/via-absolute-symlink-{tag}.txt", b"x\n")],
            tmp_dir / f"via-absolute-symlink-{tag}.txt",
        ),
        "symlink to /etc/passwd": ([link("passwd", f"{'../' * 4}etc/passwd", tarfile.SYMTYPE)], tmp_dir / "none"),
        "hard link escaping": (
            [link("hard", f"{up}{tmp}/hard-target-{tag}.txt", tarfile.LNKTYPE), regular("hard", b"overwritten\n")],
            tmp_dir / f"hard-target-{tag}.txt",
        ),
    }


ESCAPES = [
    "dot-dot entry",
    "absolute entry",
    "symlink to a relative path outside",
    "symlink to an absolute path",
    "symlink to /etc/passwd",
    "hard link escaping",
]


@pytest.mark.parametrize("case", ESCAPES)
def test_archive_entries_escaping_the_context_fail_the_deployment(daemon: Daemon, case: str) -> None:
    outside = daemon.data_dir.parent / f"ib-outside-{uuid.uuid4().hex[:8]}"  # a directory no job owns
    outside.mkdir()
    entries, target = _escape_cases(outside, uuid.uuid4().hex[:8])[case]
    if case == "hard link escaping":
        target.write_text("original\n")
    name = f"ib-evil-{ESCAPES.index(case)}"
    archive = targz([regular("entrypoint.py", ADDER_CODE.encode()), *entries])

    failed = wait_deployment(daemon, deploy_api(daemon, manifest(name), archive, force=True))

    assert failed["status"] == "failed"
    assert "build_context" in failed["error"] and "outside the context" in failed["error"], failed["error"]
    if case == "hard link escaping":
        assert target.read_text() == "original\n"
    else:
        assert not target.exists()
    assert sorted(p.name for p in outside.iterdir()) == ([target.name] if case == "hard link escaping" else [])
    assert daemon.api("GET", f"/lifecycle/api/v1/job/{name}/1.0.0").status_code == 404


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def test_archive_unpacking_beyond_the_size_limit_fails_the_deployment(daemon: Daemon) -> None:
    size = 2 * 1024**3 + 1  # RACETRACK_MAX_CONTEXT_SIZE of the session daemon is the default 2Gi
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=1) as compressed,
        tarfile.open(fileobj=compressed, mode="w") as tar,
    ):
        info, data = regular("entrypoint.py", ADDER_CODE.encode())
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        big = tarfile.TarInfo("zeros.bin")
        big.size = size
        tar.addfile(big, io.BufferedReader(_Zeros(size), buffer_size=4 * 1024**2))
    archive = base64.b64encode(buffer.getvalue()).decode()
    assert len(archive) < 20 * 1024**2

    failed = wait_deployment(daemon, deploy_api(daemon, manifest("ib-too-large"), archive))

    assert failed["status"] == "failed"
    assert "build_context" in failed["error"] and "unpacks to more than" in failed["error"], failed["error"]


# --- build logs ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def logged_job(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """ib-logs 1.0.0 deployed with `rtd submit -v` (the whole build output); returns its directory and rtd's stdout."""
    directory = job_dir(tmp_path_factory.mktemp("ib-logs"), "ib-logs")
    return directory, daemon.rtd("submit", "-v", str(directory), check=True).stdout


def test_submit_prints_the_build_output_indented(daemon: Daemon, logged_job: tuple[Path, str]) -> None:
    _, stdout = logged_job
    log = build_logs(daemon, latest_deployment(daemon, "ib-logs")["id"])

    step_lines = [line for line in log.splitlines() if line.startswith("Step ")]
    assert step_lines
    for line in step_lines:
        assert f"       {line}" in stdout.splitlines()
    assert "-----> building image" in stdout


def test_submit_quiet_prints_phases_only(daemon: Daemon, logged_job: tuple[Path, str]) -> None:
    directory, _ = logged_job

    result = daemon.rtd("submit", "-q", "--force", str(directory), check=True)

    assert "-----> building image" in result.stdout
    build_lines = [line for line in result.stdout.splitlines() if line.lstrip().startswith(("Step ", "---> "))]
    assert not build_lines
    assert "ib-logs 1.0.0 is running" in result.stdout


def test_build_logs_endpoints_in_racetrack_and_polling_shapes(daemon: Daemon, logged_job: tuple[Path, str]) -> None:
    newest = latest_deployment(daemon, "ib-logs")
    full = build_logs(daemon, newest["id"])
    assert full.count("\n") > 5

    tail = daemon.api("GET", "/lifecycle/api/v1/job/ib-logs/1.0.0/build-logs", params={"tail": 3})
    latest = daemon.api("GET", "/lifecycle/api/v1/job/ib-logs/latest/build-logs", params={"tail": 3})
    plain = daemon.api("GET", "/lifecycle/api/v1/job/ib-logs/1.0.0/build-logs/plain")
    offset = len(full) // 2
    polled = daemon.api("GET", f"/lifecycle/api/v1/deploy/{newest['id']}/build-logs", params={"offset": offset})

    assert tail.status_code == 200 and set(tail.json()) == {"logs"}
    assert tail.json()["logs"] == "".join(full.splitlines(keepends=True)[-3:])
    assert latest.json() == tail.json()
    assert plain.headers["Content-Type"].startswith("text/plain")
    assert plain.text == full
    assert polled.json() == {"logs": full[offset:], "offset": len(full)}


def test_rtd_build_logs_prints_the_log_and_its_tail(daemon: Daemon, logged_job: tuple[Path, str]) -> None:
    full = build_logs(daemon, latest_deployment(daemon, "ib-logs")["id"])

    whole = daemon.rtd("build-logs", "ib-logs", check=True)
    tail = daemon.rtd("build-logs", "ib-logs", "--version", "1.0.0", "--tail", "4", check=True)

    assert whole.stdout == full
    assert tail.stdout == "".join(full.splitlines(keepends=True)[-4:])


def test_follow_streams_the_build_log_until_the_deployment_ends(daemon: Daemon, logged_job: tuple[Path, str]) -> None:
    directory, _ = logged_job
    (directory / "entrypoint.py").write_text(ADDER_CODE + "\n# followed\n")
    deployment_id = deploy_api(daemon, manifest("ib-logs"), pack(directory), force=True)

    chunks: list[str] = []
    status_at_first_chunk = None
    with daemon.api(
        "GET", f"/lifecycle/api/v1/deploy/{deployment_id}/build-logs", params={"follow": "true"}, stream=True
    ) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        for chunk in response.iter_content(chunk_size=None, decode_unicode=True):
            if status_at_first_chunk is None:
                status_at_first_chunk = deployment(daemon, deployment_id)["status"]
            chunks.append(chunk)
    ended = deployment(daemon, deployment_id)

    assert status_at_first_chunk == "in_progress"
    assert ended["status"] == "done", ended["error"]
    assert "".join(chunks) == build_logs(daemon, deployment_id)


def test_rtd_build_logs_follow_prints_until_the_deployment_ends(daemon: Daemon, logged_job: tuple[Path, str]) -> None:
    directory, _ = logged_job
    (directory / "entrypoint.py").write_text(ADDER_CODE + "\n# followed by rtd\n")
    deployment_id = deploy_api(daemon, manifest("ib-logs"), pack(directory), force=True)

    followed = daemon.rtd("build-logs", "ib-logs", "-f", check=True)

    assert deployment(daemon, deployment_id)["status"] == "done"
    assert followed.stdout == build_logs(daemon, deployment_id)
    assert "Successfully built" in followed.stdout


def test_failed_build_names_the_failing_step_and_its_last_lines(daemon: Daemon, tmp_path: Path) -> None:
    directory = job_dir(
        tmp_path,
        "ib-bad-requirements",
        jobtype_extra={"requirements_path": "requirements.txt"},
        files={"requirements.txt": "this-package-does-not-exist-racetrackd==1.0\n"},
    )

    result = daemon.rtd("submit", str(directory))

    assert result.returncode == EXIT_DEPLOY_FAILED, result.stdout + result.stderr
    assert "image build failed" in result.stderr
    assert REQUIREMENTS_STEP in result.stderr  # the failing step
    assert "this-package-does-not-exist-racetrackd" in result.stderr.split("--- last build output ---")[-1]
    first = result.stderr.splitlines()[0]  # pip's own words for the bad pin, not Docker's command line
    assert "ERROR:" in first and "this-package-does-not-exist-racetrackd" in first, result.stderr
    assert "/bin/sh -c" not in first and "non-zero code" not in first
    failed = latest_deployment(daemon, "ib-bad-requirements")
    assert failed["status"] == "failed" and "image build failed" in failed["error"]
    assert daemon.api("GET", "/lifecycle/api/v1/job/ib-bad-requirements/1.0.0").status_code == 404


# --- speed: layer caching --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cached_job(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """ib-cached (with requirements) deployed, then redeployed after a code-only change."""
    directory = job_dir(
        tmp_path_factory.mktemp("ib-cached"),
        "ib-cached",
        jobtype_extra={"requirements_path": "requirements.txt"},
        files={"requirements.txt": "six==1.16.0\n"},
    )
    daemon.rtd("submit", str(directory), check=True)
    (directory / "entrypoint.py").write_text(ADDER_CODE.replace("return a + b", "return a + b + 1"))
    daemon.rtd("submit", "--force", str(directory), check=True)
    return directory, latest_deployment(daemon, "ib-cached")


def test_code_only_redeploy_reuses_wrapper_and_requirements_layers(
    daemon: Daemon, cached_job: tuple[Path, dict[str, Any]]
) -> None:
    _, second = cached_job
    log = build_logs(daemon, second["id"])

    assert "Using cache" in step_output(log, WRAPPER_VENV_STEP)
    assert "Using cache" in step_output(log, REQUIREMENTS_STEP)
    assert "Using cache" not in step_output(log, JOB_CODE_STEP)
    # Nothing else is built again: every ENV, LABEL, USER, CMD... is above the code (on the classic
    # builder each step below it is a container of its own), the daemon's labels too (the same for
    # each deployment of the version).
    built = [
        step
        for step, output in steps(log).items()
        if "Using cache" not in output and not step.startswith(("FROM ", "ARG "))
    ]
    assert len(built) == 1 and JOB_CODE_STEP in built[0], log
    assert perform(daemon, "ib-cached", "1.0.0") == 43


def test_no_cache_build_flag_rebuilds_every_layer(daemon: Daemon, cached_job: tuple[Path, dict[str, Any]]) -> None:
    directory, _ = cached_job

    done = wait_deployment(
        daemon,
        deploy_api(
            daemon,
            manifest("ib-cached", jobtype_extra={"requirements_path": "requirements.txt"}),
            pack(directory),
            force=True,
            build_flags=["--no-cache"],
        ),
    )

    log = build_logs(daemon, done["id"])
    assert done["status"] == "done", done["error"]
    assert WRAPPER_VENV_STEP in log and REQUIREMENTS_STEP in log
    assert "Using cache" not in log


def test_unknown_build_flag_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    response = post_deploy(
        daemon,
        {
            "manifest": manifest("ib-flags"),
            "force": True,
            "build_context": pack(job_dir(tmp_path, "ib-flags")),
            "build_flags": ["--squash"],
        },
    )

    assert response.status_code == 400, response.text
    assert "--squash" in response.text


# --- phases ----------------------------------------------------------------------------------------
def test_deployment_records_racetrack_phases_with_durations(
    daemon: Daemon, cached_job: tuple[Path, dict[str, Any]]
) -> None:
    _, second = cached_job
    phases = deployment(daemon, second["id"])["phases"]

    assert [p["name"] for p in phases] == PHASES
    for phase in phases:
        assert isinstance(phase["started_at"], (int, float))
        assert isinstance(phase["duration"], (int, float)) and phase["duration"] >= 0
    starts = [p["started_at"] for p in phases]
    assert starts == sorted(starts)
    assert starts[0] >= second["create_time"]


# --- guard rails -----------------------------------------------------------------------------------
def _end(done: dict[str, Any]) -> float:
    last = done["phases"][-1]
    return float(last["started_at"] + last["duration"])


def test_deployments_run_one_at_a_time(daemon: Daemon, tmp_path: Path) -> None:
    first_id = deploy_api(
        daemon, manifest("ib-serial-first"), pack(job_dir(tmp_path, "ib-serial-first", code=sleepy_code(4))), force=True
    )
    second_id = deploy_api(
        daemon, manifest("ib-serial-second"), pack(job_dir(tmp_path, "ib-serial-second")), force=True
    )

    first = wait_deployment(daemon, first_id)
    second = wait_deployment(daemon, second_id)

    assert first["status"] == "done" and second["status"] == "done", (first["error"], second["error"])
    second_phases = {p["name"]: p["started_at"] for p in second["phases"]}
    assert second_phases["fetching the source code"] >= _end(first)
    assert second_phases["building image"] >= _end(first)
    assert second_phases["building image"] >= first["update_time"]


def test_second_deploy_of_a_version_in_progress_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    body = {"manifest": manifest("ib-in-progress"), "build_context": pack(job_dir(tmp_path, "ib-in-progress"))}
    first = post_deploy(daemon, body)

    again = post_deploy(daemon, body)

    assert first.status_code == 201, first.text
    assert again.status_code == 409, again.text
    assert "already in progress" in again.json()["error"]
    assert wait_deployment(daemon, first.json()["id"])["status"] == "done"


def test_only_the_newest_images_of_a_version_are_kept_and_deleting_removes_them(daemon: Daemon, tmp_path: Path) -> None:
    directory = job_dir(tmp_path, "ib-keep")
    daemon.rtd("submit", "-q", str(directory), check=True)
    for n in range(4):  # code-only redeploys: 5 images built in all
        (directory / "entrypoint.py").write_text(ADDER_CODE + f"\n# redeploy {n}\n")
        daemon.rtd("submit", "-q", "--force", str(directory), check=True)
    deadline = time.monotonic() + 30
    while len(job_images(daemon, "ib-keep", "1.0.0")) > 3 and time.monotonic() < deadline:
        time.sleep(0.2)  # old images are collected right after the deployment is reported done

    kept = job_images(daemon, "ib-keep", "1.0.0")
    running = daemon.api("GET", "/lifecycle/api/v1/job/ib-keep/1.0.0").json()["image_tag"]
    newest = [d["id"] for d in daemon.api("GET", "/lifecycle/api/v1/deploy").json() if d["job_name"] == "ib-keep"][:3]

    assert len(kept) == 3, [image.tags for image in kept]
    assert running in [tag for image in kept for tag in image.tags]
    kept_tags = [tag.rpartition("-")[2] for image in kept for tag in image.tags]
    assert sorted(kept_tags) == sorted(deployment_id[:8] for deployment_id in newest)

    daemon.rtd("delete", "ib-keep", "--version", "1.0.0", check=True)

    assert job_images(daemon, "ib-keep", "1.0.0") == []
