#!/usr/bin/env bash
# A 3-node Docker Swarm on one machine: a manager and two workers, each a container running its
# own dockerd, plus a registry all of them reach. Everything comes from Debian packages installed
# on the project's locally built base image; nothing is pulled. See DEVELOPERS.md and docs/swarm.md.
#
#   scripts/swarm-lab.sh up       make (or resume) the lab; prints the settings to point racetrackd at it
#   scripts/swarm-lab.sh env      print those settings again (eval "$(scripts/swarm-lab.sh env)")
#   scripts/swarm-lab.sh status   the node containers, the swarm's nodes, the registry's repositories
#   scripts/swarm-lab.sh down     remove everything `up` made (containers, volumes, network, socket dir)
#   scripts/swarm-lab.sh image    only build the node image (tests run its registry on their own)
#
# Settings (environment):
#   SWARM_LAB_NAME     prefix of everything made, and their label value   (default rtd-swarm-lab)
#   SWARM_LAB_SUBNET   the lab bridge, a /24                              (default 172.30.99.0/24)
#   SWARM_LAB_DIR      host directory holding each engine's socket         (default /tmp/$SWARM_LAB_NAME)
#   SWARM_LAB_WORKERS  number of worker nodes                              (default 2)
#   SWARM_LAB_BASE_IMAGES  images copied into the manager for builds      (default racetrackd/python3-base:bookworm)
set -euo pipefail
cd "$(dirname "$0")/.."

NAME="${SWARM_LAB_NAME:-rtd-swarm-lab}"
SUBNET="${SWARM_LAB_SUBNET:-172.30.99.0/24}"
DIR="${SWARM_LAB_DIR:-/tmp/$NAME}"
WORKERS="${SWARM_LAB_WORKERS:-2}"
BASE_IMAGES="${SWARM_LAB_BASE_IMAGES:-racetrackd/python3-base:bookworm}"
NODE_IMAGE="racetrackd/swarm-node:bookworm"
LABEL="racetrackd.swarm-lab=$NAME"
REGISTRY_PORT=5000

if ! [[ "$SUBNET" =~ ^([0-9]+\.[0-9]+\.[0-9]+)\.0/24$ ]]; then
  echo "SWARM_LAB_SUBNET must be a /24 such as 172.30.99.0/24 (got $SUBNET)" >&2
  exit 2
fi
PREFIX="${BASH_REMATCH[1]}"
REGISTRY_IP="$PREFIX.5"
REGISTRY="$REGISTRY_IP:$REGISTRY_PORT"
REGISTRY_USER=lab

nodes() {
  echo manager
  for i in $(seq 1 "$WORKERS"); do echo "worker-$i"; done
}
node_ip() {  # manager .10, worker-N .(10+N)
  case "$1" in manager) echo "$PREFIX.10" ;; worker-*) echo "$PREFIX.$((10 + ${1#worker-}))" ;; esac
}
engine() {  # docker CLI against one node's engine
  local node="$1"
  shift
  # Its own client config: a login to the lab registry stays out of the user's ~/.docker.
  DOCKER_CONFIG="$DIR/cli" docker -H "unix://$DIR/$node/docker.sock" "$@"
}
log() { echo "swarm-lab: $*" >&2; }

# The node image is rebuilt when its Dockerfile or entry point change (their hash is a label).
build_node_image() {
  local recipe_hash current mirror ctx
  recipe_hash="$(cat scripts/swarm-lab/node.Dockerfile scripts/swarm-lab/node-entrypoint.sh | sha256sum | cut -c1-16)"
  current="$(docker image inspect -f '{{index .Config.Labels "racetrackd.swarm-lab.recipe"}}' "$NODE_IMAGE" 2>/dev/null || true)"
  if [ "$current" = "$recipe_hash" ]; then
    return
  fi
  docker image inspect racetrackd/python3-base:bookworm >/dev/null 2>&1 || {
    echo "the base image racetrackd/python3-base:bookworm is missing: run scripts/setup-host.sh first" >&2
    exit 1
  }
  mirror="$(.venv/bin/python -c 'from racetrackd.docker.base_images import find_mirror; print(find_mirror("bookworm"))' 2>/dev/null ||
    python3 -c 'import sys; sys.path.insert(0, "."); from racetrackd.docker.base_images import find_mirror; print(find_mirror("bookworm"))')"
  ctx="$(mktemp -d)"
  cp scripts/swarm-lab/node.Dockerfile scripts/swarm-lab/node-entrypoint.sh "$ctx/"
  # For apt behind a TLS-intercepting proxy; an empty file when the host has no bundle.
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-bundle.crt"; else : >"$ctx/ca-bundle.crt"; fi
  log "building $NODE_IMAGE (Debian packages from $mirror)"
  docker build -q -f "$ctx/node.Dockerfile" --build-arg "MIRROR=$mirror" \
    --label "racetrackd.swarm-lab.recipe=$recipe_hash" -t "$NODE_IMAGE" "$ctx" 2>&1 >/dev/null | grep -v -i -E "deprecated|buildx|^ *$" >&2 || true
  rm -rf "$ctx"
}

