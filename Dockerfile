# syntax=docker/dockerfile:1
# edc-ingest container image.
#   docker build -t edc-ingest .
#   docker compose up            (RabbitMQ + PostgreSQL + edc-ingest, see docker-compose.yml)
# The pseudonym key is not baked into the image (.dockerignore drops config/*.key): give it at run
# time, e.g. as the compose secret mounted at /run/secrets/pseudonym_key.

FROM rust:1.95-bookworm AS builder
WORKDIR /build
COPY . .
# Cache mounts keep the crate registry and compiled dependencies between builds; the binary is
# copied out of the cached target folder because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked \
    && cp target/release/edc-ingest /usr/local/bin/edc-ingest

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
# Numeric, so that runtimes enforcing runAsNonRoot can verify it.
USER 10001:10001
ENTRYPOINT ["edc-ingest"]
CMD ["run"]
