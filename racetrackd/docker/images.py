"""A job's images in Docker: removed beyond the newest few after a build, all of them when the job goes.

Here rather than in deploy/building.py because deleting a job (jobs/) removes images too, and
jobs/ sits below deploy/.
"""

from __future__ import annotations

import logging

from racetrackd import naming
from racetrackd.docker.runtime import Runtime
from racetrackd.errors import RacetrackError

log = logging.getLogger(__name__)


def prune_job_images(runtime: Runtime, instance: str, name: str, version: str, keep: int) -> None:
    """Remove images of a job version beyond the newest `keep` (all of them with keep=0).

    Only racetrackd's own: labels are inherited, so an image someone built `FROM` a job's image (and
    tagged in a repository of their own) carries the job's labels too; it is never removed. Nor is a
    docker-image job's image: racetrackd pins it under a tag of its own (deploy/imagejobs.py), and
    removing that tag leaves the user's image and its tags alone."""
    own = f"{naming.image_repository(instance, name)}:"
    images = runtime.list_images(
        {
            naming.LABEL_INSTANCE: instance,
            naming.LABEL_JOB_NAME: name,
            naming.LABEL_JOB_VERSION: version,
        }
    )
    for ref in [ref for ref in images if _is_own(ref, own) or ref.startswith("sha256:")][keep:]:
        try:
            runtime.remove_image(ref)
        except RacetrackError as exc:  # e.g. still used by a container: try again next time
            log.info("keeping image %s: %s", ref, exc.message)


def _is_own(ref: str, own: str) -> bool:
    """Whether `ref` is one of racetrackd's tags of the job (`own` is `racetrackd/job-x:`), also as
    pushed to RACETRACK_REGISTRY: `reg.example:5000[/path]/racetrackd/job-x:...` (a registry host has a
    dot, a port or is localhost, as Docker reads it)."""
    if ref.startswith(own):
        return True
    host, slash, _ = ref.partition("/")
    registry_host = "." in host or ":" in host or host == "localhost"
    return bool(slash) and registry_host and ref.partition("@")[0].rsplit(":", 1)[0].endswith("/" + own[:-1])
