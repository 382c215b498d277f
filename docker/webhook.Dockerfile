# flink-webhook: static-ish Rust binary on distroless, non-root.
#   docker build -f docker/webhook.Dockerfile -t flink-webhook:0.1.0 .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p flink-webhook --bin flink-webhook

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/flink-webhook /usr/local/bin/flink-webhook
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/flink-webhook"]
CMD ["serve", "--config=/etc/flink-injector/policy.yaml", "--tls-cert=/etc/flink-webhook/tls/tls.crt", "--tls-key=/etc/flink-webhook/tls/tls.key"]
