"""The SQLite registry: what users asked for (jobs and deployments), via peewee.

Docker is the truth about what runs; this is the record of what was asked. Models carry
their own small queries. `open_database` binds the proxy once, in the composition root.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import peewee

database = peewee.DatabaseProxy()

PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "busy_timeout": 10_000,
    "synchronous": "normal",
}


def now() -> float:
    return time.time()


class BaseModel(peewee.Model):
    class Meta:
        database = database


class DeploymentStatus:
    IN_PROGRESS = "in_progress"
    DONE = "done"
    FAILED = "failed"


class JobStatus:
    STARTING = "starting"
    RUNNING = "running"
    ERROR = "error"
    LOST = "lost"


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

    class Meta:
        indexes = ((("name", "version"), True),)

    @classmethod
    def find(cls, name: str, version: str) -> Job | None:
        return cls.get_or_none((cls.name == name) & (cls.version == version))

    @classmethod
    def family(cls, name: str) -> list[Job]:
        return list(cls.select().where(cls.name == name))


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
    build_logs = peewee.TextField(default="")
    image_name = peewee.CharField(null=True)
    error = peewee.TextField(null=True)
    deployed_by = peewee.CharField(null=True)
    create_time = peewee.FloatField(default=now)
    update_time = peewee.FloatField(default=now)

    @classmethod
    def claim_next(cls) -> Deployment | None:
        """Atomically take the oldest queued deployment, or None when there is none."""
        with database.atomic("IMMEDIATE"):
            candidate = (
                cls.select()
                .where((cls.claimed == False) & (cls.status == DeploymentStatus.IN_PROGRESS))  # noqa: E712 (peewee expression)
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
        return cls.select().where(
            (cls.job_name == job_name) & (cls.job_version == job_version) & (cls.status == DeploymentStatus.IN_PROGRESS)
        ).exists()

    @classmethod
    def interrupted(cls) -> list[Deployment]:
        """Deployments a previous worker claimed but never finished (it died)."""
        return list(cls.select().where((cls.claimed == True) & (cls.status == DeploymentStatus.IN_PROGRESS)))  # noqa: E712

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self.update_time = now()
        self.save(only=[Deployment.phase, Deployment.update_time])

    def append_logs(self, text: str) -> None:
        self.build_logs += text
        self.update_time = now()
        self.save(only=[Deployment.build_logs, Deployment.update_time])

    def finish(self, status: str, error: str | None = None) -> None:
        self.status = status
        self.error = error
        self.phase = None
        self.update_time = now()
        self.save()


MODELS: list[type[BaseModel]] = [Job, Deployment]


def open_database(path: Path) -> peewee.SqliteDatabase:
    """Open (and create when missing) the registry at `path`, bound to the models."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = peewee.SqliteDatabase(str(path), pragmas=PRAGMAS, check_same_thread=False)
    database.initialize(db)
    db.connect(reuse_if_open=True)
    db.create_tables(MODELS, safe=True)
    return db


def row_dict(model: BaseModel, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {field: getattr(model, field) for field in model._meta.sorted_field_names}
    data.update(extra)
    return data
