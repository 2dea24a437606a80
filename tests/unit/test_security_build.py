"""Adversarial tests: what users send that reaches a build (a job's Dockerfile, manifest values that
land in Dockerfiles, symlinks in a clone, git remotes). Each reproduces an attack from the security
review and asserts what the attacker would see: an error naming the problem, never their payload run."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from flask.testing import FlaskClient

from builders.git_source import GitCredentials, check_remote_address, clone, redact_remote
from cli.main import main as rtd_main
from jobmanifest import ManifestInvalid, validate_manifest
from jobmanifest.loading import load_manifest_dict
from racetrackd.auth.vault import Vault
from racetrackd.db import Deployment, open_database
from racetrackd.deploy import jobsecrets
from racetrackd.deploy.building import DeploymentRecord, ImageBuilder
from racetrackd.errors import BuildError, ValidationError
from racetrackd.plugins.jobtypes import JobType, check_extra, discover, load_job_types, resolve
from racetrackd.settings import BUILTIN_PLUGINS_DIR, Settings
from tests.unit.fakes import FakeRuntime, as_written, build_context, sample_manifest

pytestmark = pytest.mark.security

BASE = "racetrackd/python3-base:bookworm"


def builtin(name: str) -> JobType:
    return resolve(f"{name}:latest", discover([BUILTIN_PLUGINS_DIR]))


@pytest.fixture
def builder(make_settings: object, runtime: FakeRuntime) -> ImageBuilder:
    settings: Settings = make_settings(python_base_image=BASE, build_pip_index_url="https://pypi.corp/simple")  # type: ignore[operator]
    open_database(settings.database_path)
    return ImageBuilder(settings, runtime, Vault(b"k" * 32), "http://172.18.0.1:7102")


def build(builder: ImageBuilder, job_dir: Path, jobtype: str = "dockerfile", **manifest: object) -> str:
    parsed = validate_manifest(sample_manifest(name="web", jobtype=f"{jobtype}:latest", **manifest))
    deployment = Deployment.create(job_name="web", job_version="0.0.1", manifest_yaml=parsed.yaml)
    return builder.build(
        parsed,
        builtin(jobtype),
        job_dir,
        jobsecrets.NONE,
        deployment_id=deployment.id,
        report=DeploymentRecord(deployment),
    ).image


def rendered_dockerfile(runtime: FakeRuntime, tag: str) -> str:
    with tarfile.open(fileobj=io.BytesIO(runtime.contexts[tag][1]), mode="r:") as tar:
        member = tar.extractfile("Dockerfile.racetrack")
        assert member is not None
        return as_written(member.read().decode())


def job_with_dockerfile(tmp_path: Path, text: str) -> Path:
    job = tmp_path / "job"
    job.mkdir(exist_ok=True)
    (job / "Dockerfile").write_text(text)
    return job


# --- item 1: a job's Dockerfile is rendered in a sandbox, with the documented variables only ---------------


@pytest.mark.parametrize(
    "payload",
    [
        "{{ cycler.__init__.__globals__.os.getuid() }}",  # the reported one: printed the daemon's uid
        "{{ cycler.__init__.__globals__.os.listdir('.') }}",
        "{{ lipsum.__globals__['os'].getpid() }}",
        "{{ self.__init__.__globals__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ build_env.__class__.__init__.__globals__ }}",
        "{{ manifest.update({'name': 'x'}) }}",  # the variables are read-only
        "{{ job_name.__class__ }}",
    ],
)
def test_a_hostile_dockerfile_template_fails_the_build_and_runs_nothing(
    builder: ImageBuilder, runtime: FakeRuntime, tmp_path: Path, payload: str
) -> None:
    job = job_with_dockerfile(tmp_path, f'FROM {{{{ base_image }}}}\nRUN echo "{payload}"\n')

    with pytest.raises(ValidationError) as caught:
        build(builder, job)

    message = caught.value.message
    assert message.startswith("jobtype_extra.dockerfile_path: Dockerfile ")
    assert str(os.getpid()) not in message and f"uid {os.getuid()}" not in message
    assert runtime.contexts == {}  # nothing reached Docker


@pytest.mark.parametrize(
    "include",
    [
        '{% include "package_index.j2" %}',  # a shared template: only plugin templates may include it
        '{% include "/etc/passwd" %}',
        '{% include "../../racetrackd/settings.py" %}',
        '{% include "server.py" %}',  # another file of the job
        '{% include "Dockerfile" %}',  # itself: no recursion either
        '{% import "server.py" as x %}',
        '{% extends "server.py" %}',
    ],
)
def test_a_jobs_dockerfile_can_load_no_other_template(
    builder: ImageBuilder, runtime: FakeRuntime, tmp_path: Path, include: str
) -> None:
    job = job_with_dockerfile(tmp_path, f"FROM {{{{ base_image }}}}\n{include}\n")
    (job / "server.py").write_text("SECRET = 'job file'\n")

    with pytest.raises(ValidationError, match="cannot include, import or extend other templates"):
        build(builder, job)
    assert runtime.contexts == {}


@pytest.mark.parametrize(
    "expression",
    [
        "range(3)",
        "dict(a=1)",
        "namespace()",
        "joiner()",
        "lipsum()",
        "runtime_image",
        "racetrackd_version",
        "build.pip_index_url",
    ],
)
def test_only_the_documented_variables_are_defined(builder: ImageBuilder, tmp_path: Path, expression: str) -> None:
    job = job_with_dockerfile(tmp_path, f"FROM {{{{ base_image }}}}\nLABEL x={{{{ {expression} }}}}\n")

    with pytest.raises(ValidationError, match="failed to render"):
        build(builder, job)


@pytest.mark.parametrize("expression", ["'x' * 100000000", "[1] * 100000000", "10 ** 100000000"])
def test_a_template_cannot_make_the_daemon_allocate_without_bound(
    builder: ImageBuilder, tmp_path: Path, expression: str
) -> None:
    job = job_with_dockerfile(tmp_path, f"FROM scratch\nLABEL x={{{{ {expression} }}}}\n")

    with pytest.raises(ValidationError, match="may not"):
        build(builder, job)


def test_the_documented_variables_still_render(builder: ImageBuilder, runtime: FakeRuntime, tmp_path: Path) -> None:
    job = job_with_dockerfile(
        tmp_path,
        "FROM {{ base_image }}\n{{ package_index }}\n"
        "LABEL n={{ job_name | docker_quote }} v={{ job_version | docker_quote }} m={{ manifest.name | docker_quote }}\n"
        "{% for key, value in build_env.items() %}ENV {{ key }}={{ value | docker_quote }}\n{% endfor %}"
        "{% if build.secrets_url %}unreachable{% endif %}"
        "LABEL p={{ jobtype_extra.get('dockerfile_path', 'Dockerfile') | docker_quote }}\n",
    )

    tag = build(builder, job, build_env={"MODE": "fast"})

    text = rendered_dockerfile(runtime, tag)
    assert text.startswith(f"FROM {BASE}\n")
    assert "ARG PIP_INDEX_URL=https://pypi.corp/simple" in text  # the shared fragment, pre-rendered by the daemon
    assert 'LABEL n="web" v="0.0.1" m="web"' in text
    assert 'ENV MODE="fast"' in text
    assert "unreachable" not in text


def test_a_docker_proxy_dockerfile_is_still_not_rendered(
    builder: ImageBuilder, runtime: FakeRuntime, tmp_path: Path
) -> None:
    text = 'FROM scratch\nRUN echo "{{ cycler.__init__.__globals__.os.getuid() }}"\n'
    job = job_with_dockerfile(tmp_path, text)

    tag = build(builder, job, "docker-proxy")

    assert rendered_dockerfile(runtime, tag) == text  # inert: Docker sees the braces as text


# --- item 6: every manifest value a template or the builder writes into a Dockerfile is validated ----------

REPO = Path(__file__).resolve().parents[2]
INJECTED = "requirements.txt\nRUN id > /tmp/pwned"

BAD_VALUES = [
    # (manifest overrides, field, message)
    (
        {"jobtype_extra": {"entrypoint_path": "e.py", "requirements_path": INJECTED}},
        "jobtype_extra.requirements_path",
        "must be a relative path inside the job directory",
    ),
    (
        {"jobtype_extra": {"entrypoint_path": "e.py", "requirements_path": "../../etc/passwd"}},
        "jobtype_extra.requirements_path",
        "must be a relative path inside the job directory",
    ),
    (
        {"jobtype_extra": {"entrypoint_path": "e.py", "requirements_path": "/etc/passwd"}},
        "jobtype_extra.requirements_path",
        "must be a relative path inside the job directory",
    ),
    (
        {"jobtype_extra": {"entrypoint_path": "e.py", "requirements_path": "req.txt /etc/"}},
        "jobtype_extra.requirements_path",
        "must be a relative path inside the job directory",
    ),
    (
        {"jobtype_extra": {"entrypoint_path": "e.py\nUSER root"}},
        "jobtype_extra.entrypoint_path",
        "must be a relative path inside the job directory",
    ),
    (
        {"jobtype_extra": {"entrypoint_path": "e.py", "python_version": "3.11-slim AS x\nRUN id\nFROM python:3.11"}},
        "jobtype_extra.python_version",
        "is not a Python version like 3.11",
    ),
    (
        {"jobtype_extra": {"entrypoint_path": "e.py", "python_version": "3.11@sha256:abc"}},
        "jobtype_extra.python_version",
        "is not a Python version like 3.11",
    ),
    (
        {"jobtype_extra": {"entrypoint_path": "e.py", "debian_version": "bookworm\nRUN id"}},
        "jobtype_extra.debian_version",
        "is not a Debian image suffix",
    ),
    (
        {"jobtype_extra": {"entrypoint_path": "e.py", "entrypoint_class": 'Job"]\nRUN ["id'}},
        "jobtype_extra.entrypoint_class",
        "is not a Python class name",
    ),
    (
        {"jobtype_extra": {"entrypoint_path": "e.py", "home_page": "/docs\nRUN id"}},
        "jobtype_extra.home_page",
        "must not hold control characters",
    ),
    (
        {"jobtype": "golang:latest", "jobtype_extra": {"gomod": "$(id>/tmp/pwned).mod"}},
        "jobtype_extra.gomod",
        "must be a relative path inside the job directory",
    ),
    (
        {"jobtype": "golang:latest", "jobtype_extra": {"gomod": "-r/go.mod"}},
        "jobtype_extra.gomod",
        "not starting with -",
    ),
    (
        {"jobtype_extra": None, "golang": {"gomod": "`id`/go.mod"}},
        "golang.gomod",
        "must be a relative path inside the job directory",
    ),
    (
        {"jobtype": "dockerfile:latest", "jobtype_extra": {"dockerfile_path": "Dockerfile\nRUN id"}},
        "jobtype_extra.dockerfile_path",
        "must be a relative path inside the job directory",
    ),
    ({"system_dependencies": ["curl\nRUN id"]}, "system_dependencies[0]", "is not a package name"),
    ({"system_dependencies": ["curl && id"]}, "system_dependencies[0]", "is not a package name"),
    ({"system_dependencies": ["$(id)"]}, "system_dependencies[0]", "is not a package name"),
    ({"system_dependencies": ["Curl"]}, "system_dependencies[0]", "is not a package name"),
    ({"build_env": {"A\nRUN id": "x"}}, "build_env.A\nRUN id", "not a valid environment variable name"),
    ({"git": {"remote": "--upload-pack=touch /tmp/pwned", "directory": "."}}, "git.remote", "is not a git remote"),
    ({"git": {"remote": "https://u:hunter2@git.example.com/r.git"}}, "git.remote", "must not hold a password"),
    ({"git": {"remote": "https://hunter2@git.example.com/r.git"}}, "git.remote", "must not hold a password"),
    (
        {"git": {"remote": "https://git.example.com/r.git", "directory": "job\nx"}},
        "git.directory",
        "must not hold control characters",
    ),
]


@pytest.mark.parametrize(("overrides", "field", "message"), BAD_VALUES)
def test_a_value_that_would_inject_into_a_dockerfile_is_refused_by_the_schema_naming_it(
    overrides: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(ManifestInvalid) as caught:
        validate_manifest(sample_manifest(**overrides))

    assert [error.path for error in caught.value.errors] == [field]
    assert message in caught.value.errors[0].message
    assert "hunter2" not in str(caught.value)


def test_the_daemon_refuses_requirements_path_injection_before_anything_is_built(
    client: FlaskClient, runtime: FakeRuntime
) -> None:
    manifest = sample_manifest(jobtype_extra={"entrypoint_path": "e.py", "requirements_path": INJECTED})

    response = client.post("/lifecycle/api/v1/deploy", json={"build_context": build_context(), "manifest": manifest})

    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert body["type"] == "invalid-manifest"
    assert body["error"].startswith("jobtype_extra.requirements_path: must be a relative path inside the job directory")
    assert runtime.contexts == {}


def test_rtd_validate_catches_it_too(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(
        yaml.safe_dump(sample_manifest(jobtype_extra={"entrypoint_path": "e.py", "python_version": "3.11\nRUN id"}))
    )

    result = CliRunner().invoke(rtd_main, ["validate", str(tmp_path)], input="")

    assert result.exit_code != 0
    assert "jobtype_extra.python_version: '3.11\\nRUN id' is not a Python version like 3.11" in result.output


def test_a_third_party_job_types_path_field_follows_the_same_rule(tmp_path: Path) -> None:
    from pluginbundle import check_directory

    plugin = tmp_path / "rusty"
    plugin.mkdir()
    (plugin / "plugin-manifest.yaml").write_text(
        "name: rusty\nversion: 1.0.0\ncategory: job-type\njob_types:\n  rust:\n"
        "    dockerfile_template: Dockerfile.j2\n    extra_fields:\n      cargo_toml: {type: path}\n"
    )
    (plugin / "Dockerfile.j2").write_text("FROM scratch\nCOPY job/{{ jobtype_extra.cargo_toml }} /\n")
    (job_type,) = load_job_types(plugin, check_directory(plugin))

    with pytest.raises(ValidationError) as caught:
        check_extra(job_type, {"cargo_toml": "Cargo.toml\nRUN id"})

    assert "jobtype_extra.cargo_toml: must be a relative path inside the job directory" in caught.value.message


@pytest.mark.parametrize(
    "job_yaml",
    sorted([*REPO.glob("samples/*/job.yaml"), *REPO.glob("tests/fixtures/jobs/*/job.yaml")]),
    ids=lambda path: path.parent.name,
)
def test_every_sample_and_fixture_manifest_still_validates(job_yaml: Path) -> None:
    validate_manifest(load_manifest_dict(job_yaml.read_text(), str(job_yaml), job_yaml.parent))


@pytest.mark.parametrize(
    "extra",
    [
        {"entrypoint_path": "adder.py", "requirements_path": "supersmart/requirements.txt"},  # the user guide's
        {
            "entrypoint_path": "src/job.py",
            "entrypoint_class": "JobEntrypoint",
            "python_version": "3.11",
            "debian_version": "slim-bookworm",
            "home_page": "/api/v1/webview/",
            "check_requirements": False,
        },
        {"gomod": "go.mod"},
        {"gomod": "sub_dir/go.mod"},
        {"dockerfile_path": "docker/web.Dockerfile"},
        {"python_version": "3.9.18"},
        {"entrypoint_path": "./my-job/entry_point.py"},
    ],
)
def test_racetrack_style_values_stay_valid(extra: dict[str, object]) -> None:
    validate_manifest(
        sample_manifest(
            jobtype_extra=extra,
            system_dependencies=[
                "libgomp1",
                "curl=7.88.1-10+deb12u5",
                "libc6:amd64",
                "git/bookworm-backports",
                "g++",
                "python3.11-dev",
            ],
            git={
                "remote": "https://github.com/TheRacetrack/racetrack",
                "branch": "master",
                "directory": "sample/python-class",
            },
        )
    )


# --- item 5: symlinks in a clone never lead the daemon out of the job's directory ---------------------------


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(cwd),
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com",
        },
    )


def repository(tmp_path: Path, links: dict[str, str], files: dict[str, str] | None = None) -> str:
    """A local repository with these committed files and symlinks; its file:// remote."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name, text in (files or {}).items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    for name, target in links.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).symlink_to(target)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "links")
    return f"file://{repo}"


