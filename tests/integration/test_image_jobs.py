"""Jobs from an existing image (the docker-image job type), end to end through the real daemon and
engine: images built here in the test (no pulls), deployed with `rtd submit job.yaml` (the manifest
only), called through the gateway, redeployed to a new tag under load, rolled back after the tag
moved, a missing image, and a delete that leaves the user's images alone.

The images stand for a team's CI images: tiny http.servers on the python3 base image that say
which build they are. They carry this run's instance label, so the session's teardown removes
them whatever happens.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
import requests
import yaml

from tests.integration.conftest import REPO, Daemon
from tests.integration.steady import steady_calls
from tests.integration.test_racetrack_client import RacetrackCli, racetrack_cli  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration

PORT = 8080
SERVER = f"""
import http.server, json, os

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({{"build": os.environ["SVC_BUILD"], "path": self.path}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("0.0.0.0", {PORT}), Handler).serve_forever()
"""


@pytest.fixture(scope="module")
def images(daemon: Daemon) -> Iterator[ImageMaker]:
    maker = ImageMaker(daemon)
    try:
        yield maker
    finally:
        maker.remove_all()


class ImageMaker:
    """Builds the "team's" images in the engine, as their CI would (here: locally, from the base image)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.repository = f"racetrackd-test-{daemon.instance}/svc"
        self.tags: set[str] = set()

    def build(self, tag: str, build_name: str) -> str:
        """Build the server saying `build_name` as repository:tag (moving the tag if it exists); its id."""
        base = self.daemon.env["RACETRACK_PYTHON_BASE_IMAGE"]
        dockerfile = (
            f"FROM {base}\n"
            f"ENV SVC_BUILD={build_name}\n"
            f"COPY server.py /srv/server.py\n"
            f'CMD ["python3", "/srv/server.py"]\n'
        )
        context = _tar({"Dockerfile": dockerfile, "server.py": SERVER})
        image, _ = self.daemon.docker.images.build(
            fileobj=context,
            custom_context=True,
            tag=f"{self.repository}:{tag}",
            labels={"racetrackd.instance": self.daemon.instance},  # the session teardown's label
            network_mode="none",
            rm=True,
        )
        self.tags.add(f"{self.repository}:{tag}")
        return str(image.id)

    def remove_all(self) -> None:
        for ref in self.tags:
            try:
                self.daemon.docker.images.remove(ref, force=True)
            except docker.errors.APIError:
                pass


def _tar(files: dict[str, str]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def manifest_file(directory: Path, image: str, name: str = "svc") -> Path:
    """A docker-image job's manifest, alone in its directory (nothing else is needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "job.yaml"
    path.write_text(
        f"name: {name}\nowner_email: team@example.com\nversion: 1.0.0\njobtype: docker-image:latest\n"
        f"jobtype_extra:\n  image: {image}\n  user_module_port: {PORT}\n"
    )
    return path


def call(daemon: Daemon, path: str = "/hello") -> requests.Response:
    return daemon.api("GET", f"/pub/job/svc/1.0.0/api/v1{path}")


def last_deployment(daemon: Daemon, name: str = "svc") -> dict[str, object]:
    response = daemon.api("GET", "/lifecycle/api/v1/deploy", params={"job_name": name, "limit": 1})
    return dict(response.json()[0])


@pytest.fixture(scope="module")
def first_release(daemon: Daemon, images: ImageMaker, tmp_path_factory: pytest.TempPathFactory) -> str:
    """svc 1.0.0 deployed from the image tagged 1 (manifest only); the id of that image."""
    image_id = images.build("1", "one")
    job_yaml = manifest_file(tmp_path_factory.mktemp("svc"), f"{images.repository}:1")
    daemon.rtd("submit", str(job_yaml), check=True)
    return image_id


def test_an_image_job_deploys_from_its_manifest_alone_and_serves_through_the_gateway(
    daemon: Daemon, first_release: str
) -> None:
    response = call(daemon, "/hello?x=1")
    assert response.status_code == 200, response.text
    assert response.json() == {"build": "one", "path": "/hello?x=1"}
    # the gateway's auth, as for any job
    assert requests.get(f"{daemon.url}/pub/job/svc/1.0.0/api/v1/hello", timeout=10).status_code == 401
    # the gateway answers the probes itself; the deployment built nothing
    assert daemon.api("GET", "/pub/job/svc/1.0.0/ready").status_code == 200
    deployment = last_deployment(daemon)
    phases = [phase["name"] for phase in deployment["phases"]]  # type: ignore[attr-defined]
    assert "resolving the image" in phases
    assert "building image" not in phases and "fetching the source code" not in phases


def test_the_release_records_the_image_it_resolved_to(daemon: Daemon, images: ImageMaker, first_release: str) -> None:
    deployment = last_deployment(daemon)
    assert deployment["source_image"] == {
        "reference": f"{images.repository}:1",
        "image_id": first_release,
        "digest": None,  # built here, never pushed: no registry digest, the engine's id pins it
    }
    job = daemon.api("GET", "/lifecycle/api/v1/job/svc/1.0.0").json()
    assert job["source_image"]["image_id"] == first_release
    status = daemon.rtd("status", "svc", check=True).stdout
    assert f"source image: {images.repository}:1" in status
    assert f"pinned:       {first_release} (no registry digest)" in status
    # racetrackd runs its own labelled tag of that image (so delete and prune find it), same layers
    pinned = daemon.docker.images.get(job["image_tag"])
    assert pinned.labels["job-name"] == "svc" and pinned.labels["racetrackd.source-image-id"] == first_release
    original = daemon.docker.images.get(first_release)
    assert pinned.attrs["RootFS"]["Layers"] == original.attrs["RootFS"]["Layers"]


def test_a_missing_image_fails_the_deployment_naming_the_field_and_the_image(daemon: Daemon, tmp_path: Path) -> None:
    # A registry on the engine's loopback where nothing listens: the pull fails at once, and no
    # traffic leaves the host.
    missing = "localhost:9/racetrackd-test/missing:1.4"
    result = daemon.rtd("submit", str(manifest_file(tmp_path, missing, name="ghost")))
    assert result.returncode != 0
    error = str(last_deployment(daemon, "ghost")["error"])
    assert error.startswith(f"jobtype_extra.image: image {missing} is not in the Docker engine and could not be pulled")
    assert "jobtype_extra.image: image localhost:9/racetrackd-test/missing:1.4" in result.stdout + result.stderr
    assert daemon.api("GET", "/lifecycle/api/v1/job/ghost/1.0.0").status_code == 404


def test_redeploying_to_a_new_tag_under_load_fails_no_call(
    daemon: Daemon, images: ImageMaker, first_release: str, tmp_path: Path
) -> None:
    images.build("2", "two")

    def which_build(session: requests.Session) -> str:
        try:
            response = session.get(
                f"{daemon.url}/pub/job/svc/1.0.0/api/v1/hello", headers={"X-Racetrack-Auth": daemon.token}, timeout=10
            )
            return str(response.json()["build"]) if response.status_code == 200 else str(response.status_code)
        except (requests.RequestException, ValueError, KeyError) as exc:
            return type(exc).__name__

    with steady_calls(which_build) as results:
        time.sleep(0.5)
        redeploy = daemon.rtd("submit", "--force", str(manifest_file(tmp_path, f"{images.repository}:2")))
        time.sleep(1.0)

    assert redeploy.returncode == 0, redeploy.stdout + redeploy.stderr
    # calls before, during and after the switch (how many depends on the machine's load: 62 to 284 here)
    assert len(results) >= 20
    assert [result for result in results if result not in ("one", "two")] == []
    assert "one" in results and "two" in results
    assert call(daemon).json()["build"] == "two"  # (the last result listed may be a slow call that began before)


def test_a_rollback_runs_the_earlier_image_even_after_its_tag_moved(
    daemon: Daemon, images: ImageMaker, first_release: str
) -> None:
    moved_to = images.build("1", "one-rebuilt")  # the team's CI pushes a new build under the old tag
    assert moved_to != first_release
    assert call(daemon).json()["build"] == "two"
    daemon.rtd("rollback", "svc", "--version", "1.0.0", check=True)
    assert call(daemon).json()["build"] == "one"
    rollback = last_deployment(daemon)
    assert rollback["kind"] == "rollback"
    assert rollback["source_image"]["image_id"] == first_release  # type: ignore[index]
    job = daemon.api("GET", "/lifecycle/api/v1/job/svc/1.0.0").json()
    assert job["source_image"]["image_id"] == first_release


def test_deleting_the_job_removes_only_racetrackds_tags_never_the_teams_images(
    daemon: Daemon, images: ImageMaker, first_release: str
) -> None:
    pinned = [
        image.tags
        for image in daemon.docker.images.list(
            filters={"label": ["job-name=svc", f"racetrackd.instance={daemon.instance}"]}
        )
        if image.tags
    ]
    assert pinned
    daemon.rtd("delete", "svc", "--version", "1.0.0", check=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and daemon.docker.images.list(
        filters={"label": ["job-name=svc", f"racetrackd.instance={daemon.instance}"]}
    ):
        time.sleep(0.5)
    assert (
        daemon.docker.images.list(filters={"label": ["job-name=svc", f"racetrackd.instance={daemon.instance}"]}) == []
    )
    for tag in (f"{images.repository}:1", f"{images.repository}:2"):
        assert daemon.docker.images.get(tag)  # still there


def test_the_official_racetrack_client_deploys_an_image_job_without_files(
    daemon: Daemon,
    images: ImageMaker,
    racetrack_cli: Path,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    images.build("rc", "from-racetrack-client")
    racetrack = RacetrackCli(racetrack_cli, tmp_path / "home")
    racetrack("set", "remote", daemon.url)
    racetrack("login", daemon.token)
    job_dir = tmp_path / "svc-rc"
    job_dir.mkdir()
    # Racetrack's client insists on a git.remote; with a remote host it sends no files (build
    # context "git"), and nothing is cloned for an image job
    (job_dir / "job.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "svc-rc",
                "owner_email": "team@example.com",
                "version": "1.0.0",
                "git": {"remote": "https://git.example.com/team/svc"},
                "jobtype": "docker-image:latest",
                "jobtype_extra": {"image": f"{images.repository}:rc", "user_module_port": PORT},
            }
        )
    )

    racetrack("deploy", str(job_dir))

    response = daemon.api("GET", "/pub/job/svc-rc/1.0.0/api/v1/")
    assert response.status_code == 200 and response.json()["build"] == "from-racetrack-client"


def test_an_image_job_runs_replicas_sleeps_when_idle_and_wakes_on_the_next_call(
    daemon: Daemon, images: ImageMaker, tmp_path: Path
) -> None:
    images.build("idle", "sleepy")
    job_yaml = manifest_file(tmp_path, f"{images.repository}:idle", name="svc-idle")
    job_yaml.write_text(job_yaml.read_text() + "replicas: 2\nidle_timeout: 5s\n")
    daemon.rtd("submit", str(job_yaml), check=True)
    job = daemon.api("GET", "/lifecycle/api/v1/job/svc-idle/1.0.0").json()
    assert job["replicas"] == 2
    assert len([c for c in daemon.containers() if c.labels.get("job-name") == "svc-idle"]) == 2

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and job["status"] != "sleeping":
        time.sleep(1)
        job = daemon.api("GET", "/lifecycle/api/v1/job/svc-idle/1.0.0").json()
    assert job["status"] == "sleeping"
    while time.monotonic() < deadline and not _all_asleep(daemon, "svc-idle"):
        time.sleep(0.5)  # paused a moment after the status changed (the gateways see it asleep first)
    assert _all_asleep(daemon, "svc-idle")

    response = daemon.api("GET", "/pub/job/svc-idle/1.0.0/api/v1/woken")
    assert response.status_code == 200 and response.json() == {"build": "sleepy", "path": "/woken"}
    assert daemon.api("GET", "/lifecycle/api/v1/job/svc-idle/1.0.0").json()["status"] == "running"


def _all_asleep(daemon: Daemon, job_name: str) -> bool:
    """Both replicas frozen (a short sleep) or stopped (after RACETRACK_SLEEP_PAUSED_FOR): docs/jobs.md."""
    containers = [c for c in daemon.containers() if c.labels.get("job-name") == job_name]
    return len(containers) == 2 and all(c.status in ("paused", "exited") for c in containers)


def test_the_sample_serves_the_image_its_comment_builds(daemon: Daemon, images: ImageMaker) -> None:
    sample = REPO / "samples" / "docker-image" / "job.yaml"
    build_line = next(line for line in sample.read_text().splitlines() if "printf" in line)
    dockerfile = build_line.split("'")[1].encode().decode("unicode_escape")
    base = daemon.env["RACETRACK_PYTHON_BASE_IMAGE"]
    tag = f"{images.repository}:static"
    daemon.docker.images.build(
        fileobj=_tar({"Dockerfile": dockerfile.replace("racetrackd/python3-base:bookworm", base)}),
        custom_context=True,
        tag=tag,
        labels={"racetrackd.instance": daemon.instance},
        network_mode="none",
        rm=True,
    )
    images.tags.add(tag)

    daemon.rtd("submit", str(sample), "-e", f"jobtype_extra.image={tag}", check=True)

    listing = daemon.api("GET", "/pub/job/static-files/1.0.0/")
    assert listing.status_code == 200 and "Directory listing for /" in listing.text


def test_a_latest_image_whose_registry_is_unreachable_runs_the_engines_copy(
    daemon: Daemon, images: ImageMaker, tmp_path: Path
) -> None:
    # Named on a registry at the engine's loopback where nothing listens: the default policy pulls a
    # :latest image on every deployment, the pull is refused at once, and the engine's copy runs.
    image_id = images.build("offline-build", "offline")
    tag = f"localhost:9/{images.repository}:latest"
    daemon.docker.images.get(image_id).tag(tag)
    images.tags.add(tag)

    result = daemon.rtd("submit", str(manifest_file(tmp_path, tag, name="svc-offline")))

    assert result.returncode == 0, result.stdout + result.stderr
    logs = daemon.api("GET", "/lifecycle/api/v1/job/svc-offline/1.0.0/build-logs/plain").text
    assert f"could not pull {tag} (" in logs and "using the Docker engine's copy" in logs
    response = daemon.api("GET", "/pub/job/svc-offline/1.0.0/api/v1/")
    assert response.status_code == 200 and response.json()["build"] == "offline"
