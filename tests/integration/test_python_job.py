"""The python3 job type end to end: Racetrack's Python job conventions as a caller sees them.

Each fixture job under tests/fixtures/jobs is deployed once per module through the real daemon
(`rtd submit`), then called over HTTP through the gateway (/pub/job/<name>/<version>/...).
A few start-up behaviours the daemon hides (a slow or failing __init__) are observed on a
container of a job's image run directly, published on 127.0.0.1 and labelled for clean-up.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import docker.errors
import pytest
import requests

from tests.integration.conftest import FIXTURES, REPO, Daemon

pytestmark = pytest.mark.integration

ADDER = REPO / "samples" / "adder"
CONVENTIONS = "/pub/job/conventions/latest"
WEBVIEW = "/pub/job/webview-flask/latest"


# --- helpers ------------------------------------------------------------------------------------


def job_container(daemon: Daemon, name: str) -> Any:
    return next(c for c in daemon.containers() if c.labels.get("job-name") == name)


def job_image(daemon: Daemon, name: str, version: str) -> str:
    return str(daemon.api("GET", f"/lifecycle/api/v1/job/{name}/{version}").json()["image_tag"])


def wait_for(check: Callable[[], Any], timeout: float = 10, interval: float = 0.2) -> Any:
    """Poll until `check()` returns something truthy; return it (or the last falsy value)."""
    deadline = time.monotonic() + timeout
    result = check()
    while not result and time.monotonic() < deadline:
        time.sleep(interval)
        result = check()
    return result


def log_lines(container: Any) -> list[str]:
    return container.logs(stdout=True, stderr=False).decode(errors="replace").splitlines()


def concurrently(calls: list[Callable[[], requests.Response]], stagger: float = 0.0) -> list[requests.Response]:
    results: list[requests.Response | None] = [None] * len(calls)

    def run(index: int) -> None:
        results[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
        time.sleep(stagger)
    for thread in threads:
        thread.join(timeout=60)
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


class DirectContainer:
    """A container of a job image run by the test itself, its port 7000 published on 127.0.0.1."""

    def __init__(
        self, daemon: Daemon, image: str, command: list[str] | None = None, files: dict[str, str] | None = None
    ) -> None:
        labels = {"racetrackd.instance": daemon.instance, "job-name": "direct-test"}
        self.container = daemon.docker.containers.create(
            image,
            command=command,
            detach=True,
            labels=labels,
            ports={"7000/tcp": ("127.0.0.1", None)},
        )
        if files:
            self.container.put_archive("/tmp", _tar(files))
        self.container.start()
        self.url = ""
        deadline = time.monotonic() + 20
        while not self.url and time.monotonic() < deadline:
            self.container.reload()
            bindings = (self.container.attrs["NetworkSettings"]["Ports"] or {}).get("7000/tcp")
            if bindings:
                self.url = f"http://127.0.0.1:{bindings[0]['HostPort']}"
            else:
                time.sleep(0.05)
        assert self.url, "the direct container never published its port"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=10, **kwargs)

    def first_answer(self, path: str, timeout: float = 30) -> tuple[requests.Response, float]:
        """The first HTTP answer of a starting server, and the seconds since it was started."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            try:
                return self.get(path), time.monotonic() - start
            except requests.ConnectionError:
                time.sleep(0.05)
        raise AssertionError(f"{path} never answered:\n{self.container.logs().decode(errors='replace')}")

    def remove(self) -> None:
        try:
            self.container.remove(force=True)
        except docker.errors.NotFound:
            pass


