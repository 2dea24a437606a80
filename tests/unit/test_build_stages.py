"""racetrackd.deploy.building.prune_build_stages: the untagged build-stage images multi-stage job types leave."""

from __future__ import annotations

from builders.labels import LABEL_BUILD_STAGE
from racetrackd.deploy.building import prune_build_stages
from racetrackd.naming import LABEL_INSTANCE
from tests.unit.fakes import FakeRuntime


def test_only_the_newest_build_stages_of_the_job_are_kept() -> None:
    runtime = FakeRuntime()
    for n in range(4):
        runtime.images[f"sha256:go-adder-{n}"] = {LABEL_INSTANCE: "main", LABEL_BUILD_STAGE: "go-adder"}
    runtime.images["sha256:other-job"] = {LABEL_INSTANCE: "main", LABEL_BUILD_STAGE: "go-other"}
    runtime.images["sha256:other-daemon"] = {LABEL_INSTANCE: "test-1", LABEL_BUILD_STAGE: "go-adder"}

    prune_build_stages(runtime, "main", "go-adder", keep=2)

    assert sorted(runtime.images) == [
        "sha256:go-adder-2",
        "sha256:go-adder-3",
        "sha256:other-daemon",
        "sha256:other-job",
    ]
