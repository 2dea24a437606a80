"""What a finished deployment tells its deployer beyond "done" (Racetrack's deployment warnings)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from racetrackd.db import DeploymentStatus
from tests.unit.fakes import FakeRuntime, sample_manifest
from tests.unit.test_registry import _deploy


def test_public_endpoints_waiting_for_approval_are_a_warning_naming_how_to_approve(
    make_app: Callable[..., Flask], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    manifest = sample_manifest(public_endpoints=["/api/v1/perform", "/docs"])
    monkeypatch.setattr("tests.unit.test_registry.sample_manifest", lambda: manifest)

    deployment = _deploy(app, runtime, monkeypatch)

    assert deployment.status == DeploymentStatus.DONE, deployment.error
    assert deployment.warnings == (
        "public_endpoints wait for an admin's approval; until then they need a token: "
        "/api/v1/perform (rtd public-endpoints approve 1), /docs (rtd public-endpoints approve 2)"
    )


def test_a_job_without_public_endpoints_gets_no_such_warning(
    make_app: Callable[..., Flask], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = _deploy(make_app(), runtime, monkeypatch)

    assert deployment.status == DeploymentStatus.DONE, deployment.error
    assert not deployment.warnings
