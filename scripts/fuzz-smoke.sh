#!/usr/bin/env bash
# Fuzz smoke test: installs cargo-fuzz (pinned) if missing, writes the seed corpora from the
# fixtures, builds every fuzz target with AddressSanitizer and runs each for FUZZ_SECONDS
# (default 30) from its seeds. Exits non-zero if any target finds a crash, a timeout or an
# out-of-memory (the input is saved under fuzz/artifacts/<target>/). See FUZZING.md.
#
# Environment (all optional):
#   FUZZ_SECONDS      seconds per target (default 30)
#   FUZZ_TARGETS      space-separated subset of targets (default: all)
#   FUZZ_SANITIZER    address (default) or none
#   FUZZ_TARGET_DIR   cargo target dir (default fuzz/target)
#   FUZZ_KEEP_CORPUS  1: add what the run finds to fuzz/corpus/<target> (default: a temp dir)
#   FIXTURES          the recorded fixtures (default tests/fixtures)
#
# Stable rustc only: cargo-fuzz needs -Z flags, which RUSTC_BOOTSTRAP=1 allows.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
FUZZ_TARGETS="${FUZZ_TARGETS:-annotations policy patch_pod admission_review agent_pipeline}"
FUZZ_SANITIZER="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# Build flags: `cargo fuzz run` rebuilds unless it gets exactly the flags `build` got.
BUILD_FLAGS=(--fuzz-dir "$ROOT/fuzz" --sanitizer "$FUZZ_SANITIZER" --codegen-units 16)
if [ -n "${FUZZ_TARGET_DIR:-}" ]; then
  BUILD_FLAGS+=(--target-dir "$FUZZ_TARGET_DIR")
fi

# Per-target libFuzzer limits: bounded memory and no hang are enforced, not hoped for.
max_len() {
  case "$1" in
    annotations) echo 512 ;;
    policy | patch_pod) echo 4096 ;;
    agent_pipeline) echo 8192 ;;
    admission_review) echo 16384 ;;
    *) echo 4096 ;;
  esac
}
LIMITS=(-rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10)

start=$(date +%s)

echo "== cargo-fuzz $CARGO_FUZZ_VERSION"
if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi
cargo fuzz --version

# The workspace's native build dependencies (librdkafka is built from source for the agent).
need_apt=()
if command -v dpkg >/dev/null; then
  for pkg in pkg-config libssl-dev zlib1g-dev make gcc g++; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
  done
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing packages (install them as root): ${need_apt[*]}" >&2
    exit 1
  fi
fi

echo "== seeds"
scripts/fuzz-seed.sh

echo "== build (sanitizer: $FUZZ_SANITIZER)"
build_start=$(date +%s)
cargo fuzz build "${BUILD_FLAGS[@]}"
echo "build: $(($(date +%s) - build_start)) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in $FUZZ_TARGETS; do
  echo "== $t: ${FUZZ_SECONDS}s"
  corpus=("$ROOT/fuzz/corpus/$t")
  if [ "${FUZZ_KEEP_CORPUS:-0}" != 1 ]; then
    # New inputs go to a scratch dir; the seeds are only read.
    mkdir -p "$work/$t"
    corpus=("$work/$t" "$ROOT/fuzz/corpus/$t")
  fi
  args=("${LIMITS[@]}" "-max_len=$(max_len "$t")" "-max_total_time=$FUZZ_SECONDS" -print_final_stats=1)
  if [ -f "$ROOT/fuzz/dict/$t.dict" ]; then
    args+=("-dict=$ROOT/fuzz/dict/$t.dict")
  fi
  log="$work/$t.log"
  if cargo fuzz run "${BUILD_FLAGS[@]}" "$t" "${corpus[@]}" -- "${args[@]}" >"$log" 2>&1; then
    grep -E '^(Done [0-9]+ runs|stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb))' "$log" || true
  else
    failed+=("$t")
    # The finding: libFuzzer's report, the panic message and where the input was saved.
    grep -v -E '^#[0-9]+' "$log" | tail -n 60
  fi
done

echo "== done in $(($(date +%s) - start)) s"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz smoke FAILED: ${failed[*]} (inputs under fuzz/artifacts/<target>/; reproduce with" \
    "RUSTC_BOOTSTRAP=1 cargo fuzz run --codegen-units 16 <target> <artifact>)" >&2
  exit 1
fi
echo "fuzz smoke passed: $FUZZ_TARGETS"
