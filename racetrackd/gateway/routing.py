"""Where calls go: job name + version (or alias) → the job's addresses, answered from memory.

Every HTTP worker keeps a `RoutingTable` of every job version. A background thread reloads it
whenever the registry changed (SQLite's `PRAGMA data_version` moves when another connection
commits; checking it costs microseconds), so a call needs no database query and no Docker call.
A name or version the table does not know triggers one immediate reload (rate-limited), so a job
deployed a moment ago is found at once.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from collections import defaultdict

from jobmanifest import versions
from racetrackd import maintenance
from racetrackd.auth.access import OPEN_JOB_PATHS, path_within
from racetrackd.db import Job, JobStatus, PublicEndpoint, database
from racetrackd.serving import WRAPPER, Serving

log = logging.getLogger(__name__)

MISS_RELOAD_INTERVAL = 0.1  # at most this often does an unknown name force a reload


@dataclasses.dataclass(frozen=True)
class Route:
    name: str
    version: str
    status: str
    addresses: tuple[str, ...]
    call_timeout: float
    error: str | None
    public_endpoints: tuple[str, ...] = ()  # approved by an admin: callable without a token
    path_mode: str = WRAPPER  # how gateway paths map to the job's server (racetrackd.gateway.pathmapping)
    deployment_timestamp: int = 0

    @property
    def asleep(self) -> bool:
        return self.status in JobStatus.ASLEEP

    @property
    def starting(self) -> bool:
        return self.status == JobStatus.STARTING

    def is_open(self, endpoint: str) -> bool:
        """Whether anyone may call `endpoint` of this job, token or not."""
        # Probe paths exactly (a rewrite-mode server's own /health/... pages stay behind auth);
        # approved public endpoints as prefixes, as Racetrack reads them.
        return endpoint in OPEN_JOB_PATHS or any(path_within(endpoint, path) for path in self.public_endpoints)

    @property
    def callable(self) -> bool:
        """Whether calls can go to it now (a sleeping job is woken first, so it counts)."""
        return bool(self.addresses) and not self.starting


# How often each HTTP worker asks whether the registry changed (one `PRAGMA data_version`, a few
# µs): a redeployed job's new replicas, a job gone to sleep or maintenance mode reach the
# gateway within this, on average half of it.
REFRESH_SECONDS = 0.1


class RoutingTable:
    def __init__(self, default_call_timeout: float, refresh_interval: float = REFRESH_SECONDS) -> None:
        self._default_timeout = default_call_timeout
        self._interval = refresh_interval
        self._families: dict[str, list[Route]] = {}
        # Maintenance mode rides on the table's reloads (any registry write wakes the watcher), so the
        # gateway knows it within one refresh interval without a registry read per call.
        self.maintenance = maintenance.Maintenance(on=False)
        self._data_version: int | None = None  # as seen by the watcher's own connection (it is per connection)
        self._last_miss_reload = 0.0
        self._lock = threading.Lock()  # one reload at a time; readers never wait
        self._stopped = threading.Event()
        self._watcher: threading.Thread | None = None

    def resolve(self, name: str, version: str) -> Route | None:
        """The route for `name` at `version` (exact, `latest`, `1.x`, ...), or None."""
        route = self._select(name, version)
        # Before a refusal (unknown, starting, crashed, lost), look again: the job may have become
        # ready a moment ago (rtd submit and the supervisor report it then) and the watcher not
        # have caught up yet. Only answers that turn a caller away are checked twice.
        if (route is None or not route.callable) and time.monotonic() - self._last_miss_reload > MISS_RELOAD_INTERVAL:
            self._last_miss_reload = time.monotonic()
            self.reload()
            route = self._select(name, version)
        return route

    def reload(self) -> None:
        with self._lock:
            public: dict[tuple[str, str], list[str]] = defaultdict(list)
            for row in PublicEndpoint.select().where(PublicEndpoint.active):
                public[(row.job_name, row.job_version)].append(row.endpoint)
            families: dict[str, list[Route]] = defaultdict(list)
            for job in Job.select():
                families[job.name].append(self._route(job, tuple(public.get((job.name, job.version), ()))))
            self._families = dict(families)
            self.maintenance = maintenance.current()

    def start(self) -> None:
        """Load now, then follow the registry from a background thread."""
        self.reload()
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, daemon=True, name="routing-table")
            self._watcher.start()

    def stop(self) -> None:
        self._stopped.set()

    def _watch(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                current = _data_version()  # read first: a change made during the reload is seen next tick
                if current != self._data_version:
                    self.reload()
                    self._data_version = current
            except Exception:  # keep serving from the table we have; try again next tick
                log.exception("reloading the routing table failed")

    def _select(self, name: str, version: str) -> Route | None:
        family = self._families.get(name)
        if not family:
            return None
        if versions.is_alias(version) or "*" in version:
            family = [route for route in family if route.status in JobStatus.ALIASABLE]
        return versions.select(version, family, lambda route: route.version)

    def _route(self, job: Job, public_endpoints: tuple[str, ...]) -> Route:
        # A crashed or lost job's last address may belong to another container by now.
        addresses = (
            () if job.status in JobStatus.UNROUTABLE else tuple(address for address in job.ready_addresses() if address)
        )
        return Route(
            name=job.name,
            version=job.version,
            status=job.status,
            addresses=addresses,
            call_timeout=float(job.call_timeout or self._default_timeout),
            error=job.error,
            public_endpoints=public_endpoints,
            path_mode=Serving.from_json(job.serving).path_mode,
            deployment_timestamp=job.deployment_timestamp,
        )


def _data_version() -> int:
    return int(database.execute_sql("PRAGMA data_version").fetchone()[0])


class LeastOutstanding:
    """Pick the replica with the fewest calls in flight from this process (ties: round robin).

    Used from the event loop's thread only, so it needs no lock.
    """

    def __init__(self) -> None:
        self._outstanding: dict[str, int] = defaultdict(int)
        self._turn = itertools.count()

    def acquire(self, addresses: tuple[str, ...] | list[str]) -> str:
        if len(addresses) == 1:
            chosen = addresses[0]
        else:
            start = next(self._turn) % len(addresses)
            rotated = [*addresses[start:], *addresses[:start]]
            chosen = min(rotated, key=lambda address: self._outstanding.get(address, 0))
        self._outstanding[chosen] += 1
        return chosen

    def release(self, address: str) -> None:
        self._outstanding[address] -= 1
        if self._outstanding[address] <= 0:
            del self._outstanding[address]