def _tar(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# --- deployments (one per job per module) ---------------------------------------------------------


@pytest.fixture(scope="module")
def conventions(daemon: Daemon) -> Daemon:
    daemon.rtd("submit", "--force", str(FIXTURES / "conventions"), check=True)
    return daemon


@pytest.fixture(scope="module")
def webview(daemon: Daemon) -> Daemon:
    daemon.rtd("submit", "--force", str(FIXTURES / "webview-flask"), check=True)
    return daemon


@pytest.fixture(scope="module")
def chain(daemon: Daemon) -> Daemon:
    daemon.rtd("submit", "--force", str(ADDER), check=True)
    daemon.rtd("submit", "--force", str(FIXTURES / "chain"), check=True)
    return daemon


@pytest.fixture(scope="module")
def auxiliary_v2(daemon: Daemon) -> Daemon:
    daemon.rtd("submit", "--force", str(FIXTURES / "auxiliary-v2"), check=True)
    return daemon


@pytest.fixture(scope="module")
def limited(daemon: Daemon) -> Daemon:
    daemon.rtd("submit", "--force", str(FIXTURES / "limited"), check=True)
    return daemon


@pytest.fixture(scope="module")
def init_failure(daemon: Daemon) -> tuple[Any, float]:
    start = time.monotonic()
    result = daemon.rtd("submit", "--force", str(FIXTURES / "init-raises"))
    return result, time.monotonic() - start


@pytest.fixture(scope="module")
def slow_start(limited: Daemon) -> Iterator[dict[str, Any]]:
    """A fresh container of the `limited` image (whose __init__ sleeps 3 s), watched from its start."""
    direct = DirectContainer(limited, job_image(limited, "limited", "0.0.1"))
    try:
        live, live_after = direct.first_answer("/live")
        ready_early = direct.get("/ready")
        ready = wait_for(lambda: direct.get("/ready").status_code == 200, timeout=30)
        yield {"direct": direct, "live": live, "live_after": live_after, "ready_early": ready_early, "ready": ready}
    finally:
        direct.remove()


@pytest.fixture(scope="module")
def failing_start(limited: Daemon) -> Iterator[DirectContainer]:
    """The `limited` image running the init-raises entrypoint (copied in): __init__ raises."""
    image = limited.docker.images.get(job_image(limited, "limited", "0.0.1"))
    command = [*image.attrs["Config"]["Cmd"][:-1], "/tmp/init-raises/entrypoint.py"]
    source = (FIXTURES / "init-raises" / "entrypoint.py").read_text()
    direct = DirectContainer(limited, image.id, command=command, files={"init-raises/entrypoint.py": source})
    try:
        yield direct
    finally:
        direct.remove()


# --- entrypoint, request context ------------------------------------------------------------------


def test_perform_gets_json_kwargs_and_the_request_context(conventions: Daemon) -> None:
    response = conventions.api(
        "POST", f"{CONVENTIONS}/api/v1/perform", json={"name": "Ada", "times": 2}, headers={"X-Note": "from the caller"}
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"greeting": "Hello, Ada! Hello, Ada!", "note": "from the caller"}


def test_defaults_apply_and_bools_arrive_typed(conventions: Daemon) -> None:
    response = conventions.api("POST", f"{CONVENTIONS}/api/v1/perform", json={"name": "Bo", "shout": True})

    assert response.json()["greeting"] == "HELLO, BO!"


def test_request_context_exposes_method_path_query_headers_and_tracing_id(conventions: Daemon) -> None:
    response = conventions.api(
        "POST",
        f"{CONVENTIONS}/api/v1/context?x=1&y=two",
        json={},
        headers={"X-Test-Header": "hello", "X-Request-Tracing-Id": "ctx-trace-1"},
    )

    assert response.status_code == 200, response.text
    info = response.json()
    assert info["method"] == "POST"
    assert info["path"].endswith("/api/v1/context")
    assert info["query_string"] == "x=1&y=two"
    assert info["x_test_header"] == "hello"
    assert info["headers"]["x-test-header"] == "hello"
    assert all(name == name.lower() for name in info["headers"])
    assert info["tracing_id"] == "ctx-trace-1"


# --- start-up: __init__ in the background ---------------------------------------------------------


def test_live_answers_at_once_while_ready_waits_for_init(slow_start: dict[str, Any]) -> None:
    live = slow_start["live"]

    assert live.status_code == 200, live.text
    assert live.json()["live"] is True
    assert "deployment_timestamp" in live.json()
    assert slow_start["live_after"] < 3, "/live waited for __init__ (which sleeps 3 s)"
    assert slow_start["ready_early"].status_code == 503, slow_start["ready_early"].text
    assert slow_start["ready"], "/ready never turned 200 after __init__ finished"


def test_endpoints_are_served_at_the_root_and_under_the_pub_path(slow_start: dict[str, Any]) -> None:
    direct: DirectContainer = slow_start["direct"]

    at_root = requests.post(direct.url + "/api/v1/perform", json={"seconds": 0}, timeout=10)
    under_pub = requests.post(direct.url + "/pub/job/limited/0.0.1/api/v1/perform", json={"seconds": 0}, timeout=10)

    assert at_root.status_code == 200, at_root.text
    assert at_root.json() == "done"
    assert under_pub.status_code == 200, under_pub.text
    assert under_pub.json() == "done"


def test_root_redirects_to_docs_under_the_forwarded_prefix(slow_start: dict[str, Any]) -> None:
    """The wrapper's side of the redirect, without the gateway: X-Forwarded-Prefix as the gateway sends it."""
    direct: DirectContainer = slow_start["direct"]

    at_root = direct.get("/", allow_redirects=False)
    forwarded = direct.get(
        "/pub/job/limited/0.0.1/", allow_redirects=False, headers={"X-Forwarded-Prefix": "/pub/job/limited/latest"}
    )

    assert at_root.status_code == 307
    assert at_root.headers["Location"] == "/docs"
    assert forwarded.status_code == 307
    assert forwarded.headers["Location"] == "/pub/job/limited/latest/docs"


def test_a_response_without_a_caller_tracing_id_gets_a_generated_one(slow_start: dict[str, Any]) -> None:
    direct: DirectContainer = slow_start["direct"]

    first = requests.post(direct.url + "/api/v1/perform", json={"seconds": 0}, timeout=10)
    second = direct.get("/api/v1/no-such-endpoint")
    given = requests.post(
        direct.url + "/api/v1/perform", json={"seconds": 0}, timeout=10, headers={"X-Request-Tracing-Id": "mine-123"}
    )

    assert first.headers.get("X-Request-Tracing-Id")
    assert second.status_code == 404
    assert second.headers.get("X-Request-Tracing-Id")
    assert first.headers["X-Request-Tracing-Id"] != second.headers["X-Request-Tracing-Id"]
    assert given.headers["X-Request-Tracing-Id"] == "mine-123"


def test_an_exception_in_init_makes_live_500_with_the_error(failing_start: DirectContainer) -> None:
    # (a 500 Response is falsy: wait for the status, then read the answer)
    assert wait_for(lambda: failing_start.first_answer("/live")[0].status_code == 500, timeout=20), failing_start.get(
        "/live"
    ).text
    live = failing_start.get("/live")

    assert live.status_code == 500
    assert live.json()["live"] is False
    assert "model file missing" in live.json()["error"]
    assert failing_start.get("/ready").status_code != 200
    health = failing_start.get("/health").json()
    assert health["status"] == "fail"
    assert "model file missing" in health["error"]


def test_an_exception_in_init_fails_the_deployment_fast_with_the_error(
    daemon: Daemon, init_failure: tuple[Any, float]
) -> None:
    result, seconds = init_failure

    assert result.returncode != 0
    assert "model file missing" in result.stderr
    assert seconds < 60, f"the failed deployment took {seconds:.0f} s (the start timeout is 120 s)"
    failed = [d for d in daemon.api("GET", "/lifecycle/api/v1/deploy").json() if d["job_name"] == "init-raises"]
    assert failed[0]["status"] == "failed"
    assert "model file missing" in failed[0]["error"]


# --- perform: arguments and errors -----------------------------------------------------------------


def test_unknown_and_missing_kwargs_are_400_naming_them(conventions: Daemon) -> None:
    unknown = conventions.api("POST", f"{CONVENTIONS}/api/v1/perform", json={"name": "Ada", "nmae": "x"})
    missing = conventions.api("POST", f"{CONVENTIONS}/api/v1/perform", json={"times": 2})

    assert unknown.status_code == 400
    assert "nmae" in unknown.json()["error"]
    assert missing.status_code == 400
    assert "name" in missing.json()["error"]


def test_an_exception_in_perform_is_500_with_its_type_and_the_next_call_works(conventions: Daemon) -> None:
    failed = conventions.api("POST", f"{CONVENTIONS}/api/v1/perform", json={"name": "error"})
    after = conventions.api("POST", f"{CONVENTIONS}/api/v1/perform", json={"name": "Ada"})

    assert failed.status_code == 500
    assert failed.json() == {"error": "ValueError: no greeting for error"}
    assert after.status_code == 200
    assert after.json()["greeting"] == "Hello, Ada!"


def test_parameters_describe_perform(conventions: Daemon) -> None:
    response = conventions.api("GET", f"{CONVENTIONS}/api/v1/parameters")

    assert response.status_code == 200, response.text
    params = {p["name"]: p for p in response.json()}
    assert list(params) == ["name", "times", "shout"]
    assert "default_value" not in params["name"]
    assert params["times"]["default_value"] == 1
    assert params["shout"]["default_value"] is False
    assert {name: p.get("type", "") for name, p in params.items()} == {"name": "str", "times": "int", "shout": "bool"}


# --- auxiliary and static endpoints ----------------------------------------------------------------


def test_auxiliary_endpoint_takes_json_by_post_and_query_params_by_get(conventions: Daemon) -> None:
    posted = conventions.api("POST", f"{CONVENTIONS}/api/v1/explain", json={"name": "Ada", "detail": "long"})
    got = conventions.api("GET", f"{CONVENTIONS}/api/v1/explain", params={"name": "Bo"})

    assert posted.status_code == 200, posted.text
    assert posted.json() == {"explained": "Ada", "detail": "long"}
    assert got.status_code == 200, got.text
    assert got.json() == {"explained": "Bo", "detail": "short"}


def test_auxiliary_endpoints_v2_with_fastapis_markers_take_path_query_and_body(auxiliary_v2: Daemon) -> None:
    job = "/pub/job/auxiliary-v2/latest"

    multiplied = auxiliary_v2.api("POST", f"{job}/api/v1/multiply/2?query=3", json=4)
    middle = auxiliary_v2.api("GET", f"{job}/api/v1/middle?start=1&end=2")
    missing = auxiliary_v2.api("POST", f"{job}/api/v1/multiply/2", json=4)
    paths = auxiliary_v2.api("GET", f"{job}/openapi.json").json()["paths"]

    assert (multiplied.status_code, multiplied.json()) == (200, 24.0)
    assert middle.json() == 1.5
    assert (missing.status_code, missing.json()["error"]) == (422, "missing query parameter 'query'")
    assert paths["/api/v1/multiply/{path}"]["post"]["tags"] == ["items"]
    assert {p["name"]: p["in"] for p in paths["/api/v1/middle"]["get"]["parameters"]} == {
        "start": "query",
        "end": "query",
    }


def test_an_exception_in_an_auxiliary_endpoint_is_500_with_its_type(conventions: Daemon) -> None:
    response = conventions.api("POST", f"{CONVENTIONS}/api/v1/fail", json={})

    assert response.status_code == 500
    assert response.json() == {"error": "RuntimeError: deliberate failure"}


def test_static_files_with_guessed_or_declared_content_types(conventions: Daemon) -> None:
    readme = conventions.api("GET", f"{CONVENTIONS}/api/v1/readme")
    manifest = conventions.api("GET", f"{CONVENTIONS}/api/v1/manifest")

    assert readme.status_code == 200, readme.text
    assert readme.text.startswith("# Conventions")
    assert manifest.status_code == 200, manifest.text
    assert manifest.headers["Content-Type"].startswith("application/x-yaml")
    assert "name: conventions" in manifest.text


def test_static_directory_is_served_recursively(conventions: Daemon) -> None:
    nested = conventions.api("GET", f"{CONVENTIONS}/api/v1/assets/sub/file.txt")
    data = conventions.api("GET", f"{CONVENTIONS}/api/v1/assets/data.json")
    plain = conventions.api("GET", f"{CONVENTIONS}/api/v1/assets/NOEXTENSION")
    missing = conventions.api("GET", f"{CONVENTIONS}/api/v1/assets/sub/nothing.txt")

    assert nested.status_code == 200, nested.text
    assert nested.text == "a file in a sub-directory\n"
    assert nested.headers["Content-Type"].startswith("text/plain")
    assert data.headers["Content-Type"].startswith("application/json")
    assert data.json() == {"kind": "asset"}
    assert plain.status_code == 200
    assert plain.headers["Content-Type"].startswith("text/plain")
    assert missing.status_code == 404


# --- webview ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["latest", "1.0.0"])
def test_flask_webview_sees_the_callers_path_as_script_name(webview: Daemon, version: str) -> None:
    base = f"/pub/job/webview-flask/{version}"

    page = webview.api("GET", f"{base}/api/v1/webview/")

    assert page.status_code == 200, page.text
    assert page.headers["Content-Type"].startswith("text/html")
    assert f'<p id="script-name">{base}/api/v1/webview</p>' in page.text
    link = re.search(r'id="page" href="([^"]+)"', page.text)
    assert link and link.group(1) == f"{base}/api/v1/webview/page/x"
    followed = webview.api("GET", link.group(1))
    assert followed.status_code == 200
    assert followed.text == "page x"


def test_flask_webview_gets_post_bodies_and_query_strings(webview: Daemon) -> None:
    response = webview.api("POST", f"{WEBVIEW}/api/v1/webview/echo?q=1", json={"k": [1, 2]})

    assert response.status_code == 200, response.text
    assert response.json() == {"got": {"k": [1, 2]}, "args": {"q": "1"}}


def test_webview_static_directory(webview: Daemon) -> None:
    page = webview.api("GET", f"{WEBVIEW}/api/v1/webview/")
    href = re.search(r'rel="stylesheet" href="([^"]+)"', page.text)
    assert href, page.text

    css = webview.api("GET", href.group(1))

    assert href.group(1) == f"{WEBVIEW}/api/v1/webview/static/style.css"
    assert css.status_code == 200, css.text
    assert css.headers["Content-Type"].startswith("text/css")
    assert "rebeccapurple" in css.text


def test_home_page_redirects_to_the_webview(webview: Daemon) -> None:
    response = webview.api("GET", f"{WEBVIEW}/", allow_redirects=False)

    assert response.status_code == 307
    assert response.headers["Location"] == f"{WEBVIEW}/api/v1/webview/"


# --- metrics, health, docs -------------------------------------------------------------------------


def test_metrics_expose_request_counters_and_the_jobs_gauges(conventions: Daemon) -> None:
    conventions.api("POST", f"{CONVENTIONS}/api/v1/perform", json={"name": "Ada"})
    conventions.api("POST", f"{CONVENTIONS}/api/v1/fail", json={})

    response = conventions.api("GET", f"{CONVENTIONS}/metrics")

    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    text = response.text
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples["requests_started"] >= 2
    assert samples["requests_done"] >= 2
    assert samples['endpoint_requests_started{endpoint="/api/v1/perform"}'] >= 1
    assert samples['request_duration_count{endpoint="/api/v1/perform"}'] >= 1
    assert any(key.startswith('request_duration_bucket{endpoint="/api/v1/perform"') for key in samples)
    assert "# TYPE request_duration histogram" in text
    assert any(key.startswith("request_internal_errors") and value >= 1 for key, value in samples.items())
    assert samples["last_call_timestamp"] > time.time() - 600
    assert "# TYPE conventions_calls gauge" in text
    assert "# HELP conventions_calls perform() calls so far" in text
    assert samples['conventions_calls{kind="test"}'] >= 1
    assert samples["conventions_constant"] == 7


def test_health_has_racetracks_fields(conventions: Daemon) -> None:
    response = conventions.api("GET", f"{CONVENTIONS}/health")
    live = conventions.api("GET", f"{CONVENTIONS}/live").json()

    assert response.status_code == 200, response.text
    health = response.json()
    assert health["service"] == "job"
    assert health["job_name"] == "conventions"
    assert health["job_version"] == "0.1.0"
    assert health["live"] is True
    assert health["ready"] is True
    assert health["status"] == "pass"
    assert health["error"] is None
    assert int(health["deployment_timestamp"]) > 0
    assert int(health["deployment_timestamp"]) == int(live["deployment_timestamp"])
    assert health["job_type_version"]
    assert health["deployed_by_racetrack_version"]
    assert "git_version" in health


def test_openapi_document_lists_perform_with_its_example_and_the_other_endpoints(conventions: Daemon) -> None:
    response = conventions.api("GET", f"{CONVENTIONS}/openapi.json")

    assert response.status_code == 200, response.text
    document = response.json()
    assert document["openapi"].startswith("3.")
    perform = document["paths"]["/api/v1/perform"]["post"]
    assert perform["requestBody"]["content"]["application/json"]["example"] == {"name": "Ada", "times": 2}
    assert "Greet someone" in json.dumps(document)
    for path in ("/api/v1/explain", "/api/v1/readme", "/api/v1/manifest", "/api/v1/assets"):
        assert path in document["paths"], sorted(document["paths"])
    assert document["servers"][0]["url"] == CONVENTIONS


def test_docs_page_uses_swagger_assets_from_the_image(conventions: Daemon) -> None:
    page = conventions.api("GET", f"{CONVENTIONS}/docs")

    assert page.status_code == 200, page.text
    assert page.headers["Content-Type"].startswith("text/html")
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    bundle = next((s for s in sources if s.endswith("swagger-ui-bundle.js")), None)
    css = next((s for s in sources if s.endswith("swagger-ui.css")), None)
    assert bundle == f"{CONVENTIONS}/docs/swagger-ui/swagger-ui-bundle.js", sources
    assert css == f"{CONVENTIONS}/docs/swagger-ui/swagger-ui.css", sources
    assert not [s for s in sources if s.startswith(("http:", "https:", "//"))], sources
    script = conventions.api("GET", bundle)
    stylesheet = conventions.api("GET", css)
    assert script.status_code == 200
    assert "javascript" in script.headers["Content-Type"]
    assert len(script.content) > 100_000
    assert stylesheet.status_code == 200
    assert stylesheet.headers["Content-Type"].startswith("text/css")


@pytest.mark.parametrize("version", ["latest", "0.1.0", "0.x"])
def test_root_redirects_to_docs_under_the_path_the_caller_used(conventions: Daemon, version: str) -> None:
    response = conventions.api("GET", f"/pub/job/conventions/{version}/", allow_redirects=False)

    assert response.status_code == 307, response.text
    assert response.headers["Location"] == f"/pub/job/conventions/{version}/docs"


# --- results ---------------------------------------------------------------------------------------


def test_dataclasses_dates_decimals_and_sets_are_serialised(conventions: Daemon) -> None:
    response = conventions.api("GET", f"{CONVENTIONS}/api/v1/typed")

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["point"] == {"x": 1, "y": 2}
    assert result["day"] == "2024-02-29"
    assert result["when"] == "2024-02-29T12:30:00"
    assert float(result["amount"]) == 1.5
    assert result["tags"] == ["only"]


def test_numpy_arrays_and_scalars_are_serialised(webview: Daemon) -> None:
    response = webview.api("POST", f"{WEBVIEW}/api/v1/perform", json={"n": 4})

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["array"] == [0, 1, 2, 3]
    assert result["matrix"] == [[1.0, 0.0], [0.0, 1.0]]
    assert result["float"] == 1.5
    assert result["int"] == 7
    assert result["bool"] is True


def test_an_unserialisable_result_is_500_saying_so(conventions: Daemon) -> None:
    response = conventions.api("POST", f"{CONVENTIONS}/api/v1/unserialisable", json={})
    after = conventions.api("POST", f"{CONVENTIONS}/api/v1/perform", json={"name": "Ada"})

    assert response.status_code == 500
    assert response.json()["error"].startswith("result is not JSON-serializable: ")
    assert after.status_code == 200


# --- concurrency -----------------------------------------------------------------------------------


def test_max_concurrency_with_no_queue_refuses_the_second_call_with_429(limited: Daemon) -> None:
    def call() -> requests.Response:
        return limited.api("POST", "/pub/job/limited/latest/api/v1/perform", json={})

    responses = concurrently([call, call], stagger=0.3)

    assert sorted(r.status_code for r in responses) == [200, 429], [r.text for r in responses]
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]
    assert limited.api("POST", "/pub/job/limited/latest/api/v1/perform", json={"seconds": 0}).json() == "done"


