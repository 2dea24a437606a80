# The racetrackd image: the daemon in a container, driving the host's Docker engine through its
# mounted socket (docker-compose.yml; README "Install on a server").
#
# BASE_IMAGE: any Debian-based image with python3 (3.11) and its venv module. Hosts that cannot
# pull one use the locally built racetrackd/python3-base:bookworm (`racetrackd base-images build`).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG BASE_IMAGE

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1

# git: the builder runs it to clone a job's git.remote.
RUN command -v git >/dev/null 2>&1 || { \
      apt-get update \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends git \
      && rm -rf /var/lib/apt/lists/*; }

# Python dependencies, pinned by constraints.txt. When scripts/build-wheels.sh has filled
# wheels/ they install from there with no package index at all (proxied and air-gapped
# hosts); otherwise from the index. This layer is rebuilt only when the pins change.
COPY constraints.txt setup.cfg scripts/runtime-requirements.py /opt/racetrackd/deps/
COPY wheels/ /opt/racetrackd/wheels/
RUN set -e; cd /opt/racetrackd; \
    python3 -m venv venv; \
    python3 deps/runtime-requirements.py deps/setup.cfg >deps/requirements.txt; \
    if ls wheels/*.whl >/dev/null 2>&1; then \
      wanted=$(cat wheels/PYTHON_VERSION); \
      here=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
      if [ "$wanted" != "$here" ]; then \
        echo "wheels/ holds wheels for Python $wanted but $BASE_IMAGE has Python $here:" \
             "run scripts/build-wheels.sh with a Python $here (PYTHON=...), or pick another BASE_IMAGE" >&2; \
        exit 1; \
      fi; \
      echo "installing from wheels/ (no package index)"; \
      venv/bin/pip install --no-index --find-links wheels -c deps/constraints.txt -r deps/requirements.txt; \
    else \
      echo "installing from the package index (wheels/ is empty)"; \
      venv/bin/pip install -c deps/constraints.txt -r deps/requirements.txt; \
    fi; \
    rm -rf wheels

# racetrackd itself, run from its source tree (PYTHONPATH): jobtype_plugins/ and templates/ are
# packages beside racetrackd, found with importlib.resources as in an installed wheel.
COPY racetrackd /opt/racetrackd/src/racetrackd
COPY builders /opt/racetrackd/src/builders
COPY jobmanifest /opt/racetrackd/src/jobmanifest
COPY cli /opt/racetrackd/src/cli
COPY pluginbundle /opt/racetrackd/src/pluginbundle
COPY jobtype_plugins /opt/racetrackd/src/jobtype_plugins
COPY templates /opt/racetrackd/src/templates
RUN printf '#!/bin/sh\nexec /opt/racetrackd/venv/bin/python -m racetrackd "$@"\n' >/usr/local/bin/racetrackd \
 && printf '#!/bin/sh\nexec /opt/racetrackd/venv/bin/python -m cli "$@"\n' >/usr/local/bin/rtd \
 && chmod 755 /usr/local/bin/racetrackd /usr/local/bin/rtd

# The daemon runs as root: it needs the Docker socket, and whoever can use that socket is root on
# the host anyway, so a user inside the container would protect nothing.
ENV PYTHONPATH=/opt/racetrackd/src \
    RACETRACK_HOST=0.0.0.0 \
    RACETRACK_DATA_DIR=/var/lib/racetrackd
VOLUME /var/lib/racetrackd
EXPOSE 7102
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/opt/racetrackd/venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('RACETRACK_PORT', '7102'), timeout=4)"]
CMD ["racetrackd", "serve"]
