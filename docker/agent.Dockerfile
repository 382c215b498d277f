# flink-agent: the sidecar, one statically linked executable (glibc, OpenSSL, zlib and
# librdkafka inside; scripts/build-agent-static.sh says why).
#   docker build -f docker/agent.Dockerfile -t flink-agent:0.1.0 .
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev zlib1g-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN scripts/build-agent-static.sh

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/static/flink-agent /usr/local/bin/flink-agent
# mimalloc (the agent's allocator) committing memory on demand and returning what is freed at
# once: ~2.5 MiB anonymous memory idle instead of ~17, and a scrape of Flink's metrics does not
# leave its few MiB behind (BENCHMARKS.md).
ENV MIMALLOC_ARENA_EAGER_COMMIT=0 MIMALLOC_PURGE_DELAY=0
USER 65532:65532
EXPOSE 9260
ENTRYPOINT ["/usr/local/bin/flink-agent"]
