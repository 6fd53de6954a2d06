# kubegate: multi-stage build, small non-root runtime image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin kubegate

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/kubegate --create-home kubegate \
    && mkdir -p /var/lib/kubegate/data && chown kubegate /var/lib/kubegate/data
COPY --from=build /src/target/release/kubegate /usr/local/bin/kubegate
COPY config /etc/kubegate
COPY deploy/compose-entrypoint.sh /usr/local/bin/compose-entrypoint.sh
USER kubegate
WORKDIR /var/lib/kubegate
EXPOSE 9090 9443
ENTRYPOINT ["kubegate", "--config", "/etc/kubegate/compose.toml"]
CMD ["serve"]
