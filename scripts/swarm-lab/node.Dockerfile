# A swarm-lab node: Debian's own Docker engine and registry, installed with apt on the project's
# locally debootstrapped base image (nothing is pulled from a registry). scripts/swarm-lab.sh
# builds it; the Debian mirror comes from the host's apt sources at build time.
ARG BASE=racetrackd/python3-base:bookworm
FROM ${BASE}
ARG MIRROR
ARG SUITE=bookworm
# The host's CA bundle, for networks whose proxy re-signs TLS; apt over https needs it.
COPY ca-bundle.crt /usr/local/share/ca-certificates/lab-host-ca.crt
RUN set -eu; \
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$MIRROR" "$SUITE" "$SUITE" > /etc/apt/sources.list.d/debian.sources; \
    rm -f /etc/apt/sources.list; \
    apt-get -o Acquire::https::CAInfo=/usr/local/share/ca-certificates/lab-host-ca.crt update -qq; \
    DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::https::CAInfo=/usr/local/share/ca-certificates/lab-host-ca.crt \
      install -y -qq --no-install-recommends docker.io iptables docker-registry ca-certificates procps iproute2 >/dev/null; \
    update-ca-certificates >/dev/null 2>&1 || true; \
    apt-get clean; rm -rf /var/lib/apt/lists/*
COPY node-entrypoint.sh /usr/local/bin/node-entrypoint.sh
ENTRYPOINT ["/usr/local/bin/node-entrypoint.sh"]
