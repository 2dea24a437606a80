"""Swarm mode through the real daemon on a single-node swarm of the host's engine (marker `swarm`).

The `swarm` fixture makes the host's engine a swarm manager (`docker swarm init --advertise-addr
127.0.0.1`) if it is in no swarm, and leaves the swarm at the end only if it made it. Plain containers
of other tests and daemons on the engine are not affected by swarm mode. Each daemon here runs jobs
on an overlay network of its own, removed at the end with its services.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests
import yaml

from cli.packing import pack
from tests.integration.conftest import FIXTURES, REPO, Daemon, _remove_labelled, launch_daemon, remove_networks
from tests.integration.steady import adder_status, steady_calls
from tests.launcher import DaemonFailed

pytestmark = [pytest.mark.integration, pytest.mark.swarm]

CALL = "/api/v1/perform"


@pytest.fixture(scope="module")
def swarm(docker_client: docker.DockerClient) -> Iterator[None]:
    state = docker_client.info()["Swarm"]["LocalNodeState"]
    made = False
    if state == "inactive":
        subprocess.run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"], check=True, capture_output=True)
        made = True
    elif state != "active" or not docker_client.info()["Swarm"].get("ControlAvailable"):
        pytest.skip(f"the engine is a swarm worker or in transition ({state}): swarm tests need a manager")
    try:
        yield
    finally:
        if made:
            subprocess.run(["docker", "swarm", "leave", "--force"], check=False, capture_output=True)


def _remove_services(client: docker.DockerClient, instance: str) -> None:
    for service in client.services.list(filters={"label": f"racetrackd.instance={instance}"}):
        try:
            service.remove()
        except docker.errors.NotFound:
            pass
    deadline = time.monotonic() + 30  # their tasks' containers go asynchronously
    while time.monotonic() < deadline and client.containers.list(
        all=True, filters={"label": f"racetrackd.instance={instance}"}
    ):
        time.sleep(0.5)


def _launch(tmp: Path, client: docker.DockerClient, base_image: str, network: str, **extra: str) -> Daemon:
    return launch_daemon(
        tmp,
        client,
        base_image,
        RACETRACK_ORCHESTRATOR="swarm",
        RACETRACK_NETWORK=network,
        RACETRACK_DRAIN_TIMEOUT="5",
        **extra,
    )


@pytest.fixture(scope="module")
def swarm_daemon(
    swarm: None, tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, base_image: str
) -> Iterator[Daemon]:
    network = f"rt-swarm-{uuid.uuid4().hex[:8]}"
    handle = _launch(tmp_path_factory.mktemp("swarm-data"), docker_client, base_image, network)
    try:
        yield handle
    finally:
        handle.stop()
        _remove_services(docker_client, handle.instance)
        _remove_labelled(docker_client, handle.instance)
        remove_networks(docker_client, network)


def _services(daemon: Daemon, job: str | None = None) -> list[Any]:
    found = daemon.docker.services.list(filters={"label": f"racetrackd.instance={daemon.instance}"})
    return [s for s in found if job is None or s.attrs["Spec"]["Labels"].get("job-name") == job]


def _job_dir(tmp: Path, name: str, extra: str = "", *, init_raises: bool = False) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    source = (REPO / "samples" / "adder" / "entrypoint.py").read_text()
    if init_raises:
        source += "\nraise RuntimeError('broken on purpose')\n"
    (tmp / "entrypoint.py").write_text(source)
    (tmp / "job.yaml").write_text(
        f"name: {name}\nowner_email: tests@example.com\nversion: 1.0.0\njobtype: python3:latest\n{extra}"
        "jobtype_extra:\n  entrypoint_path: entrypoint.py\n"
    )
    return tmp


def _call(daemon: Daemon, name: str) -> requests.Response:
    return daemon.api("POST", f"/pub/job/{name}/latest{CALL}", json={"a": 40, "b": 2})


@pytest.fixture(scope="module")
def pair(swarm_daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A job with `replicas: 2`, deployed once for the tests that share it."""
    job_dir = _job_dir(tmp_path_factory.mktemp("pair"), "pair", "replicas: 2\n")
    swarm_daemon.rtd("submit", "-q", str(job_dir), check=True)
    return job_dir


