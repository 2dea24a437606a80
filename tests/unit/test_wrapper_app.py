"""The python3 job wrapper's ASGI app (racetrack_job_wrapper.app.JobApp), driven in-process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.unit.asgi_client import AsgiClient as Client
from tests.unit.asgi_client import AsgiResponse
from tests.unit.fakes import write_job

ADDER = '''
class AdderEntrypoint:
    def perform(self, a: int, b: int = 2) -> int:
        """Add two numbers."""
        return a + b
'''

FLAKY = """
class FlakyEntrypoint:
    def perform(self, fail: bool = False) -> dict:
        if fail:
            raise ValueError("asked to fail")
        return {"ok": True, "tags": {"x"}}
"""

HELPER_AND_ENTRYPOINT = """
from helper import Helper, double  # Helper has perform() but belongs to another module


class Config:  # no perform(): not a candidate
    pass


class JobEntrypoint:
    def perform(self, x: float) -> float:
        return double(x)
"""


@pytest.fixture
def make_app(
    wrapper_app: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[Any, Client]]:
    """Write the job's files into tmp_path, chdir there, build a JobApp and wait until it has loaded."""

    def make(
        files: dict[str, str], entrypoint_class: str | None = None, entrypoint_path: str = "entrypoint.py"
    ) -> tuple[Any, Client]:
        write_job(tmp_path, files)
        monkeypatch.chdir(tmp_path)
        app = wrapper_app.JobApp(entrypoint_path, entrypoint_class)
        app.start_loading()
        app._loading.join(timeout=30)
        assert not app._loading.is_alive()
        return app, Client(app)

    return make


def perform(client: Client, path: str = "/api/v1/perform", **kwargs: Any) -> AsgiResponse:
    return client.post(path, json=kwargs)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/perform",
        "/pub/job/adder/0.0.1/api/v1/perform",
        "/pub/fatman/adder/latest/api/v1/perform/",
    ],
)
def test_perform_returns_the_result(make_app: Callable[..., tuple[Any, Client]], path: str) -> None:
    _, client = make_app({"entrypoint.py": ADDER})

    response = perform(client, path, a=40, b=2)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json == 42


def test_perform_uses_parameter_defaults(make_app: Callable[..., tuple[Any, Client]]) -> None:
    _, client = make_app({"entrypoint.py": ADDER})

    assert perform(client, a=1).json == 3


def test_perform_with_an_empty_body_calls_without_arguments(make_app: Callable[..., tuple[Any, Client]]) -> None:
    _, client = make_app({"entrypoint.py": FLAKY})

    response = client.post("/api/v1/perform")

    assert response.status_code == 200
    assert response.json == {"ok": True, "tags": ["x"]}  # a set is returned as a list


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"a": 1, "c": 3}, "'c'"),
        ({"b": 3}, "'a'"),
    ],
)
def test_wrong_argument_names_are_400_naming_the_argument(
    make_app: Callable[..., tuple[Any, Client]], kwargs: dict[str, int], named: str
) -> None:
    _, client = make_app({"entrypoint.py": ADDER})

    response = perform(client, **kwargs)

    assert response.status_code == 400
    assert named in response.json["error"]


