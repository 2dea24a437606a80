FROM python:3.11-slim

COPY racetrack-build/ca-bundle.crt /etc/racetrack/build-ca-bundle.crt
ARG PIP_CERT=/etc/racetrack/build-ca-bundle.crt
ARG PIP_DISABLE_PIP_VERSION_CHECK=1
ARG PIP_NO_CACHE_DIR=1

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8

# Wrapper first: this layer depends only on the job type version, so it is built once and reused.
COPY jobtype/wrapper-requirements.txt /opt/racetrack/wrapper-requirements.txt
RUN python3 -m venv /opt/racetrack/wrapper-venv \
 && /opt/racetrack/wrapper-venv/bin/pip install -r /opt/racetrack/wrapper-requirements.txt \
 && python3 -m venv /opt/racetrack/job-venv

# Job requirements next: rebuilt only when the requirements file changes.
COPY job/requirements.txt /opt/racetrack/job-requirements.txt
RUN /opt/racetrack/job-venv/bin/pip install -r /opt/racetrack/job-requirements.txt
COPY jobtype/racetrack_job_wrapper /opt/racetrack/wrapper/racetrack_job_wrapper
ENV GREETING="say \"hi\" to \$USER \\o/"

COPY job/ /src/job/
WORKDIR /src/job
ENV PYTHONPATH=/opt/racetrack/wrapper \
    JOB_NAME="adder" \
    JOB_VERSION="0.0.1" \
    JOB_TYPE_VERSION="python3:1.0.0" \
    GIT_VERSION="" \
    DEPLOYED_BY_RACETRACK_VERSION="0.1.0" \
    JOB_VENV=/opt/racetrack/job-venv
LABEL racetrack-component="job"
EXPOSE 7000
STOPSIGNAL SIGTERM
CMD ["/opt/racetrack/wrapper-venv/bin/python", "-m", "racetrack_job_wrapper", "run", "entrypoint.py", "AdderEntrypoint"]
