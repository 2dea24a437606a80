FROM golang:1.21-bookworm AS build
COPY racetrack-build/ca-bundle.crt /etc/racetrack/build-ca-bundle.crt
ARG SSL_CERT_FILE=/etc/racetrack/build-ca-bundle.crt
ARG GOPROXY="https://goproxy.example.com,direct"
ENV CGO_ENABLED=0 GOPATH=/go

# Identical for every job of this job-type version: the build tools, then the wrapper built (and
# tested) once against a stand-in job, which leaves the standard library compiled in the cache.
COPY jobtype/tools /opt/racetrack/tools
COPY jobtype/go_wrapper /opt/racetrack/go_wrapper
RUN cd /opt/racetrack/tools && go build -trimpath -o /opt/racetrack/bin/ ./perform-adapter ./with-build-secrets \
 && cp -r /opt/racetrack/tools/warmup-job /tmp/warmup && cp -r /opt/racetrack/go_wrapper /tmp/warmup/racetrack_job_wrapper \
 && cd /tmp/warmup && /opt/racetrack/bin/perform-adapter . racetrack_job_wrapper/zz_perform_adapter.go \
 && go test -trimpath -count=1 ./racetrack_job_wrapper && go build -trimpath -o /dev/null ./racetrack_job_wrapper \
 && cd / && rm -rf /tmp/warmup
# Everything below is this job's, and its images stay untagged: labelled here, even a failed
# build's leftovers are found and removed with the daemon's other images.
LABEL racetrackd.instance="main" racetrackd.build-stage="go-adder"
ENV GREETING="say \"hi\" to \$USER"

WORKDIR /src/job
COPY job/ /src/job/
# One step from the job's code to its binary (each step is a container on the classic builder).
RUN if [ ! -f go.mod ]; then go mod init racetrackd-job/go-adder; fi \
 && cp -r /opt/racetrack/go_wrapper/. racetrack_job_wrapper/ && rm -f racetrack_job_wrapper/*_test.go \
 && /opt/racetrack/bin/perform-adapter . racetrack_job_wrapper/zz_perform_adapter.go \
 && go build -trimpath -o /opt/racetrack/job-server ./racetrack_job_wrapper

FROM debian:bookworm-slim
RUN useradd --uid 1000 --user-group --home-dir /src/job --no-create-home --shell /usr/sbin/nologin job
# The toolchain image's CA certificates: a slim runtime image has none, and the job may call HTTPS.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV GREETING="say \"hi\" to \$USER"
# What the job runs with, above its binary and files: cached for every deployment of this version.
WORKDIR /src/job
ENV JOB_NAME="go-adder" \
    JOB_VERSION="0.0.1" \
    JOB_TYPE_VERSION="golang:1.0.0" \
    DEPLOYED_BY_RACETRACK_VERSION="0.1.0"
LABEL "job-name"="go-adder" "job-version"="0.0.1" "racetrack-component"="job" "racetrackd.instance"="main" "racetrackd.job-type"="golang:1.0.0"
USER job
EXPOSE 7000
STOPSIGNAL SIGTERM
CMD ["/opt/racetrack/job-server"]
ENV GIT_VERSION=""
COPY --from=build /opt/racetrack/job-server /opt/racetrack/job-server
COPY --chown=job:job job/ /src/job/
