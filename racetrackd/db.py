"""The SQLite registry: what users asked for (jobs and deployments), via peewee.

Docker is the truth about what runs; this is the record of what was asked. Models carry
their own small queries. `open_database` binds the proxy once, in the composition root.
"""

from __future__ import annotations

import errno
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import peewee
from playhouse.migrate import SqliteMigrator, migrate

database = peewee.DatabaseProxy()

# Each thread that queries has a connection of its own (peewee's default), kept while the thread lives:
# the deployment worker, supervisor and builds in the main process, and in every HTTP worker the
# routing refresh and each of the RACETRACK_HTTP_THREADS control-plane threads. SQLite's default page
# cache lets each connection keep 2000 KiB of what it once read (a build log, the audit trail), so the
# daemon grew by up to ~2 MiB per thread with use (docs/benchmarks.md, "Control plane memory"). A page
# not in this smaller cache comes back from the kernel's page cache, not the disk.
PAGE_CACHE_KIB = 256

PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "busy_timeout": 10_000,
    "synchronous": "normal",
    "cache_size": -PAGE_CACHE_KIB,  # negative: a size in KiB, whatever the page size
}


BUILD_LOG_MAX_CHARS = 4 * 1024**2  # RACETRACK_BUILD_LOG_MAX_SIZE's default


def now() -> float:
    return time.time()


