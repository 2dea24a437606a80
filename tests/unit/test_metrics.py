"""Prometheus figures (racetrackd/metrics.py): the gateway's counters after real calls, and registry figures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from racetrackd import db, metrics
from racetrackd.db import AsyncTask, TaskState
from tests.unit.conftest import ADMIN_TOKEN
from tests.unit.gateway_helpers import Daemons, LoopClient, Servers, UpstreamServer, add_job, free_port

AUTH = {"X-Racetrack-Auth": ADMIN_TOKEN}


@pytest.fixture(autouse=True)
def _single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)


def sample(name: str, **labels: str) -> float:
    """The value of one sample in render()'s text (0 when absent)."""
    for family in text_string_to_metric_families(metrics.render().decode()):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return 0.0


def samples_of(name: str) -> dict[tuple[tuple[str, str], ...], float]:
    values = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for found in family.samples:
            if found.name == name:
                values[tuple(sorted(found.labels.items()))] = float(found.value)
    return values


@pytest.fixture
def job(daemon: Daemons, servers: Servers) -> tuple[LoopClient, UpstreamServer]:
    client = daemon(call_timeout="0.2")
    server = servers()
    add_job("adder", "1.0.0", addresses=[server.address])
    return client, server


def test_answered_calls_are_counted_by_job_version_and_status(job: tuple[LoopClient, UpstreamServer]) -> None:
    client, _ = job
    ok = {"job_name": "adder", "job_version": "1.0.0", "status_code": "200"}
    job_labels = {"job_name": "adder", "job_version": "1.0.0"}
    before = (
        sample("racetrackd_gateway_requests_total", **ok),
        sample("racetrackd_gateway_job_seconds_count", **job_labels),
        sample("racetrackd_gateway_overhead_seconds_count"),
    )

    for _ in range(2):
        assert client.get("/pub/job/adder/latest/", AUTH).status_code == 200

    assert sample("racetrackd_gateway_requests_total", **ok) == before[0] + 2  # counted under the resolved version
    assert sample("racetrackd_gateway_job_seconds_count", **job_labels) == before[1] + 2
    assert sample("racetrackd_gateway_overhead_seconds_count") == before[2] + 2
    assert sample("racetrackd_gateway_in_flight", job_name="adder") == 0


def test_failed_calls_are_counted_by_kind(daemon: Daemons, servers: Servers) -> None:
    client = daemon(call_timeout="0.2")
    holder: list[UpstreamServer] = []
    slow = servers(lambda connection, request: holder[0].stopping.wait(3) and None)
    holder.append(slow)
    add_job("down", "1.0.0", addresses=[f"127.0.0.1:{free_port()}"])
    add_job("slow", "1.0.0", addresses=[slow.address])
    refused = {"job_name": "down", "job_version": "1.0.0", "kind": "ConnectionRefused"}
    timeout = {"job_name": "slow", "job_version": "1.0.0", "kind": "timeout"}
    not_found = {"job_name": "ghost", "job_version": "latest", "kind": "not_found"}
    before = {
        key: sample("racetrackd_gateway_errors_total", **labels)
        for key, labels in (("refused", refused), ("timeout", timeout), ("not_found", not_found))
    }
    before_502 = sample("racetrackd_gateway_requests_total", job_name="down", job_version="1.0.0", status_code="502")
    before_504 = sample("racetrackd_gateway_requests_total", job_name="slow", job_version="1.0.0", status_code="504")

    assert client.get("/pub/job/down/1.0.0/", AUTH).status_code == 502
    assert client.get("/pub/job/slow/1.0.0/", AUTH).status_code == 504
    assert client.get("/pub/job/ghost/latest/", AUTH).status_code == 404

    assert sample("racetrackd_gateway_errors_total", **refused) == before["refused"] + 1
    assert sample("racetrackd_gateway_errors_total", **timeout) == before["timeout"] + 1
    assert sample("racetrackd_gateway_errors_total", **not_found) == before["not_found"] + 1
    assert (
        sample("racetrackd_gateway_requests_total", job_name="down", job_version="1.0.0", status_code="502")
        == before_502 + 1
    )
    assert (
        sample("racetrackd_gateway_requests_total", job_name="slow", job_version="1.0.0", status_code="504")
        == before_504 + 1
    )