def test_threads_bound_how_many_calls_run_at_once(conventions: Daemon) -> None:
    def call() -> requests.Response:
        return conventions.api("POST", f"{CONVENTIONS}/api/v1/sleep", json={"seconds": 1})

    start = time.monotonic()
    two = concurrently([call, call])
    two_seconds = time.monotonic() - start
    start = time.monotonic()
    four = concurrently([call] * 4)
    four_seconds = time.monotonic() - start

    assert [r.status_code for r in two + four] == [200] * 6
    assert two_seconds < 1.8, f"2 calls with threads: 2 took {two_seconds:.2f} s"
    assert 1.9 < four_seconds < 3.5, f"4 calls of 1 s with threads: 2 took {four_seconds:.2f} s"


def test_workers_setting_starts_that_many_server_processes(chain: Daemon, conventions: Daemon) -> None:
    def processes(name: str) -> int:
        top = job_container(chain, name).top()
        command = top["Titles"].index("CMD")
        return sum("racetrack_job_wrapper" in row[command] for row in top["Processes"])

    assert processes("conventions") == 1  # the default: one process serves
    assert processes("chain") == 3  # workers: 2 -> 2 serving processes and the parent that replaces a dead one


# --- chain calls -----------------------------------------------------------------------------------


def test_call_job_reaches_another_job_through_the_gateway_with_the_tracing_id(chain: Daemon) -> None:
    tracing_id = f"chain-{uuid.uuid4().hex[:12]}"
    granted = chain.api("POST", "/lifecycle/api/v1/auth/allow/job_family/chain/job/adder/scope/call_job")
    assert granted.status_code in (201, 409), granted.text  # 409: granted by an earlier run of this test

    response = chain.api(
        "POST",
        "/pub/job/chain/latest/api/v1/perform",
        json={"a": 40, "b": 2},
        headers={"X-Request-Tracing-Id": tracing_id},
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"answer": 42, "tracing_id": tracing_id}
    adder_lines = wait_for(lambda: [line for line in log_lines(job_container(chain, "adder")) if tracing_id in line])
    assert adder_lines, "the adder never logged the chain call's tracing id"


