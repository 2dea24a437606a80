"""The threads that run job code, so the event loop keeps answering probes and queueing calls.

Leaner than concurrent.futures.ThreadPoolExecutor for the call path: one queue, the result handed
straight to the waiting asyncio future (no concurrent Future, no future chaining, no semaphore per
submit), which took a third of the wrapper's time per call. Still an Executor (`submit`) for code
that wants one (WSGI webviews through run_in_executor).
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

_STOP = object()


def _deliver(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():  # the caller gave up (call_timeout); the result is dropped
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class JobThreads(Executor):
    def __init__(self, threads: int, name: str = "job") -> None:
        self.size = max(1, threads)
        self.name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shut_down = False

    def _start(self) -> None:
        # All at once on first use, not at construction: a forking server must create us before it
        # forks, and threads do not survive a fork.
        with self._lock:
            if self._threads or self._shut_down:
                return
            for number in range(self.size):
                thread = threading.Thread(target=self._work, name=f"{self.name}_{number}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            loop, future, context, function = item
            del item
            if loop is None:  # from submit(): `function` settles its own concurrent Future
                context.run(function)
                continue
            try:
                outcome = (True, context.run(function))
            except BaseException as exc:  # noqa: BLE001 (handed to the caller, who reports it)
                outcome = (False, exc)
            try:
                loop.call_soon_threadsafe(_deliver, future, *outcome)
            except RuntimeError:  # the loop has closed (the server stopped): nobody waits for it
                pass
            del outcome  # drop references while idle

    def call(self, function: Callable[[], Any], context: contextvars.Context | None = None) -> asyncio.Future[Any]:
        """Run `function()` in a job thread (in `context`, default a copy of the caller's); await the
        returned future for its result. (Not a coroutine: one frame less on every call.)"""
        if not self._threads:
            self._start()
        if self._shut_down:
            raise RuntimeError("the job's threads are shut down")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((loop, future, context or contextvars.copy_context(), function))
        return future

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if not self._threads:
            self._start()
        if self._shut_down:
            raise RuntimeError("the job's threads are shut down")
        result: Future[Any] = Future()

        def call() -> None:
            if not result.set_running_or_notify_cancel():
                return
            try:
                result.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 (handed to the caller)
                result.set_exception(exc)

        self._queue.put((None, result, contextvars.copy_context(), call))
        return result

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shut_down = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    loop, future, _context, _function = self._queue.get_nowait()
                except queue.Empty:
                    break
                if loop is None:
                    future.cancel()
                else:
                    loop.call_soon_threadsafe(future.cancel)
        for _ in threads:
            self._queue.put(_STOP)
        if wait:
            for thread in threads:
                thread.join()
