"""Benchmark, on demand: `make quickstart` on a bare machine, from the command to the first 42, step
by step, and the same command run again.

    .venv/bin/python bench/quickstart.py [--ref HEAD] [--label after] [--also earlier.json ...]

The bare machine is a container of the project's locally debootstrapped Debian image
(racetrackd/python3-base:bookworm: Debian with python3 and nothing else of ours; nothing is
pulled) that runs its own Docker engine, the way scripts/swarm-lab.sh runs its nodes (no
--privileged: the capabilities, seccomp/apparmor unconfined, the host's cgroup tree, a volume for
/var/lib/docker). Like a new machine it has: the host's apt sources and CA bundle (and pip told to
trust that bundle, as the host's pip is), `make` (installed first, then the apt lists removed
again), and a clone of the repository at --ref. It has no docker.io, no debootstrap, no pip cache,
no .venv and no images.

Inside, `make quickstart` runs as root; each output line is timestamped, the clock stops at the
line that prints the call's answer, 42. The steps are the script's own `----->` lines and the base
image's log lines (each lasts until the next one). Then `make quickstart` runs again, timed to its end. The container and
its volume (and everything its engine made) are removed at the end (--keep leaves them).

The run's figures go to stdout as JSON and to --out; the "## Quickstart" section of
docs/benchmarks.md gets a column per run: this one and those of --also (earlier --out files,
e.g. the same benchmark at `--ref main`). It is heavy (apt, pip, debootstrap, a first job build:
minutes of both cores), so it is not part of any test run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import write_section

REPO = Path(__file__).resolve().parents[1]
NAME = "racetrackd-bench-quickstart"
LABEL = "racetrackd.bench=quickstart"
BARE_IMAGE = "racetrackd/python3-base:bookworm"
HOST_APT_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CHECKOUT = "/root/racetrackd"
SECTION = "## Quickstart"
TARGETS = {"first": 180.0, "again": 15.0}  # seconds (issue #21)
# The nested engine's flags where --privileged is refused (DEVELOPERS.md explains each).
ENGINE_FLAGS = [
    "--cap-add",
    "ALL",
    "--cap-drop",
    "SYS_RESOURCE",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "apparmor=unconfined",
    "--cgroupns",
    "host",
    "-v",
    "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs",
    "/run",
]
# The script's own step lines, and the base image's (bootstrapped, imported: racetrackd's log lines).
STEP = re.compile(r"^-----> (.*)$|INFO racetrackd\.docker\.base_images: (.*)$")
ANSWER = re.compile(r"=>\s*42\s*$")


def docker(*args: str, check: bool = True, timeout: float = 600, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], check=check, text=True, capture_output=True, timeout=timeout, **kwargs)


def in_machine(script: str, *, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return docker("exec", NAME, "bash", "-c", script, check=check, timeout=timeout)


def make_machine(ref: str) -> str:
    """Start the bare machine with the repository at `ref` in it; the commit checked out."""
    for source in (HOST_APT_SOURCES, HOST_CA_BUNDLE):
        if not source.is_file():
            raise SystemExit(f"{source} is missing: the bare machine gets the host's apt sources and CA bundle")
    docker("volume", "create", "--label", LABEL, NAME)
    docker(
        "run",
        "-d",
        "--name",
        NAME,
        "--hostname",
        "bare",
        "--label",
        LABEL,
        *ENGINE_FLAGS,
        "-v",
        f"{NAME}:/var/lib/docker",
        BARE_IMAGE,
        "sleep",
        "infinity",
    )
    # The host's apt sources replace the image's own (a mirror is never written down here) and its
    # CA bundle is trusted by apt, pip and the builds, for networks whose proxy re-signs TLS.
    docker("cp", str(HOST_APT_SOURCES), f"{NAME}:/etc/apt/sources.list.d/debian.sources")
    docker("cp", str(HOST_CA_BUNDLE), f"{NAME}:/etc/ssl/certs/ca-certificates.crt")
    in_machine(
        "rm -f /etc/apt/sources.list && printf '[global]\\ncert = /etc/ssl/certs/ca-certificates.crt\\n' > /etc/pip.conf"
    )
    # `make`, which the README's command needs; the apt lists go again so that quickstart finds none.
    in_machine(
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make"
        " >/dev/null && rm -rf /var/lib/apt/lists/* && apt-get clean",
        timeout=900,
    )
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", ref], check=True, text=True, capture_output=True
    ).stdout.strip()
    common_dir = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--path-format=absolute", "--git-common-dir"],
        check=True,
        text=True,
        capture_output=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="racetrackd-bench-quickstart-") as tmp:
        clone = Path(tmp) / "racetrackd"
        subprocess.run(["git", "clone", "-q", "--no-checkout", common_dir, str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "-q", commit], check=True)
        docker("cp", f"{clone}/.", f"{NAME}:{CHECKOUT}")
    return commit


def timed_quickstart(log_path: Path, *, first: bool) -> dict[str, Any]:
    """Run `make quickstart` in the machine: seconds to the 42 (the first run) or to its end (again),
    and the steps its `----->` lines mark."""
    command = ["docker", "exec", "-w", CHECKOUT, NAME, "bash", "-c", "make quickstart 2>&1"]
    lines: list[tuple[float, str]] = []
    answered: float | None = None
    start = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, bufsize=1) as process, log_path.open("a") as log:
        assert process.stdout is not None
        log.write(f"=== make quickstart ({'first run' if first else 'again'})\n")
        for line in process.stdout:
            now = time.perf_counter() - start
            lines.append((now, line.rstrip("\n")))
            log.write(f"{now:8.2f} {line}")
            if answered is None and ANSWER.search(line):
                answered = now
        returncode = process.wait()
    ended = time.perf_counter() - start
    if returncode != 0 or answered is None:
        tail = "\n".join(text for _, text in lines[-30:])
        raise SystemExit(f"make quickstart failed (exit {returncode}; log {log_path}):\n{tail}")
    return {"to_42_s": round(answered, 1), "total_s": round(ended, 1), "steps": steps(lines, answered)}


def steps(lines: list[tuple[float, str]], answered: float) -> list[dict[str, Any]]:
    """The `----->` lines' steps: each from its line to the next one's (the last to the answer)."""
    marks = [(at, match.group(1) or match.group(2)) for at, text in lines if (match := STEP.search(text))]
    bounds = [*marks, (answered, "")]
    result = [{"step": "before the first step line", "s": round(marks[0][0] if marks else answered, 1)}]
    for (at, name), (until, _) in zip(bounds, bounds[1:], strict=False):
        result.append({"step": name, "s": round(until - at, 1)})
    return result


def remove_machine() -> None:
    """Stop the machine's engine first (its containers' cgroups are the host's), then remove it all."""
    in_machine(
        'ids=$(docker ps -aq 2>/dev/null); [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1;'
        " [ -f /run/docker.pid ] && kill $(cat /run/docker.pid) && sleep 3; true",
        check=False,
        timeout=120,
    )
    docker("rm", "-f", NAME, check=False)
    docker("volume", "rm", NAME, check=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ref", default="HEAD", help="the commit of this repository the machine gets (default HEAD)")
    parser.add_argument("--label", help="the run's column in the report (default: the ref)")
    parser.add_argument("--out", type=Path, help="where to write this run's figures (JSON), for a later --also")
    parser.add_argument("--also", type=Path, nargs="*", default=[], help="earlier runs' --out files to report beside")
    parser.add_argument("--keep", action="store_true", help="leave the machine and its volume (for a look inside)")
    parser.add_argument("--report-only", action="store_true", help="no run: write the report of the --also files")
    args = parser.parse_args()
    if args.report_only:
        write_report([json.loads(path.read_text()) for path in args.also])
        return
    if shutil.which("docker") is None:
        raise SystemExit("the docker CLI is needed")
    if docker("container", "inspect", NAME, check=False).returncode == 0:
        raise SystemExit(f"a container {NAME} exists: another run, or a kept one (docker rm -f {NAME})")

    log_path = Path(tempfile.gettempdir()) / f"{NAME}.log"
    log_path.write_text("")
    load_before = os.getloadavg()
    try:
        commit = make_machine(args.ref)
        first = timed_quickstart(log_path, first=True)
        again = timed_quickstart(log_path, first=False)
    finally:
        if not args.keep:
            remove_machine()
    result = {
        "label": args.label or args.ref,
        "commit": commit[:10],
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load": [round(value, 1) for value in (*load_before, *os.getloadavg())],
        "first": first,
        "again": again,
    }
    print(json.dumps(result, indent=2))
    print(f"(timestamped output: {log_path})")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    write_report([*(json.loads(path.read_text()) for path in args.also), result])


def timeline(run: dict[str, Any]) -> str:
    """The first run's step lines with the second each appeared at: steps in the background (apt,
    the root filesystem's bootstrap) overlap the ones after them, so the clock says more than the
    gaps between lines."""
    lines, at = [], 0.0
    for step in run["first"]["steps"]:
        if step["step"] != "before the first step line":
            # a failed pull's message names the registry and the resolver: neither belongs in the report
            text = re.sub(r"\(pulling image [^;]*\)", "(no registry answers)", step["step"]).replace("|", "/")
            lines.append(f"| {at:.1f} | {text} |")
        at += step["s"]
    lines.append(f"| {run['first']['to_42_s']:.1f} | the call prints 42 |")
    return (
        f"{run['label']}, first run: when each step line appeared\n\n| s | step |\n|---:|---|\n"
        + "\n".join(lines)
        + "\n"
    )


def write_report(runs: list[dict[str, Any]]) -> None:
    def verdict(seconds: float, target: float) -> str:
        return f"{seconds:.0f} s ({'met' if seconds <= target else 'MISSED'})"

    header = " | ".join(f"{run['label']} (`{run['commit']}`, {run['date']})" for run in runs)
    rows = [
        f"| to the first 42, ≤ {TARGETS['first']:g} s | "
        + " | ".join(verdict(run["first"]["to_42_s"], TARGETS["first"]) for run in runs)
        + " |",
        f"| run again, ≤ {TARGETS['again']:g} s | "
        + " | ".join(verdict(run["again"]["total_s"], TARGETS["again"]) for run in runs)
        + " |",
        "| load average before (1 / 5 / 15 min) → after (1 min) | "
        + " | ".join(f"{run['load'][0]} / {run['load'][1]} / {run['load'][2]} → {run['load'][3]}" for run in runs)
        + " |",
    ]
    step_lists = "\n".join(timeline(run) for run in runs)
    section = f"""{SECTION} ({time.strftime("%Y-%m-%d")}, {os.cpu_count()} cores, `bench/quickstart.py`)

`make quickstart` on a bare machine: a container of the locally debootstrapped Debian image
(`{BARE_IMAGE}`: Debian bookworm with python3) running its own Docker engine, with the host's
apt sources and CA bundle, `make`, and a clone of the repository; no docker.io, no debootstrap,
no pip cache, no .venv, no images (nothing can be pulled here, so the python3 base image is
debootstrapped). Timed from the command to the printed 42, then the same command again, on the
engine and 2 cores shared with the host's other work.

| `make quickstart` | {header} |
|---|{"---:|" * len(runs)}
{chr(10).join(rows)}

{step_lists}"""
    write_section(SECTION, section)


if __name__ == "__main__":
    main()
