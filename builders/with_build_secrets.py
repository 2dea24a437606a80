"""Run a command with the job's secret build env, fetched from racetrackd while the build runs.

Copied into build contexts as racetrack-build/with-build-secrets.py and run by a RUN step:
    python3 with-build-secrets.py URL COMMAND [ARG...]
The values live only in this process's environment (and its children's): nothing is written to
the image, and the RUN line in `docker history` shows the URL, which stops working once the build
is over. Standard library only: it runs inside the image being built.
"""

import json
import os
import sys
import urllib.request


def main(argv: list) -> int:
    if len(argv) < 3:
        print("usage: with-build-secrets.py URL COMMAND [ARG...]", file=sys.stderr)
        return 2
    url, command = argv[1], argv[2:]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the daemon is local: no proxy
    try:
        with opener.open(url, timeout=30) as response:
            secrets = json.load(response)["env"]
    except Exception as exc:  # noqa: BLE001 (any failure ends the build with one clear line)
        print(f"racetrackd: cannot fetch the secret build env ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 1
    os.environ.update({str(key): str(value) for key, value in secrets.items()})
    os.execvp(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
