FROM racetrackd/python3-base:bookworm
ARG BUILD_FLAG=unset
ENV BAKED_FLAG=$BUILD_FLAG
LABEL sample.job-name="web" sample.job-version="0.0.1"
# The secret build env reaches this one RUN step only (fetched from the daemon while the build
# runs); the image keeps a digest of it, to show it arrived, and never the value.
ARG RACETRACK_BUILD_SECRETS_URL
COPY racetrack-build/with-build-secrets.py /tmp/with-build-secrets.py
RUN python3 /tmp/with-build-secrets.py "$RACETRACK_BUILD_SECRETS_URL" \
    sh -c 'printf %s "$BUILD_SECRET" | sha256sum | cut -d" " -f1 > /srv/build-secret.sha256'
COPY server.py /srv/server.py
USER nobody
EXPOSE 7000
CMD ["python3", "-u", "/srv/server.py"]
