"""The deploy request as a value: parsed once at the API edge (racetrackd/api/deploy_body.py) and taken
by the use case (racetrackd/deploy/requests.py) with no HTTP in between."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from flask import Flask

from racetrackd import db
from racetrackd.api.deploy_body import parse_deploy_body
from racetrackd.auth import access
from racetrackd.auth.access import Identity
from racetrackd.deploy import requests as deployments
from racetrackd.deploy.requests import DeployRequest
from racetrackd.errors import ValidationError
from racetrackd.manifest import accept_manifest
from racetrackd.settings import Settings
from tests.unit.fakes import build_context, sample_manifest

ADMIN = Identity(access.USER, "admin", unrestricted=True)


def test_the_json_body_becomes_typed_values(make_settings: Callable[..., Settings]) -> None:
    body = {
        "manifest": sample_manifest(),
        "build_context": build_context(),
        "force": True,
        "build_flags": ["--no-cache"],
        "secret_vars": {"build_env": {"PIP_TOKEN": "p1"}},
        "git_credentials": {"username": "u", "password": "pw"},
    }

    request = parse_deploy_body(body, ADMIN, make_settings())

    assert request.manifest.name == "adder" and request.requester == ADMIN
    assert request.archive == base64.b64decode(body["build_context"])
    assert request.force and request.no_cache and request.git_remote is None
    assert request.secret_vars == ({"PIP_TOKEN": "p1"}, {})
    assert request.git_credentials == {"username": "u", "password": "pw"}


def test_without_an_archive_the_build_clones_git_remote(make_settings: Callable[..., Settings]) -> None:
    manifest = sample_manifest(git={"remote": "https://example.com/adder.git"})

    request = parse_deploy_body({"manifest": manifest}, ADMIN, make_settings())

    assert request.archive is None and request.git_remote == "https://example.com/adder.git"


def test_its_repr_shows_no_archive_and_no_secrets(make_settings: Callable[..., Settings]) -> None:
    body = {
        "manifest": sample_manifest(),
        "build_context": build_context(),
        "secret_vars": {"runtime_env": {"API_KEY": "s3cr3t-value"}},
        "git_credentials": {"username": "u", "password": "git-s3cr3t"},
    }

    shown = repr(parse_deploy_body(body, ADMIN, make_settings()))

    assert "s3cr3t" not in shown and body["build_context"] not in shown and "archive" not in shown


def test_an_archive_over_the_upload_cap_is_refused(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deployments, "MAX_UPLOAD_BYTES", 1024**2)

    with pytest.raises(ValidationError, match="build_context: larger than 1 MiB"):
        DeployRequest(
            manifest=accept_manifest(sample_manifest(), make_settings()), requester=ADMIN, archive=b"\0" * (1024**2 + 1)
        )


def test_the_use_case_queues_a_request_made_without_http(app: Flask) -> None:
    services = app.extensions["racetrackd"]
    archive = base64.b64decode(build_context())
    request = DeployRequest(
        manifest=accept_manifest(sample_manifest(), services.settings), requester=ADMIN, archive=archive
    )

    deployment = deployments.request_deployment(services.settings, services.plugins, services.vault, request)

    stored = db.Deployment.get()
    assert stored.id == deployment.id and stored.deployed_by == "admin"
    with open(stored.build_context_path, "rb") as upload:
        assert upload.read() == archive  # stored as it came, byte for byte
