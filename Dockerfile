# Multi-stage build: compile in the Rust image, run in a small Debian image as a non-root user.
#   docker build -t aas-gateway .
#   docker run --rm -p 8080:8080 --read-only --tmpfs /tmp -v gateway-data:/data \
#     -v $PWD/config:/etc/aas-gateway:ro aas-gateway run -c /etc/aas-gateway/gateway.toml
# Read-only root file system: everything the gateway writes (outbox, OPC UA PKI, audit log) is
# under /data, a volume owned by the gateway user. docker-compose.yml shows a full stack.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The edge build: without the `demo` feature, so no OPC UA server (simulator) and no MQTT
# broker are linked into the image; `demo` and `gateway-bench` are not in it.
RUN cargo build --release --locked -p aas-gateway --no-default-features --bin aas-gateway \
 && strip target/release/aas-gateway

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/aas-gateway --create-home gateway \
 && mkdir -p /data && chown gateway:gateway /data && chmod 700 /data
COPY --from=build /src/target/release/aas-gateway /usr/local/bin/
COPY --from=build /src/aas-templates /usr/share/aas-gateway/aas-templates
COPY --from=build /src/config /usr/share/aas-gateway/config
USER gateway
WORKDIR /var/lib/aas-gateway
# The API listens on 127.0.0.1 by default; in a container set AAS_GATEWAY__API__LISTEN=0.0.0.0:8080.
ENV AAS_GATEWAY__API__LISTEN=0.0.0.0:8080
# All writable state under /data (a new named volume inherits the gateway user's ownership).
# The OPC UA PKI is per source: set pki_dir = "/data/pki" in the config (see config/secure.toml).
ENV AAS_GATEWAY__OUTBOX__DIR=/data/outbox \
    AAS_GATEWAY__AUDIT__DIR=/data/audit
VOLUME ["/data"]
EXPOSE 8080
ENTRYPOINT ["aas-gateway"]
CMD ["run", "-c", "/usr/share/aas-gateway/config/demo.toml"]