ensure_network() {
  if ! docker network inspect "$NAME" >/dev/null 2>&1; then
    docker network create --driver bridge --subnet "$SUBNET" --label "$LABEL" "$NAME" >/dev/null
  fi
}

# Start a stopped container, or run a new one with the given arguments.
ensure_container() {
  local name="$1"
  shift
  local state=missing
  if docker container inspect "$name" >/dev/null 2>&1; then
    state="$(docker container inspect -f '{{.State.Status}}' "$name")"
  fi
  case "$state" in
    running) ;;
    missing) docker run -d --name "$name" --label "$LABEL" "$@" >/dev/null ;;
    *) docker start "$name" >/dev/null ;;
  esac
}

# The registry asks for a password (basic auth over plain HTTP on the lab bridge), so the lab
# exercises the private-registry path: racetrackd logs in, and services are created with the auth.
start_registry() {
  mkdir -p "$DIR/registry"
  if [ ! -s "$DIR/registry/registry-password" ]; then
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$DIR/registry/registry-password")
  fi
  docker volume create --label "$LABEL" "$NAME-registry" >/dev/null
  ensure_container "$NAME-registry" --hostname "$NAME-registry" --network "$NAME" --ip "$REGISTRY_IP" \
    -v "$NAME-registry:/var/lib/docker-registry" -v "$DIR/registry:/lab:ro" -e "LAB_REGISTRY_USER=$REGISTRY_USER" \
    --restart unless-stopped "$NODE_IMAGE" registry
}

# The flags a nested dockerd needs where --privileged is refused (DEVELOPERS.md explains each).
start_node() {
  local node="$1"
  mkdir -p "$DIR/$node"
  docker volume create --label "$LABEL" "$NAME-$node" >/dev/null
  ensure_container "$NAME-$node" --hostname "$NAME-$node" --network "$NAME" --ip "$(node_ip "$node")" \
    --cap-add ALL --cap-drop SYS_RESOURCE \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run \
    -v "$NAME-$node:/var/lib/docker" -v "$DIR/$node:/lab" \
    -e "LAB_INSECURE_REGISTRY=$REGISTRY" -e "LAB_CGROUP_PARENT=/$NAME-$node" \
    "$NODE_IMAGE" engine
}

wait_engine() {
  local node="$1" deadline=$((SECONDS + 90))
  until engine "$node" info >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "the engine of $NAME-$node did not answer within 90 s; its log:" >&2
      docker logs --tail 30 "$NAME-$node" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
}

swarm_state() { engine "$1" info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null; }

form_swarm() {
  local manager_ip token node
  manager_ip="$(node_ip manager)"
  if [ "$(swarm_state manager)" != active ]; then
    log "swarm init on the manager ($manager_ip)"
    engine manager swarm init --advertise-addr "$manager_ip" >/dev/null
  fi
  token="$(engine manager swarm join-token -q worker)"
  for node in $(nodes); do
    [ "$node" = manager ] && continue
    if [ "$(swarm_state "$node")" != active ]; then
      log "$node joins the swarm"
      engine "$node" swarm join --advertise-addr "$(node_ip "$node")" --token "$token" "$manager_ip:2377" >/dev/null
    fi
  done
  # A worker whose state was lost (its volume removed) joins again under a new id: drop the old one.
  engine manager node ls --format '{{.ID}} {{.Status}}' | awk '$2 == "Down" {print $1}' |
    xargs -r env DOCKER_CONFIG="$DIR/cli" docker -H "unix://$DIR/manager/docker.sock" node rm --force >/dev/null 2>&1 || true
}

