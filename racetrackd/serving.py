"""How one job's server is reached: its port, how gateway paths map to it, and what proves it ready.

Chosen by the job type (racetrackd.plugins.jobtypes reads it from the plugin's `serving:` section),
stored on the job's record, and read back by the gateway, the supervisor and the deployer. A
foundation module of its own so that the gateway can read a record without loading job-type
plugins (and Jinja with them).
"""

from __future__ import annotations

import dataclasses
import json

from racetrackd.naming import JOB_PORT

# How the gateway maps its paths to the job's server (racetrackd.gateway.pathmapping carries it out):
WRAPPER = "wrapper"  # the job serves /pub/job/<name>/<version>/<path> itself, and /live, /ready
FORWARD = "forward"  # /pub/job/<n>/<v>/api/v1/<path> -> the job's /<path>; the daemon answers the probes
REWRITE = "rewrite"  # /pub/job/<n>/<v>/<path> -> the job's /<path>; the daemon answers the probes
PATH_MODES = (WRAPPER, FORWARD, REWRITE)


def served_root(path_mode: str) -> str:
    """The job-relative path (after `/pub/job/<name>/<version>`) where the job's own `/` answers:
    what Open links to and `rtd status` prints. A forward-mode server is reached only under /api/v1/,
    so its bare prefix would answer 404."""
    return "/api/v1/" if path_mode == FORWARD else "/"


@dataclasses.dataclass(frozen=True)
class Serving:
    """How one job's server is reached: its port, how paths map, and what proves it ready."""

    port: int = JOB_PORT
    path_mode: str = WRAPPER
    # For a non-wrapper job: None (the default) means ready once its server answers HTTP at all
    # (GET / answered with any status, even 501 from a server that only handles POST), as
    # Racetrack's proxy reports ready once the job runs; a path the job's manifest names there
    # must answer below 500.
    probe_path: str | None = None

    @property
    def wrapper(self) -> bool:
        return self.path_mode == WRAPPER

    @property
    def readiness(self) -> str:
        """What proves this non-wrapper job ready, in words (for messages and docs)."""
        if self.probe_path is None:
            return "any HTTP answer to GET /"
        return f"an answer below 500 to GET {self.probe_path}"

    def to_json(self) -> str | None:
        """Stored on the job's record; None for the wrapper contract (and for records made before this)."""
        return None if self == Serving() else json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Serving:
        return cls(**json.loads(text)) if text else cls()
