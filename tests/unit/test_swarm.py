"""Swarm mode without a swarm: the placement field, the seam's Swarm backend over a fake Docker API,
and the supervisor following replicas through the seam."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import docker.errors
import pytest
from flask import Flask
from flask.testing import FlaskClient

from jobmanifest import ManifestInvalid, validate_manifest
from racetrackd.app import create_app
from racetrackd.auth.accounts import Accounts, ChangeSignal
from racetrackd.auth.vault import Vault
from racetrackd.db import Job, JobStatus, open_database
from racetrackd.deploy.building import ImageBuilder
from racetrackd.deploy.deployer import Deployer
from racetrackd.docker.orchestrator import (
    EXITED,
    MISSING,
    PENDING,
    RUNNING,
    STARTING,
    SWARM,
    Node,
    ReleaseSpec,
    Replica,
)
from racetrackd.docker.runtime import Hardening
from racetrackd.docker.swarm import (
    TASK_IP,
    SwarmOrchestrator,
    _named_lines,
    _split_details,
    _task_template,
    _TaskNames,
    service_name,
)
from racetrackd.errors import JobStartError, SettingsError
from racetrackd.jobs.addressing import (
    CONTAINER_IP,
    PUBLISHED_PORT,
    TASK_PORT,
    Addressing,
    extra_bind_addresses,
    resolve_swarm_addressing,
)
from racetrackd.jobs.supervisor import Supervisor
from racetrackd.manifest import ContainerLimits
from racetrackd.plugins.store import PluginStore
from racetrackd.services import build_services
from racetrackd.serving import Serving
from racetrackd.settings import Settings
from tests.unit.conftest import ADMIN_TOKEN
from tests.unit.fakes import FakeRuntime, build_context, sample_manifest
from tests.unit.gateway_helpers import add_job

API = "/lifecycle/api/v1"


# --- the placement field ------------------------------------------------------------------------------
def test_placement_constraints_in_swarms_syntax_are_accepted() -> None:
    manifest = validate_manifest(
        sample_manifest(placement_constraints=["node.labels.gpu == true", "node.role!=manager", "node.hostname == n1"])
    )
    assert manifest.placement_constraints == ("node.labels.gpu == true", "node.role!=manager", "node.hostname == n1")


@pytest.mark.parametrize(
    "constraint",
    ["gpu", "node.labels.gpu = true", "node.colour == red", "node.labels.gpu ==", "node.labels.gpu >= 2"],
)
def test_a_malformed_placement_constraint_is_refused_naming_the_field(constraint: str) -> None:
    with pytest.raises(ManifestInvalid) as refused:
        validate_manifest(sample_manifest(placement_constraints=[constraint]))
    [error] = refused.value.errors
    assert error.path == "placement_constraints[0]"
    assert "<key> == <value>" in error.message


def test_placement_constraints_must_be_a_list() -> None:
    with pytest.raises(ManifestInvalid) as refused:
        validate_manifest(sample_manifest(placement_constraints="node.labels.gpu == true"))
    assert refused.value.errors[0].path == "placement_constraints"


def test_docker_mode_refuses_a_deploy_with_placement_at_request_time(client: FlaskClient) -> None:
    response = client.post(
        f"{API}/deploy",
        json={
            "manifest": sample_manifest(placement_constraints=["node.labels.gpu == true"]),
            "build_context": build_context(),
        },
    )

    assert response.status_code == 400
    body = response.get_json()
    assert body["type"] == "invalid-manifest"
    assert "placement_constraints" in body["error"] and "RACETRACK_ORCHESTRATOR=swarm" in body["error"]


def test_the_orchestrator_setting_takes_docker_or_swarm_only(make_settings: Callable[..., Settings]) -> None:
    assert make_settings().orchestrator == "docker"
    assert make_settings(orchestrator="swarm").orchestrator == "swarm"
    with pytest.raises(SettingsError, match="RACETRACK_ORCHESTRATOR"):
        make_settings(orchestrator="kubernetes")


# --- the Swarm backend over a fake Docker API ---------------------------------------------------------
class _FakeAPI:
    def __init__(self) -> None:
        self.service_specs: dict[str, dict[str, Any]] = {}
        self.task_list: list[dict[str, Any]] = []
        self.node_list: list[dict[str, Any]] = [
            {
                "ID": "n1",
                "Description": {"Hostname": "node-1", "Engine": {"EngineVersion": "20.10.24"}},
                "Spec": {"Role": "manager", "Availability": "active"},
                "Status": {"State": "ready", "Addr": "10.0.0.1"},
                "ManagerStatus": {"Leader": True},
            },
            {
                "ID": "n2",
                "Description": {"Hostname": "node-2"},
                "Spec": {"Role": "worker", "Availability": "drain"},
                "Status": {"State": "down", "Addr": "10.0.0.2"},
            },
        ]
        self.created: list[dict[str, Any]] = []
        self.log_tails: list[Any] = []

    def inspect_service(self, name: str) -> dict[str, Any]:
        if name not in self.service_specs:
            raise docker.errors.NotFound("no such service")
        return self.service_specs[name]

    def tasks(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        return [t for t in self.task_list if "service" not in filters or t["ServiceID"] == filters["service"]]

    def nodes(self) -> list[dict[str, Any]]:
        return self.node_list

    def create_service(self, task_template: Any, **kwargs: Any) -> None:
        self.created.append({"task_template": task_template, **kwargs})

    def services(self, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return list(self.service_specs.values())

    def service_logs(self, service_id: str, **kwargs: Any) -> bytes:
        self.log_tails.append(kwargs["tail"])
        return b""


class _FakeClient:
    def __init__(self, info: dict[str, Any] | None = None, networks: list[Any] | None = None) -> None:
        self.api = _FakeAPI()
        self._info = info or {"Swarm": {"LocalNodeState": "active", "ControlAvailable": True}}
        self.networks = _FakeNetworks(networks or [])

        self.images = _FakeImages()
        self.api_version = "1.41"

    def info(self) -> dict[str, Any]:
        return self._info

    def version(self) -> dict[str, Any]:
        return {"ApiVersion": self.api_version}


class _FakeImages:
    def get(self, ref: str) -> Any:
        if ref != "job-a:1":
            raise docker.errors.ImageNotFound(ref)
        return type("Image", (), {"id": "sha256:" + "a" * 64})()


class _FakeNetwork:
    def __init__(self, name: str, driver: str, attachable: bool = False) -> None:
        self.name = name
        self.attrs = {"Driver": driver, "Attachable": attachable}

    def reload(self) -> None:
        pass


class _FakeNetworks:
    def __init__(self, found: list[_FakeNetwork]) -> None:
        self.found = found
        self.made: list[tuple[str, dict[str, Any]]] = []

    def list(self, names: list[str]) -> list[_FakeNetwork]:
        return [n for n in self.found if n.name in names]

    def create(self, name: str, **kwargs: Any) -> None:
        self.made.append((name, kwargs))


def _swarm(client: _FakeClient, addressing: str = "task-port") -> SwarmOrchestrator:
    return SwarmOrchestrator("racetrack", "main", addressing, client_factory=lambda: client)  # type: ignore[arg-type,return-value]


def _task(
    slot: int, state: str, *, node: str = "n1", created: str = "2026-01-01T00:00:01", **status: Any
) -> dict[str, Any]:
    return {
        "ID": f"task-{slot}-{created[-2:]}",
        "ServiceID": "svc1",
        "Slot": slot,
        "NodeID": node,
        "CreatedAt": created,
        "DesiredState": "running" if state in ("pending", "starting", "running") else "shutdown",
        "Status": {"State": state, **status},
        "NetworksAttachments": [{"Network": {"Spec": {"Name": "racetrack"}}, "Addresses": [f"10.0.9.{slot}/24"]}],
    }


def test_tasks_become_replicas_with_their_node_address_and_swarms_reason() -> None:
    client = _FakeClient()
    client.api.service_specs["job-a-1234abcd"] = {"ID": "svc1", "Spec": {"Name": "job-a-1234abcd"}}
    running = {"PortStatus": {"Ports": [{"TargetPort": 7000, "PublishedPort": 30001, "PublishMode": "host"}]}}
    client.api.task_list = [
        _task(1, "running", **running),
        _task(2, "failed", node="n2", Err="task: non-zero exit (1)", ContainerStatus={"ExitCode": 1}),
        _task(
            2, "pending", node="", created="2026-01-01T00:00:09", Err="no suitable node (insufficient memory on 1 node)"
        ),
    ]

    first, second, third = _swarm(client).replicas("job-a-1234abcd", 3, 7000)

    assert first == Replica(
        name="job-a-1234abcd.1", state=RUNNING, node="node-1", address="10.0.0.1:30001", task_id="task-1-01"
    )
    assert second.state == PENDING and second.restart_count == 1
    assert second.error == "no suitable node (insufficient memory on 1 node)"
    assert third.state == PENDING and third.error == ""  # Swarm has not made the slot's task yet


def test_in_a_container_on_the_overlay_tasks_are_called_at_their_overlay_ip() -> None:
    client = _FakeClient()
    client.api.service_specs["u"] = {"ID": "svc1", "Spec": {"Name": "u"}}
    client.api.task_list = [_task(1, "running")]

    [replica] = _swarm(client, TASK_IP).replicas("u", 1, 7000)

    assert replica.address == "10.0.9.1:7000"


def test_a_missing_service_is_every_replica_missing_and_a_crashed_task_exited() -> None:
    client = _FakeClient()
    assert [r.state for r in _swarm(client).replicas("gone", 2, 7000)] == [MISSING, MISSING]
    client.api.service_specs["u"] = {"ID": "svc1", "Spec": {"Name": "u"}}
    client.api.task_list = [_task(1, "failed", Err="task: non-zero exit (3)", ContainerStatus={"ExitCode": 3})]

    [replica] = _swarm(client).replicas("u", 1, 7000)

    assert replica.state == EXITED and replica.exit_code == 3 and replica.restart_count == 1
    assert replica.error == "task: non-zero exit (3)"


def test_start_refuses_an_engine_that_is_not_a_swarm_manager() -> None:
    inactive = _FakeClient(info={"Swarm": {"LocalNodeState": "inactive"}})
    worker = _FakeClient(info={"Swarm": {"LocalNodeState": "active", "ControlAvailable": False}})

    with pytest.raises(SettingsError, match="swarm manager; this one is in no swarm") as refused:
        _swarm(inactive).check_manager()
    assert "docker swarm init" in (refused.value.hint or "")
    with pytest.raises(SettingsError, match="this one is a worker"):
        _swarm(worker).check_manager()


def test_a_bridge_network_of_that_name_is_a_clear_error_and_nothing_is_made() -> None:
    client = _FakeClient(networks=[_FakeNetwork("racetrack", "bridge")])

    with pytest.raises(SettingsError, match="RACETRACK_NETWORK=racetrack: a bridge network of that name exists"):
        _swarm(client).ensure_network()
    assert client.networks.made == []


def test_the_jobs_network_is_made_an_attachable_overlay() -> None:
    client = _FakeClient()

    _swarm(client).ensure_network()

    [(name, options)] = client.networks.made
    assert name == "racetrack" and options["driver"] == "overlay" and options["attachable"] is True


def test_a_release_becomes_a_service_without_the_routing_mesh() -> None:
    client = _FakeClient()
    spec = ReleaseSpec(
        image="registry.local/job:1",
        env={"A": "1"},
        labels={"racetrackd.instance": "main"},
        network="racetrack",
        replicas=2,
        limits=ContainerLimits(
            memory_bytes=256 << 20, memory_reservation_bytes=128 << 20, nano_cpus=10**9, cpu_shares=512
        ),
        hardening=Hardening(read_only_root=True, capabilities=("NET_BIND_SERVICE",), pids_limit=128),
        placement=("node.labels.gpu == true",),
        stop_grace=30,
    )

    started = _swarm(client).start("job-a-1234abcd", spec)

    assert started == ["job-a-1234abcd.1", "job-a-1234abcd.2"]
    [created] = client.api.created
    assert created["mode"].mode == "replicated" and created["mode"].replicas == 2
    assert created["endpoint_spec"] == {
        "Mode": "dnsrr",
        "Ports": [{"Protocol": "tcp", "TargetPort": 7000, "PublishMode": "host"}],
    }
    assert created["labels"] == {"racetrackd.instance": "main"}
    template = created["task_template"]
    container = template["ContainerSpec"]
    assert container["Labels"] == {"racetrackd.instance": "main"} and container["ReadOnly"] is True
    assert container["CapabilityDrop"] == ["ALL"] and container["CapabilityAdd"] == ["NET_BIND_SERVICE"]
    assert container["StopGracePeriod"] == 30 * 10**9
    assert template["Resources"]["Limits"] == {"NanoCPUs": 10**9, "MemoryBytes": 256 << 20, "Pids": 128}
    assert template["Resources"]["Reservations"] == {"NanoCPUs": 5 * 10**8, "MemoryBytes": 128 << 20}
    assert template["Placement"]["Constraints"] == ["node.labels.gpu == true"]
    assert template["RestartPolicy"]["Condition"] == "any"
    assert "Privileges" not in container  # Docker 20.10 (API 1.41) has no no-new-privileges for services


def test_an_engine_with_api_1_44_also_gets_no_new_privileges() -> None:
    client = _FakeClient()
    client.api_version = "1.45"

    _swarm(client).start("u", ReleaseSpec(image="registry.lab/j:1", env={}, labels={}, network="n", replicas=1))

    assert client.api.created[0]["task_template"]["ContainerSpec"]["Privileges"] == {"NoNewPrivileges": True}


def test_an_image_only_this_engine_has_runs_by_its_id_so_swarm_pulls_nothing() -> None:
    client = _FakeClient()
    local = ReleaseSpec(image="job-a:1", env={}, labels={}, network="racetrack", replicas=1)
    pushed = ReleaseSpec(image="registry.lab:5000/job-a:1", env={}, labels={}, network="racetrack", replicas=1)

    _swarm(client).start("local", local)
    _swarm(client).start("pushed", pushed)

    assert [c["task_template"]["ContainerSpec"]["Image"] for c in client.api.created] == [
        "sha256:" + "a" * 64,
        "registry.lab:5000/job-a:1",
    ]


def test_nodes_list_their_state_and_the_jobs_tasks_on_them() -> None:
    client = _FakeClient()
    labels = {"racetrackd.instance": "main", "job-name": "adder", "job-version": "1.0.0"}
    task = _task(1, "running")
    task["Spec"] = {"ContainerSpec": {"Labels": labels}}
    other = _task(2, "running")
    other["Spec"] = {"ContainerSpec": {"Labels": {**labels, "racetrackd.instance": "another"}}}
    client.api.task_list = [task, other]
    client.api.service_specs["job-adder-v-1"] = {"ID": "svc1", "Spec": {"Name": "job-adder-v-1"}}

    nodes = _swarm(client).nodes()

    assert [(n.hostname, n.role, n.state, n.availability, n.address, n.leader) for n in nodes] == [
        ("node-1", "manager", "ready", "active", "10.0.0.1", True),
        ("node-2", "worker", "down", "drain", "10.0.0.2", False),
    ]
    assert [(t.job_name, t.job_version, t.replica) for t in nodes[0].tasks] == [("adder", "1.0.0", "job-adder-v-1.1")]
    assert nodes[1].tasks == ()


def test_log_lines_read_with_details_name_their_task() -> None:
    line = "com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s1,com.docker.swarm.task.id=t1 hello world\n"
    assert _split_details(line) == ("t1", "hello world\n")
    assert _split_details("plain line\n") == ("", "plain line\n")


def test_without_read_only_root_no_tmpfs_is_mounted() -> None:
    spec = ReleaseSpec(image="i", env={}, labels={}, network="n", replicas=1)
    assert _task_template(spec, "n")["ContainerSpec"].get("Mounts") in (None, [])


# --- the supervisor through the seam ------------------------------------------------------------------
class _FakeSwarm:
    """A swarm behind the seam whose replicas the test sets."""

    kind = SWARM

    def __init__(self, replicas: list[Replica]) -> None:
        self.current = replicas

    def replicas(self, unit: str, count: int, port: int) -> list[Replica]:
        return self.current

    def revive(self, unit: str, replica: Replica) -> bool:
        return False

    def replica_logs(self, unit: str, replica: Replica, tail: int) -> str:
        return ""

    def nodes(self) -> list[Node]:
        return []

    def wait_for_change(self, timeout: float, stop: threading.Event) -> None:
        stop.wait(timeout)


class _NoRecreate:
    def recreate(self, job: Job) -> None:
        raise AssertionError("not lost")


def _job() -> Job:
    return Job.create(
        name="adder",
        version="1.0.0",
        status=JobStatus.RUNNING,
        manifest_yaml="name: adder\n",
        job_type_version="python3:1.0.0",
        image_name="img",
        container_name="job-adder-v-1-0-0-1234abcd",
        internal_name="10.0.0.1:30001",
        deployment_timestamp=1,
        replicas=2,
    )


def test_a_task_swarm_cannot_place_shows_swarms_reason_as_the_jobs_error(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(orchestrator="swarm")
    open_database(settings.database_path)
    monkeypatch.setattr("racetrackd.jobs.probes.probe", lambda address, path: (200, None))
    swarm = _FakeSwarm(
        [
            Replica(name="u.1", state=RUNNING, node="node-1", address="10.0.0.1:30001"),
            Replica(name="u.2", state=PENDING, error="no suitable node (insufficient memory on 2 nodes)"),
        ]
    )

    Supervisor(settings, swarm, _NoRecreate()).check(_job())  # type: ignore[arg-type]

    row = Job.find("adder", "1.0.0")
    assert row is not None and row.status == JobStatus.ERROR
    assert "u.2: waiting for a node: no suitable node (insufficient memory on 2 nodes)" in (row.error or "")
    assert row.ready_addresses() == ["10.0.0.1:30001"]


def test_the_gateway_follows_a_task_swarm_moved_to_another_node(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(orchestrator="swarm")
    open_database(settings.database_path)
    monkeypatch.setattr("racetrackd.jobs.probes.probe", lambda address, path: (200, None))
    swarm = _FakeSwarm(
        [
            Replica(name="u.1", state=RUNNING, node="node-1", address="10.0.0.1:30001"),
            Replica(name="u.2", state=RUNNING, node="node-2", address="10.0.0.2:30002"),
        ]
    )
    supervisor = Supervisor(settings, swarm, _NoRecreate())  # type: ignore[arg-type]
    supervisor.check(_job())
    swarm.current = [swarm.current[0], Replica(name="u.2", state=RUNNING, node="node-3", address="10.0.0.3:30009")]

    supervisor.check(_job() if Job.find("adder", "1.0.0") is None else Job.get())

    row = Job.find("adder", "1.0.0")
    assert row is not None and row.status == JobStatus.RUNNING
    assert row.ready_addresses() == ["10.0.0.1:30001", "10.0.0.3:30009"]


# --- the API in docker mode ---------------------------------------------------------------------------
def test_nodes_in_docker_mode_is_this_engine_with_every_jobs_replicas(client: FlaskClient) -> None:
    Job.create(
        name="adder",
        version="1.0.0",
        status=JobStatus.RUNNING,
        manifest_yaml="name: adder\n",
        job_type_version="python3:1.0.0",
        image_name="img",
        container_name="job-adder-v-1-0-0",
        internal_name="127.0.0.1:1",
        deployment_timestamp=1,
        replicas=2,
    )

    response = client.get(f"{API}/nodes")

    assert response.status_code == 200
    body = response.get_json()
    assert body["orchestrator"] == "docker"
    [node] = body["nodes"]
    assert node["role"] == "engine" and node["state"] == "ready"
    assert [(t["job_name"], t["replica"]) for t in node["tasks"]] == [
        ("adder", "job-adder-v-1-0-0"),
        ("adder", "job-adder-v-1-0-0-1"),
    ]


# --- the API and the dashboard in swarm mode ----------------------------------------------------------
@pytest.fixture
def swarm_app(make_settings: Callable[..., Settings], runtime: FakeRuntime) -> Flask:
    swarm = _FakeSwarm(
        [
            Replica(name="job-adder.1", state=RUNNING, node="node-1", address="10.0.0.1:30001"),
            Replica(name="job-adder.2", state=PENDING, error="no suitable node (insufficient memory on 2 nodes)"),
        ]
    )
    app = create_app(
        services=build_services(make_settings(orchestrator="swarm"), runtime, orchestrator_override=swarm)  # type: ignore[arg-type]
    )
    app.testing = True
    return app


def test_the_job_record_says_where_each_replica_runs(swarm_app: Flask) -> None:
    add_job("adder", "1.0.0", addresses=["10.0.0.1:30001"])
    client = swarm_app.test_client()
    client.environ_base["HTTP_X_RACETRACK_AUTH"] = ADMIN_TOKEN

    body = client.get(f"{API}/job/adder/1.0.0").get_json()

    assert body["orchestrator"] == "swarm" and body["infrastructure_target"] == "docker"
    assert [(r["name"], r["node"], r["state"], r["error"]) for r in body["replica_details"]] == [
        ("job-adder.1", "node-1", "running", None),
        ("job-adder.2", None, "pending", "no suitable node (insufficient memory on 2 nodes)"),
    ]


def test_the_dashboards_job_page_shows_the_node_of_each_replica(swarm_app: Flask) -> None:
    add_job("adder", "1.0.0", addresses=["10.0.0.1:30001"])
    client = swarm_app.test_client()
    client.set_cookie("X-Racetrack-Auth", ADMIN_TOKEN)

    response = client.get("/dashboard/jobs/adder/1.0.0")

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    nodes = page[page.index('id="replica-nodes"') : page.index("</ul>", page.index('id="replica-nodes"'))]
    assert "<code>job-adder.1</code> on <strong>node-1</strong>" in nodes
    assert "<code>job-adder.2</code> on <strong>no node yet</strong>" in nodes
    assert "no suitable node (insufficient memory on 2 nodes)" in nodes


# --- following the swarm ------------------------------------------------------------------------------
class _Events:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.closed = False

    def __iter__(self) -> Any:
        return iter(self.events)

    def close(self) -> None:
        self.closed = True


def test_a_service_or_node_event_ends_the_supervisors_wait_early() -> None:
    client = _FakeClient()
    stream = _Events([{"Type": "node", "Action": "update"}])
    asked: dict[str, Any] = {}

    def events(**kwargs: Any) -> _Events:
        asked.update(kwargs)
        return stream

    client.events = events  # type: ignore[attr-defined]
    started = time.monotonic()

    _swarm(client).wait_for_change(30, threading.Event())

    assert time.monotonic() - started < 5
    assert asked["filters"] == {"type": ["service", "node"]} and stream.closed


def test_without_events_the_supervisor_waits_its_interval() -> None:
    client = _FakeClient()

    def events(**kwargs: Any) -> _Events:
        raise docker.errors.DockerException("events unavailable")

    client.events = events  # type: ignore[attr-defined]
    started = time.monotonic()

    _swarm(client).wait_for_change(0.3, threading.Event())

    assert 0.25 <= time.monotonic() - started < 5


def test_a_daemon_on_another_host_than_the_swarm_manager_binds_only_its_own_address(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(host="127.0.0.1")
    remote = Addressing(mode=TASK_PORT, daemon_host="203.0.113.7", port=settings.port)
    local = Addressing(mode=TASK_PORT, daemon_host="127.0.0.1", port=settings.port)

    assert extra_bind_addresses(settings, remote) == []
    assert extra_bind_addresses(settings, local) == [f"127.0.0.1:{settings.port}"]


@pytest.mark.parametrize("mode", [CONTAINER_IP, PUBLISHED_PORT])
def test_a_daemon_whose_docker_engine_is_on_another_machine_starts_and_says_chain_calls_cannot_reach_it(
    make_settings: Callable[..., Settings], mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """DOCKER_HOST to another machine (or Docker Desktop's VM) in docker mode: the jobs' bridge gateway
    is not an address of this host; listening there would fail and stop the daemon at start."""
    settings = make_settings(host="127.0.0.1")
    remote_engine = Addressing(mode=mode, daemon_host="203.0.113.7", port=settings.port)

    assert extra_bind_addresses(settings, remote_engine) == []
    assert "203.0.113.7" in caplog.text and "chain calls" in caplog.text


def test_service_logs_with_tail_0_are_all_of_them() -> None:
    client = _FakeClient()
    client.api.service_specs["job-a"] = {"ID": "s", "Spec": {"Name": "job-a"}}

    _swarm(client).logs("job-a", 1, 0)
    _swarm(client).logs("job-a", 1, 20)

    assert client.api.log_tails == ["all", 20]  # Swarm's own tail=0 prints nothing: `rtd logs --tail 0` said all


def test_followed_log_lines_are_named_even_when_frames_split_them() -> None:
    names = _TaskNames(_FakeClient(), "s", "job-a")  # type: ignore[arg-type]
    names._names.update({"t1": "job-a.1@node-1", "t2": "job-a.2@node-2"})
    detail = "com.docker.swarm.node.id=n,com.docker.swarm.service.id=s,com.docker.swarm.task.id="
    frames = [f"{detail}t1 first ".encode(), f"half\n{detail}t2 second\n{detail}t1 ".encode(), b"last"]

    lines = list(_named_lines(iter(frames), names))

    assert lines == [b"job-a.1@node-1 | first half\n", b"job-a.2@node-2 | second\n", b"job-a.1@node-1 | last\n"]


def test_a_unit_past_swarms_63_characters_is_a_shorter_service_that_keeps_its_deployment_suffix() -> None:
    client = _FakeClient()
    unit = "team-a-job-" + "n" * 40 + "-v-10-20-30-rc-1-abcdef12"
    spec = ReleaseSpec(image="registry.lab:5000/j:1", env={}, labels={}, network="racetrack", replicas=1)

    _swarm(client).start(unit, spec)
    [created] = client.api.created
    name = created["name"]
    client.api.service_specs[name] = {"ID": "svc1", "Spec": {"Name": name}}
    client.api.task_list = [_task(1, "running")]

    assert len(unit) > 63 and len(name) <= 63 and name.endswith("-abcdef12") and name == service_name(unit)
    assert service_name(name) == name and service_name("short-unit") == "short-unit"
    assert _swarm(client).members(unit, 1) == [name]
    assert _swarm(client).replicas(unit, 1, 7000)[0].state == RUNNING


# --- the deployer through the seam ----------------------------------------------------------------------
class _StartingSwarm(_FakeSwarm):
    """A swarm whose new unit's task the test scripts; records what the deployer removes."""

    def __init__(self, replicas: list[Replica]) -> None:
        super().__init__(replicas)
        self.removed: list[str] = []

    def remove(self, unit: str, count: int) -> None:
        self.removed.append(unit)


def _swarm_deployer(settings: Settings, runtime: FakeRuntime, swarm: _FakeSwarm) -> Deployer:
    open_database(settings.database_path)
    vault = Vault(b"k" * 32)
    addressing = Addressing(mode=TASK_PORT, daemon_host="172.18.0.1", port=settings.port)
    return Deployer(
        settings,
        runtime,
        PluginStore.from_settings(settings),
        addressing,
        Accounts(vault, ChangeSignal.in_data_dir(settings.data_dir)),
        ImageBuilder(settings, runtime, vault, "http://172.18.0.1:7102"),
        swarm,  # type: ignore[arg-type]
    )


def test_a_task_no_node_can_take_fails_the_start_with_swarms_reason(
    make_settings: Callable[..., Settings], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("racetrackd.deploy.deployer.UNPLACED_GRACE_SECONDS", 0.2)
    reason = "no suitable node (scheduling constraints not satisfied on 3 nodes)"
    swarm = _StartingSwarm([Replica(name="u.1", state=PENDING, error=reason)])
    deployer = _swarm_deployer(make_settings(orchestrator="swarm"), runtime, swarm)
    started = time.monotonic()

    with pytest.raises(JobStartError, match=r"Swarm cannot start replica u\.1: no suitable node") as failed:
        deployer._wait_until_ready(None, "u", 0, 1, 1, Serving(port=7000))

    assert time.monotonic() - started < 5  # not the whole start timeout
    assert reason in failed.value.message


def test_a_task_that_crashes_on_start_fails_it_naming_the_node_and_swarms_error(
    make_settings: Callable[..., Settings], runtime: FakeRuntime
) -> None:
    crashed = Replica(
        name="u.1", state=STARTING, restart_count=1, node="node-2", error="task: non-zero exit (1)", exit_code=1
    )
    deployer = _swarm_deployer(make_settings(orchestrator="swarm"), runtime, _StartingSwarm([crashed]))

    with pytest.raises(JobStartError) as failed:
        deployer._wait_until_ready(None, "u", 0, 1, 1, Serving(port=7000))

    assert failed.value.message.startswith("the job's task u.1 on node-2 failed: task: non-zero exit (1) (exit code 1)")


def test_jobs_reach_the_daemon_at_the_managers_swarm_address_or_the_gwbridge_on_loopback(
    make_settings: Callable[..., Settings], runtime: FakeRuntime
) -> None:
    settings = make_settings(orchestrator="swarm")
    runtime.gateways["docker_gwbridge"] = "172.19.0.1"
    on_lan = _FakeClient(info={"Swarm": {"LocalNodeState": "active", "ControlAvailable": True, "NodeAddr": "10.0.0.5"}})
    on_loopback = _FakeClient(
        info={"Swarm": {"LocalNodeState": "active", "ControlAvailable": True, "NodeAddr": "127.0.0.1"}}
    )

    lan = resolve_swarm_addressing(settings, runtime, _swarm(on_lan), is_local_address=lambda a: a == "10.0.0.5")
    single = resolve_swarm_addressing(settings, runtime, _swarm(on_loopback))

    assert (lan.mode, lan.daemon_host) == (TASK_PORT, "10.0.0.5")
    assert lan.pub_url == f"http://10.0.0.5:{settings.port}/pub"
    assert (single.mode, single.daemon_host) == (TASK_PORT, "172.19.0.1")


def test_with_the_manager_on_another_host_jobs_reach_the_daemon_on_its_route_to_the_manager(
    make_settings: Callable[..., Settings], runtime: FakeRuntime
) -> None:
    """DOCKER_HOST at a manager elsewhere (the swarm lab's manager container, a remote engine): nothing
        of racetrackd listens at the manager's address, so PUB_URL (chain calls) names this host's address
        on the way to the manager, where the nodes reach it too (and extra_bind_addresses listens there: it
    is a local address)."""
    settings = make_settings(orchestrator="swarm", host="127.0.0.1")
    remote = _FakeClient(
        info={"Swarm": {"LocalNodeState": "active", "ControlAvailable": True, "NodeAddr": "172.30.99.10"}}
    )

    addressing = resolve_swarm_addressing(
        settings,
        runtime,
        _swarm(remote),
        is_local_address=lambda address: address == "172.30.99.1",
        route_address=lambda destination: "172.30.99.1" if destination == "172.30.99.10" else None,
    )

    assert addressing.pub_url == f"http://172.30.99.1:{settings.port}/pub"


def test_in_a_container_on_the_overlay_the_daemon_calls_task_ips(
    make_settings: Callable[..., Settings], runtime: FakeRuntime
) -> None:
    settings = make_settings(orchestrator="swarm")
    runtime.own = {"racetrack"}

    addressing = resolve_swarm_addressing(settings, runtime, _swarm(_FakeClient()))

    assert addressing.mode == TASK_IP and addressing.in_container and not addressing.isolates_containers


def test_in_docker_mode_reading_a_job_asks_docker_nothing(client: FlaskClient, runtime: FakeRuntime) -> None:
    add_job("adder", "1.0.0", addresses=["127.0.0.1:30001"])
    before = len(runtime.calls)

    body = client.get(f"{API}/job/adder/1.0.0").get_json()

    assert body["orchestrator"] == "docker" and "replica_details" not in body
    assert runtime.calls[before:] == []
