"""Isolation of jobs and builds, without Docker: the container spec the deployer asks for, what the
Docker adapter makes of it, the job types' `hardening:` declarations, and the networks builds and
jobs are put on. tests/integration/test_security_isolation.py checks the same against the engine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pluginbundle import PluginInvalid, PluginManifest
from racetrackd.accounts import Accounts, ChangeSignal
from racetrackd.addressing import Addressing
from racetrackd.building import ImageBuilder
from racetrackd.db import Job, JobStatus, open_database
from racetrackd.deployer import Deployer
from racetrackd.jobtypes import Confinement, discover, load_job_types
from racetrackd.plugins import PluginStore
from racetrackd.runtime import ContainerSpec, DockerRuntime, Hardening
from racetrackd.settings import BUILTIN_PLUGINS_DIR, Settings
from racetrackd.vault import Vault
from tests.unit.fakes import FakeRuntime

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
    return Deployer(settings, runtime, PluginStore.from_settings(settings), addressing,
                    Accounts(vault, ChangeSignal.in_data_dir(settings.data_dir)),
                    ImageBuilder(settings, runtime, vault, "http://172.18.0.1:7102"))


def _recreated_spec(settings: Settings, runtime: FakeRuntime, job_type_version: str,
                    monkeypatch: pytest.MonkeyPatch) -> ContainerSpec:
    """The spec the deployer starts a lost job's container with (the same `_run` a deployment uses)."""
    deployer = _deployer(settings, runtime)
    monkeypatch.setattr(deployer, "_wait_until_ready", lambda *args: None)
    job = Job.create(name="adder", version="1.0.0", status=JobStatus.RUNNING, manifest_yaml=MANIFEST[job_type_version],
                     job_type_version=job_type_version, image_name="img", container_name="job-adder-v-1-0-0",
                     internal_name="127.0.0.1:1", deployment_timestamp=1)
    deployer.recreate(job)
    return runtime.containers["job-adder-v-1-0-0"]


# --- what the deployer asks for ---------------------------------------------------------------------

def test_a_python3_job_runs_read_only_without_capabilities_under_a_pids_limit(
        make_settings: Callable[..., Settings], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _recreated_spec(make_settings(JOB_PIDS_LIMIT="300", JOB_TMP_SIZE="32Mi"), runtime,
                           "python3:1.0.0", monkeypatch)

    assert spec.hardening == Hardening(read_only_root=True, capabilities=(), pids_limit=300,
                                       tmp_size=32 * 1024 * 1024)


def test_a_dockerfile_job_keeps_a_writable_root_but_loses_capabilities_and_gets_the_pids_limit(
        make_settings: Callable[..., Settings], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _recreated_spec(make_settings(), runtime, "dockerfile:1.0.0", monkeypatch)

    assert spec.hardening.read_only_root is False
    assert spec.hardening.capabilities == ()
    assert spec.hardening.pids_limit == 1024  # RACETRACK_JOB_PIDS_LIMIT's default


def test_a_job_whose_job_type_was_removed_gets_the_common_hardening(
        make_settings: Callable[..., Settings], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
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
    runtime.run_container(ContainerSpec(name="job-a", image="img", env={}, labels={}, network="racetrack",
                                        publish_port=False, hardening=hardening))
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
    return PluginManifest(name="p", version="1.0.0", category="job-type",
                          job_types={"t": {"dockerfile_template": "Dockerfile.j2", "hardening": hardening}})


def test_a_job_type_may_add_back_a_capability_by_name(tmp_path: Path) -> None:
    (job_type,) = load_job_types(tmp_path, _plugin({"capabilities": ["cap_net_bind_service"]}))

    assert job_type.confinement == Confinement(read_only_root=False, capabilities=("NET_BIND_SERVICE",))


@pytest.mark.parametrize(("hardening", "field"), [
    ({"read_only_root": "yes"}, "hardening.read_only_root"),
    ({"capabilities": "ALL"}, "hardening.capabilities"),
    ({"capabilities": ["NET_ADMIN; rm -rf"]}, "hardening.capabilities"),
    ({"privileged": True}, "hardening"),
])
def test_a_malformed_hardening_section_is_refused_naming_the_field(tmp_path: Path, hardening: Any,
                                                                   field: str) -> None:
    with pytest.raises(PluginInvalid, match=f"job_types.t.{field}"):
        load_job_types(tmp_path, _plugin(hardening))