# --- logging ---------------------------------------------------------------------------------------


def test_one_access_line_per_call_with_method_path_status_duration_and_tracing_id(conventions: Daemon) -> None:
    tracing_id = f"log-{uuid.uuid4().hex[:12]}"
    conventions.api(
        "POST", f"{CONVENTIONS}/api/v1/perform", json={"name": "Ada"}, headers={"X-Request-Tracing-Id": tracing_id}
    )
    container = job_container(conventions, "conventions")

    lines = wait_for(lambda: [line for line in log_lines(container) if tracing_id in line])

    assert len(lines) == 1, lines
    line = lines[0]
    assert "POST" in line and "/api/v1/perform" in line and "200" in line
    assert "duration_ms" in line


def test_probes_are_not_logged(conventions: Daemon) -> None:
    tracing_id = f"probe-{uuid.uuid4().hex[:12]}"
    marker = f"marker-{uuid.uuid4().hex[:12]}"
    for probe in ("/live", "/ready", "/health", "/metrics"):
        conventions.api("GET", f"{CONVENTIONS}{probe}", headers={"X-Request-Tracing-Id": tracing_id})
    conventions.api("GET", f"{CONVENTIONS}/api/v1/parameters", headers={"X-Request-Tracing-Id": marker})
    container = job_container(conventions, "conventions")

    assert wait_for(lambda: any(marker in line for line in log_lines(container)))
    assert not [line for line in log_lines(container) if tracing_id in line]