def test_two_replicas_are_one_service_and_both_tasks_answer_through_the_gateway(
    swarm_daemon: Daemon, pair: Path
) -> None:
    answers = [_call(swarm_daemon, "pair").json() for _ in range(30)]

    [service] = _services(swarm_daemon, "pair")
    tasks = [t for t in service.tasks() if t["DesiredState"] == "running"]
    job = swarm_daemon.api("GET", "/lifecycle/api/v1/job/pair/1.0.0").json()
    time.sleep(0.5)  # access lines are flushed every 0.2 s
    containers = swarm_daemon.docker.containers.list(filters={"label": f"com.docker.swarm.service.name={service.name}"})
    calls_per_task = [c.logs().decode().count(f"POST {CALL}") for c in containers]

    assert answers == [42] * 30
    assert service.attrs["Spec"]["Mode"]["Replicated"]["Replicas"] == 2 and len(tasks) == 2
    assert service.attrs["Spec"]["EndpointSpec"]["Mode"] == "dnsrr"  # no routing mesh, no virtual IP
    assert job["status"] == "running" and job["orchestrator"] == "swarm"
    assert len(job["replica_internal_names"]) == 2
    assert {r["state"] for r in job["replica_details"]} == {"running"} and all(
        r["node"] for r in job["replica_details"]
    )
    assert len(calls_per_task) == 2 and all(count >= 5 for count in calls_per_task), calls_per_task


def test_status_and_nodes_show_where_each_replica_runs(swarm_daemon: Daemon, pair: Path) -> None:
    hostname = swarm_daemon.docker.info()["Name"]

    status = swarm_daemon.rtd("status", "pair", check=True).stdout
    nodes = swarm_daemon.rtd("nodes", check=True).stdout

    assert "replicas on nodes:" in status and status.count(f" {hostname} ") >= 2, status
    assert "HOSTNAME" in nodes and hostname in nodes and "manager (leader)" in nodes and "pair 1.0.0" in nodes, nodes


def test_logs_name_the_task_and_node_of_each_line(swarm_daemon: Daemon, pair: Path) -> None:
    _call(swarm_daemon, "pair")
    hostname = swarm_daemon.docker.info()["Name"]

    logs = swarm_daemon.rtd("logs", "pair", "--tail", "50", check=True).stdout

    lines = [line for line in logs.splitlines() if line.strip()]
    assert lines and all(f"@{hostname} | " in line for line in lines), logs
    assert {line.split("@")[0].rsplit(".", 1)[1] for line in lines} == {"1", "2"}  # both tasks' output


def test_following_logs_streams_every_tasks_new_lines_named(swarm_daemon: Daemon, pair: Path) -> None:
    hostname = swarm_daemon.docker.info()["Name"]
    stop = threading.Event()

    def call_in_a_loop() -> None:
        while not stop.is_set():
            _call(swarm_daemon, "pair")
            time.sleep(0.05)

    caller = threading.Thread(target=call_in_a_loop)
    caller.start()
    text = ""
    try:
        with requests.get(
            f"{swarm_daemon.url}/lifecycle/api/v1/job/pair/1.0.0/logs?follow=true&tail=2",
            headers={"X-Racetrack-Auth": swarm_daemon.token},
            stream=True,
            timeout=30,
        ) as response:
            assert response.status_code == 200
            deadline = time.monotonic() + 30
            for chunk in response.iter_content(chunk_size=None):
                text += chunk.decode()
                slots = {line.split("@")[0] for line in text.splitlines() if f"POST {CALL}" in line}
                if len(slots) >= 2 or time.monotonic() > deadline:
                    break
    finally:
        stop.set()
        caller.join(timeout=30)

    lines = [line for line in text.splitlines() if line.strip()]
    calls = [line for line in lines if f"POST {CALL}" in line]
    assert {line.split("@")[0].rsplit(".", 1)[1] for line in calls} == {"1", "2"}, text
    assert all(f"@{hostname} | " in line for line in lines), text


def test_a_forced_redeploy_under_steady_calls_fails_no_call_and_leaves_one_service(
    swarm_daemon: Daemon, pair: Path
) -> None:
    before = [s.name for s in _services(swarm_daemon, "pair")]
    calls = adder_status(f"{swarm_daemon.url}/pub/job/pair/latest{CALL}", swarm_daemon.token)
    with steady_calls(calls, callers=3, seconds=150) as results:
        time.sleep(0.5)
        redeploy = swarm_daemon.rtd("submit", "--force", "-q", str(pair))
        time.sleep(1.0)
    deadline = time.monotonic() + 30  # the old service drains, then goes
    while time.monotonic() < deadline and len(_services(swarm_daemon, "pair")) != 1:
        time.sleep(0.5)
    after = [s.name for s in _services(swarm_daemon, "pair")]

    print(f"forced redeploy under load: {len(results)} calls, {len([c for c in results if c != 200])} failed")
    assert redeploy.returncode == 0, redeploy.stderr
    assert len(results) > 50
    assert [code for code in results if code != 200] == []
    assert len(after) == 1 and after != before  # a new service per deployment, the old one removed


