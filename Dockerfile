# syntax=docker/dockerfile:1
# Build: docker build -t marstek-bridge .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs* ./
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
RUN cargo build --release --locked --bin marstek-bridge

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/marstek-bridge --create-home bridge
COPY --from=build /src/target/release/marstek-bridge /usr/local/bin/marstek-bridge
COPY config /etc/marstek-bridge
USER bridge
WORKDIR /var/lib/marstek-bridge
# Listening on 0.0.0.0 needs MARSTEK_BRIDGE__HTTP__TOKEN (or ..._TOKEN_FILE) at `docker run`.
ENV MARSTEK_BRIDGE_CONFIG=/etc/marstek-bridge/marstek-bridge.toml \
    MARSTEK_BRIDGE__HTTP__LISTEN=0.0.0.0:9480
EXPOSE 9480
# The Open API answers on the battery's port; some firmware replies only to port 30000.
EXPOSE 30000/udp
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:9480/healthz || exit 1
ENTRYPOINT ["marstek-bridge"]
CMD ["run"]