def test_log_structured_gives_json_access_lines(chain: Daemon) -> None:
    tracing_id = f"json-{uuid.uuid4().hex[:12]}"
    chain.api("GET", "/pub/job/chain/latest/api/v1/parameters", headers={"X-Request-Tracing-Id": tracing_id})
    container = job_container(chain, "chain")

    lines = wait_for(lambda: [line for line in log_lines(container) if tracing_id in line])

    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert record["tracing_id"] == tracing_id
    assert "GET" in record["message"] and "/api/v1/parameters" in record["message"] and "200" in record["message"]
    assert "duration_ms" in record


def test_every_response_carries_the_callers_tracing_id(conventions: Daemon) -> None:
    for method, path in (("POST", "/api/v1/perform"), ("GET", "/api/v1/nothing-here"), ("GET", "/live")):
        response = conventions.api(
            method, f"{CONVENTIONS}{path}", json={"name": "Ada"}, headers={"X-Request-Tracing-Id": "echo-me"}
        )
        assert response.headers["X-Request-Tracing-Id"] == "echo-me", (method, path, response.headers)


# --- build -----------------------------------------------------------------------------------------


def test_requirements_install_into_the_jobs_own_virtualenv(webview: Daemon) -> None:
    result = webview.api("POST", f"{WEBVIEW}/api/v1/perform", json={"n": 1}).json()

    assert result["flask"] == "2.0.3"
    assert result["werkzeug"] == "2.0.3"
    assert result["numpy"] == "1.26.4"


