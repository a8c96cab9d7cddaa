# redis-server (Debian bookworm's Redis 7.0) with the redis-im module loaded.
#
#   docker build -t redis-im .
#   docker run --rm -p 6379:6379 -v redis-im-data:/data redis-im
#
# Module settings (SPEC §7) follow the module's path, e.g.
#   docker run --rm -p 6379:6379 redis-im \
#     redis-server --dir /data --bind 0.0.0.0 --protected-mode no \
#       --loadmodule /usr/lib/redis/modules/libredis_im.so ack-timeout 30000
# or are changed at run time with CONFIG SET im.<name> <value>.

FROM rust:1-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends clang libclang-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data /usr/lib/redis/modules \
    && chown redis:redis /data
COPY --from=build /src/target/release/libredis_im.so /usr/lib/redis/modules/libredis_im.so
USER redis
WORKDIR /data
VOLUME /data
EXPOSE 6379
CMD ["redis-server", "--dir", "/data", "--bind", "0.0.0.0", "--protected-mode", "no", \
     "--loadmodule", "/usr/lib/redis/modules/libredis_im.so"]
