FROM python:3.11-slim

ARG PIP_INDEX_URL=https://pypi.example.com/simple
ARG PIP_DISABLE_PIP_VERSION_CHECK=1
ARG PIP_NO_CACHE_DIR=1

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8

# The wrapper: its own virtualenv, so a job's requirements can never break it (nor its pins the job).
COPY jobtype/wrapper-requirements.txt /opt/racetrack/wrapper-requirements.txt
RUN useradd --uid 1000 --user-group --home-dir /src/job --no-create-home --shell /usr/sbin/nologin job \
 && python3 -m venv /opt/racetrack/wrapper-venv \
 && /opt/racetrack/wrapper-venv/bin/pip install -r /opt/racetrack/wrapper-requirements.txt \
 && /opt/racetrack/wrapper-venv/bin/pip install --no-deps swagger-ui-bundle==1.1.0 \
 && find /opt/racetrack/wrapper-venv -name '*.map' -delete \
 && python3 -m venv /opt/racetrack/job-venv && chown -R job:job /opt/racetrack/job-venv
COPY jobtype/racetrack_job_wrapper /opt/racetrack/wrapper/racetrack_job_wrapper

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libgomp1 curl \
 && rm -rf /var/lib/apt/lists/*

# What the job runs with, above its code: the same for every deployment of this job version, so a
# code-only redeploy takes these steps from the cache (on the classic builder each would otherwise
# be a container of its own, after the code).
# HOME is on the writable /tmp: the job runs on a read-only root, and libraries keep their caches
# and settings under ~ (~/.cache/huggingface, ~/.config/matplotlib, ~/nltk_data, ...).
WORKDIR /src/job
ENV HOME=/tmp \
    PYTHONPATH=/opt/racetrack/wrapper \
    JOB_NAME="adder" \
    JOB_VERSION="0.0.1" \
    JOB_TYPE_VERSION="python3:1.0.0" \
    DEPLOYED_BY_RACETRACK_VERSION="0.1.0" \
    JOB_VENV=/opt/racetrack/job-venv \
    JOB_HOME_PAGE="/docs" \
    JOB_WORKERS="1" \
    JOB_THREADS="32" \
    JOB_MAX_CONCURRENCY="" \
    JOB_MAX_CONCURRENCY_QUEUE=""
LABEL "job-name"="adder" "job-version"="0.0.1" "racetrack-component"="job" "racetrackd.instance"="main" "racetrackd.job-type"="python3:1.0.0"
USER job
EXPOSE 7000
STOPSIGNAL SIGTERM
CMD ["/opt/racetrack/wrapper-venv/bin/python", "-m", "racetrack_job_wrapper", "run", "entrypoint.py"]

# The job's code, last: one layer. The commit goes just above it (it changes with the code of a git
# source, and stays "" for an upload, so then it is cached too).
ENV GIT_VERSION=""
COPY --chown=job:job job/ /src/job/
