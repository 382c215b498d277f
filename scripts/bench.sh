#!/usr/bin/env bash
# Benchmarks (figures, not tests): release builds, everything on 127.0.0.1.
#   scripts/bench.sh [SECONDS_PER_CASE]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-5}"
cargo build --release -p flink-webhook -p flink-injector-tests --bins
echo "## Admission (flink-webhook serve, TLS, keep-alive; $(nproc) cores, client and server on one machine)"
echo
target/release/bench-admission target/release/flink-webhook "$secs"
