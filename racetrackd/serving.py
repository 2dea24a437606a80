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


@dataclasses.dataclass(frozen=True)
class Serving:
    """How one job's server is reached: its port, how paths map, and what proves it ready."""

    port: int = JOB_PORT
    path_mode: str = WRAPPER
    probe_path: str = "/ready"  # for a non-wrapper job: any answer below 500 there means ready

    @property
    def wrapper(self) -> bool:
        return self.path_mode == WRAPPER

    def to_json(self) -> str | None:
        """Stored on the job's record; None for the wrapper contract (and for records made before this)."""
        return None if self == Serving() else json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Serving:
        return cls(**json.loads(text)) if text else cls()
