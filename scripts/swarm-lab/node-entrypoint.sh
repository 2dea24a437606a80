#!/bin/sh
# Entry point of a swarm-lab node container. Role "engine": write daemon.json and run dockerd
# (it starts its own containerd). Role "registry": run Debian's docker-registry on :5000.
set -eu
role="${1:-engine}"
case "$role" in
  registry)
    # Debian's config.yml expects an htpasswd file; the lab writes its own: plain HTTP on :5000,
    # basic auth when /lab/registry-password holds a password (user $LAB_REGISTRY_USER).
    mkdir -p /var/lib/docker-registry
    config=/etc/docker/registry/lab.yml
    printf 'version: 0.1\nlog:\n  fields:\n    service: registry\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/docker-registry\n  delete:\n    enabled: true\nhttp:\n  addr: :5000\n' >"$config"
    if [ -s /lab/registry-password ]; then
      python3 - "${LAB_REGISTRY_USER:-lab}" /lab/registry-password >/etc/docker/registry/htpasswd <<'PY'
import crypt, sys
user, password_file = sys.argv[1], sys.argv[2]
password = open(password_file).read().strip()
print(f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}")
PY
      printf 'auth:\n  htpasswd:\n    realm: swarm-lab\n    path: /etc/docker/registry/htpasswd\n' >>"$config"
    fi
    exec docker-registry serve "$config"
    ;;
  engine)
    mkdir -p /etc/docker /lab
    # LAB_INSECURE_REGISTRY: the lab registry speaks plain HTTP; each engine must be told so.
    # The node shares the host's cgroup tree (--cgroupns host). Its containers go inside the node
    # container's own cgroup (cgroup v1: /docker/<id>/lab), so that together they get one
    # container's CPU share beside the host's other containers, as a machine of its own would;
    # a parent at the root would weigh as much as all of the host's containers together. Where
    # that is not possible (cgroup v2 forbids children beside processes) LAB_CGROUP_PARENT.
    own="$(sed -n 's/^[0-9]*:[^:]*cpu[,:][^:]*:\(\/.*\)$/\1/p; s/^[0-9]*:cpu:\(\/.*\)$/\1/p' /proc/self/cgroup | head -n 1)"
    if [ -n "$own" ] && [ "$own" != "/" ]; then
      LAB_CGROUP_PARENT="$own/lab"
    fi
    cat > /etc/docker/daemon.json <<JSON
{
  "insecure-registries": ["${LAB_INSECURE_REGISTRY}"],
  "cgroup-parent": "${LAB_CGROUP_PARENT}",
  "storage-driver": "${LAB_STORAGE_DRIVER:-overlay2}",
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "2"}
}
JSON
    # The host reaches this engine through a socket in a bind-mounted directory (no TCP port).
    exec dockerd --config-file /etc/docker/daemon.json \
      -H unix:///var/run/docker.sock -H "unix:///lab/docker.sock"
    ;;
  *)
    echo "unknown role $role (engine|registry)" >&2
    exit 2
    ;;
esac
