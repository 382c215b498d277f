#!/usr/bin/env bash
# The local demo, no cluster needed: a Kafka-protocol broker (tansu), flink-webhook with fresh
# certificates, and flink-agent, all on 127.0.0.1. It admits the AdmissionReview a real
# kube-apiserver sent for a real Flink JobManager pod and prints the injected pod, feeds real
# Flink log lines to the agent, prints the events as they arrive in Kafka, and a few lines of the
# agent's /metrics. It stops only what it started and removes its temporary directory.
#   scripts/demo.sh            (CI=true or DEMO_QUIET=1 prints less of the pod)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url [curl args...]
  local url=$1; shift
  for _ in $(seq 1 150); do curl -fsS "$@" "$url" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "timed out waiting for $url" >&2; return 1
}

say "installing the broker and building (first run takes a few minutes)"
SKIP_FLINK=1 SKIP_IMAGES=1 scripts/install-test-deps.sh >/dev/null
cargo build --workspace --bins -q
BIN="$ROOT/target/debug"

WORK=$(mktemp -d -t flink-injector-demo.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

KAFKA_PORT=$(free_port); HOOK_PORT=$(free_port); HOOK_METRICS=$(free_port); AGENT_METRICS=$(free_port)

say "starting tansu (Kafka-protocol broker) on 127.0.0.1:$KAFKA_PORT"
"$ROOT/.tools/bin/tansu" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" >"$WORK/tansu.log" 2>&1 &
PIDS+=($!)

say "issuing certificates and starting flink-webhook on 127.0.0.1:$HOOK_PORT"
"$BIN/flink-webhook" certs --service flink-webhook --namespace flink-system --out-dir "$WORK/certs" >/dev/null
"$BIN/flink-webhook" serve --config examples/policy.yaml \
  --tls-cert "$WORK/certs/tls.crt" --tls-key "$WORK/certs/tls.key" \
  --listen "127.0.0.1:$HOOK_PORT" --metrics-listen "127.0.0.1:$HOOK_METRICS" \
  --kubernetes-version 1.30 2>"$WORK/webhook.log" &
PIDS+=($!)
HOOK_URL="https://flink-webhook.flink-system.svc:$HOOK_PORT"
CURL_TLS=(--cacert "$WORK/certs/ca.crt" --resolve "flink-webhook.flink-system.svc:$HOOK_PORT:127.0.0.1")
wait_http "$HOOK_URL/readyz" "${CURL_TLS[@]}"

say "POST /mutate: the JobManager AdmissionReview a real kube-apiserver sent (Flink 2.3, application mode)"
REVIEW=tests/fixtures/admission/flink-2.3-application-jobmanager.review.json
curl -fsS "${CURL_TLS[@]}" -H 'content-type: application/json' --data-binary "@$REVIEW" \
  "$HOOK_URL/mutate?timeout=5s" >"$WORK/response.json"
jq '{uid: .response.uid, allowed: .response.allowed, patchType: .response.patchType}' "$WORK/response.json"
echo "patch operations:"
jq -r '.response.patch | @base64d | fromjson | .[] | "  \(.op) \(.path)"' "$WORK/response.json"

say "the injected JobManager pod (flink-webhook mutate, same engine)"
"$BIN/flink-webhook" mutate --config examples/policy.yaml --kubernetes-version 1.30 -f "$REVIEW" >"$WORK/pod.yaml"
if [ "${CI:-}" = true ] || [ "${DEMO_QUIET:-0}" = 1 ]; then
  grep -nE 'flink-injector.io/injected|name: flink-(usrlib|logs|agent)|TZ|restartPolicy: Always|hostnames|nfs' "$WORK/pod.yaml"
else
  sed -n '/^spec:/,$p' "$WORK/pod.yaml" | grep -v '^ *f:' | awk 'NR <= 150'
fi

say "starting flink-agent: tailing $WORK/log to Kafka topic flink-logs"
mkdir -p "$WORK/log"
# TZ as the webhook sets it (the fixture's JobManager asks for Europe/Berlin by annotation).
TZ=Europe/Berlin "$BIN/flink-agent" --log-dir "$WORK/log" --brokers "127.0.0.1:$KAFKA_PORT" --topic flink-logs \
  --metrics-listen "127.0.0.1:$AGENT_METRICS" --flink-rest "http://127.0.0.1:1" \
  --pod-name wordcount-app-655949b6dc-x7k2p --namespace flink-jobs --node-name node-1 \
  --pod-ip 10.1.2.3 --cluster-id wordcount-app --component jobmanager 2>"$WORK/agent.log" &
PIDS+=($!)
wait_http "http://127.0.0.1:$AGENT_METRICS/healthz"

say "Flink writes its log (real Flink 2.3 lines, with a stack trace)"
LOG="$WORK/log/flink--kubernetes-application-0-wordcount-app-655949b6dc-x7k2p.log"
cat /dev/null >"$LOG"
for f in jobmanager-standalonesession.log.head30.txt jobmanager-standalonesession.log.stacktrace30.txt; do
  src="$ROOT/tests/fixtures/flink-logs/$f"
  grep -v '^# ' "$src" >>"$LOG"   # the excerpts start with a comment saying where they come from
done
LINES=$(wc -l <"$LOG")
EVENTS=$(grep -cE '^[0-9]{4}-[0-9]{2}-[0-9]{2} ' "$LOG")
echo "$LINES lines, $EVENTS log records -> $LOG"

say "events arriving in Kafka (topic flink-logs), first 3 in full"
"$BIN/kafka-consume" "127.0.0.1:$KAFKA_PORT" flink-logs "$EVENTS" 60 >"$WORK/events.jsonl"
head -3 "$WORK/events.jsonl" | jq .
echo "... $(wc -l <"$WORK/events.jsonl") events in Kafka for $EVENTS log records"
echo "the one with a stack trace:"
jq -c 'select(.error != null) | {"@timestamp", level: .log.level, error, lines: (.message | split("\n") | length)}' "$WORK/events.jsonl" | awk 'NR <= 3'

sleep 2   # let the last acknowledgement reach the checkpoint, so the lag reads 0
say "agent /metrics (excerpt)"
curl -fsS "http://127.0.0.1:$AGENT_METRICS/metrics" | grep -E '^flink_(agent_(events_sent|lines_read|bytes_sent|unshipped)|up)' | awk 'NR <= 12'
say "done: stopping tansu, flink-webhook and flink-agent"
