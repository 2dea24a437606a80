"""Jobs and builds isolated, against the real engine (issue items 3 and "isolation of jobs").

One daemon on a network of its own (so the shared `racetrack` network of other test runs is left
alone) runs samples/adder (the target), isolation-probe (a python3 job that reports what it can see
and reach from inside) and build-probe (a docker-proxy job whose RUN step tries to reach the daemon
and the target). What they show, the user sees: container settings, the job's own answers, the
build log.
"""

from __future__ import annotations

import secrets
import shutil
import time
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import pytest
import requests
import yaml

from tests.integration.conftest import FIXTURES, REPO, Daemon, _remove_labelled, launch_daemon, remove_networks

pytestmark = [pytest.mark.integration, pytest.mark.security]

API = "/lifecycle/api/v1"
ADDER = REPO / "samples" / "adder"
PROBE = "/pub/job/isolation-probe/0.0.1/api/v1/perform"
NO_CAPABILITIES = "0000000000000000"
EROFS = 30


def _gateway(docker_client: docker.DockerClient, network: str) -> str:
    return str(docker_client.networks.get(network).attrs["IPAM"]["Config"][0]["Gateway"])


def _container(daemon: Daemon, job_name: str) -> Any:
    container = next(c for c in daemon.containers() if c.labels.get("job-name") == job_name)
    container.reload()
    return container


def _wait_until_served(daemon: Daemon, path: str, payload: Any, timeout: float = 30) -> requests.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = daemon.api("POST", path, json=payload)
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.5)


@pytest.fixture(scope="module")
def iso(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, base_image: str
) -> Iterator[Daemon]:
    network = f"rtd-iso-{uuid.uuid4().hex[:8]}"
    handle = launch_daemon(tmp_path_factory.mktemp("isolation"), docker_client, base_image, RACETRACK_NETWORK=network)
    try:
        yield handle
    finally:
        handle.stop()
        _remove_labelled(docker_client, handle.instance)
        remove_networks(docker_client, network)


@pytest.fixture(scope="module")
def target(iso: Daemon) -> dict[str, Any]:
    """samples/adder, and where it could be reached directly: its address on the jobs' network and
    the host port its 7000 is published on (127.0.0.1)."""
    iso.rtd("submit", str(ADDER), check=True)
    container = _container(iso, "adder")
    network = iso.env["RACETRACK_NETWORK"]
    return {
        "ip": container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"],
        "published": int(container.attrs["NetworkSettings"]["Ports"]["7000/tcp"][0]["HostPort"]),
        "daemon_port": int(iso.env["RACETRACK_PORT"]),
        "gateway": _gateway(iso.docker, network),
    }


@pytest.fixture(scope="module")
def probe(iso: Daemon, target: dict[str, Any]) -> Daemon:
    iso.rtd("submit", str(FIXTURES / "isolation-probe"), check=True)
    granted = iso.api("POST", f"{API}/auth/allow/job_family/isolation-probe/job/adder/scope/call_job")
    assert granted.status_code == 201, granted.text
    return iso


def _probe(daemon: Daemon, **payload: Any) -> dict[str, Any]:
    response = _wait_until_served(daemon, PROBE, payload)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


# --- a job's container -------------------------------------------------------------------------------


def test_a_python3_jobs_container_has_no_capabilities_no_privilege_gain_and_a_pids_limit(probe: Daemon) -> None:
    host_config = _container(probe, "isolation-probe").attrs["HostConfig"]

    assert host_config["CapDrop"] == ["ALL"]
    assert not host_config["CapAdd"]
    assert "no-new-privileges:true" in host_config["SecurityOpt"]
    assert host_config["PidsLimit"] == 1024
    assert host_config["ReadonlyRootfs"] is True
    assert "/tmp" in host_config["Tmpfs"]


def test_from_inside_a_python3_job_has_no_capabilities_and_writes_only_to_tmp(probe: Daemon) -> None:
    seen = _probe(probe)

    assert seen["status"]["Uid"].split()[0] == "1000"
    assert seen["status"]["CapEff"] == NO_CAPABILITIES
    assert seen["status"]["CapPrm"] == NO_CAPABILITIES
    assert seen["status"]["CapBnd"] == NO_CAPABILITIES  # nothing to regain, not even through a setuid binary
    assert seen["status"]["NoNewPrivs"] == "1"
    assert seen["writes"]["/probe"] == f"OSError: errno {EROFS}"
    assert seen["writes"]["/src/job/probe"] == f"OSError: errno {EROFS}"  # its own code stays as built
    assert seen["writes"]["/tmp/probe"] == "written"


