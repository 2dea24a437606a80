"""The registry under concurrent writers (SQLite in WAL mode, one connection per thread)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from racetrackd.db import BuildLog, Deployment, open_database
from racetrackd.settings import Settings


def test_a_build_log_append_survives_another_writer_committing_meanwhile(
    make_settings: Callable[..., Settings], monkeypatch: Any
) -> None:
    # Found by bench/scale.py: a deployment failed with "database is locked" while other deployments
    # and the supervisor wrote. A transaction that reads and then writes, begun as a deferred one,
    # cannot write once another connection has committed after its read: SQLite answers BUSY at
    # once, without waiting out busy_timeout.
    open_database(make_settings().database_path)
    deployment = Deployment.create(job_name="adder", job_version="1.0.0", manifest_yaml="")
    deployment.append_logs("step 1\n")
    read = BuildLog.get_or_none
    writers: list[threading.Thread] = []

    def read_then_let_another_writer_commit(*args: Any, **kwargs: Any) -> Any:
        found = read(*args, **kwargs)
        writer = threading.Thread(
            target=lambda: Deployment.create(job_name="other", job_version="1.0.0", manifest_yaml="")
        )
        writer.start()
        writer.join(timeout=1)  # commits at once, unless this transaction already holds the write lock
        writers.append(writer)
        return found

    monkeypatch.setattr(BuildLog, "get_or_none", read_then_let_another_writer_commit)
    deployment.append_logs("step 2\n")
    monkeypatch.undo()
    for writer in writers:
        writer.join(timeout=20)

    assert deployment.build_log_text == "step 1\nstep 2\n"
    assert Deployment.select().where(Deployment.job_name == "other").count() == 1


def test_every_threads_registry_connection_keeps_a_bounded_page_cache(
    make_settings: Callable[..., Settings],
) -> None:
    # Each thread gets a connection of its own for as long as it lives (16 control-plane threads per
    # HTTP worker): with SQLite's default cache each could keep 2000 KiB of pages it once read.
    db = open_database(make_settings().database_path)
    sizes: list[int] = [db.execute_sql("PRAGMA cache_size").fetchone()[0]]

    def query_from_another_thread() -> None:
        sizes.append(db.execute_sql("PRAGMA cache_size").fetchone()[0])
        db.close()

    thread = threading.Thread(target=query_from_another_thread)
    thread.start()
    thread.join(timeout=20)
    assert len(sizes) == 2
    assert all(-512 <= size < 0 for size in sizes), sizes  # at most 512 KiB each (negative: KiB)