def test_rollback_runs_the_previous_release_as_a_new_service(swarm_daemon: Daemon, tmp_path: Path) -> None:
    job_dir = _job_dir(tmp_path, "stepper")
    swarm_daemon.rtd("submit", "-q", str(job_dir), check=True)
    entrypoint = job_dir / "entrypoint.py"
    entrypoint.write_text(entrypoint.read_text().replace("return a + b", "return a + b + 1000"))
    swarm_daemon.rtd("submit", "--force", "-q", str(job_dir), check=True)
    changed = _call(swarm_daemon, "stepper").json()

    rolled = swarm_daemon.rtd("rollback", "stepper")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(_services(swarm_daemon, "stepper")) != 1:
        time.sleep(0.5)

    assert changed == 1042
    assert rolled.returncode == 0, rolled.stderr
    assert _call(swarm_daemon, "stepper").json() == 42
    assert len(_services(swarm_daemon, "stepper")) == 1


def test_a_task_killed_outside_is_replaced_by_swarm_and_the_gateway_follows(swarm_daemon: Daemon, pair: Path) -> None:
    [service] = _services(swarm_daemon, "pair")
    before = set(swarm_daemon.api("GET", "/lifecycle/api/v1/job/pair/1.0.0").json()["replica_internal_names"])
    [victim, *_] = swarm_daemon.docker.containers.list(
        filters={"label": f"com.docker.swarm.service.name={service.name}"}
    )

    victim.kill()
    started = time.monotonic()
    addresses: set[str] = set()
    while time.monotonic() - started < 60:
        job = swarm_daemon.api("GET", "/lifecycle/api/v1/job/pair/1.0.0").json()
        addresses = set(job["replica_internal_names"])
        if job["status"] == "running" and len(addresses) == 2 and addresses != before:
            break
        time.sleep(0.2)
    followed = time.monotonic() - started
    answers = [_call(swarm_daemon, "pair").json() for _ in range(20)]

    print(f"gateway followed the replaced task in {followed:.1f} s")
    assert len(addresses) == 2 and addresses != before  # the new task answers at a new port
    assert answers == [42] * 20
    assert followed < 30


def test_a_failed_start_removes_the_new_service_and_the_old_keeps_serving(swarm_daemon: Daemon, tmp_path: Path) -> None:
    good = _job_dir(tmp_path / "good", "keeper")
    swarm_daemon.rtd("submit", "-q", str(good), check=True)
    [serving] = [s.name for s in _services(swarm_daemon, "keeper")]

    broken = swarm_daemon.rtd("submit", "--force", "-q", str(_job_dir(tmp_path / "broken", "keeper", init_raises=True)))

    assert broken.returncode != 0
    assert "broken on purpose" in broken.stderr + broken.stdout
    assert [s.name for s in _services(swarm_daemon, "keeper")] == [serving]
    assert _call(swarm_daemon, "keeper").json() == 42


def test_a_constraint_no_node_meets_fails_the_deployment_with_swarms_reason(
    swarm_daemon: Daemon, tmp_path: Path
) -> None:
    job_dir = _job_dir(tmp_path, "unplaced", 'placement_constraints: ["node.labels.racetrackd-test-gpu == true"]\n')

    started = time.monotonic()
    result = swarm_daemon.rtd("submit", "-q", str(job_dir))
    took = time.monotonic() - started

    print(f"unplaceable deployment failed after {took:.1f} s: {result.stderr.splitlines()[0] if result.stderr else ''}")
    assert result.returncode != 0
    assert "no suitable node" in result.stderr, result.stderr
    assert _services(swarm_daemon, "unplaced") == []
    assert took < 100  # well within the start timeout (120 s here): Swarm's reason ends the wait
    assert swarm_daemon.api("GET", "/lifecycle/api/v1/job/unplaced/1.0.0").status_code == 404


