"""The racetrackd API client: one method per endpoint, errors raised as `ApiError` with the server's message."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import requests

from cli.errors import EXIT_UNREACHABLE, RtdError, exit_code_for_status

AUTH_HEADER = "X-Racetrack-Auth"
# What rtd asks the daemon only as a courtesy (the example for the first call rtd submit suggests,
# rtd validate's check against the daemon's job types) must not hold the command up.
EXAMPLE_TIMEOUT = 3.0


class ApiError(RtdError):
    """The daemon refused or failed a request (`status` is its HTTP status), or could not be reached."""

    def __init__(
        self, message: str, status: int | None = None, hint: str | None = None, exit_code: int | None = None
    ) -> None:
        super().__init__(message, hint, exit_code_for_status(status) if exit_code is None else exit_code)
        self.status = status
        self.field_errors: list[str] = []  # "field: message" of an invalid manifest, one per problem


class ApiClient:
    def __init__(self, remote: str, token: str | None, timeout: float = 60) -> None:
        self.remote = remote.rstrip("/")
        self.token = token
        self.session = requests.Session()
        if token:
            self.session.headers[AUTH_HEADER] = token
        self.timeout = timeout

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = self.remote + path
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, url, **kwargs)
        except requests.ConnectionError as exc:
            raise ApiError(
                f"cannot reach racetrackd at {self.remote}",
                hint="is it running? (racetrackd start), or pick another: rtd remote use NAME|URL",
                exit_code=EXIT_UNREACHABLE,
            ) from exc
        except requests.Timeout as exc:
            raise ApiError(
                f"racetrackd at {self.remote} did not answer in {self.timeout:g} s", exit_code=EXIT_UNREACHABLE
            ) from exc
        except requests.RequestException as exc:  # a malformed URL, a TLS failure, a broken answer
            raise ApiError(
                f"cannot talk to racetrackd at {self.remote}: {exc}",
                hint="check the remote: rtd remote",
                exit_code=EXIT_UNREACHABLE,
            ) from exc
        return response

    def _api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, "/lifecycle/api/v1" + path, **kwargs)
        if response.status_code >= 400:
            raise _error_from(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(
                f"{self.remote} answered {path} with something other than racetrackd's JSON",
                hint="is the remote a racetrackd? rtd remote shows it",
            ) from exc

    def info(self) -> dict[str, Any]:
        return self._api("GET", "/info")

    def deploy(
        self,
        manifest: dict[str, Any],
        build_context: str | None,
        force: bool,
        git_credentials: dict[str, str] | None = None,
        no_cache: bool = False,
        secret_vars: dict[str, dict[str, str]] | None = None,
        registry_credentials: dict[str, str] | None = None,
    ) -> str:
        body: dict[str, Any] = {
            "manifest": manifest,
            "build_context": build_context,
            "force": force,
            "git_credentials": git_credentials,
            "secret_vars": secret_vars,
            "build_flags": ["--no-cache"] if no_cache else [],
        }
        if registry_credentials is not None:  # racetrackd's own key: sent only when given
            body["registry_credentials"] = registry_credentials
        return str(self._api("POST", "/deploy", json=body)["id"])

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        return self._api("GET", f"/deploy/{deployment_id}")

    def deployment_logs(self, deployment_id: str, offset: int) -> tuple[str, int]:
        """Build output after `offset`, and the offset to ask from next time."""
        body = self._api("GET", f"/deploy/{deployment_id}/build-logs", params={"offset": offset})
        return str(body["logs"]), int(body["offset"])

    def job_build_logs(self, name: str, version: str, tail: int) -> str:
        return str(self._api("GET", f"/job/{name}/{version}/build-logs", params={"tail": tail})["logs"])

    def latest_deployment_id(self, name: str, version: str) -> str:
        deployments = self._api("GET", "/deploy", params={"limit": 500, "job_name": name})
        for deployment in deployments:  # newest first
            if version in ("latest", deployment["job_version"]):
                return str(deployment["id"])
        raise ApiError(f"no deployment of job {name} {version}", 404, hint="rtd deployments lists them")

    def job_logs(self, name: str, version: str, tail: int) -> str:
        return str(self._api("GET", f"/job/{name}/{version}/logs", params={"tail": tail})["logs"])

    def follow_job_logs(self, name: str, version: str, tail: int) -> Iterator[bytes]:
        response = self._request(
            "GET",
            f"/lifecycle/api/v1/job/{name}/{version}/logs",
            params={"tail": tail, "follow": "true"},
            stream=True,
            timeout=(10, None),
        )
        if response.status_code >= 400:
            raise _error_from(response)
        yield from response.iter_content(chunk_size=None)

    def rollback(self, name: str, version: str, deployment_id: str | None, to_version: str | None = None) -> str:
        body = {"deployment_id": deployment_id} if deployment_id else {"to_version": to_version} if to_version else {}
        return str(self._api("POST", f"/job/{name}/{version}/rollback", json=body)["id"])

    def deployments(self, job_name: str | None, limit: int) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if job_name:
            params["job_name"] = job_name
        return self._api("GET", "/deploy", params=params)

    def audit(self, job_name: str | None, job_version: str | None, limit: int) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if job_name:
            params["job_name"] = job_name
        if job_version:
            params["job_version"] = job_version
        return self._api("GET", "/audit/activity", params=params)

    def jobs(self) -> list[dict[str, Any]]:
        return self._api("GET", "/job")

    def job(self, name: str, version: str) -> dict[str, Any]:
        return self._api("GET", f"/job/{name}/{version}")

    def nodes(self) -> dict[str, Any]:
        return self._api("GET", "/nodes")

    def delete_job(self, name: str, version: str) -> None:
        self._api("DELETE", f"/job/{name}/{version}")

    def call(self, name: str, version: str, endpoint: str, payload: Any, method: str = "POST") -> requests.Response:
        path = f"/pub/job/{name}/{version}/{endpoint.lstrip('/')}"
        kwargs: dict[str, Any] = {"json": payload} if method != "GET" else {}
        return self._request(method, path, **kwargs)

    def check_manifest(self, manifest: dict[str, Any]) -> tuple[list[str], list[str]]:
        """(errors, warnings) the daemon finds in a manifest, as a deploy of it would (its job types and
        their settings, its limits), deploying nothing."""
        try:
            answer = self._api("POST", "/manifest/check", json={"manifest": manifest})
        except ApiError as exc:
            if exc.status == 400 and exc.field_errors:
                return exc.field_errors, []
            raise
        return [], [str(warning) for warning in (answer or {}).get("warnings") or []]

    def perform_example(self, name: str, version: str) -> Any:
        """The example request of the job's perform, from its API description (python3 and golang
        wrappers publish docs_input_example there); None when it has none or does not answer soon."""
        try:
            response = self._request("GET", f"/pub/job/{name}/{version}/openapi.json", timeout=EXAMPLE_TIMEOUT)
            spec = response.json() if response.status_code == 200 else {}
        except (ApiError, ValueError):
            return None
        try:
            return spec["paths"]["/api/v1/perform"]["post"]["requestBody"]["content"]["application/json"]["example"]
        except (KeyError, TypeError):
            return None

    def call_async(self, name: str, version: str, endpoint: str, payload: Any, method: str = "POST") -> str:
        """Start an async call; returns its task id."""
        path = f"/pub/async/new/job/{name}/{version}/{endpoint.lstrip('/')}"
        kwargs: dict[str, Any] = {"json": payload} if method != "GET" else {}
        response = self._request(method, path, **kwargs)
        if response.status_code != 201:
            raise _error_from(response)
        return str(response.json()["task_id"])

    def poll_task(self, task_id: str, wait: float = 30) -> requests.Response:
        """The task's answer when it is done (the job's own status and body); 202 while it runs."""
        return self._request(
            "GET", f"/pub/async/task/{task_id}/poll", params={"wait": wait}, timeout=max(self.timeout, wait + 10)
        )

    def tasks(self, state: str | None, job_name: str | None, limit: int) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        if job_name:
            params["job_name"] = job_name
        return self._api("GET", "/async/tasks", params=params)

    def retry_task(self, task_id: str) -> dict[str, Any]:
        return self._api("POST", f"/async/tasks/{task_id}/retry")

    # ---- auth: own session
    def login(self, username: str, password: str) -> dict[str, Any]:
        return self._api("POST", "/users/login", json={"username": username, "password": password})

    def logout(self) -> None:
        self._api("GET", "/users/logout")

    def whoami(self) -> dict[str, Any]:
        return self._api("GET", "/users/validate_user_auth")

    def change_password(self, old_password: str, new_password: str) -> None:
        self._api("PUT", "/users/change_password", json={"old_password": old_password, "new_password": new_password})

    # ---- auth: administration
    def users(self) -> list[dict[str, Any]]:
        return self._api("GET", "/users")

    def create_user(self, username: str, password: str | None, is_staff: bool) -> dict[str, Any]:
        return self._api("POST", "/users", json={"username": username, "password": password, "is_staff": is_staff})

    def update_user(self, username: str, changes: dict[str, Any]) -> dict[str, Any]:
        return self._api("PATCH", f"/users/{username}", json=changes)

    def delete_user(self, username: str) -> None:
        self._api("DELETE", f"/users/{username}")

    def escs(self) -> list[dict[str, Any]]:
        return self._api("GET", "/escs")

    def create_esc(self, name: str, esc_id: str | None) -> dict[str, Any]:
        return self._api("POST", "/escs", json={"name": name, "id": esc_id})

    def delete_esc(self, esc_id: str) -> None:
        self._api("DELETE", f"/escs/{esc_id}")

    def tokens(self, subject: str | None, everyone: bool) -> list[dict[str, Any]]:
        params = {"all": "true"} if everyone else ({"subject": subject} if subject else {})
        return self._api("GET", "/auth/tokens", params=params)

    def create_token(self, subject: str | None, expires_in: float | None, description: str) -> dict[str, Any]:
        return self._api(
            "POST", "/auth/tokens", json={"subject": subject, "expires_in": expires_in, "description": description}
        )

    def revoke_token(self, token_id: int) -> dict[str, Any]:
        return self._api("DELETE", f"/auth/tokens/{token_id}")

    def grants(self, subject: str | None) -> list[dict[str, Any]]:
        return self._api("GET", "/auth/grants", params={"subject": subject} if subject else {})

    def add_grant(
        self, subject: str, scope: str, job_name: str | None, job_version: str | None, endpoint: str | None
    ) -> dict[str, Any]:
        return self._api(
            "POST",
            "/auth/grants",
            json={
                "subject": subject,
                "scope": scope,
                "job_name": job_name,
                "job_version": job_version,
                "endpoint": endpoint,
            },
        )

    def remove_grant(self, grant_id: int) -> None:
        self._api("DELETE", f"/auth/grants/{grant_id}")

    def public_endpoints(self, pending: bool) -> list[dict[str, Any]]:
        return self._api("GET", "/auth/public-endpoints", params={"pending": "true"} if pending else {})

    def set_public_endpoint(self, request_id: int, active: bool) -> dict[str, Any]:
        return self._api("PUT", f"/auth/public-endpoints/{request_id}", json={"active": active})

    # ---- job-type plugins
    def maintenance(self) -> dict[str, Any]:
        return self._api("GET", "/maintenance")

    def set_maintenance(self, on: bool, message: str) -> dict[str, Any]:
        return self._api("PUT", "/maintenance", json={"maintenance_mode": on, "message": message})

    def plugins(self) -> list[dict[str, Any]]:
        return self._api("GET", "/plugin")

    def job_type_versions(self) -> list[str]:
        return self._api("GET", "/plugin/job_type/versions")

    def install_plugin(self, filename: str, data: bytes, replace: bool) -> dict[str, Any]:
        return self._api(
            "POST",
            f"/plugin/upload/{filename}",
            params={"replace": int(replace)},
            data=data,
            headers={"Content-Type": "application/zip"},
        )

    def remove_plugin(self, name: str, version: str) -> dict[str, Any]:
        return self._api("DELETE", f"/plugin/{name}/{version}")

    def download_plugin(self, name: str, version: str) -> bytes:
        response = self._request("GET", f"/lifecycle/api/v1/plugin/{name}/{version}/download")
        if response.status_code >= 400:
            raise _error_from(response)
        return response.content


def _error_from(response: requests.Response) -> ApiError:
    body: Any = None
    try:
        body = response.json()
        message = body.get("error") or response.text
        hint = body.get("hint")
    except ValueError:
        message, hint = response.text.strip() or response.reason, None
    if response.status_code == 401 and not hint:
        hint = "log in with: rtd login TOKEN (or rtd login --username NAME)"
    error = ApiError(message, response.status_code, hint)
    if isinstance(body, dict):
        fields = [e for e in body.get("errors") or [] if isinstance(e, dict)]
        error.field_errors = [f"{e.get('field')}: {e.get('message')}" for e in fields]
    return error
