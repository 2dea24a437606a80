"""Async calls (`/pub/async/...`): a call kept in the registry, carried out in the background,
its answer kept until the caller polls for it.

Durable: a task is a row, so one that was running when the daemon died is queued again at the
next start. An attempt that cannot reach the job (refused, broken connection) is retried after
`async_retry_interval`, up to `async_max_attempts`; one past the job's call_timeout fails.
Finished tasks stay `async_task_ttl` seconds (failed ones can be listed and retried by hand,
`rtd tasks`); an answer that was read is dropped `RESULT_GRACE_SECONDS` later.

The `AsyncCallRunner` runs in the daemon's main process, on its own event loop, and calls jobs
through the same `UpstreamPool` as the gateway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from racetrackd.auth.access import CALL_ADMIN_API, Identity
from racetrackd.db import AsyncTask, Job, JobStatus, TaskState, now
from racetrackd.errors import ConflictError, NotFoundError, PayloadTooLarge, RacetrackError, UpstreamError
from racetrackd.gateway.upstream import UpstreamPool
from racetrackd.settings import Settings

log = logging.getLogger(__name__)

__all__ = [
    "TaskState",
    "STATES",
    "submit",
    "visible_to",
    "find",
    "finished",
    "public_status",
    "describe",
    "take_result",
    "list_tasks",
    "retry",
    "requeue_interrupted",
    "purge",
    "AsyncCallRunner",
]

STATES = (TaskState.QUEUED, TaskState.RUNNING, TaskState.COMPLETED, TaskState.FAILED)
RESULT_GRACE_SECONDS = 30.0
PURGE_INTERVAL = 60.0
NOT_STORED = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "x-request-tracing-id"})


def submit(
    job_name: str,
    job_version: str,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    caller: str | None,
) -> AsyncTask:
    task: AsyncTask = AsyncTask.create(
        job_name=job_name,
        job_version=job_version,
        method=method,
        target=target,
        request_headers=json.dumps(headers),
        request_body=body,
        caller=caller,
    )
    return task


def visible_to(task: AsyncTask, caller: Identity) -> bool:
    """Whoever started a task may see it; so may holders of call_admin_api (and staff)."""
    return not task.caller or task.caller == caller.display or caller.allows(CALL_ADMIN_API)


def find(task_id: str, caller: Identity) -> AsyncTask:
    """The task, if `caller` may see it."""
    task = AsyncTask.get_or_none(AsyncTask.id == task_id)
    if task is None or not visible_to(task, caller):
        raise NotFoundError(
            f"async task {task_id} not found", hint="tasks are kept for a while after they end, then removed"
        )
    return task


def finished(task: AsyncTask) -> bool:
    return task.state in (TaskState.COMPLETED, TaskState.FAILED)


def public_status(task: AsyncTask) -> str:
    """Racetrack's task status: ongoing, completed or failed."""
    return task.state if finished(task) else "ongoing"


def describe(task: AsyncTask) -> dict[str, Any]:
    ended = task.ended_at
    return {
        "task_id": task.id,
        "status": public_status(task),
        "state": task.state,
        "job_name": task.job_name,
        "job_version": task.job_version,
        "method": task.method,
        "path": task.target,
        "caller": task.caller,
        "attempts": task.attempts,
        "error": task.error,
        "response_status": task.response_status,
        "created_at": task.create_time,
        "started_at": task.started_at,
        "ended_at": ended,
        "duration": round(ended - task.started_at, 3) if ended and task.started_at else None,
    }


def take_result(task: AsyncTask) -> tuple[int, list[tuple[str, str]], bytes]:
    """The job's answer (status, headers, body); marks it read."""
    if task.response_body is None and task.retrieved_at is not None:
        raise NotFoundError(f"the answer of async task {task.id} was already read and has been removed")
    if task.retrieved_at is None:
        AsyncTask.update(retrieved_at=now()).where(AsyncTask.id == task.id).execute()
    headers = [(str(k), str(v)) for k, v in json.loads(task.response_headers or "[]")]
    return int(task.response_status or 200), headers, bytes(task.response_body or b"")


