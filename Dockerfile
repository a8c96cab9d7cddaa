# redis-im in containers: Debian bookworm's redis-server (Redis 7.0) with the
# module loaded, and the archiver (im-archiver) in an image of its own.
#
#   docker build -t redis-im .                          # the server (last stage)
#   docker build --target archiver -t im-archiver .     # the archiver
#   docker run -d -p 6379:6379 -e REDIS_PASSWORD=... -v redis-im-data:/data redis-im
#
# docs/container.md describes the images, the password, the volume and
# docker-compose.yml; scripts/check-dockerfile runs this file's build steps
# outside a container.

FROM rust:1-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends clang libclang-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies in a layer of their own: built from the manifests, the lock
# and placeholder sources, so that this layer is rebuilt only when one of
# them changes, not with every change to the code.
COPY Cargo.toml Cargo.lock ./
COPY archiver/Cargo.toml archiver/
RUN mkdir -p src archiver/src \
    && touch src/lib.rs \
    && echo 'fn main() {}' > archiver/src/main.rs \
    && cargo build --release --locked --workspace \
    && rm -rf src archiver/src
COPY src src/
COPY archiver/src archiver/src/
# touch: the sources must look newer to cargo than the placeholders' build.
# strip --strip-debug drops the debug info (the release profile keeps line
# tables) and keeps the symbols, so a panic's backtrace in the log still
# names functions.
RUN touch src/lib.rs archiver/src/main.rs \
    && cargo build --release --locked --workspace \
    && mkdir -p dist \
    && strip --strip-debug -o dist/libredis_im.so target/release/libredis_im.so \
    && strip --strip-debug -o dist/im-archiver target/release/im-archiver

# The archiver: pulls the archive queue into SQLite or PostgreSQL
# (docs/archiver.md). Without --db it writes SQLite into /var/lib/im-archiver.
FROM debian:bookworm-slim AS archiver
RUN useradd --system --user-group --home-dir /var/lib/im-archiver --create-home \
        --shell /usr/sbin/nologin im-archiver
COPY --from=build /src/dist/im-archiver /usr/local/bin/im-archiver
USER im-archiver
WORKDIR /var/lib/im-archiver
VOLUME /var/lib/im-archiver
ENTRYPOINT ["/usr/local/bin/im-archiver"]
CMD ["run"]

# The server: redis-server as user redis, data and AOF in /data, a password
# required (REDIS_PASSWORD or REDIS_PASSWORD_FILE; it refuses to start
# without one). Arguments are added to redis-server's command line, e.g.
#   docker run ... redis-im --im.ack-timeout 30000 --appendfsync always
FROM debian:bookworm-slim AS redis
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data /usr/local/lib/redis/modules \
    && chown redis:redis /data
COPY --from=build /src/dist/libredis_im.so /usr/local/lib/redis/modules/libredis_im.so
COPY docker/redis.conf /etc/redis-im/redis.conf
COPY docker/entrypoint.sh /usr/local/bin/redis-im-entrypoint
USER redis
WORKDIR /data
VOLUME /data
EXPOSE 6379
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["redis-im-entrypoint", "healthcheck"]
ENTRYPOINT ["redis-im-entrypoint"]
