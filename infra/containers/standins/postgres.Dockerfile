# Stand-in for postgres:18.6-alpine (see ../standins.sh): Debian's PostgreSQL 15, with postgres as uid/gid 70 like
# the Alpine image, the official image's PGDATA, and an entrypoint that initialises the database the same way.
ARG BASE
# checkov:skip=CKV_DOCKER_7: a local stand-in, tagged by standins.sh
FROM ${BASE}
# The stand-in takes whatever PostgreSQL 15 bookworm's mirror has; the image it replaces pins the version.
# hadolint ignore=DL3008
RUN groupadd --system --gid 70 postgres \
    && useradd --system --uid 70 --gid 70 --home-dir /var/lib/postgresql --shell /bin/sh postgres \
    && apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* /var/lib/postgresql/15 /etc/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH="/usr/lib/postgresql/15/bin:${PATH}" \
    PGDATA=/var/lib/postgresql/18/docker
USER 70:70
EXPOSE 5432
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
