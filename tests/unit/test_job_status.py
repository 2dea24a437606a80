"""One status vocabulary: a job's status is written only by the state methods of `racetrackd.db.Job`.

Read with `ast` from every module of racetrackd (and the shared packages): a raw status write
anywhere but db.py fails here with the file and the line, so a new use case has to name its state
change on the model, where the conditions that keep concurrent writers apart live.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ["racetrackd", "builders", "cli", "jobmanifest", "pluginbundle", "jobtype_plugins"]
ALLOWED = {REPO / "racetrackd" / "db.py"}
# Model methods that take column values as keywords (or one dict keyed by field).
WRITES = {"update", "create", "insert", "insert_many", "replace", "get_or_create"}


def raw_status_writes(source: str) -> list[tuple[int, str]]:
    """(line, what) of every write of a job's status that does not go through a Job method."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in WRITES
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "Job"
        ):
            keywords = [keyword.arg for keyword in node.keywords]
            fields = [
                f"{key.value.id}.{key.attr}"
                for arg in node.args
                if isinstance(arg, ast.Dict)
                for key in arg.keys
                if isinstance(key, ast.Attribute) and isinstance(key.value, ast.Name)
            ]
            if "status" in keywords or "Job.status" in fields:
                found.append((node.lineno, f"Job.{node.func.attr}(status=...)"))
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            # `self.status` is an object's own field (an upstream connection's, say); any other
            # `<something>.status = ` in racetrackd is a row about to be saved behind the model's back.
            if (
                isinstance(target, ast.Attribute)
                and target.attr == "status"
                and not (isinstance(target.value, ast.Name) and target.value.id == "self")
            ):
                found.append((target.lineno, f"{ast.unparse(target)} = ..."))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "setattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value == "status"
        ):
            found.append((node.lineno, "setattr(..., 'status', ...)"))
    return sorted(found)


def test_job_statuses_are_written_only_by_the_models_state_methods() -> None:
    offences = [
        f"{path.relative_to(REPO)}:{line}: {what}"
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        if path not in ALLOWED
        for line, what in raw_status_writes(path.read_text())
    ]

    assert offences == [], "write job statuses through racetrackd.db.Job methods (mark_running, ...):\n" + "\n".join(
        offences
    )


def test_the_guard_catches_each_kind_of_raw_status_write() -> None:
    source = "\n".join(
        [
            "Job.update(status=JobStatus.RUNNING).where(Job.id == 1).execute()",
            "Job.update({Job.status: 'crashed'}).execute()",
            "Job.create(name='a', status='starting')",
            "job.status = JobStatus.SLEEPING",
            "row.job.status = 'lost'",
            "setattr(job, 'status', 'waking')",
            "self.status = 200",  # an object's own field: allowed
            "Job.update(error=None).execute()",  # no status: allowed
            "Deployment.create(status='done')",  # another model: allowed
        ]
    )

    assert [line for line, _ in raw_status_writes(source)] == [1, 2, 3, 4, 5, 6]


# Names only (racetrackd.naming hands on the label names spelt there): not the image builder.
LIGHT_BUILDER_MODULES = {"builders.labels"}


def test_the_routing_table_loads_neither_docker_nor_flask_nor_the_image_builder() -> None:
    # A fresh interpreter: this test run has long since imported everything.
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, racetrackd.gateway.routing; print('\\n'.join(sys.modules))"],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    ).stdout.split()

    heavy = sorted(
        name
        for name in loaded
        if name.split(".")[0] in {"docker", "flask", "werkzeug", "git", "jinja2", "requests"}
        or name.startswith(
            ("racetrackd.docker", "racetrackd.plugins", "racetrackd.jobs", "racetrackd.deploy", "builders.")
        )
        and name not in LIGHT_BUILDER_MODULES
    )
    assert heavy == []
