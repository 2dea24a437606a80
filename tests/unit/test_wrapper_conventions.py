"""The python3 job wrapper's conventions beyond perform: auxiliary and static endpoints, webviews,
metrics, request context, results, docs and the concurrency limit (driven in-process over ASGI)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.unit.asgi_client import AsgiClient
from tests.unit.fakes import write_job

FULL = '''
import dataclasses
import datetime
import decimal


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Job:
    def perform(self, name: str = "world") -> str:
        """Greet someone."""
        return f"hello {name}"

    def docs_input_example(self) -> dict:
        return {"name": "Ada"}

    def auxiliary_endpoints(self) -> dict:
        return {"/explain": self.explain, "/rich": self.rich, "/who": self.who, "/broken": self.broken}

    def explain(self, topic: str) -> dict:
        return {"topic": topic}

    def rich(self) -> dict:
        return {"point": Point(1, 2), "day": datetime.date(2026, 11, 29), "price": decimal.Decimal("1.5"),
                "tags": {"a"}}

    def who(self) -> str:
        return self.request_context.get().header("X-Caller-Name")

    def broken(self) -> object:
        return object()

    def static_endpoints(self) -> dict:
        return {"/readme": "README.md", "/manifest": ("job.yaml", "application/x-yaml"), "/assets": "assets"}

    def metrics(self) -> list:
        return [{"name": "model_accuracy", "value": 0.93, "description": "How good", "labels": {"model": "v1"}}]
'''

WSGI_WEBVIEW = """
class Job:
    def perform(self) -> int:
        return 1

    def webview_app(self, base_url):
        def app(environ, start_response):
            body = f"{environ['SCRIPT_NAME']}|{environ['PATH_INFO']}|{base_url}".encode()
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [body]
        return app
