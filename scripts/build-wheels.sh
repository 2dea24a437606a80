#!/usr/bin/env bash
# Fill wheels/ with racetrackd's runtime dependencies as wheels (pinned by constraints.txt),
# so that building the racetrackd image needs no package index: the way for hosts behind a
# TLS-intercepting proxy (this host's pip already trusts it) and for air-gapped ones (run it
# where the index is reachable, copy wheels/ over). Idempotent: nothing to do when the pins
# and the Python version are unchanged.
#
# The wheels are for this Python's version (.venv's, or $PYTHON): the image's base must have the
# same one (python:3.11-slim and Debian bookworm's python3 are 3.11); the image build checks it.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "-----> $*" >&2; }
PYTHON=${PYTHON:-.venv/bin/python}
wheels=wheels
python_version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
stamp="$wheels/.stamp-$( { cat constraints.txt setup.cfg; echo "$python_version"; } | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
  say "$wheels is up to date (Python $python_version)"
  exit 0
fi
say "building racetrackd's runtime dependencies as wheels into $wheels (Python $python_version)"
find "$wheels" -maxdepth 1 -type f ! -name .gitignore -delete
# shellcheck disable=SC2046 # one argument per requirement
"$PYTHON" -m pip wheel -q -c constraints.txt --wheel-dir "$wheels" $("$PYTHON" scripts/runtime-requirements.py) >&2
echo "$python_version" >"$wheels/PYTHON_VERSION"
touch "$stamp"
say "$(find "$wheels" -maxdepth 1 -name "*.whl" | wc -l) wheels in $wheels"
