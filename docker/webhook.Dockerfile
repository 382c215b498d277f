# flink-webhook: one statically linked executable (glibc inside; TLS is rustls) in a root made
# from scratch (docker/rootfs.sh), non-root.
#   docker build -f docker/webhook.Dockerfile --build-arg REVISION=$(git rev-parse HEAD) -t flink-webhook:0.1.0 .
# Without a registry, scripts/build-images.sh builds the same runtime stage from the same files.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends binutils ca-certificates && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# .git is not in the build context (.dockerignore): the revision comes in as an argument.
ARG REVISION=unknown
RUN FLINK_INJECTOR_REVISION="$REVISION" scripts/build-static.sh flink-webhook \
 && docker/rootfs.sh target/static/flink-webhook /rootfs

# The runtime stage: scripts/build-images.sh builds from this text on, with the root that
# docker/rootfs.sh made in place of the build stage's.
FROM scratch AS runtime
COPY --from=build /rootfs/ /
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/flink-injector/flink-injector
LABEL org.opencontainers.image.title="flink-webhook" \
      org.opencontainers.image.description="Mutating admission webhook that injects user JARs, hostAliases, TZ and a log-shipping sidecar into stock Flink pods" \
      org.opencontainers.image.source="$SOURCE" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.licenses="Apache-2.0"
# Same allocator settings as manifests/base/deployment.yaml (see README).
ENV MIMALLOC_ARENA_EAGER_COMMIT=0 MIMALLOC_PURGE_DELAY=1
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/flink-webhook"]
CMD ["serve", "--config=/etc/flink-injector/policy.yaml", "--tls-cert=/etc/flink-webhook/tls/tls.crt", "--tls-key=/etc/flink-webhook/tls/tls.key"]
