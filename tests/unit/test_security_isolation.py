"""Isolation of jobs and builds, without Docker: the container spec the deployer asks for, what the
Docker adapter makes of it, the job types' `hardening:` declarations, and the networks builds and
jobs are put on. tests/integration/test_security_isolation.py checks the same against the engine."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from builders.dockerfile import render_dockerfile
from jobmanifest import validate_manifest
from pluginbundle import PluginInvalid, PluginManifest
from racetrackd.auth.accounts import Accounts, ChangeSignal
from racetrackd.auth.vault import Vault
from racetrackd.db import Deployment, Job, JobStatus, open_database
from racetrackd.deploy import jobsecrets
from racetrackd.deploy.building import DeploymentRecord, ImageBuilder
from racetrackd.deploy.deployer import Deployer
from racetrackd.docker.runtime import ICC_OPTION, ContainerSpec, DockerRuntime, Hardening
from racetrackd.jobs.addressing import CONTAINER_IP, CONTAINER_NAME, Addressing, daemon_url_for_builds, prepare_networks
from racetrackd.plugins.jobtypes import Confinement, discover, load_job_types
from racetrackd.plugins.store import PluginStore
from racetrackd.settings import BUILTIN_PLUGINS_DIR, Settings
from tests.unit.fakes import FakeRuntime, dockerfile_variables, sample_manifest, write_job

pytestmark = pytest.mark.security

MANIFEST = {
    "python3:1.0.0": "name: adder\nowner_email: a@example.com\nversion: 1.0.0\njobtype: python3:latest\n"
    "jobtype_extra:\n  entrypoint_path: entrypoint.py\n",
    "dockerfile:1.0.0": "name: adder\nowner_email: a@example.com\nversion: 1.0.0\njobtype: dockerfile:latest\n",
}


def _deployer(settings: Settings, runtime: FakeRuntime) -> Deployer:
    open_database(settings.database_path)
    vault = Vault(b"k" * 32)
    addressing = Addressing(mode="container-ip", daemon_host="172.18.0.1", port=settings.port)
    return Deployer(
        settings,
        runtime,
        PluginStore.from_settings(settings),
        addressing,
        Accounts(vault, ChangeSignal.in_data_dir(settings.data_dir)),
        ImageBuilder(settings, runtime, vault, "http://172.18.0.1:7102"),
    )


def _recreated_spec(
    settings: Settings, runtime: FakeRuntime, job_type_version: str, monkeypatch: pytest.MonkeyPatch
) -> ContainerSpec:
    """The spec the deployer starts a lost job's container with (the same `_run` a deployment uses)."""
    deployer = _deployer(settings, runtime)
    monkeypatch.setattr(deployer, "_wait_until_ready", lambda *args: ("job:7000", args[-1]))  # ready at once
    job = Job.create(
        name="adder",
        version="1.0.0",
        status=JobStatus.RUNNING,
        manifest_yaml=MANIFEST[job_type_version],
        job_type_version=job_type_version,
        image_name="img",
        container_name="job-adder-v-1-0-0",
        internal_name="127.0.0.1:1",
        deployment_timestamp=1,
    )
    deployer.recreate(job)
    return runtime.containers["job-adder-v-1-0-0"]


# --- what the deployer asks for ---------------------------------------------------------------------