def is_storage_full(exc: BaseException) -> bool:
    """Whether `exc` says the disk under the data dir is full (a file write, or SQLite's own words)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, peewee.OperationalError) and "disk is full" in str(exc)


class BaseModel(peewee.Model):
    class Meta:
        database = database


class DeploymentStatus:
    IN_PROGRESS = "in_progress"
    DONE = "done"
    FAILED = "failed"


class JobStatus:
    STARTING = "starting"  # deployed, not yet ready
    RUNNING = "running"  # answering its probes
    ERROR = "error"  # container up, probes failing
    CRASHED = "crashed"  # container exited or restarting
    LOST = "lost"  # no container in Docker
    SLEEPING = "sleeping"  # stopped after idle_timeout without calls; the next call wakes it
    WAKING = "waking"  # a call is starting it again

    # Groups the use cases ask about, named once here so that the gateway need not import the
    # modules that write these states (the waker pulls in the Docker adapter).
    ASLEEP = frozenset({SLEEPING, WAKING})  # a call wakes it (or waits for the wake-up under way)
    UNROUTABLE = frozenset({CRASHED, LOST})  # its last address may belong to another container by now
    # What `latest`, `1.x` and `1.*` may resolve to: every deployed version but one still starting.
    ALIASABLE = frozenset({RUNNING, ERROR, CRASHED, LOST, SLEEPING, WAKING})


class AddressesField(peewee.TextField):
    """The `host:port` of each ready replica: a tuple in Python, a JSON list in the column (the
    format it always had, so no migration)."""

    def db_value(self, value: tuple[str, ...] | list[str] | None) -> str:
        if isinstance(value, str):  # a JSON string would be stored as a list of its characters
            raise TypeError("replica addresses are a sequence of host:port strings, not a str")
        return json.dumps(list(value or ()))

    def python_value(self, value: str | None) -> tuple[str, ...]:
        return tuple(json.loads(value or "[]"))


class Job(BaseModel):
    """One deployed version of a job family; unique by (name, version)."""

    name = peewee.CharField()
    version = peewee.CharField()
    status = peewee.CharField(default=JobStatus.STARTING)
    manifest_yaml = peewee.TextField()
    job_type_version = peewee.CharField()
    image_name = peewee.CharField()
    container_name = peewee.CharField()
    internal_name = peewee.CharField(default="")  # host:port the gateway forwards to
    deployment_timestamp = peewee.IntegerField()
    error = peewee.TextField(null=True)
    deployed_by = peewee.CharField(null=True)
    create_time = peewee.FloatField(default=now)
    update_time = peewee.FloatField(default=now)
    last_call_time = peewee.FloatField(null=True)
    crash_count = peewee.IntegerField(default=0)
    replicas = peewee.IntegerField(default=1)
    replica_addresses = AddressesField(default=())  # host:port of each ready replica
    idle_timeout = peewee.IntegerField(null=True)  # seconds; scale to zero when set
    call_timeout = peewee.IntegerField(null=True)  # seconds a call may take; None: the daemon's default
    # JSON of jobtypes.Serving (port, path_mode, probe_path) for a job whose server does not follow
    # the wrapper contract (docker-proxy); None: port 7000, its own /live and /ready.
    serving = peewee.TextField(null=True)

    def ready_addresses(self) -> list[str]:
        """Where the gateway may send calls: the ready replicas, else the first container."""
        return list(self.replica_addresses) or [self.internal_name]

    class Meta:
        indexes = ((("name", "version"), True),)

    @classmethod
    def find(cls, name: str, version: str) -> Job | None:
        return cls.get_or_none((cls.name == name) & (cls.version == version))

    @classmethod
    def family(cls, name: str) -> list[Job]:
        return list(cls.select().where(cls.name == name))

    # --- state changes -------------------------------------------------------------------------
    # The only places a job's status is written (tests/unit/test_job_status.py keeps it so). The
    # conditional ones write only while the row is in the state they expect, because a deployer,
    # the supervisor and the HTTP workers (waking) may each change the same row from its own process.

    def _this(self) -> peewee.Expression:
        return (Job.name == self.name) & (Job.version == self.version)

    def mark_running(self, addresses: list[str] | tuple[str, ...]) -> None:
        """A deployment switched over to its ready replicas at `addresses`: save the whole row (with
        the release fields the deployer set on it) as running, without the last error."""
        self.status = JobStatus.RUNNING
        self.internal_name = addresses[0]
        self.replica_addresses = tuple(addresses)
        self.error = None
        self.update_time = now()
        self.save()

    def move_replicas(self, container_name: str, addresses: list[str] | tuple[str, ...], serving: str | None) -> None:
        """Route calls to other containers of the same job, served as `serving` says (the staging
        containers of a redeploy, or containers recreated after they went missing); the status stays."""
        self.container_name = container_name
        self.internal_name = addresses[0]
        self.replica_addresses = tuple(addresses)
        self.serving = serving
        self.update_time = now()
        Job.update(
            container_name=self.container_name,
            internal_name=self.internal_name,
            replica_addresses=self.replica_addresses,
            serving=self.serving,
            update_time=self.update_time,
        ).where(self._this()).execute()

    def record_addresses(self, addresses: list[str] | tuple[str, ...]) -> None:
        """The replicas answer at `addresses` now (containers recreated after they went missing)."""
        Job.update(internal_name=addresses[0], replica_addresses=tuple(addresses), update_time=now()).where(
            self._this()
        ).execute()

    def record_check(self, status: str, error: str | None, ready: list[str], crash_count: int) -> bool:
        """The supervisor's finding, written only if it changed anything and the row still holds the
        containers it looked at and no redeploy began meanwhile. Returns whether it changed."""
        address = ready[0] if ready else self.internal_name
        if (status, error, address, crash_count, tuple(ready)) == (
            self.status,
            self.error,
            self.internal_name,
            self.crash_count,
            tuple(self.replica_addresses),
        ):
            return False
        Job.update(
            status=status,
            error=error,
            internal_name=address,
            crash_count=crash_count,
            replica_addresses=tuple(ready),
            update_time=now(),
        ).where(
            self._this()
            & (Job.container_name == self.container_name)
            & (Job.status != JobStatus.STARTING)  # a redeploy may have begun meanwhile
        ).execute()
        return True

    def mark_sleeping(self) -> bool:
        """Running -> sleeping (scaled to zero, no addresses); False if it was no longer running."""
        return bool(
            Job.update(status=JobStatus.SLEEPING, replica_addresses=(), error=None, update_time=now())
            .where(self._this() & (Job.status == JobStatus.RUNNING))
            .execute()
        )

    def claim_wake(self) -> bool:
        """Sleeping -> waking; True for the one caller that gets to start the containers."""
        return bool(
            Job.update(status=JobStatus.WAKING, update_time=now())
            .where(self._this() & (Job.status == JobStatus.SLEEPING))
            .execute()
        )

    def mark_awake(self, addresses: list[str] | tuple[str, ...]) -> None:
        """Woken: running at `addresses`. deployment_timestamp doubles as "awake since": the idle clock
        starts again now."""
        Job.update(
            status=JobStatus.RUNNING,
            internal_name=addresses[0],
            replica_addresses=tuple(addresses),
            deployment_timestamp=int(time.time()),
            error=None,
            update_time=now(),
        ).where(self._this()).execute()

    def mark_crashed(self, error: str) -> None:
        Job.update(status=JobStatus.CRASHED, error=error, update_time=now()).where(self._this()).execute()


class Deployment(BaseModel):
    """One request to deploy; carried out by the background worker, in creation order."""

    id = peewee.CharField(primary_key=True, default=lambda: str(uuid.uuid4()))
    status = peewee.CharField(default=DeploymentStatus.IN_PROGRESS)
    phase = peewee.CharField(null=True, default="queued")
    claimed = peewee.BooleanField(default=False)
    job_name = peewee.CharField()
    job_version = peewee.CharField()
    manifest_yaml = peewee.TextField()
    force = peewee.BooleanField(default=False)
    build_context_path = peewee.CharField(null=True)  # uploaded tar.gz in the data dir
    build_logs = peewee.TextField(default="")  # before v12 only; BuildLog holds it now, out of this hot table
    warnings = peewee.TextField(null=True)
    phases = peewee.TextField(default="[]")  # JSON: [{"name", "started_at", "ended_at"}], for durations
    git_commit = peewee.CharField(null=True)
    git_credentials = peewee.TextField(null=True)  # before v10 only; now part of `secrets`
    secrets = peewee.TextField(null=True)  # sealed by racetrackd.auth.vault: build/runtime env and git credentials
    no_cache = peewee.BooleanField(default=False)
    kind = peewee.CharField(default="deploy")  # deploy | rollback (re-runs image_name, no build)
    rollback_of = peewee.CharField(null=True)  # the deployment whose image a rollback re-runs
    image_name = peewee.CharField(null=True)
    # docker-image jobs: JSON {reference, image_id, digest}, what the manifest's image resolved to
    # (racetrackd.deploy.imagejobs.ResolvedImage); null for a built image
    source_image = peewee.TextField(null=True)
    error = peewee.TextField(null=True)
    deployed_by = peewee.CharField(null=True)
    requested_by = peewee.CharField(null=True)  # the subject (kind:name) who asked; it owns a new family
    create_time = peewee.FloatField(default=now)
    update_time = peewee.FloatField(default=now)

    @classmethod
    def claim_next(cls) -> Deployment | None:
        """Atomically take the oldest queued deployment, or None when there is none."""
        with database.atomic("IMMEDIATE"):
            busy = cls.select(cls.job_name, cls.job_version).where(
                (cls.claimed == True) & (cls.status == DeploymentStatus.IN_PROGRESS)  # noqa: E712 (peewee expression)
            )
            candidate = (
                cls.select()
                .where(
                    (cls.claimed == False)  # noqa: E712 (peewee builds SQL from ==)
                    & (cls.status == DeploymentStatus.IN_PROGRESS)
                    # one deployment per job version at a time, however many run at once
                    & ~peewee.Tuple(cls.job_name, cls.job_version).in_(busy)
                )
                .order_by(cls.create_time)
                .first()
            )
            if candidate is None:
                return None
            cls.update(claimed=True, update_time=now()).where(cls.id == candidate.id).execute()
            candidate.claimed = True
            return candidate

    @classmethod
    def in_progress_for(cls, job_name: str, job_version: str) -> bool:
        return (
            cls.select()
            .where(
                (cls.job_name == job_name)
                & (cls.job_version == job_version)
                & (cls.status == DeploymentStatus.IN_PROGRESS)
            )
            .exists()
        )

    @classmethod
    def interrupted(cls) -> list[Deployment]:
        """Deployments a previous worker claimed but never finished (it died)."""
        return list(cls.select().where((cls.claimed == True) & (cls.status == DeploymentStatus.IN_PROGRESS)))  # noqa: E712

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self.update_time = now()
        self.phases = json.dumps(
            [*self._closed_phases(), {"name": phase, "started_at": self.update_time, "ended_at": None}]
        )
        self.save(only=[Deployment.phase, Deployment.phases, Deployment.update_time])

    def source_image_info(self) -> dict[str, Any] | None:
        """A docker-image release's image as resolved at deploy time: {reference, image_id, digest}."""
        return json.loads(self.source_image) if self.source_image else None

    def phase_timeline(self) -> list[dict[str, Any]]:
        """Each phase with its start and duration in seconds (None while it runs)."""
        return [
            {
                "name": p["name"],
                "started_at": p["started_at"],
                "duration": None if p["ended_at"] is None else round(p["ended_at"] - p["started_at"], 3),
            }
            for p in json.loads(self.phases or "[]")
        ]

    def _closed_phases(self) -> list[dict[str, Any]]:
        phases: list[dict[str, Any]] = json.loads(self.phases or "[]")
        if phases and phases[-1]["ended_at"] is None:
            phases[-1]["ended_at"] = now()
        return phases

    def append_logs(self, text: str, max_chars: int = BUILD_LOG_MAX_CHARS) -> None:
        """Add build output; past `max_chars` the middle is dropped (BuildLog keeps the head and the tail)."""
        # IMMEDIATE: this reads, then writes. A deferred transaction could not write once another
        # connection had committed after its read (SQLite answers "database is locked" at once,
        # without waiting out busy_timeout); taking the write lock first makes it wait its turn.
        with database.atomic("IMMEDIATE"):
            BuildLog.append(self.id, text, max_chars)
            self.update_time = now()
            self.save(only=[Deployment.update_time])

    def build_logs_since(self, offset: int = 0) -> tuple[str, int]:
        """The build log after `offset` (a position in everything ever written) and the offset to ask from next."""
        log = BuildLog.get_or_none(BuildLog.deployment_id == self.id)
        if log is None:  # nothing written yet, or a deployment from before v12 that kept its log inline
            return self.build_logs[offset:], len(self.build_logs)
        return log.since(offset), log.total

    @property
    def build_log_text(self) -> str:
        return self.build_logs_since(0)[0]

    def finish(self, status: str, error: str | None = None) -> None:
        self.status = status
        self.error = error
        self.phase = None
        self.phases = json.dumps(self._closed_phases())
        self.update_time = now()
        self.save()