def test_an_exception_in_perform_is_500_and_the_job_keeps_serving(
    make_app: Callable[..., tuple[Any, Client]], caplog: pytest.LogCaptureFixture
) -> None:
    _, client = make_app({"entrypoint.py": FLAKY})

    failed = perform(client, fail=True)

    assert failed.status_code == 500
    assert failed.json == {"error": "ValueError: asked to fail"}
    assert "asked to fail" in caplog.text  # the traceback goes to the job's log
    assert perform(client, fail=False).status_code == 200
    assert client.get("/live").status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1, 2]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
        (b"{not json", "not valid JSON"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_400(
    make_app: Callable[..., tuple[Any, Client]], body: bytes, message: str
) -> None:
    _, client = make_app({"entrypoint.py": ADDER})

    response = client.post("/api/v1/perform", data=body, content_type="application/json")

    assert response.status_code == 400
    assert message in response.json["error"]


def test_a_result_that_is_not_json_serializable_is_500(make_app: Callable[..., tuple[Any, Client]]) -> None:
    _, client = make_app({"entrypoint.py": "class E:\n    def perform(self):\n        return object()\n"})

    response = perform(client)

    assert response.status_code == 500
    assert "not JSON-serializable" in response.json["error"]


def test_live_reports_the_deployment_timestamp(
    make_app: Callable[..., tuple[Any, Client]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOB_DEPLOYMENT_TIMESTAMP", "1700000123")

    _, client = make_app({"entrypoint.py": ADDER})
    response = client.get("/live")

    assert response.status_code == 200
    assert response.json == {"live": True, "deployment_timestamp": 1700000123}


def test_ready_after_load(make_app: Callable[..., tuple[Any, Client]]) -> None:
    _, client = make_app({"entrypoint.py": ADDER})

    response = client.get("/ready")

    assert response.status_code == 200
    assert response.json == {"ready": True}


def test_an_import_error_makes_live_and_ready_500(make_app: Callable[..., tuple[Any, Client]]) -> None:
    _, client = make_app({"entrypoint.py": "import module_that_does_not_exist\n"})

    live = client.get("/live")
    ready = client.get("/ready")
    called = perform(client)

    assert live.status_code == 500
    assert live.json["live"] is False
    assert "ModuleNotFoundError" in live.json["error"]
    assert "module_that_does_not_exist" in live.json["error"]
    assert ready.status_code == 500
    assert ready.json == {"ready": False}
    assert called.status_code == 500
    assert "module_that_does_not_exist" in called.json["error"]


def test_an_error_in_the_constructor_is_reported_by_live(make_app: Callable[..., tuple[Any, Client]]) -> None:
    source = (
        "class E:\n    def __init__(self):\n        raise RuntimeError('model file missing')\n"
        "    def perform(self):\n        return 1\n"
    )
    _, client = make_app({"entrypoint.py": source})

    response = client.get("/live")

    assert response.status_code == 500
    assert response.json["error"] == "RuntimeError: model file missing"


def test_a_missing_entrypoint_file_is_reported_by_live(make_app: Callable[..., tuple[Any, Client]]) -> None:
    _, client = make_app({"other.py": ADDER})

    response = client.get("/live")

    assert response.status_code == 500
    assert "entrypoint.py" in response.json["error"]


def test_health_describes_the_job(make_app: Callable[..., tuple[Any, Client]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOB_NAME", "adder")
    monkeypatch.setenv("JOB_VERSION", "0.0.1")
    _, client = make_app({"entrypoint.py": ADDER})

    health = client.get("/pub/job/adder/0.0.1/health").json

    assert health["job_name"] == "adder"
    assert health["job_version"] == "0.0.1"
    assert health["status"] == "pass"
    assert health["error"] is None


def test_parameters_list_names_types_and_defaults(make_app: Callable[..., tuple[Any, Client]]) -> None:
    _, client = make_app({"entrypoint.py": ADDER})

    response = client.get("/api/v1/parameters")

    assert response.status_code == 200
    assert response.json == [
        {"name": "a", "type": "int"},
        {"name": "b", "type": "int", "default_value": 2},
    ]


def test_parameters_skip_star_args(make_app: Callable[..., tuple[Any, Client]]) -> None:
    source = "class E:\n    def perform(self, x, *args, **kwargs):\n        return x\n"
    _, client = make_app({"entrypoint.py": source})

    assert client.get("/api/v1/parameters").json == [{"name": "x"}]


def test_the_entrypoint_class_is_found_when_it_is_the_only_one_with_perform(
    make_app: Callable[..., tuple[Any, Client]],
) -> None:
    # Classes without perform() and classes imported from other modules are not candidates;
    # the job's own modules are importable from its directory.
    app, client = make_app(
        {
            "entrypoint.py": HELPER_AND_ENTRYPOINT,
            "helper.py": "class Helper:\n    def perform(self):\n        return 0\n\n\ndef double(x):\n    return 2 * x\n",
        }
    )

    assert type(app.conventions.instance).__name__ == "JobEntrypoint"
    assert perform(client, x=1.5).json == 3.0


def test_two_candidate_classes_are_an_error_naming_them(make_app: Callable[..., tuple[Any, Client]]) -> None:
    source = (
        "class First:\n    def perform(self):\n        return 1\n\n\n"
        "class Second:\n    def perform(self):\n        return 2\n"
    )
    _, client = make_app({"entrypoint.py": source})

    response = client.get("/live")

    assert response.status_code == 500
    assert "First, Second" in response.json["error"]
    assert "entrypoint_class" in response.json["error"]


def test_no_candidate_class_is_an_error(make_app: Callable[..., tuple[Any, Client]]) -> None:
    _, client = make_app({"entrypoint.py": "def perform():\n    return 1\n"})

    response = client.get("/live")

    assert response.status_code == 500
    assert "found none" in response.json["error"]


def test_a_named_entrypoint_class_is_used(make_app: Callable[..., tuple[Any, Client]]) -> None:
    source = (
        "class First:\n    def perform(self):\n        return 1\n\n\n"
        "class Second:\n    def perform(self):\n        return 2\n"
    )
    _, client = make_app({"job/main.py": source}, entrypoint_class="Second", entrypoint_path="job/main.py")

    assert perform(client).json == 2


def test_a_named_entrypoint_class_that_does_not_exist_is_reported(make_app: Callable[..., tuple[Any, Client]]) -> None:
    _, client = make_app({"entrypoint.py": ADDER}, entrypoint_class="Missing")

    response = client.get("/live")

    assert response.status_code == 500
    assert "class Missing not found in entrypoint.py" in response.json["error"]


def test_unknown_path_is_404_and_wrong_method_is_405(make_app: Callable[..., tuple[Any, Client]]) -> None:
    _, client = make_app({"entrypoint.py": ADDER})

    missing = client.get("/api/v1/nothing")
    wrong_method = client.get("/api/v1/perform")

    assert missing.status_code == 404
    assert "/api/v1/nothing" in missing.json["error"]
    assert wrong_method.status_code == 405


def test_index_redirects_to_the_docs_under_the_path_the_caller_used(
    make_app: Callable[..., tuple[Any, Client]],
) -> None:
    _, client = make_app({"entrypoint.py": ADDER})

    direct = client.get("/pub/job/adder/0.0.1/")
    via_gateway = client.get("/pub/job/adder/0.0.1/", headers={"X-Forwarded-Prefix": "/pub/job/adder/latest"})

    assert direct.status_code == 307
    assert direct.headers["location"] == "/pub/job/adder/0.0.1/docs"
    assert via_gateway.headers["location"] == "/pub/job/adder/latest/docs"


def test_requests_before_loading_finishes_are_503_not_errors(
    wrapper_app: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_job(tmp_path, {"entrypoint.py": ADDER})
    monkeypatch.chdir(tmp_path)
    app = wrapper_app.JobApp("entrypoint.py", None)
    app._loading = object()  # pretend loading is under way, so the request does not start it

    client = Client(app)

    assert client.get("/live").status_code == 200
    assert client.get("/ready").status_code == 503
    response = perform(client, a=1)
    assert response.status_code == 503
    assert "still initializing" in response.json["error"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/pub/job/adder/0.0.1/api/v1/perform", 200),
        ("/pub/job/adder/latest/api/v1/perform", 200),
        ("/pub/job/adder/0.x/api/v1/perform", 200),
        ("/api/v1/perform", 200),
        ("/pub/job/other/0.0.1/api/v1/perform", 404),
        ("/pub/job/adder/0.0.2/api/v1/perform", 404),
    ],
)
def test_a_call_meant_for_another_job_is_refused(
    make_app: Callable[..., tuple[Any, Client]], monkeypatch: pytest.MonkeyPatch, path: str, status: int
) -> None:
    # A stale address (a dead container's IP given to a new one) must not get another job's answer.
    monkeypatch.setenv("JOB_NAME", "adder")
    monkeypatch.setenv("JOB_VERSION", "0.0.1")
    _, client = make_app({"entrypoint.py": ADDER})

    response = perform(client, path, a=40, b=2)

    assert response.status_code == status, response.data
    if status == 404:
        assert "this is job adder 0.0.1" in response.json["error"]
