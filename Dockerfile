# syntax=docker/dockerfile:1
# kubegate: multi-stage build, small non-root runtime image.
#
#   docker build -t kubegate .
#
# The build stage caches crates and the target directory between builds (BuildKit);
# the runtime stage is Debian slim with CA certificates and the binary, run as the
# numeric user 10001 (so that Kubernetes' runAsNonRoot can check it).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin kubegate \
    && cp target/release/kubegate /usr/local/bin/kubegate

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 kubegate \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/kubegate --create-home kubegate \
    && mkdir -p /var/lib/kubegate/data && chown 10001:10001 /var/lib/kubegate/data
COPY --from=build /usr/local/bin/kubegate /usr/local/bin/kubegate
COPY config /etc/kubegate
COPY deploy/compose-entrypoint.sh /usr/local/bin/compose-entrypoint.sh
USER 10001:10001
WORKDIR /var/lib/kubegate
EXPOSE 9090 9443
# SIGTERM: stop accepting, let requests finish (server.shutdown_grace), flush the audit
STOPSIGNAL SIGTERM
ENTRYPOINT ["kubegate", "--config", "/etc/kubegate/compose.toml"]
CMD ["serve"]