# Builds run on the manager's engine: give it the base images (docker save | load, no registry).
load_base_images() {
  local image want have
  for image in $BASE_IMAGES; do
    want="$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
    if [ -z "$want" ]; then
      log "skipping $image: not on the host (scripts/setup-host.sh builds it)"
      continue
    fi
    have="$(engine manager image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
    if [ "$want" != "$have" ]; then
      log "loading $image into the manager"
      docker save "$image" | engine manager load -q >/dev/null
    fi
  done
}

# Answering /v2/ with a password checks both that it runs and that the password is the one it has.
wait_registry() {
  local deadline=$((SECONDS + 30))
  until docker_login manager >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "the registry $REGISTRY did not answer within 30 s; its log:" >&2
      docker logs --tail 30 "$NAME-registry" >&2 || true
      exit 1
    fi
    sleep 1
  done
}

docker_login() {
  engine "$1" login -u "$REGISTRY_USER" --password-stdin "$REGISTRY" <"$DIR/registry/registry-password"
}

print_env() {
  echo "export DOCKER_HOST=unix://$DIR/manager/docker.sock"
  echo "export RACETRACK_REGISTRY=$REGISTRY"
  echo "export RACETRACK_REGISTRY_USERNAME=$REGISTRY_USER"
  echo "export RACETRACK_REGISTRY_PASSWORD_FILE=$DIR/registry/registry-password"
  echo "export RACETRACK_ORCHESTRATOR=swarm"
}

up() {
  local started=$SECONDS node
  build_node_image
  ensure_network
  start_registry
  for node in $(nodes); do start_node "$node"; done
  for node in $(nodes); do wait_engine "$node"; done
  form_swarm
  load_base_images
  wait_registry
  print_env >"$DIR/env"
  log "up in $((SECONDS - started)) s; settings for racetrackd (also in $DIR/env):"
  print_env
}

status() {
  docker ps -a --filter "label=$LABEL" --format 'table {{.Names}}\t{{.Status}}'
  if engine manager info >/dev/null 2>&1; then
    echo
    engine manager node ls
    echo
    echo "registry $REGISTRY:"
    python3 - "$REGISTRY" "$REGISTRY_USER" "$DIR/registry/registry-password" <<'PY' || echo "(not answering)"
import base64, sys, urllib.request
registry, user, password_file = sys.argv[1:]
token = base64.b64encode(f"{user}:{open(password_file).read().strip()}".encode()).decode()
request = urllib.request.Request(f"http://{registry}/v2/_catalog", headers={"Authorization": f"Basic {token}"})
print(urllib.request.urlopen(request, timeout=3).read().decode().strip())
PY
  else
    echo "the manager's engine is not running (scripts/swarm-lab.sh up)"
  fi
}

down() {
  local ids full_ids
  ids="$(docker ps -aq --filter "label=$LABEL")"
  full_ids="$(docker ps -aq --no-trunc --filter "label=$LABEL")"
  [ -n "$ids" ] && docker rm -f $ids >/dev/null
  ids="$(docker volume ls -q --filter "label=$LABEL")"
  [ -n "$ids" ] && docker volume rm $ids >/dev/null
  docker network rm "$NAME" >/dev/null 2>&1 || true
  rm -rf "$DIR"
  # The nodes shared the host's cgroup tree: their containers' (now empty) cgroups can stay behind,
  # inside the node's own (/docker/<id>/lab) or, on cgroup v2, under /<name>-<node>.
  local tree id
  for id in $full_ids; do
    for tree in /sys/fs/cgroup/*/docker/"$id" /sys/fs/cgroup/*/system.slice/docker-"$id".scope; do
      [ -d "$tree" ] && find "$tree" -depth -type d -exec rmdir {} + 2>/dev/null
    done
  done
  for tree in /sys/fs/cgroup/*/"$NAME"-* /sys/fs/cgroup/"$NAME"-*; do
    [ -d "$tree" ] && find "$tree" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  log "removed"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) print_env ;;
  image) build_node_image ;;
  *)
    echo "usage: $0 up|down|status|env|image" >&2
    exit 2
    ;;
esac
