#!/usr/bin/env bash
# Command one of the README: set up the host, start racetrackd in the background, deploy the
# sample job samples/adder and show a curl that returns 42. Safe to run again.
#
# It builds only what the python3 sample needs. `scripts/quickstart.sh --with-golang` (or
# `make quickstart WITH_GOLANG=1`) also readies golang jobs: a Go toolchain image, minutes to build;
# `--with-rust` (`make quickstart WITH_RUST=1`) readies rust jobs the same way.
set -euo pipefail
cd "$(dirname "$0")/.."

with_golang=false
with_rust=false
setup_args=()
for arg in "$@"; do
  case "$arg" in
    --with-golang) with_golang=true; setup_args+=("$arg") ;;
    --with-rust) with_rust=true; setup_args+=("$arg") ;;
    *) echo "usage: $0 [--with-golang] [--with-rust]" >&2; exit 2 ;;
  esac
done

# --quickstart: what racetrackd and the first job need, no test tools (setup-host.sh has them for `make test`).
base_image=$(scripts/setup-host.sh --quickstart ${setup_args[@]+"${setup_args[@]}"} | tail -n 1)
# The README says `rtd ...`: link rtd and racetrackd into a PATH directory (or say what to add).
scripts/link-cli.sh
export RACETRACK_PYTHON_BASE_IMAGE="${RACETRACK_PYTHON_BASE_IMAGE:-$base_image}"
# golang jobs: a Go toolchain image (setup-host.sh --with-golang built one from Debian's golang-go
# when none can be pulled; one built earlier is used as well) and any Debian image to run in (the
# python3 base image when debian:bookworm-slim cannot be had).
if [ "$with_golang" = true ]; then
  export RACETRACK_GOLANG_BASE_IMAGE="${RACETRACK_GOLANG_BASE_IMAGE:-$(.venv/bin/racetrackd base-images ensure --job-type golang)}"
elif [ -z "${RACETRACK_GOLANG_BASE_IMAGE:-}" ] && docker image inspect racetrackd/golang-base:bookworm >/dev/null 2>&1; then
  export RACETRACK_GOLANG_BASE_IMAGE=racetrackd/golang-base:bookworm
fi
if [ -z "${RACETRACK_GOLANG_RUNTIME_IMAGE:-}" ] && ! docker image inspect debian:bookworm-slim >/dev/null 2>&1 \
   && ! docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
  export RACETRACK_GOLANG_RUNTIME_IMAGE="$base_image"
  # rust jobs run in the same kind of image (their toolchain image is racetrackd/rust-base:bookworm,
  # built by --with-rust or `racetrackd base-images build --job-type rust`)
  export RACETRACK_RUST_RUNTIME_IMAGE="${RACETRACK_RUST_RUNTIME_IMAGE:-$base_image}"
fi
# A host whose package index sits behind a TLS-intercepting proxy trusts its CA in this
# bundle; builds get the same trust (harmless elsewhere).
if [ -z "${RACETRACK_BUILD_CA_BUNDLE:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  export RACETRACK_BUILD_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
fi

rtd=.venv/bin/rtd
racetrackd=.venv/bin/racetrackd
port="${RACETRACK_PORT:-7102}"
if .venv/bin/python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:${port}/ready', timeout=2)" 2>/dev/null; then
  echo "-----> racetrackd is already running on port ${port}"
else
  "$racetrackd" start
fi
token=$("$racetrackd" admin-token)
remote="http://127.0.0.1:${port}"
"$rtd" --remote "$remote" login "$token" >/dev/null &
login=$!

curl_cmd="curl -s -X POST ${remote}/pub/job/adder/latest/api/v1/perform -H 'X-Racetrack-Auth: ${token}' -H 'Content-Type: application/json' -d '{\"a\": 40, \"b\": 2}'"
call_adder() {
  if command -v curl >/dev/null 2>&1; then eval "$curl_cmd"; else "$rtd" --remote "$remote" call adder --data '{"a": 40, "b": 2}'; fi
}
# Run again, the sample is left as it is when it answers: deploying it again would only take time.
if [ "$(call_adder 2>/dev/null || true)" = 42 ]; then
  wait "$login"
  echo "-----> samples/adder is deployed and answers (deploy it again: rtd submit --force samples/adder)"
else
  wait "$login"
  "$rtd" --remote "$remote" submit --force -q samples/adder
fi

echo
echo "Call the job:"
echo "  $curl_cmd"
echo -n "  => "
call_adder
echo
echo
echo "Use the CLI:  rtd list   |   rtd call adder --data '{\"a\": 1, \"b\": 2}'"
echo "Stop racetrackd (jobs keep running):  racetrackd stop"
