"""`python -m racetrack_job_wrapper run ENTRYPOINT_PATH [ENTRYPOINT_CLASS] [--port 7000]`."""

from __future__ import annotations

import argparse
import os

from racetrack_job_wrapper.serve import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="racetrack_job_wrapper")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve a job entrypoint over HTTP")
    run.add_argument("entrypoint_path", help="file holding the entrypoint class, e.g. entrypoint.py")
    run.add_argument(
        "entrypoint_class",
        nargs="?",
        default=None,
        help="class name; found automatically when the file has one class with perform()",
    )
    run.add_argument("--port", type=int, default=int(os.environ.get("JOB_PORT", "7000")))
    args = parser.parse_args()
    serve(args.entrypoint_path, args.entrypoint_class, args.port)


if __name__ == "__main__":
    main()
