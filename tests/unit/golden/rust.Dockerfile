FROM racetrackd/rust-base:bookworm AS build
COPY racetrack-build/ca-bundle.crt /etc/racetrack/build-ca-bundle.crt
ARG SSL_CERT_FILE=/etc/racetrack/build-ca-bundle.crt
ARG CARGO_HTTP_CAINFO=/etc/racetrack/build-ca-bundle.crt
ENV CARGO_HOME=/opt/racetrack/cargo CARGO_TARGET_DIR=/opt/racetrack/target CARGO_TERM_COLOR=never
# crates.io is replaced by the crates Debian packages: no build reaches the network.
RUN mkdir -p "$CARGO_HOME" && printf '%s\n' '[source.crates-io]' 'replace-with = "debian-packages"' \
    '[source.debian-packages]' 'directory = "/usr/share/cargo/registry"' '[net]' 'offline = true' > "$CARGO_HOME/config.toml"

# Identical for every job of this job-type version: the wrapper library tested, then built into a
# stand-in job, which leaves it and its dependencies compiled in the target directory.
COPY jobtype/rust_wrapper /opt/racetrack/rust_wrapper
COPY jobtype/warmup-job /opt/racetrack/warmup-job
COPY jobtype/tools /opt/racetrack/tools
RUN cd /opt/racetrack/rust_wrapper && cargo test --release && cargo build --release --bin with-build-secrets \
 && mkdir -p /opt/racetrack/bin && cp "$CARGO_TARGET_DIR/release/with-build-secrets" /opt/racetrack/bin/ \
 && cp -r /opt/racetrack/warmup-job /tmp/warmup && sh /opt/racetrack/tools/link-job /tmp/warmup mod.rs Cargo.toml \
 && cd /tmp/warmup && cargo build --release --bin job-server && cd / && rm -rf /tmp/warmup
# Everything below is this job's, and its images stay untagged: labelled here, even a failed
# build's leftovers are found and removed with the daemon's other images.
LABEL racetrackd.instance="main" racetrackd.build-stage="rust-adder"
ENV GREETING="say \"hi\" to \$USER"

COPY job/ /src/job/
WORKDIR /src/job
RUN sh /opt/racetrack/tools/link-job /src/job mod.rs Cargo.toml
RUN cargo build --release --bin job-server \
 && cp "$CARGO_TARGET_DIR/release/job-server" /opt/racetrack/job-server

FROM debian:bookworm-slim
RUN useradd --uid 1000 --user-group --home-dir /src/job --no-create-home --shell /usr/sbin/nologin job
# The toolchain image's CA certificates: a slim runtime image has none, and the job may call HTTPS.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV GREETING="say \"hi\" to \$USER"
COPY --from=build /opt/racetrack/job-server /opt/racetrack/job-server
COPY --chown=job:job job/ /src/job/
WORKDIR /src/job
ENV JOB_NAME="rust-adder" \
    JOB_VERSION="0.0.1" \
    JOB_TYPE_VERSION="rust:1.0.0" \
    GIT_VERSION="" \
    DEPLOYED_BY_RACETRACK_VERSION="0.1.0"
LABEL "job-name"="rust-adder" "job-version"="0.0.1" "racetrack-component"="job" "racetrackd.instance"="main" "racetrackd.job-type"="rust:1.0.0"
USER job
EXPOSE 7000
STOPSIGNAL SIGTERM
CMD ["/opt/racetrack/job-server"]