@pytest.fixture
def git_builder(make_settings: object, runtime: FakeRuntime) -> ImageBuilder:
    settings: Settings = make_settings(python_base_image=BASE, git_allowed_schemes="file")  # type: ignore[operator]
    open_database(settings.database_path)
    return ImageBuilder(settings, runtime, Vault(b"k" * 32), "http://172.18.0.1:7102")


def fetch(
    builder: ImageBuilder, tmp_path: Path, remote: str, directory: str, jobtype: str = "dockerfile", **manifest: object
) -> Path:
    parsed = validate_manifest(
        sample_manifest(
            name="web",
            jobtype=f"{jobtype}:latest",
            jobtype_extra=None,
            git={"remote": remote, "directory": directory},
            **manifest,
        )
    )
    deployment = Deployment.create(job_name="web", job_version="0.0.1", manifest_yaml=parsed.yaml)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    return builder.fetch_source(
        parsed, builtin(jobtype), workspace, jobsecrets.NONE, build_context=None, report=DeploymentRecord(deployment)
    ).job_dir


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    """Stands for a directory of the daemon's host (DATA_DIR, say): nothing in it may be read or deleted."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret.env").write_text("HOST_FILE=keep me\n")
    (host / "secret-key").write_text("the daemon's key\n")
    (host / "Dockerfile").write_text("FROM scratch\n")
    return host


def test_a_git_directory_that_is_a_link_out_of_the_clone_is_refused_and_deletes_nothing(
    git_builder: ImageBuilder, tmp_path: Path, host_dir: Path
) -> None:
    # The reported case: the context followed the link to a host directory, and cleaning the
    # secret env file out of it deleted the host's file.
    remote = repository(tmp_path, {"job": str(host_dir)})

    with pytest.raises(ValidationError, match="git.directory: 'job' is a link to outside the repository"):
        fetch(git_builder, tmp_path, remote, "job", secret_runtime_env_file="secret.env")

    assert (host_dir / "secret.env").read_text() == "HOST_FILE=keep me\n"


@pytest.mark.parametrize(
    ("link", "target"),
    [
        ("job/Dockerfile", "{host}/secret-key"),  # read through the template loader before
        ("job/secret.env", "{host}/secret.env"),  # deleted on the host before
        ("job/conf", "{host}"),
        ("job/up", "../../"),
    ],
)
def test_a_link_in_the_cloned_job_directory_that_leaves_it_is_refused(
    git_builder: ImageBuilder, tmp_path: Path, host_dir: Path, link: str, target: str
) -> None:
    remote = repository(tmp_path, {link: target.format(host=host_dir)}, {"job/Dockerfile.real": "FROM scratch\n"})

    with pytest.raises(ValidationError) as caught:
        fetch(git_builder, tmp_path, remote, "job", secret_runtime_env_file="secret.env")

    assert caught.value.message == f"git.directory: link {link.removeprefix('job/')!r} points outside the job directory"
    assert (host_dir / "secret.env").read_text() == "HOST_FILE=keep me\n"


def test_links_inside_the_job_directory_are_kept_and_a_linked_secret_file_is_unlinked_not_followed(
    git_builder: ImageBuilder, tmp_path: Path
) -> None:
    remote = repository(
        tmp_path,
        {"job/Dockerfile": "docker/web.Dockerfile", "job/secret.env": "data.txt"},
        {"job/docker/web.Dockerfile": "FROM scratch\n", "job/data.txt": "job data\n"},
    )

    job_dir = fetch(git_builder, tmp_path, remote, "job", secret_runtime_env_file="secret.env")

    assert not (job_dir / "secret.env").is_symlink() and not (job_dir / "secret.env").exists()
    assert (job_dir / "data.txt").read_text() == "job data\n"  # the link's target is the job's: kept
    assert (job_dir / "Dockerfile").read_text() == "FROM scratch\n"


def test_a_jobs_dockerfile_that_links_out_of_the_job_directory_is_never_read(
    builder: ImageBuilder, runtime: FakeRuntime, tmp_path: Path, host_dir: Path
) -> None:
    # An upload's links are refused when it is unpacked; this is the builder's own guard behind that.
    job = tmp_path / "job"
    job.mkdir()
    (job / "Dockerfile").symlink_to(host_dir / "secret-key")

    for jobtype in ("dockerfile", "docker-proxy"):
        with pytest.raises(ValidationError, match="jobtype_extra.dockerfile_path: 'Dockerfile' is a link to outside"):
            build(builder, job, jobtype)
    assert runtime.contexts == {}


# --- item 13: git sees a minimal environment, its errors are kept, remotes stay outside the daemon's network --


@pytest.fixture
def fake_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `git` first on PATH that records the environment it was given, then fails like git does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    seen = tmp_path / "git-env.txt"
    script = bin_dir / "git"
    script.write_text(f"#!/bin/sh\nenv > {seen}\necho \"fatal: repository 'x.git' not found\" >&2\nexit 128\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    monkeypatch.setenv("RACETRACK_SECRET_KEY", "the-daemons-secret-key")
    monkeypatch.setenv("RACETRACK_ADMIN_TOKEN", "the-admin-token")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "a-cloud-key")
    monkeypatch.setenv("https_proxy", "http://proxy.corp:3128")
    return seen


def test_git_runs_without_the_daemons_secrets_in_its_environment(fake_git: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError):
        clone("https://git.example.com/x.git", None, ".", None, tmp_path / "clone", timeout=30)

    seen = dict(line.split("=", 1) for line in fake_git.read_text().splitlines() if "=" in line)
    assert not [name for name in seen if name.startswith("RACETRACK_")]
    assert "the-daemons-secret-key" not in fake_git.read_text() and "a-cloud-key" not in fake_git.read_text()
    assert seen["https_proxy"] == "http://proxy.corp:3128"  # what git needs is still there
    assert seen["GIT_TERMINAL_PROMPT"] == "0" and "PATH" in seen


def test_gits_own_error_text_reaches_the_user(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "x.git"

    with pytest.raises(BuildError) as caught:
        clone(f"file://{missing}", None, ".", None, tmp_path / "clone", timeout=30)

    message = caught.value.message
    assert message.startswith(f"cannot fetch file://{missing}: ")
    assert "does not appear to be a git repository" in message or "not found" in message
    assert not message.endswith("'")  # was: "cannot fetch …x.git: '"


def test_credentials_in_a_stored_remote_are_never_shown(tmp_path: Path) -> None:
    # New manifests cannot hold them (the schema refuses); one stored before the check still may.
    remote = "http://deploy-bot:hunter2-token@127.0.0.1:9/x.git"

    with pytest.raises(BuildError) as caught:
        clone(remote, None, ".", GitCredentials("u", "s3cr3t-pass"), tmp_path / "clone", timeout=30)

    assert "hunter2-token" not in caught.value.message and "s3cr3t-pass" not in caught.value.message
    assert "cannot fetch http://***@127.0.0.1:9/x.git: " in caught.value.message
    assert redact_remote(remote) == "http://***@127.0.0.1:9/x.git"


@pytest.mark.parametrize(
    "remote",
    [
        "http://127.0.0.1:9/x.git",
        "https://localhost/x.git",
        "git://127.0.0.2/x.git",
        "ssh://git@10.1.2.3/x.git",
        "git@192.168.1.10:org/x.git",
        "https://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/x.git",
        "https://[::ffff:127.0.0.1]/x.git",
        "http://0.0.0.0/x.git",
        "https://100.64.0.1/x.git",
        "https://[fd00::1]/x.git",
    ],
)
def test_a_remote_on_the_daemons_own_network_is_refused_by_default(remote: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_remote_address(remote, allow_private=False)

    assert caught.value.message.startswith("git.remote: ")
    assert "loopback, private or link-local" in caught.value.message
    assert check_remote_address(remote, allow_private=True) == []  # the operator's choice


def test_a_public_remote_is_allowed_and_its_checked_addresses_are_returned_for_pinning() -> None:
    assert check_remote_address("https://140.82.121.3/org/x.git", allow_private=False) == ["140.82.121.3"]
    assert check_remote_address("file:///srv/git/x.git", allow_private=False) == []  # no network: schemes decide


def test_the_default_settings_refuse_a_loopback_remote_before_git_runs(
    make_settings: object, runtime: FakeRuntime, fake_git: Path, tmp_path: Path
) -> None:
    settings: Settings = make_settings(git_allowed_schemes="http")  # type: ignore[operator]
    assert settings.git_allow_private_remotes is False
    open_database(settings.database_path)
    builder = ImageBuilder(settings, runtime, Vault(b"k" * 32), "http://172.18.0.1:7102")

    with pytest.raises(ValidationError, match=r"git.remote: 127.0.0.1 is 127.0.0.1, a loopback"):
        fetch(builder, tmp_path, "http://127.0.0.1:8080/x.git", ".")
    assert not fake_git.exists()  # git never ran


def render_builtin(name: str, extra: dict[str, object]) -> str:
    from builders.dockerfile import render_dockerfile
    from builders.recipe import template_variables

    job_type = builtin(name)
    parsed = validate_manifest(sample_manifest(jobtype=f"{name}:latest", jobtype_extra=None))
    variables = template_variables(
        manifest=parsed,
        job_type=job_type,
        base_image="base",
        runtime_image="runtime",
        build={"ca_bundle": False, "pip_index_url": None, "secrets_url": ""},
        git_version="",
        racetrackd_version="0",
    )
    variables["jobtype_extra"] = extra  # as if the schema had let it through
    return render_dockerfile(job_type.plugin_dir, job_type.dockerfile_template, variables)


def test_job_type_templates_quote_what_they_put_in_shell_and_copy_lines_as_well() -> None:
    # Defence in depth behind the schema: a value the schema missed still cannot start a command
    # or an instruction through the built-in templates.
    from builders.dockerfile import docker_quote
    from racetrackd.errors import JobTypeError

    golang = render_builtin("golang", {"gomod": "sub/x.mod; $(id) `id`"})
    assert "RUN cp 'sub/x.mod; $(id) `id`' go.mod && " in golang
    with pytest.raises(JobTypeError, match="holds a control character"):
        render_builtin("golang", {"gomod": "sub/x.mod\nRUN id"})

    python = render_builtin("python3", {"entrypoint_path": "e.py", "requirements_path": "r.txt /etc/\nRUN id"})
    assert 'COPY ["job/r.txt /etc/\\nRUN id", "/opt/racetrack/job-requirements.txt"]\n' in python
    assert "\nRUN id" not in python
    assert docker_quote("a\r\nb") == '"a\\r\\nb"'


def test_an_unresolvable_host_is_refused_unless_a_proxy_resolves_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValidationError, match="git.remote: cannot resolve the host 'git.invalid'"):
        check_remote_address("https://git.invalid/x.git", allow_private=False)

    monkeypatch.setenv("https_proxy", "http://proxy.corp:3128")  # the corporate-proxy case
    assert check_remote_address("https://git.invalid/x.git", allow_private=False) == []
    monkeypatch.setenv("no_proxy", "git.invalid")
    with pytest.raises(ValidationError, match="cannot resolve"):
        check_remote_address("https://git.invalid/x.git", allow_private=False)
