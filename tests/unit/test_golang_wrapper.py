"""The golang job type's Go code under `go test`: the wrapper (built into a stand-in job's module, as
image builds do) and the build tools. Needs Debian's golang-go on the host (scripts/setup-host.sh
--with-golang installs it); image builds run the wrapper's tests too, in the toolchain image.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from racetrackd.settings import BUILTIN_PLUGINS_DIR

PLUGIN = BUILTIN_PLUGINS_DIR / "golang"
GO = shutil.which("go")

pytestmark = pytest.mark.skipif(
    GO is None and not os.environ.get("CI"), reason="no Go toolchain (apt-get install golang-go)"
)


def go(*args: str, cwd: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert GO is not None, "the Go toolchain is required in CI (scripts/setup-host.sh --with-golang installs golang-go)"
    env = {
        **os.environ,
        "GOFLAGS": "-mod=mod",
        "GOPATH": str(tmp_path / "gopath"),
        "GOPROXY": "off",
        "GOCACHE": os.environ.get("GOCACHE", str(Path.home() / ".cache" / "go-build")),
        "CGO_ENABLED": "0",
    }
    return subprocess.run([GO, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


def test_the_build_tools_pass_their_go_tests(tmp_path: Path) -> None:
    result = go("test", "-count=1", "./...", cwd=PLUGIN / "tools", tmp_path=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_wrapper_passes_its_go_tests_inside_a_jobs_module(tmp_path: Path) -> None:
    job = tmp_path / "job"
    shutil.copytree(PLUGIN / "tools" / "warmup-job", job)
    shutil.copytree(PLUGIN / "go_wrapper", job / "racetrack_job_wrapper")
    adapter = go(
        "run",
        "./perform-adapter",
        str(job),
        str(job / "racetrack_job_wrapper" / "zz_perform_adapter.go"),
        cwd=PLUGIN / "tools",
        tmp_path=tmp_path,
    )
    assert adapter.returncode == 0, adapter.stderr

    result = go("test", "-count=1", "./racetrack_job_wrapper", cwd=job, tmp_path=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok" in result.stdout


def test_the_wrapper_is_formatted_and_vetted(tmp_path: Path) -> None:
    gofmt = shutil.which("gofmt") or str(Path(str(GO)).with_name("gofmt"))
    unformatted = subprocess.run([gofmt, "-l", str(PLUGIN)], capture_output=True, text=True, check=False).stdout

    assert unformatted == ""
    vet = go("vet", "./...", cwd=PLUGIN / "tools", tmp_path=tmp_path)
    assert vet.returncode == 0, vet.stderr


def test_a_job_in_package_main_with_its_own_main_builds_with_the_wrapper(tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    (job / "go.mod").write_text("module example.com/adder\n\ngo 1.19\n")
    (job / "main.go").write_text(
        'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println(Perform(nil, nil)) }\n\n'
        "func Perform(args []interface{}, kwargs map[string]interface{}) (interface{}, error) { return 42, nil }\n"
    )
    (job / "try.go").write_text("package main\n\nfunc tryIt() { main() }\n")  # calls it from another file
    shutil.copytree(PLUGIN / "go_wrapper", job / "racetrack_job_wrapper")
    adapter = go(
        "run",
        "./perform-adapter",
        str(job),
        str(job / "racetrack_job_wrapper" / "zz_perform_adapter.go"),
        cwd=PLUGIN / "tools",
        tmp_path=tmp_path,
    )
    assert adapter.returncode == 0, adapter.stderr
    assert "main.go: the job's own func main() is renamed" in adapter.stdout

    built = go("build", "-o", str(tmp_path / "job-server"), "./racetrack_job_wrapper", cwd=job, tmp_path=tmp_path)

    assert built.returncode == 0, built.stdout + built.stderr
    assert (tmp_path / "job-server").is_file()
