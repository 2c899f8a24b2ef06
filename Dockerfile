# syntax=docker/dockerfile:1
# edc-ingest container image.
#   docker build -t edc-ingest .
#   docker compose up            (RabbitMQ + PostgreSQL + edc-ingest, see docker-compose.yml)
# The pseudonym key is not baked into the image (.dockerignore drops config/*.key): give it at run
# time, e.g. as the compose secret mounted at /run/secrets/pseudonym_key. The daemon refuses a key
# file that group or others can read: mode 0400, owned by uid 10001.
# Kubernetes manifests, a Grafana dashboard and their offline check: deploy/, scripts/check-deploy.sh.

FROM rust:1.95-bookworm AS builder
WORKDIR /build
COPY . .
# Cache mounts keep the crate registry and compiled dependencies between builds; the binary is
# copied out of the cached target folder because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked \
    && cp target/release/edc-ingest /usr/local/bin/edc-ingest

# A slim Debian rather than a shell-less base: the Kubernetes init container that puts the pseudonym
# key in place with mode 0400 (deploy/kubernetes/30-deployment.yaml) runs this image's /bin/sh and cp.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 edc \
    && useradd --system --uid 10001 --gid edc --home-dir /app --no-create-home --shell /usr/sbin/nologin edc
COPY --from=builder /usr/local/bin/edc-ingest /usr/local/bin/edc-ingest
COPY config/ /app/config/
COPY migrations/ /app/migrations/
WORKDIR /app
# /metrics, /livez and /readyz. The daemon's own default is 127.0.0.1:9090 (nothing reachable from
# outside a plain process); in a container the port must answer on the container's address.
ENV EDC__HTTP__LISTEN=0.0.0.0:9090
EXPOSE 9090
# Numeric, so that runtimes enforcing runAsNonRoot can verify it.
USER 10001:10001
# Liveness: `edc-ingest healthcheck` asks http://127.0.0.1:9090/livez and exits 0 on a 200, so the
# image needs no curl. It checks liveness, not readiness: a database outage makes /readyz answer 503
# while the daemon waits it out correctly, and an orchestrator that replaces unhealthy containers
# (Swarm) must not kill it for that. Kubernetes ignores HEALTHCHECK and uses its own probes.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["edc-ingest", "healthcheck"]
ENTRYPOINT ["edc-ingest"]
CMD ["run"]
