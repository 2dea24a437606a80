"""Adversarial tests: what users send that reaches a build (a job's Dockerfile, manifest values that
land in Dockerfiles, symlinks in a clone, git remotes). Each reproduces an attack from the security
review and asserts what the attacker would see: an error naming the problem, never their payload run."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from jobmanifest import validate_manifest
from racetrackd import jobsecrets
from racetrackd.building import ImageBuilder
from racetrackd.db import Deployment, open_database
from racetrackd.errors import ValidationError
from racetrackd.jobtypes import JobType, discover, resolve
from racetrackd.settings import BUILTIN_PLUGINS_DIR, Settings
from racetrackd.vault import Vault
from tests.unit.fakes import FakeRuntime, sample_manifest

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
    return builder.build(deployment, parsed, builtin(jobtype), job_dir, jobsecrets.NONE)


def rendered_dockerfile(runtime: FakeRuntime, tag: str) -> str:
    with tarfile.open(fileobj=io.BytesIO(runtime.contexts[tag][1]), mode="r:") as tar:
        member = tar.extractfile("Dockerfile.racetrack")
        assert member is not None
        return member.read().decode()


def job_with_dockerfile(tmp_path: Path, text: str) -> Path:
    job = tmp_path / "job"
    job.mkdir(exist_ok=True)
    (job / "Dockerfile").write_text(text)
    return job


# --- item 1: a job's Dockerfile is rendered in a sandbox, with the documented variables only ---------------

@pytest.mark.parametrize("payload", [
    "{{ cycler.__init__.__globals__.os.getuid() }}",  # the reported one: printed the daemon's uid
    "{{ cycler.__init__.__globals__.os.listdir('.') }}",
    "{{ lipsum.__globals__['os'].getpid() }}",
    "{{ self.__init__.__globals__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ build_env.__class__.__init__.__globals__ }}",
    "{{ manifest.update({'name': 'x'}) }}",  # the variables are read-only
    "{{ job_name.__class__ }}",
])
def test_a_hostile_dockerfile_template_fails_the_build_and_runs_nothing(
        builder: ImageBuilder, runtime: FakeRuntime, tmp_path: Path, payload: str) -> None:
    job = job_with_dockerfile(tmp_path, f'FROM {{{{ base_image }}}}\nRUN echo "{payload}"\n')

    with pytest.raises(ValidationError) as caught:
        build(builder, job)

    message = caught.value.message
    assert message.startswith("jobtype_extra.dockerfile_path: Dockerfile ")
    assert str(os.getpid()) not in message and f"uid {os.getuid()}" not in message
    assert runtime.contexts == {}  # nothing reached Docker


@pytest.mark.parametrize("include", [
    '{% include "package_index.j2" %}',  # a shared template: only plugin templates may include it
    '{% include "/etc/passwd" %}',
    '{% include "../../racetrackd/settings.py" %}',
    '{% include "server.py" %}',  # another file of the job
    '{% include "Dockerfile" %}',  # itself: no recursion either
    '{% import "server.py" as x %}',
    '{% extends "server.py" %}',
])
def test_a_jobs_dockerfile_can_load_no_other_template(
        builder: ImageBuilder, runtime: FakeRuntime, tmp_path: Path, include: str) -> None:
    job = job_with_dockerfile(tmp_path, f"FROM {{{{ base_image }}}}\n{include}\n")
    (job / "server.py").write_text("SECRET = 'job file'\n")

    with pytest.raises(ValidationError, match="cannot include, import or extend other templates"):
        build(builder, job)
    assert runtime.contexts == {}


@pytest.mark.parametrize("expression", ["range(3)", "dict(a=1)", "namespace()", "joiner()", "lipsum()",
                                        "runtime_image", "racetrackd_version", "build.pip_index_url"])
def test_only_the_documented_variables_are_defined(builder: ImageBuilder, tmp_path: Path, expression: str) -> None:
    job = job_with_dockerfile(tmp_path, f"FROM {{{{ base_image }}}}\nLABEL x={{{{ {expression} }}}}\n")

    with pytest.raises(ValidationError, match="failed to render"):
        build(builder, job)


@pytest.mark.parametrize("expression", ["'x' * 100000000", "[1] * 100000000", "10 ** 100000000"])
def test_a_template_cannot_make_the_daemon_allocate_without_bound(
        builder: ImageBuilder, tmp_path: Path, expression: str) -> None:
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
        "LABEL p={{ jobtype_extra.get('dockerfile_path', 'Dockerfile') | docker_quote }}\n")

    tag = build(builder, job, build_env={"MODE": "fast"})

    text = rendered_dockerfile(runtime, tag)
    assert text.startswith(f"FROM {BASE}\n")
    assert "ARG PIP_INDEX_URL=https://pypi.corp/simple" in text  # the shared fragment, pre-rendered by the daemon
    assert 'LABEL n="web" v="0.0.1" m="web"' in text
    assert 'ENV MODE="fast"' in text
    assert "unreachable" not in text


def test_a_docker_proxy_dockerfile_is_still_not_rendered(
        builder: ImageBuilder, runtime: FakeRuntime, tmp_path: Path) -> None:
    text = 'FROM scratch\nRUN echo "{{ cycler.__init__.__globals__.os.getuid() }}"\n'
    job = job_with_dockerfile(tmp_path, text)

    tag = build(builder, job, "docker-proxy")

    assert rendered_dockerfile(runtime, tag) == text  # inert: Docker sees the braces as text