"""


@pytest.fixture
def make_app(
    wrapper_app: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[Any, AsgiClient]]:
    def make(files: dict[str, str], **options: Any) -> tuple[Any, AsgiClient]:
        write_job(tmp_path, files)
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("JOB_NAME", "full")
        monkeypatch.setenv("JOB_VERSION", "1.0.0")
        app = wrapper_app.JobApp("entrypoint.py", None, wrapper_app.WrapperOptions(**options))
        app.load()
        return app, AsgiClient(app)

    return make


FILES = {
    "entrypoint.py": FULL,
    "README.md": "# Full job\n",
    "job.yaml": "name: full\n",
    "assets/sub/data.txt": "deep file\n",
}


def test_auxiliary_endpoints_take_json_or_query_arguments(make_app: Callable[..., Any]) -> None:
    _, client = make_app(FILES)

    posted = client.post("/api/v1/explain", json={"topic": "trees"})
    queried = client.get("/pub/job/full/1.0.0/api/v1/explain?topic=forests")

    assert posted.json == {"topic": "trees"}
    assert queried.json == {"topic": "forests"}


def test_results_of_common_python_types_become_json(make_app: Callable[..., Any]) -> None:
    _, client = make_app(FILES)

    rich = client.post("/api/v1/rich", json={})
    broken = client.post("/api/v1/broken", json={})

    assert rich.json == {"point": {"x": 1, "y": 2}, "day": "2026-11-29", "price": 1.5, "tags": ["a"]}
    assert broken.status_code == 500
    assert "not JSON-serializable" in broken.json["error"]


def test_request_context_exposes_the_current_request(make_app: Callable[..., Any]) -> None:
    _, client = make_app(FILES)

    response = client.post("/api/v1/who", json={}, headers={"X-Caller-Name": "User ada"})

    assert response.json == "User ada"


def test_static_endpoints_serve_files_and_directories(make_app: Callable[..., Any]) -> None:
    _, client = make_app(FILES)

    readme = client.get("/api/v1/readme")
    manifest = client.get("/api/v1/manifest")
    deep = client.get("/api/v1/assets/sub/data.txt")
    escape = client.get("/api/v1/assets/../entrypoint.py")

    assert readme.text == "# Full job\n"
    assert readme.headers["content-type"].startswith("text/markdown")
    assert manifest.headers["content-type"] == "application/x-yaml"
    assert deep.text == "deep file\n"
    assert escape.status_code == 404


def test_metrics_include_request_counts_and_the_jobs_own_gauges(make_app: Callable[..., Any]) -> None:
    _, client = make_app(FILES)
    client.post("/api/v1/perform", json={"name": "Ada"})

    text = client.get("/metrics").text

    assert 'endpoint_requests_started{endpoint="/api/v1/perform"} 1' in text
    assert 'request_duration_count{endpoint="/api/v1/perform"} 1' in text
    assert 'model_accuracy{model="v1"} 0.93' in text
    assert "last_call_timestamp 0.0" not in text


def test_openapi_and_docs_describe_the_job(make_app: Callable[..., Any]) -> None:
    _, client = make_app(FILES)

    document = client.get("/pub/job/full/1.0.0/openapi.json").json
    page = client.get("/docs", headers={"X-Forwarded-Prefix": "/pub/job/full/latest"})

    perform = document["paths"]["/api/v1/perform"]["post"]
    assert perform["description"] == "Greet someone."
    assert perform["requestBody"]["content"]["application/json"]["example"] == {"name": "Ada"}
    assert "/api/v1/explain" in document["paths"] and "/api/v1/readme" in document["paths"]
    assert document["servers"] == [{"url": "/pub/job/full/1.0.0"}]
    assert "/pub/job/full/latest/openapi.json" in page.text


def test_openapi_declares_the_racetrack_auth_header_so_swagger_ui_can_send_it(make_app: Callable[..., Any]) -> None:
    _, client = make_app(FILES)

    document = client.get("/pub/job/full/1.0.0/openapi.json").json

    scheme = {"type": "apiKey", "in": "header", "name": "X-Racetrack-Auth"}
    assert document["components"]["securitySchemes"] == {"RacetrackAuth": scheme}
    assert document["security"] == [{"RacetrackAuth": []}]  # Authorize fills it in every call and curl
    assert document["paths"]["/ready"]["get"]["security"] == []  # probes need no token


def test_a_wsgi_webview_is_mounted_under_its_prefix(make_app: Callable[..., Any], tmp_path: Path) -> None:
    _, client = make_app({"entrypoint.py": WSGI_WEBVIEW, "static/style.css": "body {}\n"})

    page = client.get("/pub/job/full/1.0.0/api/v1/webview/page")
    css = client.get("/pub/job/full/1.0.0/api/v1/webview/static/style.css")

    # as Racetrack's runner: webview_app() gets the webview's own path, PATH_INFO is under it
    assert page.text == (
        "/pub/job/full/1.0.0/api/v1/webview|/pub/job/full/1.0.0/api/v1/webview/page|/pub/job/full/1.0.0/api/v1/webview"
    )
    assert css.text == "body {}\n"
    assert css.headers["content-type"].startswith("text/css")


def test_callers_beyond_the_concurrency_queue_get_429(make_app: Callable[..., Any]) -> None:
    slow = 'import time\n\nclass Job:\n    def perform(self) -> str:\n        time.sleep(0.3)\n        return "done"\n'
    app, _ = make_app({"entrypoint.py": slow}, max_concurrency=1, max_concurrency_queue=0)
    client = AsgiClient(app)

    async def two_calls() -> list[int]:
        first = asyncio.create_task(client._request("POST", "/api/v1/perform", b"{}", {}))
        await asyncio.sleep(0.05)
        second = await client._request("POST", "/api/v1/perform", b"{}", {})
        return [(await first).status_code, second.status_code]

    first_status, second_status = asyncio.run(two_calls())

    assert first_status == 200
    assert second_status == 429


# --- auxiliary_endpoints_v2: Racetrack's EndpointConfig with FastAPI's parameter markers ----------

# FastAPI's markers as a job's requirements would provide them (the wrapper reads them by name).
FAKE_FASTAPI = """
class _Marker:
    def __init__(self, default=..., *, embed=False, **options):
        self.default = default
        self.embed = embed


class Body(_Marker):
    pass


class Query(_Marker):
    pass


class Path(_Marker):
    pass
