#!/usr/bin/env bash
# Make this host ready for racetrackd, idempotently: a running Docker engine, docker-compose (for
# the racetrackd image, docker-compose.yml), the Python environment in .venv (with the test
# packages), chromium (the dashboard's browser tests), and a python3 base
# image (pulled, or built locally when no registry is reachable). Prints the base image name on
# its last line of stdout.
#
#   --with-golang   also the golang job type: Debian's Go toolchain on the host and a golang base
#                   image (building one takes minutes; the tests need it, the sample job does not).
#   --with-rust     also the rust job type: Debian's rustc, cargo and crates on the host and a rust
#                   base image (built from Debian packages, minutes; the tests need it).
#   --quickstart    only what running racetrackd and a first python3 job need (scripts/quickstart.sh):
#                   no test packages in .venv, no chromium, no docker-compose.
#
# Run again, it checks and does nothing: the Python environment is stamped with the hash of its
# pins, and the base image found last time is remembered (.venv/.base-image-*) while it exists.
set -euo pipefail
cd "$(dirname "$0")/.."

with_golang=false
with_rust=false
quickstart=false
for arg in "$@"; do
  case "$arg" in
    --with-golang) with_golang=true ;;
    --with-rust) with_rust=true ;;
    --quickstart) quickstart=true ;;
    *) echo "usage: $0 [--with-golang] [--with-rust] [--quickstart]" >&2; exit 2 ;;
  esac
done

say() { echo "-----> $*" >&2; }
as_root_with_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
apt_install() {
  if [ ! -f /tmp/.racetrackd-apt-updated ]; then apt-get update -qq >&2 && touch /tmp/.racetrackd-apt-updated; fi
  # Waits for another apt run (another engineer's, unattended-upgrades) rather than failing at once.
  DEBIAN_FRONTEND=noninteractive apt-get install -o DPkg::Lock::Timeout=600 -y -qq "$@" >&2
}

# 1. Docker engine. Where it is missing and may be installed here (root with apt), Debian's
#    docker.io comes in the one apt run below, beside pip, and is started once both are done.
docker_running() { docker info >/dev/null 2>&1; }
start_dockerd() {
  say "starting dockerd (log: /var/log/racetrackd-dockerd.log)"
  nohup dockerd >/var/log/racetrackd-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker_running && break; sleep 1; done
}
no_engine() {
  echo "The Docker engine is not running and could not be started here: start Docker, then re-run." >&2
  exit 1
}
apt_packages=()
engine_pending=false
if ! docker_running; then
  as_root_with_apt || no_engine
  if command -v dockerd >/dev/null 2>&1; then
    start_dockerd
    docker_running || no_engine
  else
    # Without docker.io's recommends (git, perl, systemd, criu, needrestart...: 105 packages and
    # most of 110 s of apt on a bare machine); apparmor, one of them, is kept: on a kernel with
    # AppArmor, dockerd needs its parser to load the profile containers run under.
    apt_packages+=(docker.io apparmor)
    engine_pending=true
  fi
fi

# 2. Compose: Debian's docker-compose (v1) unless `docker compose` (v2) is already there
if [ "$quickstart" = false ] && ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1 \
   && as_root_with_apt; then
  apt_packages+=(docker-compose)
fi

# debootstrap: base images on hosts without a registry.
if as_root_with_apt && ! command -v debootstrap >/dev/null 2>&1; then
  apt_packages+=(debootstrap)
fi

