"""Jobs that run an image built elsewhere (the `docker-image` job type): nothing is built.

A deployment resolves the image the manifest names (the engine's copy, else a pull with the
deployment's registry credentials), records what it resolved to (`ResolvedImage`: the engine's
image id and the registry digest), and pins it: a label-only image over it (`FROM <id>` plus
racetrackd's labels: no layer, no RUN step, no network), tagged like a built job's image. The
release runs that pinned tag, so

- a rollback re-runs the exact image even after the tag moved in the registry or in the engine;
- deleting the job, pruning old releases and the start-up reconcile find it by its labels as they
  find built images, and removing it removes racetrackd's tag only: the user's own image (and its
  tags) stays;
- with RACETRACK_REGISTRY (a multi-node swarm) the pin is pushed there like a built image, and every
  node runs that one copy (racetrackd.deploy.deployer).
"""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from typing import Any

from builders import labels
from jobmanifest import Manifest
from racetrackd import naming
from racetrackd.deploy.building import BuildReport
from racetrackd.docker.runtime import ImageInfo, Runtime
from racetrackd.errors import ImageUnavailable, RacetrackError
from racetrackd.plugins.jobtypes import JobType

# On the pinned image: where it came from (the job's image itself carries none of racetrackd's labels)
LABEL_SOURCE_IMAGE = "racetrackd.source-image"
LABEL_SOURCE_ID = "racetrackd.source-image-id"
DOCKER_HUB = "docker.io"
RESOLVE_PHASE = "resolving the image"  # the deployer's phase instead of fetching and building


@dataclasses.dataclass(frozen=True)
class ResolvedImage:
    """What a deployment's image reference resolved to, recorded on the release."""

    reference: str  # as the manifest names it, e.g. registry.example/team/svc:1.4
    image_id: str  # the engine's id (sha256:...): the exact content run
    digest: str | None  # the registry's digest (repository@sha256:...); None for an image built on this host

    def to_json(self) -> str:
        return json.dumps({"reference": self.reference, "image_id": self.image_id, "digest": self.digest})

    @classmethod
    def from_json(cls, text: str | None) -> ResolvedImage | None:
        if not text:
            return None
        data = json.loads(text)
        return cls(reference=data["reference"], image_id=data["image_id"], digest=data.get("digest"))

    def as_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "image_id": self.image_id, "digest": self.digest}


def registry_of(reference: str) -> str:
    """The registry host of an image reference, by Docker's rule: the first path component is a host
    when it has a dot or a port, or is `localhost`; otherwise the image is on Docker Hub."""
    first, slash, _ = reference.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