def list_tasks(state: str | None = None, job_name: str | None = None, limit: int = 100) -> list[AsyncTask]:
    query = AsyncTask.select().order_by(AsyncTask.create_time.desc()).limit(limit)
    if state:
        query = query.where(AsyncTask.state == state)
    if job_name:
        query = query.where(AsyncTask.job_name == job_name)
    return list(query)


def retry(task_id: str, caller: Identity) -> AsyncTask:
    """Queue a failed task again, with a fresh count of attempts."""
    task = find(task_id, caller)
    if task.state != TaskState.FAILED:
        raise ConflictError(f"async task {task_id} is {public_status(task)}; only failed tasks can be retried")
    AsyncTask.update(
        state=TaskState.QUEUED, attempts=0, error=None, next_attempt_at=now(), started_at=None, ended_at=None
    ).where(AsyncTask.id == task_id).execute()
    return find(task_id, caller)


def requeue_interrupted() -> int:
    """Tasks left running by a daemon that died: queue them again (the lost attempt does not count)."""
    return int(
        AsyncTask.update(state=TaskState.QUEUED, attempts=AsyncTask.attempts - 1, next_attempt_at=now())
        .where(AsyncTask.state == TaskState.RUNNING)
        .execute()
    )


def purge(ttl: float) -> None:
    finished_states = (TaskState.COMPLETED, TaskState.FAILED)
    AsyncTask.delete().where(AsyncTask.state.in_(finished_states) & (AsyncTask.ended_at < now() - ttl)).execute()
    AsyncTask.update(response_body=None, request_body=None).where(
        AsyncTask.retrieved_at.is_null(False)
        & (AsyncTask.retrieved_at < now() - RESULT_GRACE_SECONDS)
        & AsyncTask.response_body.is_null(False)
    ).execute()


def _claim_due(limit: int) -> list[AsyncTask]:
    due = list(
        AsyncTask.select()
        .where((AsyncTask.state == TaskState.QUEUED) & (AsyncTask.next_attempt_at <= now()))
        .order_by(AsyncTask.next_attempt_at)
        .limit(limit)
    )
    claimed = []
    for task in due:
        if (
            AsyncTask.update(state=TaskState.RUNNING, attempts=AsyncTask.attempts + 1, started_at=now())
            .where((AsyncTask.id == task.id) & (AsyncTask.state == TaskState.QUEUED))
            .execute()
        ):
            task.attempts += 1
            claimed.append(task)
    return claimed


Waker = Callable[[Job], None]