"""

# Racetrack's python-auxiliary-endpoints-v2 sample, as a job writes it.
AUXILIARY_V2 = '''
from http import HTTPMethod
from typing import Annotated, Dict, List

from fastapi import Body, Path, Query
from racetrack_job_wrapper.endpoint_config import EndpointConfig


class Job:
    def perform(self, x: float, y: float) -> float:
        """Add numbers."""
        return x + y

    def auxiliary_endpoints_v2(self) -> List[EndpointConfig]:
        return [
            EndpointConfig("/multiply/{path}", HTTPMethod.POST, self.multiply, other_options=dict(tags=["items"])),
            EndpointConfig("/random", HTTPMethod.GET, self.random),
            EndpointConfig("/explain", "POST", self.explain),
        ]

    def multiply(
        self,
        body: Annotated[float, Body(examples=[1.2])],
        query: Annotated[float, Query(example=2.4)],
        path: Annotated[float, Path(example=234.21)],
    ) -> float:
        """Multiply the three."""
        return body * query * path

    def random(self, start: float, end: float, inclusive: bool = True) -> Dict[str, object]:
        """A number in the range."""
        return {"middle": (start + end) / 2, "inclusive": inclusive}

    def explain(self, x: Annotated[float, Body()], y: Annotated[float, Body()]) -> Dict[str, float]:
        return {"x_importance": x / (x + y), "y_importance": y / (x + y)}

    def docs_input_examples(self) -> Dict[str, Dict]:
        return {"/perform": {"x": 40, "y": 2}, "/explain": {"x": 1, "y": 3}}
'''

V2_FILES = {"entrypoint.py": AUXILIARY_V2, "fastapi/__init__.py": FAKE_FASTAPI}


def test_auxiliary_endpoints_v2_take_path_query_and_body_parameters(make_app: Callable[..., Any]) -> None:
    _, client = make_app(V2_FILES)

    multiplied = client.request("POST", "/pub/job/full/1.0.0/api/v1/multiply/2?query=3", body=b"4")
    middle = client.get("/api/v1/random?start=1&end=3&inclusive=false")
    explained = client.post("/api/v1/explain", json={"x": 1, "y": 3})

    assert (multiplied.status_code, multiplied.json) == (200, 24.0)
    assert middle.json == {"middle": 2.0, "inclusive": False}
    assert explained.json == {"x_importance": 0.25, "y_importance": 0.75}
    assert client.post("/api/v1/perform", json={"x": 40, "y": 2}).json == 42


def test_auxiliary_endpoints_v2_refuse_a_bad_call_naming_the_parameter(make_app: Callable[..., Any]) -> None:
    _, client = make_app(V2_FILES)

    missing = client.request("POST", "/api/v1/multiply/2", body=b"4")
    not_a_number = client.get("/api/v1/random?start=one&end=3")
    wrong_method = client.get("/api/v1/multiply/2?query=3")

    assert (missing.status_code, missing.json) == (422, {"error": "missing query parameter 'query'"})
    assert not_a_number.status_code == 422 and "query parameter 'start'" in not_a_number.json["error"]
    assert (wrong_method.status_code, wrong_method.json) == (405, {"error": "method GET not allowed here; use POST"})


def test_auxiliary_endpoints_v2_are_in_the_api_document(make_app: Callable[..., Any]) -> None:
    _, client = make_app(V2_FILES)

    paths = client.get("/openapi.json").json["paths"]

    multiply = paths["/api/v1/multiply/{path}"]["post"]
    assert multiply["tags"] == ["items"] and multiply["description"] == "Multiply the three."
    assert [(p["name"], p["in"], p["required"]) for p in multiply["parameters"]] == [
        ("query", "query", True),
        ("path", "path", True),
    ]
    assert "requestBody" in multiply
    random = paths["/api/v1/random"]["get"]
    assert [(p["name"], p["required"]) for p in random["parameters"]] == [
        ("start", True),
        ("end", True),
        ("inclusive", False),
    ]
    assert paths["/api/v1/explain"]["post"]["requestBody"]["content"]["application/json"]["example"] == {"x": 1, "y": 3}