def test_calls_refused_for_their_token_are_counted(job: tuple[LoopClient, UpstreamServer]) -> None:
    client, _ = job
    before = sample("racetrackd_auth_failures_total", area="gateway")

    client.get("/pub/job/adder/1.0.0/", {"X-Racetrack-Auth": "wrong"})
    client.get("/pub/job/adder/1.0.0/")

    assert sample("racetrackd_auth_failures_total", area="gateway") == before + 2


def test_calls_to_a_starting_job_are_counted(daemon: Daemons) -> None:
    client = daemon()
    add_job("early", "1.0.0", db.JobStatus.STARTING, ["127.0.0.1:1"])
    labels = {"job_name": "early", "job_version": "1.0.0", "status_code": "503"}
    before = sample("racetrackd_gateway_requests_total", **labels)

    assert client.get("/pub/job/early/1.0.0/", AUTH).status_code == 503

    assert sample("racetrackd_gateway_requests_total", **labels) == before + 1


def test_registry_figures_count_jobs_by_status_and_async_tasks_by_state(daemon: Daemons) -> None:
    daemon()
    add_job("a", "1.0.0", db.JobStatus.RUNNING)
    add_job("b", "1.0.0", db.JobStatus.RUNNING)
    add_job("c", "1.0.0", db.JobStatus.SLEEPING)
    for state in (TaskState.QUEUED, TaskState.FAILED, TaskState.FAILED, TaskState.COMPLETED):
        AsyncTask.create(job_name="a", job_version="1.0.0", method="POST", target="/", state=state)

    jobs = samples_of("racetrackd_jobs")
    tasks = samples_of("racetrackd_async_tasks")

    assert jobs == {(("status", "running"),): 2.0, (("status", "sleeping"),): 1.0}
    assert tasks == {(("state", "queued"),): 1.0, (("state", "failed"),): 2.0, (("state", "completed"),): 1.0}


def test_registry_figures_follow_the_registry(daemon: Daemons) -> None:
    daemon()
    add_job("a", "1.0.0", db.JobStatus.RUNNING)
    assert samples_of("racetrackd_jobs") == {(("status", "running"),): 1.0}

    db.Job.update(status=db.JobStatus.CRASHED).execute()

    assert samples_of("racetrackd_jobs") == {(("status", "crashed"),): 1.0}


def test_the_metrics_endpoint_serves_them_without_a_token(job: tuple[LoopClient, UpstreamServer]) -> None:
    client, _ = job
    client.get("/pub/job/adder/1.0.0/", AUTH)

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.header("content-type") == metrics.CONTENT_TYPE
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {
        "racetrackd_gateway_requests",
        "racetrackd_gateway_errors",
        "racetrackd_gateway_job_seconds",
        "racetrackd_jobs",
        "racetrackd_async_tasks",
        "racetrackd_deployments",
    } <= names
    assert 'racetrackd_gateway_requests_total{job_name="adder",job_version="1.0.0",status_code="200"}' in response.text
    assert 'racetrackd_jobs{status="running"} 1.0' in response.text


FORKED_WORKERS = """
import os, sys
from prometheus_client import CollectorRegistry, multiprocess
from racetrackd import metrics

metrics.use_multiprocess_dir()  # as the daemon's HTTP master does
children = []
for _ in range(2):  # two workers forked from the master, each counting its calls
    pid = os.fork()
    if pid == 0:
        child = metrics.GATEWAY_REQUESTS.labels("adder", "1", "200")
        for _ in range(100):
            child.inc()
        os._exit(0)
    children.append(pid)
codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)
total = registry.get_sample_value(
    "racetrackd_gateway_requests_total", {"job_name": "adder", "job_version": "1", "status_code": "200"}
)
files = sorted(f for f in os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"]) if f.startswith("counter_"))
# Each value written asks for the pid (to notice a fork): not os.getpid, a system call every time.
check = metrics.metric_values.ValueClass._MmapedValue__check_for_pid_change
asks = dict(zip(check.__code__.co_freevars, (cell.cell_contents for cell in check.__closure__)))
print(codes, total, files == sorted(f"counter_{pid}.db" for pid in children), asks["process_identifier"] is os.getpid)
"""


def test_forked_workers_count_in_their_own_files_without_a_getpid_per_value(tmp_path: Path) -> None:
    env = {**os.environ, metrics.MULTIPROC_ENV: str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", FORKED_WORKERS], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[0, 0] 200.0 True False", result.stderr
