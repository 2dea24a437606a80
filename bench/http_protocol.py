"""Benchmark: the HTTP workers' two protocols side by side, with no job and no gateway behind them.

    .venv/bin/python bench/http_protocol.py [--duration 5] [--rounds 3] [--connections 16]

racetrackd/httpworker.py's PubConnection (job calls) against gunicorn's ASGIProtocol (what served
every call before), each in a process of its own on uvloop, serving the same trivial ASGI app (reads
the body, answers `42` with a Content-Length) to `wrk` POSTing samples/adder's JSON body to a /pub
path on 127.0.0.1. The CPU time of the server process (utime + stime from /proc, so the kernel's
work for its sockets counts) divided by the calls answered is the protocol's cost per call; the
rounds alternate the two. Results go to stdout and replace the "## HTTP protocol" section of
docs/benchmarks.md. Needs `wrk`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import write_section

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MARKER = "## HTTP protocol: PubConnection vs gunicorn's ASGIProtocol"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PATH = "/pub/job/adder/0.0.1/api/v1/perform"
SCRIPT = """wrk.method = "POST"
wrk.body = '{"a": 40, "b": 2}'
wrk.headers["Content-Type"] = "application/json"
"""


async def app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def,type-arg]
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"42"})


def serve(mode: str, port: int) -> None:
    """The server process: one uvloop, one listening socket, the protocol named by `mode`."""
    import uvloop
    from gunicorn.asgi.protocol import ASGIProtocol
    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    from racetrackd.httpworker import PubConnection, PubWorker

    cfg = Config()
    worker = PubWorker(0, os.getpid(), [], None, 30, cfg, Logger(cfg))
    worker.asgi = app

    async def main() -> None:
        loop = asyncio.get_running_loop()
        worker.loop = loop
        factory = (lambda: PubConnection(worker)) if mode == "pub" else (lambda: ASGIProtocol(worker))
        await loop.create_server(factory, "127.0.0.1", port)
        await asyncio.Event().wait()

    uvloop.run(main())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(mode: str, seconds: float, connections: int, script: Path) -> dict[str, float]:
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", mode, str(port)])
    try:
        url = f"http://127.0.0.1:{port}{PATH}"
        deadline = time.monotonic() + 10
        while subprocess.run(["curl", "-s", "-o", "/dev/null", url], check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit(f"the {mode} server did not start")
            time.sleep(0.1)
        wrk = ["wrk", "-t1", f"-c{connections}", "--latency", "-s", str(script), url]
        subprocess.run([*wrk[:3], "-d2s", *wrk[3:]], capture_output=True, check=True)  # warm-up
        before = cpu_seconds(server.pid)
        out = subprocess.run([*wrk[:3], f"-d{seconds:g}s", *wrk[3:]], capture_output=True, text=True, check=True)
        used = cpu_seconds(server.pid) - before
    finally:
        server.terminate()
        server.wait(10)
    calls = float(re.search(r"(\d+) requests in", out.stdout).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out.stdout).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "us_per_call": used / calls * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    script = Path(tempfile.mkdtemp(prefix="bench-http-protocol-")) / "post.lua"
    script.write_text(SCRIPT)
    runs: dict[str, list[dict[str, float]]] = {"pub": [], "gunicorn": []}
    for round_number in range(args.rounds):
        order = ("pub", "gunicorn") if round_number % 2 == 0 else ("gunicorn", "pub")
        for mode in order:
            run = measure(mode, args.duration, args.connections, script)
            runs[mode].append(run)
            print(f"round {round_number + 1} {mode:9} {run['rps']:8.0f} req/s  {run['us_per_call']:6.1f} µs/call")
    load = os.getloadavg()[0]
    best = {mode: min(r["us_per_call"] for r in found) for mode, found in runs.items()}
    rows = "\n".join(
        f"| {label} | "
        + ", ".join(f"{r['us_per_call']:.1f}" for r in runs[mode])
        + f" | {best[mode]:.1f} | "
        + ", ".join(f"{r['rps']:.0f}" for r in runs[mode])
        + " |"
        for mode, label in (
            ("gunicorn", "gunicorn 27 `ASGIProtocol` (before)"),
            ("pub", "`racetrackd.httpworker.PubConnection`"),
        )
    )
    command = " ".join([".venv/bin/python", "bench/http_protocol.py", *sys.argv[1:]])
    section = f"""{MARKER} ({time.strftime("%Y-%m-%d")}, {os.cpu_count()} cores, `{command}`)

The same trivial ASGI app (reads the body, answers `42` with a Content-Length) behind each protocol,
in a process of its own on uvloop, under `wrk -t1 -c{args.connections}` POSTing adder's JSON body for
{args.duration:g} s after a 2 s warm-up; CPU of the server process (user + system, /proc) per call
answered; the rounds alternate the two. Load average at the end: {load:.1f} (a shared machine).

| protocol | µs of CPU per call, by round | best | req/s, by round |
|---|---|---:|---|
{rows}

PubConnection costs {best["pub"] / best["gunicorn"]:.2f}× gunicorn's protocol per call (best rounds). What remains
of a call here, ~{best["pub"]:.0f} µs, is uvloop and the kernel (a recv and a send on the socket) plus one
task and the ASGI messages: the floor the gateway's own work and its upstream connection add to.
"""
    write_section(MARKER, section)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        main()