def repository_of(reference: str) -> str:
    """The repository of a reference, without tag or digest (a registry's port is not a tag)."""
    name = reference.partition("@")[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > last_slash else name


def default_pull_policy(reference: str) -> str:
    """As Kubernetes does: a tag that moves by design (`latest`, or none) is pulled on every
    deployment; any other tag, or a digest, only when the engine lacks it."""
    if "@" in reference:
        return "missing"
    name = reference.rpartition("/")[2]
    return "always" if ":" not in name or name.endswith(":latest") else "missing"


def resolve(
    runtime: Runtime,
    reference: str,
    field: str,
    credentials: dict[str, str] | None,
    report: BuildReport,
    pull_policy: str | None = None,
) -> ResolvedImage:
    """The engine's image `reference`, pulled first as `pull_policy` says (None: default_pull_policy);
    ImageUnavailable naming the manifest field and the reference when it is not to be had.

    With the default policy, a failed pull of a `latest` image falls back to the engine's copy (a
    laptop offline, an image built on the host), saying so in the deployment's log; an explicit
    `always` fails instead."""
    policy = pull_policy or default_pull_policy(reference)
    info = runtime.inspect_image(reference)
    if policy == "never" and info is None:
        raise _unavailable(reference, field, credentials, "not pulled: its pull_policy is never", pulls=False)
    if policy == "always" or (policy == "missing" and info is None):
        registry = registry_of(reference)
        report.log(
            f"pulling image {reference} from {registry}\n"
            if info is not None
            else f"image {reference} is not in the Docker engine: pulling it from {registry}\n"
        )
        try:
            runtime.pull_image(reference, credentials)
        except RacetrackError as exc:
            if info is None or pull_policy == "always":
                raise _unavailable(reference, field, credentials, exc.message) from exc
            report.log(f"could not pull {reference} ({exc.message}); using the Docker engine's copy\n")
        else:
            info = runtime.inspect_image(reference)
            if info is None:
                raise _unavailable(reference, field, credentials, "the pull finished without the image")
            report.log(f"pulled {reference}\n")
    assert info is not None  # never: checked above; missing and always: found or pulled
    resolved = ResolvedImage(reference=reference, image_id=info.id, digest=_registry_digest(reference, info))
    pinned = resolved.digest or "no registry digest: an image built or loaded on this host"
    report.log(f"image {reference} is {resolved.image_id} ({pinned})\n")
    return resolved


def _unavailable(
    reference: str, field: str, credentials: dict[str, str] | None, reason: str, *, pulls: bool = True
) -> ImageUnavailable:
    """The failure, with what to do in the message itself: a failed deployment keeps only its message."""
    login = (
        "check the registry credentials sent with the deploy"
        if credentials
        else "for a private registry, send credentials with the deploy (rtd submit --registry-username, "
        "--registry-password)"
    )
    if not pulls:
        return ImageUnavailable(
            f"{field}: image {reference} is not in the Docker engine ({reason}; build or load it on this host "
            f"with docker build -t or docker load, or let it be pulled: pull_policy missing)"
        )
    return ImageUnavailable(
        f"{field}: image {reference} is not in the Docker engine and could not be pulled: {reason.rstrip('.')} "
        f"(check the name and tag; build or load the image on this host with docker build -t or docker load; "
        f"or {login})"
    )


def _registry_digest(reference: str, info: ImageInfo) -> str | None:
    """The registry digest the image is known by in the reference's repository (Docker Hub's official
    images are listed by their short name, `python@sha256:...`)."""
    if "@" in reference:
        return _pin(reference)  # pulled or found by that digest: the engine checked it
    wanted = {repository_of(reference), _short_hub_name(repository_of(reference))}
    for digest in info.repo_digests:
        if digest.partition("@")[0] in wanted:
            return digest
    return None


def _pin(reference: str) -> str:
    """`repository@digest` of a reference that names its digest (a tag beside it says nothing more)."""
    digest = reference.rpartition("@")[2]
    return f"{repository_of(reference)}@{digest}"


def _short_hub_name(repository: str) -> str:
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/library/", "index.docker.io/"):
        if repository.startswith(prefix):
            return repository.removeprefix(prefix)
    return repository


def pin(
    runtime: Runtime,
    resolved: ResolvedImage,
    manifest: Manifest,
    job_type: JobType,
    *,
    instance: str,
    deployment_id: str,
    report: BuildReport,
    registry: str | None = None,
) -> str:
    """Tag the resolved image for this release, with racetrackd's labels (a label-only image over it:
    no layer and no RUN step, so no network); returns the tag the release runs. With a `registry`
    (RACETRACK_REGISTRY) the tag is named in it, as a built job's image is: the deployer pushes it
    there, so that every swarm node pulls the same pinned image."""
    tag = naming.registry_ref(
        registry,
        f"{naming.image_repository(instance, manifest.name)}:{naming.image_tag(manifest.version, deployment_id)}",
    )
    image_labels = {
        **naming.job_labels(instance, manifest.name, manifest.version, deployment_id),
        labels.LABEL_JOB_TYPE: job_type.full_name,
        LABEL_SOURCE_IMAGE: resolved.reference,
        LABEL_SOURCE_ID: resolved.image_id,
    }
    dockerfile = f"FROM {resolved.image_id}\n".encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        entry = tarfile.TarInfo("Dockerfile")
        entry.size = len(dockerfile)
        tar.addfile(entry, io.BytesIO(dockerfile))
    context.seek(0)
    runtime.build_image(context, "Dockerfile", tag, image_labels, report.log, network="none")
    report.log(f"pinned as {tag}\n")
    return tag