class BuildLog(BaseModel):
    """A deployment's build output, out of the deployment table and capped. It is written every half
    second while a build runs, so each write only adds a chunk (rewriting the whole log each time grew
    the registry and its WAL with the square of the output). Past the cap the first half is kept (the
    head), and of the rest only the newest chunks (the tail), with a line saying how many lines were cut.
    Offsets count every character ever written, so a polling client's offset stays valid."""

    deployment_id = peewee.CharField(primary_key=True)
    total = peewee.IntegerField(default=0)  # characters written so far
    head_chars = peewee.IntegerField(default=0)
    head_full = peewee.BooleanField(default=False)
    cut_lines = peewee.IntegerField(default=0)

    class Meta:
        table_name = "build_log"

    @classmethod
    def append(cls, deployment_id: str, text: str, max_chars: int) -> None:
        log = cls.get_or_none(cls.deployment_id == deployment_id)
        created = log is None
        if log is None:
            log = cls(deployment_id=deployment_id)
        head_room = 0 if log.head_full else max_chars // 2 - log.head_chars
        if len(text) > head_room:
            log.head_full = True
            last_newline = text.rfind("\n", 0, head_room)
            head_room = last_newline + 1 if last_newline >= 0 else head_room  # the head ends with a whole line
        for part, in_head in ((text[:head_room], True), (text[head_room:], False)):
            if part:
                BuildLogChunk.create(
                    deployment_id=deployment_id, start=log.total, end=log.total + len(part), text=part, in_head=in_head
                )
                log.total += len(part)
        log.head_chars += min(head_room, len(text))
        log.cut_lines += _drop_oldest_tail(deployment_id, log.total, max_chars - max_chars // 2)
        log.save(force_insert=created)

    def since(self, offset: int) -> str:
        chunks = list(
            BuildLogChunk.select()
            .where((BuildLogChunk.deployment_id == self.deployment_id) & (BuildLogChunk.end > offset))
            .order_by(BuildLogChunk.start)
        )
        parts = [chunk.text[max(offset - chunk.start, 0) :] for chunk in chunks if chunk.in_head]
        tail = [chunk for chunk in chunks if not chunk.in_head]
        if tail and tail[0].start > self.head_chars and offset < tail[0].start:
            newline = "" if not parts or parts[-1].endswith("\n") else "\n"
            parts.append(
                f"{newline}… {self.cut_lines} lines cut (the build log keeps the first and the last "
                f"half of RACETRACK_BUILD_LOG_MAX_SIZE) …\n"
            )
        parts.extend(chunk.text[max(offset - chunk.start, 0) :] for chunk in tail)
        return "".join(parts)


class BuildLogChunk(BaseModel):
    deployment_id = peewee.CharField()
    start = peewee.IntegerField()
    end = peewee.IntegerField()
    text = peewee.TextField()
    in_head = peewee.BooleanField()

    class Meta:
        table_name = "build_log_chunk"
        indexes = ((("deployment_id", "start"), True),)


def _drop_oldest_tail(deployment_id: str, total: int, keep: int) -> int:
    """Delete the oldest tail chunks until at most `keep` characters remain (the newest is cut to whole
    lines when it alone is longer); returns how many lines went."""
    tail = list(
        BuildLogChunk.select()
        .where((BuildLogChunk.deployment_id == deployment_id) & (BuildLogChunk.in_head == False))  # noqa: E712 (peewee)
        .order_by(BuildLogChunk.start)
    )
    lines = 0
    size = sum(len(chunk.text) for chunk in tail)
    while tail and size > keep:
        chunk = tail.pop(0)
        if tail:
            lines += chunk.text.count("\n")
            size -= len(chunk.text)
            chunk.delete_instance()
            continue
        line_start = chunk.text.find("\n", len(chunk.text) - keep - 1) + 1 or len(chunk.text)
        lines += chunk.text.count("\n", 0, line_start)
        chunk.start += line_start
        chunk.text = chunk.text[line_start:]
        chunk.save()
        size = len(chunk.text)
    return lines


class DeletedJob(BaseModel):
    """A deleted name+version: versions are immutable, so it is not deployed again unless forced."""

    name = peewee.CharField()
    version = peewee.CharField()
    deleted_by = peewee.CharField(null=True)
    delete_time = peewee.FloatField(default=now)

    class Meta:
        indexes = ((("name", "version"), True),)

    @classmethod
    def exists_for(cls, name: str, version: str) -> bool:
        return cls.select().where((cls.name == name) & (cls.version == version)).exists()


class AuditEvent(BaseModel):
    """Who did what to which job, and when (deployed, redeployed, rolled back, deleted, failed)."""

    timestamp = peewee.FloatField(default=now, index=True)
    event_type = peewee.CharField()
    job_name = peewee.CharField(index=True)
    job_version = peewee.CharField()
    executor = peewee.CharField(null=True)
    properties = peewee.TextField(default="{}")  # JSON

    @classmethod
    def record(cls, event_type: str, job_name: str, job_version: str, executor: str | None, **properties: Any) -> None:
        cls.create(
            event_type=event_type,
            job_name=job_name,
            job_version=job_version,
            executor=executor,
            properties=json.dumps(properties),
        )


class TaskState:
    QUEUED = "queued"  # waiting for its (next) attempt
    RUNNING = "running"  # an attempt is calling the job
    COMPLETED = "completed"  # the job answered (whatever its status code)
    FAILED = "failed"  # no answer after every attempt, timed out, or the job is gone


class AsyncTask(BaseModel):
    """One async call (`/pub/async/new/...`): the request kept until the job has answered it."""

    id = peewee.CharField(primary_key=True, default=lambda: str(uuid.uuid4()))
    state = peewee.CharField(default=TaskState.QUEUED, index=True)
    job_name = peewee.CharField()
    job_version = peewee.CharField()
    method = peewee.CharField()
    target = peewee.TextField()  # the job-side path with query string
    request_headers = peewee.TextField(default="[]")  # JSON [[name, value], ...]
    request_body = peewee.BlobField(null=True)
    caller = peewee.CharField(null=True)
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = peewee.FloatField(default=now)
    response_status = peewee.IntegerField(null=True)
    response_headers = peewee.TextField(null=True)
    response_body = peewee.BlobField(null=True)
    error = peewee.TextField(null=True)
    create_time = peewee.FloatField(default=now)
    started_at = peewee.FloatField(null=True)
    ended_at = peewee.FloatField(null=True)
    retrieved_at = peewee.FloatField(null=True)


class User(BaseModel):
    username = peewee.CharField(unique=True)
    password_hash = peewee.CharField(null=True)  # pbkdf2_sha256$iterations$salt$hash; None: token login only
    is_active = peewee.BooleanField(default=True)
    is_staff = peewee.BooleanField(default=False)  # full_access everywhere
    create_time = peewee.FloatField(default=now)
    last_login_time = peewee.FloatField(null=True)


class Esc(BaseModel):
    """An external service consumer: a program that calls jobs with its own tokens."""

    id = peewee.CharField(primary_key=True)
    name = peewee.CharField(unique=True)
    create_time = peewee.FloatField(default=now)


class SubjectKind:
    USER = "user"
    ESC = "esc"
    JOB_FAMILY = "job_family"


class AuthToken(BaseModel):
    """A token of a subject, stored as its SHA-256 only (tokens are random, so no salt is needed)."""

    id = peewee.AutoField()
    subject_kind = peewee.CharField()
    subject_name = peewee.CharField()  # username, ESC id or family name
    token_hash = peewee.CharField(unique=True)
    description = peewee.CharField(default="")
    origin = peewee.CharField(default="api")  # api | login | bootstrap | job_family
    sealed_token = peewee.TextField(null=True)  # job families only: the daemon hands it to containers
    create_time = peewee.FloatField(default=now)
    expiry_time = peewee.FloatField(null=True)
    active = peewee.BooleanField(default=True)
    last_use_time = peewee.FloatField(null=True)

    class Meta:
        indexes = ((("subject_kind", "subject_name"), False),)


class Grant(BaseModel):
    """Permission row: subject may use `scope` on all jobs, a family, a version, or one endpoint."""

    id = peewee.AutoField()
    subject_kind = peewee.CharField()
    subject_name = peewee.CharField()
    scope = peewee.CharField()
    job_name = peewee.CharField(null=True)  # None: every job
    job_version = peewee.CharField(null=True)  # None: every version
    endpoint = peewee.CharField(null=True)  # None: every endpoint
    granted_by = peewee.CharField(null=True)
    create_time = peewee.FloatField(default=now)

    class Meta:
        indexes = ((("subject_kind", "subject_name", "scope", "job_name", "job_version", "endpoint"), True),)


class RegistrySetting(BaseModel):
    """An operator's switch kept in the registry, so every process of the daemon sees it (maintenance mode)."""

    key = peewee.CharField(primary_key=True)
    value = peewee.TextField()  # JSON
    changed_by = peewee.CharField(null=True)
    update_time = peewee.FloatField(default=now)


class PublicEndpoint(BaseModel):
    """An endpoint a job's manifest asks to open to everyone; open only once an admin approved it."""

    id = peewee.AutoField()
    job_name = peewee.CharField()
    job_version = peewee.CharField()
    endpoint = peewee.CharField()
    active = peewee.BooleanField(default=False)
    approved_by = peewee.CharField(null=True)
    create_time = peewee.FloatField(default=now)

    class Meta:
        indexes = ((("job_name", "job_version", "endpoint"), True),)


class AuthFailure(BaseModel):
    """A failed auth attempt, kept for RACETRACK_AUTH_FAILURE_WINDOW: the limit counts them across all workers."""

    # What is counted: a client address, `token:` and a digest of a bad token, or `user:` and a
    # username (racetrackd.auth.authenticator names them); the column kept its first name, so no migration.
    address = peewee.CharField()
    time = peewee.FloatField(default=now, index=True)

    class Meta:
        indexes = ((("address", "time"), False),)


class CallBucket(BaseModel):
    """One job version's calls through the gateway in one minute (racetrackd.callstats writes and reads it).

    Every HTTP worker adds its own counts (an upsert that sums, never overwrites); `latency_le_<i>`
    counts calls within callstats.LATENCY_BOUNDS[i] and above the bound before it, the last one the
    calls slower than every bound.
    """

    job_name = peewee.CharField()
    job_version = peewee.CharField()
    minute = peewee.IntegerField(index=True)  # unix seconds at the start of the minute
    calls = peewee.IntegerField(default=0)
    errors = peewee.IntegerField(default=0)  # 5xx from the job, and calls the gateway could not complete
    redirects = peewee.IntegerField(default=0)  # 3xx
    client_errors = peewee.IntegerField(default=0)  # 4xx
    latency_sum = peewee.FloatField(default=0.0)
    latency_le_0 = peewee.IntegerField(default=0)
    latency_le_1 = peewee.IntegerField(default=0)
    latency_le_2 = peewee.IntegerField(default=0)
    latency_le_3 = peewee.IntegerField(default=0)
    latency_le_4 = peewee.IntegerField(default=0)
    latency_le_5 = peewee.IntegerField(default=0)
    latency_le_6 = peewee.IntegerField(default=0)
    latency_le_7 = peewee.IntegerField(default=0)
    latency_le_8 = peewee.IntegerField(default=0)
    latency_le_9 = peewee.IntegerField(default=0)
    latency_le_10 = peewee.IntegerField(default=0)
    latency_le_11 = peewee.IntegerField(default=0)

    class Meta:
        table_name = "call_bucket"
        indexes = ((("job_name", "job_version", "minute"), True),)


MODELS: list[type[BaseModel]] = [
    Job,
    Deployment,
    BuildLog,
    BuildLogChunk,
    DeletedJob,
    AuditEvent,
    AsyncTask,
    User,
    Esc,
    AuthToken,
    Grant,
    PublicEndpoint,
    AuthFailure,
    RegistrySetting,
    CallBucket,
]


def _v2_deployment_warnings(migrator: SqliteMigrator) -> list[Any]:
    return [migrator.add_column("deployment", "warnings", peewee.TextField(null=True))]


def _v3_deployment_phases(migrator: SqliteMigrator) -> list[Any]:
    return [migrator.add_column("deployment", "phases", peewee.TextField(default="[]"))]


def _v5_job_crash_count(migrator: SqliteMigrator) -> list[Any]:
    return [migrator.add_column("job", "crash_count", peewee.IntegerField(default=0))]


def _v6_rollbacks_and_audit(migrator: SqliteMigrator) -> list[Any]:
    return [
        migrator.add_column("deployment", "kind", peewee.CharField(default="deploy")),
        migrator.add_column("deployment", "rollback_of", peewee.CharField(null=True)),
    ]


def _v7_job_replicas(migrator: SqliteMigrator) -> list[Any]:
    return [
        migrator.add_column("job", "replicas", peewee.IntegerField(default=1)),
        migrator.add_column("job", "replica_addresses", peewee.TextField(default="[]")),
    ]


def _v8_job_idle_timeout(migrator: SqliteMigrator) -> list[Any]:
    return [migrator.add_column("job", "idle_timeout", peewee.IntegerField(null=True))]


def _v9_job_call_timeout(migrator: SqliteMigrator) -> list[Any]:
    return [migrator.add_column("job", "call_timeout", peewee.IntegerField(null=True))]


def _v10_deployment_secrets(migrator: SqliteMigrator) -> list[Any]:
    return [
        migrator.add_column("deployment", "secrets", peewee.TextField(null=True)),
        migrator.add_column("deployment", "requested_by", peewee.CharField(null=True)),
    ]


def _v11_job_serving(migrator: SqliteMigrator) -> list[Any]:
    return [migrator.add_column("job", "serving", peewee.TextField(null=True))]


def _v4_deployment_sources(migrator: SqliteMigrator) -> list[Any]:
    return [
        migrator.add_column("deployment", "git_commit", peewee.CharField(null=True)),
        migrator.add_column("deployment", "git_credentials", peewee.TextField(null=True)),
        migrator.add_column("deployment", "no_cache", peewee.BooleanField(default=False)),
    ]


class _MoveBuildLogsOut:
    """v12: build logs leave the deployment table for build_log (a migrator operation: run())."""

    def run(self) -> None:
        db = database.obj
        db.create_tables([BuildLog, BuildLogChunk], safe=True)
        db.execute_sql(
            "INSERT OR IGNORE INTO build_log (deployment_id, total, head_chars, head_full, cut_lines) "
            "SELECT id, length(build_logs), length(build_logs), 1, 0 FROM deployment WHERE build_logs != ''"
        )
        db.execute_sql(
            'INSERT OR IGNORE INTO build_log_chunk (deployment_id, start, "end", text, in_head) '
            "SELECT id, 0, length(build_logs), build_logs, 1 FROM deployment WHERE build_logs != ''"
        )
        db.execute_sql("UPDATE deployment SET build_logs = '' WHERE build_logs != ''")


def _v12_build_logs_table(migrator: SqliteMigrator) -> list[Any]:
    return [_MoveBuildLogsOut()]


class _CreateTables:
    """A migrator operation (run()) that creates new tables with their indexes."""

    def __init__(self, *models: type[BaseModel]) -> None:
        self.models = models

    def run(self) -> None:
        database.obj.create_tables(list(self.models), safe=True)


def _v13_call_buckets(migrator: SqliteMigrator) -> list[Any]:
    return [_CreateTables(CallBucket)]


def _v14_deployment_source_image(migrator: SqliteMigrator) -> list[Any]:
    # Only when missing: a registry whose user_version was set back (a restored backup's, a test's)
    # may have the column already, and SQLite has no ADD COLUMN IF NOT EXISTS.
    if "source_image" in {column.name for column in migrator.database.get_columns("deployment")}:
        return []
    return [migrator.add_column("deployment", "source_image", peewee.TextField(null=True))]


# Numbered schema changes, applied in order to registries created by older versions. Tables
# that are new in a version need no entry: create_tables(safe=True) adds them.
MIGRATIONS: list[tuple[int, Callable[[SqliteMigrator], list[Any]]]] = [
    (2, _v2_deployment_warnings),
    (3, _v3_deployment_phases),
    (4, _v4_deployment_sources),
    (5, _v5_job_crash_count),
    (6, _v6_rollbacks_and_audit),
    (7, _v7_job_replicas),
    (8, _v8_job_idle_timeout),
    (9, _v9_job_call_timeout),
    (10, _v10_deployment_secrets),
    (11, _v11_job_serving),
    (12, _v12_build_logs_table),
    (13, _v13_call_buckets),
    (14, _v14_deployment_source_image),
]
SCHEMA_VERSION = max(number for number, _ in MIGRATIONS)


def open_database(path: Path) -> peewee.SqliteDatabase:
    """Open the registry at `path` (creating or migrating it as needed), bound to the models."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = peewee.SqliteDatabase(str(path), pragmas=PRAGMAS, check_same_thread=False)
    database.initialize(db)
    db.connect(reuse_if_open=True)
    with db.atomic("IMMEDIATE"):  # one process migrates; the others wait, then see the new version
        version = db.execute_sql("PRAGMA user_version").fetchone()[0]
        if not db.table_exists("job"):
            db.create_tables(MODELS)
        else:
            migrator = SqliteMigrator(db)
            for number, step in MIGRATIONS:
                if number > max(version, 1):
                    migrate(*step(migrator))
            db.create_tables(MODELS, safe=True)
        db.execute_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return db