class AsyncCallRunner:
    """Carries out queued async calls, up to `async_concurrency` at once."""

    def __init__(self, settings: Settings, wake: Waker, poll_interval: float = 0.2) -> None:
        self._settings = settings
        self._wake = wake
        self._poll_interval = poll_interval
        self._stopped = threading.Event()

    def run_forever(self) -> None:
        requeued = requeue_interrupted()
        if requeued:
            log.info("queued %d async call(s) again that were running when the daemon stopped", requeued)
        asyncio.run(self._main())

    def stop(self) -> None:
        self._stopped.set()

    async def _main(self) -> None:
        pool = UpstreamPool()
        running: set[asyncio.Task[None]] = set()
        last_purge = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopped.is_set():
            try:
                free = self._settings.async_concurrency - len(running)
                for task in await loop.run_in_executor(None, _claim_due, free) if free > 0 else []:
                    attempt = asyncio.ensure_future(self._attempt(pool, task))
                    running.add(attempt)
                    attempt.add_done_callback(running.discard)
                if time.monotonic() - last_purge > PURGE_INTERVAL:
                    last_purge = time.monotonic()
                    await loop.run_in_executor(None, purge, self._settings.async_task_ttl)
            except Exception:  # the runner must outlive one bad poll
                log.exception("async call runner poll failed")
            await asyncio.sleep(self._poll_interval)
        for attempt in running:
            attempt.cancel()  # left running: requeued at the next start
        pool.close()

    async def _attempt(self, pool: UpstreamPool, task: AsyncTask) -> None:
        loop = asyncio.get_running_loop()
        job = await loop.run_in_executor(None, Job.find, task.job_name, task.job_version)
        if job is None:
            await loop.run_in_executor(None, _fail, task, f"job {task.job_name} {task.job_version} no longer exists")
            return
        timeout = float(job.call_timeout or self._settings.call_timeout)
        try:
            if job.status in JobStatus.ASLEEP:
                await loop.run_in_executor(None, self._wake, job)
                job = await loop.run_in_executor(None, Job.find, task.job_name, task.job_version) or job
            if job.status in JobStatus.UNROUTABLE:  # its old address may belong to another container by now
                raise UpstreamError(f"job {job.name} {job.version} is {job.status}")
            address = job.ready_addresses()[0]
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in json.loads(task.request_headers)]
            headers.append((b"host", address.encode()))
            async with asyncio.timeout(timeout):
                response = await pool.request(
                    address, task.method, task.target.encode("latin-1"), headers, bytes(task.request_body or b"")
                )
                body = await self._read(response)
        except PayloadTooLarge as exc:
            await loop.run_in_executor(None, _fail, task, exc.message)
        except TimeoutError:
            await loop.run_in_executor(
                None,
                _fail,
                task,
                f"job {task.job_name} {task.job_version} did not answer within its call_timeout of {timeout:g} s",
            )
        except UpstreamError as exc:
            if task.attempts < self._settings.async_max_attempts:
                log.info(
                    "async task %s: attempt %d failed (%s); retrying in %g s",
                    task.id,
                    task.attempts,
                    exc.message,
                    self._settings.async_retry_interval,
                )
                await loop.run_in_executor(None, _queue_again, task, exc.message, self._settings.async_retry_interval)
            else:
                await loop.run_in_executor(None, _fail, task, f"{exc.message} (after {task.attempts} attempt(s))")
        except RacetrackError as exc:  # e.g. waking the job failed: Docker unreachable
            await loop.run_in_executor(None, _fail, task, exc.message)
        except Exception as exc:  # a bug of ours must not leave the task "running" for ever
            log.exception("async task %s: attempt failed unexpectedly", task.id)
            await loop.run_in_executor(None, _fail, task, f"internal error: {type(exc).__name__}: {exc}")
        else:
            headers_out = [
                (k.decode("latin-1"), v.decode("latin-1"))
                for k, v in response.headers
                if k.decode("latin-1") not in NOT_STORED
            ]
            await loop.run_in_executor(None, _complete, task, response.status, headers_out, body)

    async def _read(self, response: Any) -> bytes:
        limit = int(self._settings.async_max_body)
        parts, size = [], 0
        try:
            async for chunk in response.body():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the job's answer is larger than async_max_body ({limit} bytes)")
                parts.append(chunk)
        except BaseException:
            response.close()
            raise
        response.release()
        return b"".join(parts)


def _complete(task: AsyncTask, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    AsyncTask.update(
        state=TaskState.COMPLETED,
        response_status=status,
        response_headers=json.dumps(headers),
        response_body=body,
        error=None,
        ended_at=now(),
    ).where(AsyncTask.id == task.id).execute()


def _fail(task: AsyncTask, error: str) -> None:
    log.warning("async task %s failed: %s", task.id, error)
    AsyncTask.update(state=TaskState.FAILED, error=error, ended_at=now()).where(AsyncTask.id == task.id).execute()


def _queue_again(task: AsyncTask, error: str, delay: float) -> None:
    AsyncTask.update(state=TaskState.QUEUED, error=error, next_attempt_at=now() + delay).where(
        AsyncTask.id == task.id
    ).execute()
