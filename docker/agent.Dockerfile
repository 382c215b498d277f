# flink-agent: the sidecar, one statically linked executable (glibc, OpenSSL, zlib and
# librdkafka inside; scripts/build-static.sh says why) in a root made from scratch
# (docker/rootfs.sh).
#   docker build -f docker/agent.Dockerfile --build-arg REVISION=$(git rev-parse HEAD) -t flink-agent:0.1.0 .
# Without a registry, scripts/build-images.sh builds the same runtime stage from the same files.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev zlib1g-dev binutils ca-certificates && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# .git is not in the build context (.dockerignore): the revision comes in as an argument.
ARG REVISION=unknown
RUN FLINK_INJECTOR_REVISION="$REVISION" scripts/build-static.sh flink-agent \
 && docker/rootfs.sh target/static/flink-agent /rootfs

# The runtime stage: scripts/build-images.sh builds from this text on, with the root that
# docker/rootfs.sh made in place of the build stage's.
FROM scratch AS runtime
COPY --from=build /rootfs/ /
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/flink-injector/flink-injector
LABEL org.opencontainers.image.title="flink-agent" \
      org.opencontainers.image.description="Ships Flink's log files to Kafka with no loss and serves Flink's metrics to Prometheus" \
      org.opencontainers.image.source="$SOURCE" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.licenses="Apache-2.0"
# mimalloc (the agent's allocator) committing memory on demand and returning what is freed at
# once: ~2.5 MiB anonymous memory idle instead of ~17, and a scrape of Flink's metrics does not
# leave its few MiB behind (BENCHMARKS.md). SSL_CERT_FILE: the static OpenSSL's default CA
# path is Debian's /usr/lib/ssl, which this root does not have.
ENV MIMALLOC_ARENA_EAGER_COMMIT=0 MIMALLOC_PURGE_DELAY=0 SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
EXPOSE 9260
ENTRYPOINT ["/usr/local/bin/flink-agent"]
