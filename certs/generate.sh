#!/usr/bin/env bash
# Self-managed certificates for flink-webhook (clusters without cert-manager).
# Writes manifests/tls/{ca.crt,tls.crt,tls.key,ca-bundle.yaml}; then `kubectl apply -k manifests/`
# creates the Secret flink-webhook-tls and puts the CA into the webhook configuration's caBundle.
#
#   certs/generate.sh [--days N] [--out DIR]     (FLINK_WEBHOOK=path/to/flink-webhook to choose the binary)
#
# Rotation: run it again and re-apply. The kubelet swaps the mounted Secret's files within about a
# minute and the webhook reloads them for new connections without a restart. The CA changes too,
# and the same apply updates caBundle. Between the two the API server may briefly reject the new
# certificate (failurePolicy: Ignore lets pods through un-injected meanwhile); to avoid even that,
# use the cert-manager overlay, which keeps a long-lived CA.
set -euo pipefail
cd "$(dirname "$0")/.."
days=365
out=manifests/tls
while [ $# -gt 0 ]; do
  case "$1" in
    --days) days=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
bin=${FLINK_WEBHOOK:-}
if [ -z "$bin" ]; then
  if command -v flink-webhook >/dev/null; then bin=flink-webhook
  else cargo build -q -p flink-webhook --bin flink-webhook; bin=target/debug/flink-webhook; fi
fi
mkdir -p "$out"
bundle=$("$bin" certs --service flink-webhook --namespace flink-system --out-dir "$out" --days "$days")
cat >"$out/ca-bundle.yaml" <<YAML
# Written by certs/generate.sh: the CA that signed tls.crt, for the API server to trust.
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: flink-injector
webhooks:
  - name: inject.flink-injector.io
    clientConfig:
      caBundle: $bundle
YAML
echo "wrote $out/{ca.crt,tls.crt,tls.key,ca-bundle.yaml}; now: kubectl apply -k manifests/"