def test_a_python3_jobs_requirements_were_installed_from_the_index_not_as_root(probe: Daemon) -> None:
    seen = _probe(probe)

    assert seen["six"] == "1.16.0"  # the build reached the package index from its own network
    assert seen["six_installed_by_uid"] == 1000


def test_a_job_cannot_reach_another_job_or_the_hosts_loopback_only_the_daemon(
    probe: Daemon, target: dict[str, Any]
) -> None:
    direct = f"{target['ip']}:7000"
    own_loopback = f"127.0.0.1:{target['daemon_port']}"
    published_via_host = f"{target['gateway']}:{target['published']}"
    daemon = f"{target['gateway']}:{target['daemon_port']}"

    seen = _probe(
        probe,
        targets=[
            [target["ip"], 7000],
            ["127.0.0.1", target["daemon_port"]],
            [target["gateway"], target["published"]],
            [target["gateway"], target["daemon_port"]],
        ],
    )

    connects = seen["connects"]
    assert connects[direct] != "connected", connects  # past the gateway, and its auth: refused by the engine
    assert connects[own_loopback] != "connected", connects
    assert connects[published_via_host] != "connected", connects  # published on the host's loopback only
    assert connects[daemon] == "connected", connects  # where PUB_URL points: chain calls go this way


def test_chain_calls_through_the_gateway_still_work(probe: Daemon) -> None:
    seen = _probe(probe, chain=True)

    assert seen["chain"] == 42


# --- a build ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def build_probe(iso: Daemon, target: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """build-probe deployed with the targets its RUN step tries; returns {target: what it got}."""
    source = tmp_path_factory.mktemp("build-probe") / "build-probe"
    shutil.copytree(FIXTURES / "build-probe", source)
    manifest = yaml.safe_load((source / "job.yaml").read_text())
    targets = {
        "daemon on the host's loopback": f"127.0.0.1:{target['daemon_port']}",
        "job's published port": f"127.0.0.1:{target['published']}",
        "job directly": f"{target['ip']}:7000",
    }
    # a fresh nonce each run: the RUN step must run, not come from the engine's cache
    manifest["build_env"] = {"TARGETS": " ".join(targets.values()), "NONCE": uuid.uuid4().hex}
    (source / "job.yaml").write_text(yaml.safe_dump(manifest))
    (source / "secret-build.env").write_text(f"BUILD_SECRET={secrets.token_hex(16)}\n")

    iso.rtd("submit", str(source), check=True)  # the build itself works: it reached the secrets endpoint

    logs = iso.api("GET", f"{API}/job/build-probe/0.0.1/build-logs").json()["logs"]
    seen = dict(line.split()[1:3] for line in logs.splitlines() if line.startswith("BUILD-PROBE "))
    return {name: seen.get(address, f"not tried; build log:\n{logs[-3000:]}") for name, address in targets.items()} | {
        "secret": seen.get("secret", "missing")
    }


def test_a_build_cannot_reach_the_daemon_on_the_hosts_loopback(build_probe: dict[str, str]) -> None:
    assert build_probe["daemon on the host's loopback"] == "refused", build_probe


def test_a_build_cannot_reach_a_jobs_published_port_or_the_job_itself(build_probe: dict[str, str]) -> None:
    assert build_probe["job's published port"] == "refused", build_probe
    assert build_probe["job directly"] in ("timeout", "refused"), build_probe  # another bridge: dropped


def test_a_build_still_gets_its_secret_build_env_from_the_daemon(build_probe: dict[str, str]) -> None:
    assert build_probe["secret"] == "present", build_probe


def test_a_docker_proxy_job_runs_without_capabilities_on_a_writable_root(
    iso: Daemon, build_probe: dict[str, str]
) -> None:
    host_config = _container(iso, "build-probe").attrs["HostConfig"]
    served = iso.api("GET", "/pub/job/build-probe/0.0.1/api/v1/probe.py")

    assert served.status_code == 200, served.text
    assert host_config["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host_config["SecurityOpt"]
    assert host_config["ReadonlyRootfs"] is False  # the job type does not promise a read-only root


# --- golang ----------------------------------------------------------------------------------------------


def test_a_golang_job_runs_on_a_read_only_root_without_capabilities(iso: Daemon) -> None:
    iso.rtd("submit", str(REPO / "samples" / "go-adder"), check=True)

    answer = _wait_until_served(iso, "/pub/job/go-adder/latest/api/v1/perform", {"a": 40, "b": 2})
    host_config = _container(iso, "go-adder").attrs["HostConfig"]

    assert answer.status_code == 200, answer.text
    assert answer.json() == 42
    assert host_config["ReadonlyRootfs"] is True
    assert host_config["CapDrop"] == ["ALL"]