def test_an_idle_job_scales_its_service_to_zero_and_the_next_call_wakes_it(
    swarm_daemon: Daemon, tmp_path: Path
) -> None:
    swarm_daemon.rtd("submit", "-q", str(_job_dir(tmp_path, "napper", "idle_timeout: 5s\n")), check=True)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _status(swarm_daemon, "napper") != "sleeping":
        time.sleep(0.5)
    # The job is recorded asleep just before its service is scaled down, and the gateways' routing
    # tables follow within 0.1 s: a call sooner may still reach the draining task (and be answered
    # by it, waking nothing). A caller arriving later is what this test is about.
    time.sleep(1.0)
    [service] = _services(swarm_daemon, "napper")
    asleep_replicas = service.attrs["Spec"]["Mode"]["Replicated"]["Replicas"]
    woken = _call(swarm_daemon, "napper")
    service.reload()

    assert asleep_replicas == 0
    assert woken.status_code == 200 and woken.json() == 42
    assert service.attrs["Spec"]["Mode"]["Replicated"]["Replicas"] == 1
    assert _status(swarm_daemon, "napper") == "running"


def test_delete_removes_the_service(swarm_daemon: Daemon, tmp_path: Path) -> None:
    swarm_daemon.rtd("submit", "-q", str(_job_dir(tmp_path, "doomed")), check=True)
    assert len(_services(swarm_daemon, "doomed")) == 1

    swarm_daemon.rtd("delete", "doomed", "--version", "1.0.0", check=True)

    assert _services(swarm_daemon, "doomed") == []


def test_kill_9_mid_deployment_then_restart_leaves_no_duplicate_services(
    swarm: None, docker_client: docker.DockerClient, base_image: str, tmp_path: Path
) -> None:
    network = f"rt-swarm-{uuid.uuid4().hex[:8]}"
    own = _launch(tmp_path / "data", docker_client, base_image, network)
    try:
        own.rtd("submit", "-q", str(_job_dir(tmp_path / "adder", "adder")), check=True)
        [adder] = _services(own, "adder")
        deployment_id = own.api(
            "POST",
            "/lifecycle/api/v1/deploy",
            json={
                "manifest": yaml.safe_load((FIXTURES / "slow-init" / "job.yaml").read_text()),
                "build_context": pack(FIXTURES / "slow-init"),
            },
        ).json()["id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _services(own, "slow-init"):
            time.sleep(0.2)
        interrupted = [s.name for s in _services(own, "slow-init")]

        own.kill()
        own.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _services(own, "slow-init"):
            time.sleep(0.5)
        time.sleep(2)  # a few supervisor cycles: nothing may be recreated twice
        deployment = own.api("GET", f"/lifecycle/api/v1/deploy/{deployment_id}").json()

        assert interrupted  # the kill came while its service was starting
        assert deployment["status"] == "failed" and deployment["error"].startswith("interrupted")
        assert [s.id for s in _services(own)] == [adder.id]  # adopted, not duplicated; the half-made one gone
        assert _call(own, "adder").json() == 42
    finally:
        own.stop()
        _remove_services(docker_client, own.instance)
        _remove_labelled(docker_client, own.instance)
        remove_networks(docker_client, network)


def test_a_bridge_network_named_like_racetrack_network_is_a_clear_start_error(
    swarm: None, docker_client: docker.DockerClient, base_image: str, tmp_path: Path
) -> None:
    network = f"rt-bridge-{uuid.uuid4().hex[:8]}"
    docker_client.networks.create(network, driver="bridge")
    try:
        with pytest.raises(DaemonFailed) as failed:
            _launch(tmp_path / "data", docker_client, base_image, network)
        found = docker_client.networks.list(names=[network])
    finally:
        remove_networks(docker_client, network)

    assert f"RACETRACK_NETWORK={network}: a bridge network of that name exists" in str(failed.value)
    assert [n.attrs["Driver"] for n in found if n.name == network] == ["bridge"]  # left as it was
    assert not docker_client.networks.list(names=[f"{network}-build"])  # nothing half made


def _status(daemon: Daemon, name: str) -> str:
    return str(daemon.api("GET", f"/lifecycle/api/v1/job/{name}/1.0.0").json()["status"])


def test_placement_is_refused_by_a_daemon_in_docker_mode(daemon: Daemon, tmp_path: Path) -> None:
    job_dir = _job_dir(tmp_path, "placed", 'placement_constraints: ["node.labels.gpu == true"]\n')

    result = daemon.rtd("submit", "-q", str(job_dir))

    assert result.returncode != 0
    assert "placement_constraints" in result.stderr and "RACETRACK_ORCHESTRATOR=swarm" in result.stderr