# What apt installs comes in one run (one update, one dpkg pass), in the background while pip works:
# both mostly wait on the network. Its output goes to a log, read only when it fails.
# A Docker engine installed here is new and has no images: it is started as soon as apt is done,
# and the python3 base image pulled, or, when no registry answers, its root filesystem
# bootstrapped from Debian packages (with the system's python3: .venv is not ready), still beside
# pip. `racetrackd base-images ensure --rootfs` imports it below. Any failure there is left for
# `ensure` to meet and report.
# The default is the python3 job type's python_base_image (jobtype_plugins/python3/plugin-manifest.yaml).
python_base_image=${RACETRACK_PYTHON_BASE_IMAGE:-python:3.11-slim}
rootfs="${TMPDIR:-/var/tmp}/racetrackd-rootfs-python3"
background_setup() {
  apt_install --no-install-recommends "${apt_packages[@]}" 2>/tmp/.racetrackd-apt.log || return 1
  if [ "$engine_pending" = true ] && command -v debootstrap >/dev/null 2>&1; then
    start_dockerd
    if docker_running && ! docker pull -q "$python_base_image" >/dev/null 2>&1; then
      say "no registry answers: bootstrapping the python3 base image's root filesystem, beside pip"
      rm -rf "$rootfs" "$rootfs.partial"
      "$PYTHON" -m racetrackd.docker.base_images bootstrap "$rootfs.partial" 2>/tmp/.racetrackd-bootstrap.log &&
        mv "$rootfs.partial" "$rootfs" && say "$(tail -n 1 /tmp/.racetrackd-bootstrap.log)"
    fi
  fi
  return 0
}
PYTHON=${PYTHON:-python3}
apt_pid=
if [ ${#apt_packages[@]} -gt 0 ]; then
  say "installing ${apt_packages[*]} with apt, beside the Python environment"
  background_setup &
  apt_pid=$!
fi

# 3. Python environment, reinstalled only when the dependency pins change. The test packages
#    (pytest, playwright, ...) only for the tests: a stamp with them also satisfies --quickstart.
pins=$(cat constraints.txt setup.cfg | sha256sum | cut -c1-16)
full_stamp=".venv/.installed-${pins}"
run_stamp=".venv/.installed-${pins}-run"
if [ ! -f "$full_stamp" ] && { [ "$quickstart" = false ] || [ ! -f "$run_stamp" ]; }; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  if [ "$quickstart" = true ]; then
    # The venv's own pip (Debian's 23.0 or newer) installs all of it: no upgrade first (10-17 s
    # on a bare machine).
    say "installing racetrackd into .venv"
    .venv/bin/python -m pip install -q -c constraints.txt -e . >&2
    stamp=$run_stamp
  else
    .venv/bin/python -m pip install -q --upgrade pip >&2
    say "installing racetrackd and its test packages into .venv"
    # Playwright drives Debian's chromium in the dashboard tests; it must never fetch browsers of its own.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 .venv/bin/python -m pip install -q -c constraints.txt -e '.[test]' >&2
    stamp=$full_stamp
  fi
  # gunicorn's C HTTP parser (setup.cfg's "fast" extra) has no wheels: it is built where a C
  # compiler is, and gunicorn uses its own parser where not (a bare machine has no compiler).
  if command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1; then
    .venv/bin/python -m pip install -q -c constraints.txt gunicorn_h1c >/tmp/.racetrackd-pip-h1c.log 2>&1 ||
      say "gunicorn_h1c did not build (/tmp/.racetrackd-pip-h1c.log; Python's headers: apt-get install python3-dev): the gateway parses HTTP in Python"
  else
    say "no C compiler: the gateway parses HTTP with gunicorn's Python parser (for its C one: apt-get install gcc python3-dev; .venv/bin/pip install gunicorn_h1c)"
  fi
  rm -f .venv/.installed-*
  touch "$stamp"
fi
if [ -n "$apt_pid" ] && ! wait "$apt_pid"; then
  cat /tmp/.racetrackd-apt.log >&2
  echo "installing ${apt_packages[*]} failed" >&2
  exit 1
fi
if [ "$engine_pending" = true ]; then
  docker_running || start_dockerd
  docker_running || no_engine
fi

# 4. Chromium for the dashboard's browser tests (Debian's package; Playwright launches /usr/bin/chromium).
if [ "$quickstart" = false ] && as_root_with_apt && [ ! -x /usr/bin/chromium ]; then
  say "installing chromium (for the dashboard's browser tests)"
  apt_install chromium
fi

# 5. Base images. `ensure` uses the configured one when present or pullable, and otherwise
#    builds one from Debian packages (needs debootstrap): the Go toolchain first (with
#    --with-golang only), then python3, whose name is printed last (quickstart reads it).
#    What it found is remembered per configured image, and used while Docker still has it: a run
#    again costs a `docker image inspect`, not a Python start-up and a pull attempt.
ensure_base_image() {  # [--job-type golang|rust]: prints the image's name
  local setting=${RACETRACK_PYTHON_BASE_IMAGE:-}
  case "${2:-}" in
    golang) setting=${RACETRACK_GOLANG_BASE_IMAGE:-} ;;
    rust) setting=${RACETRACK_RUST_BASE_IMAGE:-} ;;
  esac
  local memo
  memo=".venv/.base-image-$(echo "${*:-python3} ${setting}" | sha256sum | cut -c1-16)"
  if [ -f "$memo" ] && docker image inspect "$(cat "$memo")" >/dev/null 2>&1; then
    cat "$memo"
    return
  fi
  local image from_rootfs=()
  if [ -z "${2:-}" ] && [ -d "$rootfs" ]; then from_rootfs=(--rootfs "$rootfs"); fi  # python3's, bootstrapped above
  image=$(.venv/bin/racetrackd base-images ensure "$@" ${from_rootfs[@]+"${from_rootfs[@]}"} | tail -n 1)
  if [ ${#from_rootfs[@]} -gt 0 ]; then rm -rf "$rootfs"; fi
  echo "$image" > "$memo"
  echo "$image"
}
if [ "$with_golang" = true ]; then
  # Debian's Go toolchain on the host runs the golang job type's Go tests (tests/unit/test_golang_wrapper.py).
  if as_root_with_apt && ! command -v go >/dev/null 2>&1; then
    say "installing golang-go (for the golang job type's tests)"
    apt_install golang-go
  fi
  ensure_base_image --job-type golang >&2
fi
if [ "$with_rust" = true ]; then
  # Debian's toolchain and crates on the host run the rust job type's own tests (tests/unit/test_rust_wrapper.py).
  if as_root_with_apt && [ ! -d /usr/share/cargo/registry/tiny_http-0.12.0 ]; then
    say "installing rustc, cargo and the rust wrapper's crates (for the rust job type's tests)"
    apt_install --no-install-recommends rustc cargo librust-tiny-http-dev librust-serde-json-dev librust-libc-dev
  fi
  ensure_base_image --job-type rust >&2
fi
ensure_base_image
