#!/usr/bin/env bash
# Benchmarks (figures, not tests): release builds, everything on 127.0.0.1. Prints the tables
# and writes them into BENCHMARKS.md between its "results" markers.
#   scripts/bench.sh [SECONDS_PER_ADMISSION_CASE] [CORPUS_LINES] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-5}"
lines="${2:-1000000}"
rounds="${3:-3}"
scripts/install-test-deps.sh
cargo build --release -p flink-webhook -p flink-logs -p flink-injector-tests --bins
# The agent as its image ships it (statically linked, see the script).
agent="$(scripts/build-agent-static.sh)"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
{
  echo "Run $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)),"
  echo "client, server and broker on the same machine. Command: \`scripts/bench.sh $secs $lines $rounds\`."
  echo
  echo "### Admission (flink-webhook serve over TLS, keep-alive)"
  echo
  target/release/bench-admission target/release/flink-webhook "$secs"
  echo
  echo "### Log shipping ($lines-line corpus written ahead of time, interleaved rounds)"
  echo
  target/release/bench-shipping "$agent" "$lines" "$rounds"
  echo
  echo "### Flink metrics: one scrape of the agent's /metrics with a real local Flink"
  echo
  target/release/bench-scrape "$agent"
  echo
  echo "### Reading logs back: flink-logs on a topic 50 agents filled"
  echo
  target/release/bench-logs "$agent" target/release/flink-logs 20000 50 "$rounds"
  echo
  echo "### Missed-injection detector: the webhook with 10,000 Flink pods listed and watched"
  echo
  target/release/bench-detector target/release/flink-webhook 10000 "$rounds" 2>/dev/null
} | tee "$out"
python3 - "$out" <<'PY'
import sys, re, pathlib
md = pathlib.Path("BENCHMARKS.md")
text = md.read_text()
new = pathlib.Path(sys.argv[1]).read_text()
start, end = "<!-- results:start -->", "<!-- results:end -->"
if start not in text or end not in text:
    sys.exit("BENCHMARKS.md lacks the results markers")
head, rest = text.split(start, 1)
_, tail = rest.split(end, 1)
md.write_text(head + start + "\n" + new.rstrip() + "\n" + end + tail)
print("BENCHMARKS.md updated")
PY
