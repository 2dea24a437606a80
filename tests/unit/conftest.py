"""Shared unit-test fixtures: settings in a tmp data dir, the Flask app over a FakeRuntime, the job wrapper."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from racetrackd import db
from racetrackd.app import create_app
from racetrackd.services import build_services
from racetrackd.settings import Settings
from tests.unit.fakes import FakeRuntime
from tests.unit.gateway_helpers import Daemons, Servers

REPO = Path(__file__).resolve().parents[2]
PYTHON3_PLUGIN_DIR = REPO / "jobtype_plugins" / "python3"
ADMIN_TOKEN = "unit-test-admin-token"


@pytest.fixture(autouse=True)
def _no_developer_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own RACETRACK_* / RTD_* variables must not leak into any test."""
    import os

    for key in list(os.environ):
        if key.startswith(("RACETRACK_", "RTD_")):
            monkeypatch.delenv(key)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**extra: str) -> Settings:
        environ = {
            "RACETRACK_DATA_DIR": str(tmp_path / "data"),
            "RACETRACK_ADMIN_TOKEN": ADMIN_TOKEN,
            **{f"RACETRACK_{key.upper()}": value for key, value in extra.items()},
        }
        return Settings.from_env(environ)

    return make


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def make_app(make_settings: Callable[..., Settings], runtime: FakeRuntime) -> Iterator[Callable[..., Flask]]:
    """create_app over the composition root with a FakeRuntime; each app re-binds racetrackd.db to a fresh
    tmp database."""

    def make(**extra: str) -> Flask:
        app = create_app(services=build_services(make_settings(**extra), runtime))
        app.testing = True
        return app

    yield make
    if not db.database.is_closed():
        db.database.close()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client that sends the admin token on every request."""
    test_client = app.test_client()
    test_client.environ_base["HTTP_X_RACETRACK_AUTH"] = ADMIN_TOKEN
    return test_client


@pytest.fixture
def wrapper_app(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """`racetrack_job_wrapper.app`, importable as in the job's image; job imports are undone afterwards."""
    monkeypatch.syspath_prepend(str(PYTHON3_PLUGIN_DIR))
    # load_entrypoint adds the job's directory to sys.path and the module to sys.modules.
    monkeypatch.setattr(sys, "path", list(sys.path))
    modules_before = set(sys.modules)
    module = importlib.import_module("racetrack_job_wrapper.app")
    yield module
    job_root = str(tmp_path_factory.getbasetemp())
    for name in set(sys.modules) - modules_before:
        if (getattr(sys.modules[name], "__file__", None) or "").startswith(job_root):
            del sys.modules[name]


# --- the gateway over local upstream servers ---------------------------------------------------


@pytest.fixture
def daemon(make_settings: Callable[..., Settings], runtime: FakeRuntime) -> Iterator[Daemons]:
    """Gateways (create_asgi_app over a FakeRuntime) driven on one event loop; closed afterwards."""
    daemons = Daemons(make_settings, runtime)
    yield daemons
    daemons.close()


@pytest.fixture
def servers() -> Iterator[Servers]:
    """Raw-socket HTTP servers on 127.0.0.1 standing in for jobs."""
    made = Servers()
    yield made
    made.close()


# --- the rtd CLI without a daemon -------------------------------------------------------------


@pytest.fixture
def requests_made(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every HTTP request rtd tries; none reaches a socket (each fails as a refused connection)."""
    made: list[str] = []

    def refuse(self: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
        made.append(f"{method} {url}")
        raise requests.ConnectionError("connection refused (unit tests open no sockets)")

    monkeypatch.setattr(requests.Session, "request", refuse)
    return made


@pytest.fixture
def runner(tmp_path: Path, requests_made: list[str]) -> CliRunner:
    return CliRunner(
        env={"RTD_CONFIG": str(tmp_path / "rtd.yaml"), "RTD_REMOTE": "http://127.0.0.1:9", "RTD_TOKEN": ""}
    )
