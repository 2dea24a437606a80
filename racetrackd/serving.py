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

# What proves a job on the wrapper path mode ready (a job on another path mode always uses SERVER):
CONTRACT = "contract"  # Racetrack's wrapper contract: /live echoing the deployment timestamp, then /ready
SERVER = "server"  # its server answers HTTP at all, or its probe_path answers below 500
# Decided when a container starts: CONTRACT when its server speaks the contract (a `dockerfile` job
# running a wrapper), else SERVER. The deployer stores the outcome on the job's record, so the
# supervisor and scale-to-zero keep to the choice made at deploy time.
DETECT = "detect"
PROBE_KINDS = (CONTRACT, SERVER, DETECT)


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
    probes: str = CONTRACT  # for the wrapper path mode: CONTRACT, SERVER or DETECT (see above)

    @property
    def wrapper(self) -> bool:
        """Whether the gateway hands the job its full /pub/job/<name>/<version>/... paths."""
        return self.path_mode == WRAPPER

    @property
    def contract(self) -> bool:
        """Whether the job is known to answer the wrapper contract's /live, /ready and /metrics."""
        return self.path_mode == WRAPPER and self.probes == CONTRACT

    @property
    def detecting(self) -> bool:
        """Whether the next container start decides between the contract and any HTTP answer."""
        return self.path_mode == WRAPPER and self.probes == DETECT

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