def test_system_dependencies_are_installed_with_apt(conventions: Daemon) -> None:
    env = conventions.api("GET", f"{CONVENTIONS}/api/v1/environment").json()

    assert env["jq"], "jq (system_dependencies) is not on PATH"
    assert env["jq_output"].strip() == "42"


def test_build_env_is_in_the_image_and_runtime_env_at_run_time(conventions: Daemon) -> None:
    env = conventions.api("GET", f"{CONVENTIONS}/api/v1/environment").json()
    image = conventions.docker.images.get(job_image(conventions, "conventions", "0.1.0"))

    assert env["GREETING"] == "Hello"
    assert "BUILD_FLAG=baked-into-image" in image.attrs["Config"]["Env"]


def test_the_job_runs_as_uid_1000(conventions: Daemon) -> None:
    env = conventions.api("GET", f"{CONVENTIONS}/api/v1/environment").json()

    assert env["uid"] == 1000


def test_the_job_may_write_under_its_home_as_libraries_caching_there_do(conventions: Daemon) -> None:
    env = conventions.api("GET", f"{CONVENTIONS}/api/v1/environment").json()

    assert env["home_cache"] == "written"


# --- environment -----------------------------------------------------------------------------------


def test_the_daemon_sets_racetracks_environment_in_the_job(conventions: Daemon) -> None:
    env = conventions.api("GET", f"{CONVENTIONS}/api/v1/environment").json()
    health = conventions.api("GET", f"{CONVENTIONS}/health").json()

    assert env["JOB_NAME"] == "conventions"
    assert env["JOB_VERSION"] == "0.1.0"
    assert "name: conventions" in env["JOB_MANIFEST_YAML"]
    assert env["PUB_URL"].startswith("http://") and env["PUB_URL"].endswith("/pub")
    assert env["has_auth_token"] is True
    assert int(env["JOB_DEPLOYMENT_TIMESTAMP"]) == int(health["deployment_timestamp"])
    assert env["REQUEST_TRACING_HEADER"].lower() == "x-request-tracing-id"


@pytest.mark.parametrize("field", ["runtime_env.JOB_NAME", "build_env.PUB_URL", "runtime_env.AUTH_TOKEN"])
def test_a_manifest_setting_a_reserved_variable_is_refused_before_building(daemon: Daemon, field: str) -> None:
    result = daemon.rtd("submit", str(FIXTURES / "init-raises"), "-e", "version=9.9.9", "-e", f"{field}=mine")

    assert result.returncode != 0
    assert f"{field}: reserved" in result.stderr
    deployments = daemon.api("GET", "/lifecycle/api/v1/deploy").json()
    assert not [d for d in deployments if d["job_name"] == "init-raises" and d.get("job_version") == "9.9.9"]
