"""Jobs built from their own Dockerfile, end to end: the samples flask-app, hugo-site and
sphinx-docs (docker-proxy: a server that knows nothing of racetrackd), samples/adder (python3), and
tests/fixtures/jobs/dockerfile-wrapper (dockerfile: the image keeps the wrapper contract itself),
tests/fixtures/jobs/post-only (docker-proxy: a server that handles only POST),
tests/fixtures/jobs/post-only-dockerfile (dockerfile: the same server, no wrapper contract) and
tests/fixtures/jobs/dockerfile-init-error (dockerfile: a contract that reports an init error).

Each is deployed once per module through the real daemon (`rtd submit`) and called through the
gateway (/pub/job/<name>/<version>/...). Image layers are cached by the engine between runs.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import docker
import pytest

from tests.integration.conftest import FIXTURES, REPO, Daemon, _remove_labelled, launch_daemon
from tests.integration.test_python_job import job_container, job_image

pytestmark = pytest.mark.integration

SAMPLES = REPO / "samples"
FLASK = "/pub/job/flask-app/latest"
HUGO = "/pub/job/hugo-site/latest"
SPHINX = "/pub/job/sphinx-docs/latest"
WRAPPED = "/pub/job/dockerfile-wrapper/latest"
SECRET_WORD = "correct-horse-battery-staple"
BUILD_SECRET = "build-time-only-tr0ub4dor"


@pytest.fixture(scope="module")
def flask_app(daemon: Daemon) -> Daemon:
    daemon.rtd("submit", "--force", str(SAMPLES / "flask-app"), check=True)
    return daemon


@pytest.fixture(scope="module")
def hugo_site(daemon: Daemon) -> Daemon:
    daemon.rtd("submit", "--force", str(SAMPLES / "hugo-site"), check=True)
    return daemon


@pytest.fixture(scope="module")
def sphinx_docs(daemon: Daemon) -> Daemon:
    daemon.rtd("submit", "--force", str(SAMPLES / "sphinx-docs"), check=True)
    return daemon


@pytest.fixture(scope="module")
def wrapped(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Daemon:
    job = tmp_path_factory.mktemp("dockerfile-wrapper") / "job"
    shutil.copytree(FIXTURES / "dockerfile-wrapper", job)
    (job / "secret-runtime.env").write_text(f"SECRET_WORD={SECRET_WORD}\n")
    (job / "secret-build.env").write_text(f"BUILD_SECRET={BUILD_SECRET}\n")
    daemon.rtd("submit", "--force", str(job), check=True)
    return daemon


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value and not value.startswith(("#", "mailto:")):
                self.found.append(value.split("#")[0])


def assert_links_resolve(daemon: Daemon, page: str) -> list[str]:
    """Fetch `page` through the gateway, then every same-site link on it (as a browser resolves
    them); every one must answer 200 under the job's gateway path. Returns the links' paths (and queries)."""
    response = daemon.api("GET", page)
    assert response.status_code == 200, response.text
    parser = _Links()
    parser.feed(response.text)
    prefix = "/".join(page.split("/")[:5])  # /pub/job/<name>/<version>
    resolved = sorted(
        {urljoin(daemon.url + page, link)[len(daemon.url) :] for link in parser.found if not urlsplit(link).netloc}
    )
    assert resolved, f"no links on {page}"
    for path in resolved:
        assert path.startswith(prefix + "/"), f"{page}: link resolves outside the job: {path}"
        assert daemon.api("GET", path).status_code == 200, f"{page}: broken link {path}"
    return resolved


# --- flask-app: docker-proxy, forward mode --------------------------------------------------------------


def test_flask_app_answers_through_api_v1_with_its_build_arg(flask_app: Daemon) -> None:
    page = flask_app.api("GET", f"{FLASK}/api/v1/")
    added = flask_app.api("POST", f"{FLASK}/api/v1/add", json={"a": 40, "b": 2})

    assert page.status_code == 200
    assert "<h1>Hello from a Dockerfile</h1>" in page.text  # build_env GREETING, given as a build arg
    assert added.json() == {"sum": 42.0}


def test_flask_apps_redirect_comes_back_under_the_gateway_path(flask_app: Daemon) -> None:
    response = flask_app.api("GET", f"{FLASK}/api/v1/plus?a=1&b=2", allow_redirects=False)

    assert response.status_code == 302
    assert response.headers["Location"] == f"{FLASK}/api/v1/add?a=1&b=2"
    assert flask_app.api("GET", response.headers["Location"]).json() == {"sum": 3.0}


def test_flask_apps_relative_link_resolves_through_the_gateway(flask_app: Daemon) -> None:
    assert assert_links_resolve(flask_app, f"{FLASK}/api/v1/") == [f"{FLASK}/api/v1/add?a=40&b=2"]


def test_forward_mode_reaches_the_app_only_under_api_v1(flask_app: Daemon) -> None:
    response = flask_app.api("GET", f"{FLASK}/add?a=1&b=2")

    assert response.status_code == 404
    assert "proxy_mode: rewrite" in response.json()["hint"]


def test_the_daemon_answers_health_and_metrics_for_the_app(flask_app: Daemon) -> None:
    flask_app.api("GET", f"{FLASK}/api/v1/")

    health = flask_app.api("GET", f"{FLASK}/health", headers={"X-Racetrack-Auth": ""})
    live = flask_app.api("GET", f"{FLASK}/live", headers={"X-Racetrack-Auth": ""})
    metrics = flask_app.api("GET", f"{FLASK}/metrics")
    job = flask_app.api("GET", "/lifecycle/api/v1/job/flask-app/latest").json()

    assert health.status_code == 200 and health.json()["status"] == "pass"
    container_env = job_container(flask_app, "flask-app").attrs["Config"]["Env"]
    assert live.status_code == 200
    assert f"JOB_DEPLOYMENT_TIMESTAMP={live.json()['deployment_timestamp']}" in container_env
    assert (
        'racetrackd_gateway_requests_total{job_name="flask-app",job_version="0.0.1",status_code="200"}' in metrics.text
    )
    assert (job["status"], job["job_type_version"]) == ("running", "docker-proxy:1.0.0")


def test_the_apps_image_is_its_own_dockerfile_with_nothing_of_racetrackd(flask_app: Daemon) -> None:
    image = flask_app.docker.images.get(job_image(flask_app, "flask-app", "0.0.1"))
    config = image.attrs["Config"]

    assert config["Cmd"] == ["gunicorn", "--bind", "0.0.0.0:7001", "--workers", "2", "--access-logfile", "-", "app:app"]
    assert "APP_GREETING=Hello from a Dockerfile" in config["Env"]
    assert not [var for var in config["Env"] if var.startswith(("RACETRACK", "BASE_IMAGE"))]


@pytest.fixture(scope="module")
def impatient(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, base_image: str
) -> Iterator[Daemon]:
    """A daemon that gives a new job 15 s to answer (the session's daemon gives it 120 s)."""
    handle = launch_daemon(
        tmp_path_factory.mktemp("impatient"), docker_client, base_image, RACETRACK_JOB_START_TIMEOUT="15"
    )
    try:
        yield handle
    finally:
        handle.stop()
        _remove_labelled(docker_client, handle.instance)


def test_a_server_not_listening_on_its_port_fails_the_deployment_naming_the_port(impatient: Daemon) -> None:
    result = impatient.rtd("submit", str(SAMPLES / "flask-app"), "-e", "jobtype_extra.user_module_port=7005")
    deployment = impatient.api("GET", "/lifecycle/api/v1/deploy?job_name=flask-app").json()[0]

    assert result.returncode != 0
    assert deployment["status"] == "failed"
    assert "must listen on 0.0.0.0:7005" in deployment["error"]
    assert "Listening at: http://0.0.0.0:7001" in deployment["error"]  # the job's own log says where it is
    assert impatient.api("GET", "/lifecycle/api/v1/job/flask-app/0.0.1").status_code == 404


# --- post-only: a server that answers GET with 501 ----------------------------------------------------


def test_a_server_that_handles_only_post_becomes_ready_and_answers_posts(daemon: Daemon) -> None:
    submitted = daemon.rtd("submit", "--force", str(FIXTURES / "post-only"))

    job = daemon.api("GET", "/lifecycle/api/v1/job/post-only/0.0.1").json()
    posted = daemon.api("POST", "/pub/job/post-only/latest/api/v1/shout", data=b"hello")
    got = daemon.api("GET", "/pub/job/post-only/latest/api/v1/")
    ready = daemon.api("GET", "/pub/job/post-only/latest/ready")

    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert job["status"] == "running"
    assert (posted.status_code, posted.text) == (200, "posted HELLO to /shout")
    assert got.status_code == 501  # the server's own answer to GET, passed through
    assert ready.status_code == 200


# --- hugo-site and sphinx-docs: static sites, rewrite mode ------------------------------------------------


def test_hugo_sites_pages_and_their_links_resolve_through_the_gateway(hugo_site: Daemon) -> None:
    home = hugo_site.api("GET", f"{HUGO}/")
    links = assert_links_resolve(hugo_site, f"{HUGO}/")

    assert "A Hugo site behind the racetrackd gateway" in home.text
    assert f"{HUGO}/posts/first-post/" in links and f"{HUGO}/style.css" in links
    assert_links_resolve(hugo_site, f"{HUGO}/posts/first-post/")


def test_the_static_servers_redirect_is_rewritten_under_the_gateway_path(hugo_site: Daemon) -> None:
    response = hugo_site.api("GET", f"{HUGO}/posts", allow_redirects=False)

    assert response.status_code == 301
    assert response.headers["Location"] == f"{HUGO}/posts/"


def test_the_sites_root_without_a_slash_is_redirected_to_it(hugo_site: Daemon) -> None:
    response = hugo_site.api("GET", HUGO, allow_redirects=False)

    assert response.status_code == 308
    assert response.headers["Location"] == f"{HUGO}/"


def test_sphinx_docs_pages_and_their_links_resolve_through_the_gateway(sphinx_docs: Daemon) -> None:
    index = sphinx_docs.api("GET", f"{SPHINX}/")
    links = assert_links_resolve(sphinx_docs, f"{SPHINX}/")

    assert "racetrackd sample docs" in index.text
    assert f"{SPHINX}/usage.html" in links
    assert any(link.endswith(".css") for link in links)
    assert_links_resolve(sphinx_docs, f"{SPHINX}/usage.html")


# --- dockerfile: the image keeps the wrapper contract itself ----------------------------------------------


def test_a_dockerfile_job_serves_under_its_own_gateway_path(wrapped: Daemon) -> None:
    result = wrapped.api("POST", f"{WRAPPED}/api/v1/perform", json={"a": 40, "b": 2})
    job = wrapped.api("GET", "/lifecycle/api/v1/job/dockerfile-wrapper/latest").json()

    assert result.json() == 42
    assert job["status"] == "running"


def test_a_dockerfile_jobs_build_env_runtime_env_and_secrets_reach_it(wrapped: Daemon) -> None:
    env = wrapped.api("GET", f"{WRAPPED}/api/v1/environment").json()

    assert env["BAKED_FLAG"] == "baked-at-build-time"  # a build arg, which the Dockerfile keeps with ENV
    assert env["BUILD_FLAG"] == ""  # build_env names are blanked at run time, as for every job type
    assert env["MOOD"] == "sunny"
    assert env["SECRET_WORD_sha256"] == hashlib.sha256(SECRET_WORD.encode()).hexdigest()
    # The secret build env reached the RUN step that fetched it (racetrack-build/with-build-secrets.py).
    assert env["BUILD_SECRET_sha256"] == hashlib.sha256(BUILD_SECRET.encode()).hexdigest()


def test_a_dockerfile_jobs_dockerfile_is_rendered_as_a_template(wrapped: Daemon) -> None:
    image = wrapped.docker.images.get(job_image(wrapped, "dockerfile-wrapper", "0.0.1"))

    assert image.labels["sample.job-name"] == "dockerfile-wrapper"
    assert image.labels["sample.job-version"] == "0.0.1"
    for secret in (SECRET_WORD, BUILD_SECRET):
        assert secret not in str(image.attrs) and secret not in str(image.history())
    build_log = wrapped.rtd("build-logs", "dockerfile-wrapper", check=True).stdout
    assert BUILD_SECRET not in build_log


def test_a_dockerfile_server_that_handles_only_post_becomes_ready_and_answers_posts(daemon: Daemon) -> None:
    """No wrapper contract (GET /live answers 501): ready once its server answers HTTP at all."""
    submitted = daemon.rtd("submit", "--force", str(FIXTURES / "post-only-dockerfile"))

    job = daemon.api("GET", "/lifecycle/api/v1/job/post-only-dockerfile/0.0.1").json()
    posted = daemon.api("POST", "/pub/job/post-only-dockerfile/latest/api/v1/shout", data=b"hello")
    got = daemon.api("GET", "/pub/job/post-only-dockerfile/latest/api/v1/shout")

    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert job["status"] == "running"
    # a dockerfile job's server gets the full gateway path, as Racetrack's dockerfile job type does
    assert (posted.status_code, posted.text) == (
        200,
        "posted HELLO to /pub/job/post-only-dockerfile/0.0.1/api/v1/shout",
    )
    assert got.status_code == 501  # the server's own answer to GET, passed through
    # The supervisor (every second here) keeps to the choice made at deploy time: still running, no error.
    time.sleep(3)
    later = daemon.api("GET", "/lifecycle/api/v1/job/post-only-dockerfile/0.0.1").json()
    assert (later["status"], later["error"]) == ("running", None), later


def test_a_dockerfile_server_speaking_the_contract_fails_fast_on_its_init_error(impatient: Daemon) -> None:
    """/live answers 500 with the wrapper's error shape: the deployment fails at once with the error
    (long before the start timeout), instead of counting the answer as a server speaking HTTP."""
    result = impatient.rtd("submit", str(FIXTURES / "dockerfile-init-error"))
    deployment = impatient.api("GET", "/lifecycle/api/v1/deploy?job_name=dockerfile-init-error").json()[0]

    assert result.returncode != 0
    assert deployment["status"] == "failed"
    assert "job initialization error: ModuleNotFoundError: No module named 'model_weights'" in deployment["error"]
    assert impatient.api("GET", "/lifecycle/api/v1/job/dockerfile-init-error/0.0.1").status_code == 404


# --- adder: the python3 sample --------------------------------------------------------------------------


def test_the_adder_sample_adds(daemon: Daemon) -> None:
    daemon.rtd("submit", "--force", str(SAMPLES / "adder"), check=True)

    response = daemon.api("POST", "/pub/job/adder/latest/api/v1/perform", json={"a": 40, "b": 2})

    assert response.json() == 42
