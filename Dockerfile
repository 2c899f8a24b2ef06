# syntax=docker/dockerfile:1.7@sha256:a57df69d0ea827fb7266491f2813635de6f17269be881f696fbfdf2d83dda33e
# edc-ingest container image.
#   docker build -t edc-ingest .
#   docker compose up --build    (the whole stack with dashboards and demo records: docker-compose.yml)
# The pseudonym key is not baked into the image (.dockerignore drops config/*.key): give it at run
# time, e.g. as the compose secret mounted at /run/secrets/pseudonym_key. The daemon refuses a key
# file that group or others can read: mode 0400, owned by uid 10001.
# Kubernetes manifests, a Grafana dashboard and their offline check: deploy/, scripts/check-deploy.sh.
#
# Every base image (and the Dockerfile syntax above) is pinned by digest, so that a build uses the
# same bytes until someone changes the line (scripts/check-deploy.sh refuses a FROM without a
# digest). The tag beside the digest says what it was; to move on, replace both with a newer tag
# and its digest (`docker buildx imagetools inspect rust:1.95.0-bookworm`, its first Digest line).
# The builder's Rust is the version the project is developed and tested with (Cargo.toml's
# rust-version is the minimum); the runtime is the same Debian release as the builder's, so the
# binary finds the C library it was linked against.

FROM rust:1.95.0-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS builder
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
FROM debian:bookworm-20260918-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251
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