def test_a_python3_job_runs_read_only_without_capabilities_under_a_pids_limit(
    make_settings: Callable[..., Settings], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _recreated_spec(
        make_settings(JOB_PIDS_LIMIT="300", JOB_TMP_SIZE="32Mi"), runtime, "python3:1.0.0", monkeypatch
    )

    assert spec.hardening == Hardening(read_only_root=True, capabilities=(), pids_limit=300, tmp_size=32 * 1024 * 1024)


def test_a_dockerfile_job_keeps_a_writable_root_but_loses_capabilities_and_gets_the_pids_limit(
    make_settings: Callable[..., Settings], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _recreated_spec(make_settings(), runtime, "dockerfile:1.0.0", monkeypatch)

    assert spec.hardening.read_only_root is False
    assert spec.hardening.capabilities == ()
    assert spec.hardening.pids_limit == 1024  # RACETRACK_JOB_PIDS_LIMIT's default


def test_a_job_starts_at_dockers_default_cpu_weight_and_gets_its_own_once_ready(
    make_settings: Callable[..., Settings], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # cpu_min's weight (10 of 1024 by default) made a job starting on a busy host wait for a sliver
    # of a core; the weight is for sharing the CPU once the job serves.
    spec = _recreated_spec(make_settings(JOB_CPU_MIN="50m"), runtime, "python3:1.0.0", monkeypatch)

    assert spec.limits is not None and spec.limits.cpu_shares == 0  # Docker's default while it starts
    assert runtime.calls_to("set_cpu_shares") == [("job-adder-v-1-0-0", 51)]
    assert [name for name, _ in runtime.calls].index("set_cpu_shares") > [name for name, _ in runtime.calls].index(
        "run_container"
    )


def test_a_job_whose_job_type_was_removed_gets_the_common_hardening(
    make_settings: Callable[..., Settings], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings()
    deployer = _deployer(settings, runtime)

    assert deployer._confinement_of("gone:9.9.9") == Confinement()


# --- what the Docker adapter sends the engine -------------------------------------------------------


class _Containers:
    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []

    def run(self, image: str, **kwargs: Any) -> None:
        self.runs.append(kwargs)


class _Client:
    def __init__(self) -> None:
        self.containers = _Containers()


def _engine_args(hardening: Hardening) -> dict[str, Any]:
    client = _Client()
    runtime = DockerRuntime(lambda: client)  # type: ignore[arg-type, return-value]
    runtime.run_container(
        ContainerSpec(
            name="job-a", image="img", env={}, labels={}, network="racetrack", publish_port=False, hardening=hardening
        )
    )
    return client.containers.runs[0]


def test_every_container_drops_all_capabilities_and_cannot_gain_privileges() -> None:
    args = _engine_args(Hardening(pids_limit=100))

    assert args["cap_drop"] == ["ALL"]
    assert args["cap_add"] is None
    assert args["security_opt"] == ["no-new-privileges:true"]
    assert args["pids_limit"] == 100
    assert args["read_only"] is False
    assert "tmpfs" not in args


def test_a_read_only_root_comes_with_a_bounded_tmpfs_at_tmp() -> None:
    args = _engine_args(Hardening(read_only_root=True, capabilities=("NET_BIND_SERVICE",), tmp_size=1024))

    assert args["read_only"] is True
    assert args["tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=1024"}
    assert args["cap_add"] == ["NET_BIND_SERVICE"]


# --- what job types declare ---------------------------------------------------------------------------


def test_built_in_job_types_declare_their_hardening() -> None:
    declared = {job_type.name: job_type.confinement for job_type in discover([BUILTIN_PLUGINS_DIR])}

    assert declared["python3"] == Confinement(read_only_root=True)
    assert declared["golang"] == Confinement(read_only_root=True)
    assert declared["dockerfile"] == Confinement(read_only_root=False)
    assert declared["docker-proxy"] == Confinement(read_only_root=False)


def _plugin(hardening: Any) -> PluginManifest:
    return PluginManifest(
        name="p",
        version="1.0.0",
        category="job-type",
        job_types={"t": {"dockerfile_template": "Dockerfile.j2", "hardening": hardening}},
    )


def test_a_job_type_may_add_back_a_capability_by_name(tmp_path: Path) -> None:
    (job_type,) = load_job_types(tmp_path, _plugin({"capabilities": ["cap_net_bind_service"]}))

    assert job_type.confinement == Confinement(read_only_root=False, capabilities=("NET_BIND_SERVICE",))


@pytest.mark.parametrize(
    ("hardening", "field"),
    [
        ({"read_only_root": "yes"}, "hardening.read_only_root"),
        ({"capabilities": "ALL"}, "hardening.capabilities"),
        ({"capabilities": ["NET_ADMIN; rm -rf"]}, "hardening.capabilities"),
        ({"privileged": True}, "hardening"),
    ],
)
def test_a_malformed_hardening_section_is_refused_naming_the_field(tmp_path: Path, hardening: Any, field: str) -> None:
    with pytest.raises(PluginInvalid, match=f"job_types.t.{field}"):
        load_job_types(tmp_path, _plugin(hardening))


# --- networks: builds off the host's, jobs kept apart -----------------------------------------------


def test_a_daemon_on_the_host_keeps_jobs_and_builds_on_isolated_networks_of_their_own(
    make_settings: Callable[..., Settings], runtime: FakeRuntime
) -> None:
    settings = make_settings(NETWORK="rt", JOB_ADDRESSING="container-ip")

    addressing = prepare_networks(settings, runtime)

    assert addressing.mode == CONTAINER_IP
    assert runtime.isolated_networks == {"rt", "rt-build"}
    assert runtime.calls_to("connect_container") == []
    # builds reach the daemon where jobs do: the host's address on the jobs' bridge, not 127.0.0.1
    assert daemon_url_for_builds(addressing, runtime) == f"http://172.18.0.1:{settings.port}"


def test_a_daemon_in_a_container_joins_the_build_network_so_builds_reach_it_there(
    make_settings: Callable[..., Settings], runtime: FakeRuntime
) -> None:
    runtime.own, runtime.own_name = {"rt"}, "racetrackd"
    runtime.networks.add("rt")  # made by docker-compose
    runtime.run_container(
        ContainerSpec(name="racetrackd", image="racetrackd", env={}, labels={}, network="rt", publish_port=False)
    )
    settings = make_settings(NETWORK="rt")

    addressing = prepare_networks(settings, runtime)

    assert addressing.mode == CONTAINER_NAME
    assert ("rt-build", False) in runtime.calls_to("ensure_network")  # the daemon must reach builds' peers: itself
    assert runtime.calls_to("connect_container") == [("rt-build", "racetrackd")]
    assert daemon_url_for_builds(addressing, runtime).startswith("http://172.18.0.")
    assert ("racetrackd", "rt-build") in runtime.calls_to("container_ip")


def test_a_shared_network_made_before_isolation_with_jobs_attached_is_reported(
    make_settings: Callable[..., Settings], runtime: FakeRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    runtime.networks.add("rt")  # an older racetrackd made it open, and jobs are attached

    prepare_networks(make_settings(NETWORK="rt", JOB_ADDRESSING="container-ip"), runtime)

    assert "jobs on it can reach each other's port 7000 directly" in caplog.text
    assert "docker network rm rt" in caplog.text


def test_image_builds_run_on_the_build_network_not_the_hosts(
    make_settings: Callable[..., Settings], runtime: FakeRuntime, tmp_path: Path
) -> None:
    settings = make_settings(NETWORK="rt")
    open_database(settings.database_path)
    builder = ImageBuilder(settings, runtime, Vault(b"k" * 32), "http://172.18.0.1:7102")
    job_dir = write_job(tmp_path / "job", {"entrypoint.py": "class J:\n    def perform(self):\n        return 1\n"})
    manifest = validate_manifest(sample_manifest())
    deployment = Deployment.create(job_name="adder", job_version="0.0.1", manifest_yaml=manifest.yaml)
    job_type = next(jt for jt in discover([BUILTIN_PLUGINS_DIR]) if jt.name == "python3")

    tag = builder.build(
        manifest, job_type, job_dir, jobsecrets.NONE, deployment_id=deployment.id, report=DeploymentRecord(deployment)
    ).image

    assert runtime.build_networks[tag] == "rt-build"
    assert "rt-build" in runtime.isolated_networks


class _Api:
    def __init__(self) -> None:
        self.builds: list[dict[str, Any]] = []

    def build(self, **kwargs: Any) -> list[dict[str, Any]]:
        self.builds.append(kwargs)
        return [{"aux": {"ID": "sha256:1"}}]


class _BuildClient:
    def __init__(self) -> None:
        self.api = _Api()


def test_the_docker_adapter_builds_on_the_network_it_is_given() -> None:
    client = _BuildClient()
    runtime = DockerRuntime(lambda: client)  # type: ignore[arg-type, return-value]

    runtime.build_image(io.BytesIO(b""), "Dockerfile", "t", {}, lambda line: None, network="rt-build")

    assert client.api.builds[0]["network_mode"] == "rt-build"


class _Network:
    def __init__(self, name: str, options: dict[str, str], containers: dict[str, Any]) -> None:
        self.name = name
        self.attrs = {"Options": options, "Containers": containers}
        self.removed = False

    def reload(self) -> None:
        pass

    def remove(self) -> None:
        self.removed = True


class _Networks:
    def __init__(self, existing: list[_Network]) -> None:
        self.existing = existing
        self.created: list[dict[str, Any]] = []

    def list(self, names: list[str]) -> list[_Network]:
        return [n for n in self.existing if not n.removed and n.name.startswith(names[0])]

    def create(self, name: str, **kwargs: Any) -> _Network:
        self.created.append({"name": name, **kwargs})
        made = _Network(name, dict(kwargs.get("options") or {}), {})
        self.existing.append(made)
        return made


class _NetClient:
    def __init__(self, existing: list[_Network]) -> None:
        self.networks = _Networks(existing)


def test_an_isolated_network_is_made_with_inter_container_traffic_off() -> None:
    client = _NetClient([_Network("rt-build", {}, {})])  # a prefix match is another network
    runtime = DockerRuntime(lambda: client)  # type: ignore[arg-type, return-value]

    assert runtime.ensure_network("rt", isolated=True) is True
    assert client.networks.created[0]["options"] == {ICC_OPTION: "false"}


def test_an_open_network_left_from_before_is_remade_isolated_while_nothing_is_attached() -> None:
    old = _Network("rt", {}, {})
    client = _NetClient([old])
    runtime = DockerRuntime(lambda: client)  # type: ignore[arg-type, return-value]

    assert runtime.ensure_network("rt", isolated=True) is True
    assert old.removed
    assert client.networks.created[0]["options"] == {ICC_OPTION: "false"}


def test_an_open_network_with_containers_attached_is_left_alone_and_reported_open() -> None:
    old = _Network("rt", {}, {"abc": {"Name": "job-adder-v-1"}})
    client = _NetClient([old])
    runtime = DockerRuntime(lambda: client)  # type: ignore[arg-type, return-value]

    assert runtime.ensure_network("rt", isolated=True) is False
    assert not old.removed and client.networks.created == []


# --- builds of the job's own code, not as root -------------------------------------------------------


def test_a_python3_jobs_requirements_are_installed_as_the_jobs_user() -> None:
    job_type = next(jt for jt in discover([BUILTIN_PLUGINS_DIR]) if jt.name == "python3")
    variables = dockerfile_variables(
        sample_manifest(jobtype_extra={"entrypoint_path": "entrypoint.py", "requirements_path": "requirements.txt"}),
        job_type_version="python3:1.0.0",
        base_image="python:3.11-slim",
        build={"ca_bundle": False, "pip_index_url": None, "secrets_url": ""},
    )
    lines = render_dockerfile(job_type.plugin_dir, job_type.dockerfile_template, variables).splitlines()

    install = next(i for i, line in enumerate(lines) if "pip install -r /opt/racetrack/job-requirements.txt" in line)
    users = [line for line in lines[:install] if line.startswith("USER ")]
    assert users[-1:] == ["USER job"]
