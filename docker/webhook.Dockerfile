# flink-webhook: static-ish Rust binary on distroless, non-root.
#   docker build -f docker/webhook.Dockerfile -t flink-webhook:0.1.0 .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p flink-webhook --bin flink-webhook

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/flink-webhook /usr/local/bin/flink-webhook
# Same allocator settings as manifests/base/deployment.yaml (see README).
ENV MIMALLOC_ARENA_EAGER_COMMIT=0 MIMALLOC_PURGE_DELAY=1
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/flink-webhook"]
CMD ["serve", "--config=/etc/flink-injector/policy.yaml", "--tls-cert=/etc/flink-webhook/tls/tls.crt", "--tls-key=/etc/flink-webhook/tls/tls.key"]
