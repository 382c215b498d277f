#!/usr/bin/env bash
# Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/seed-*) from the recorded
# fixtures in tests/fixtures (override with FIXTURES=DIR) and the repo's policy files. Idempotent: seeds are rewritten, files libFuzzer added are kept.
# fuzz/corpus/ is git-ignored. See FUZZING.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FIXTURES="${FIXTURES:-$ROOT/tests/fixtures}"
CORPUS="$ROOT/fuzz/corpus"

if [ ! -d "$FIXTURES/admission" ] || [ ! -d "$FIXTURES/flink-logs" ]; then
  echo "fuzz-seed: fixtures not found at $FIXTURES (expected tests/fixtures in the repo; set FIXTURES=DIR)" >&2
  exit 1
fi
for t in admission_review patch_pod policy annotations agent_pipeline; do
  mkdir -p "$CORPUS/$t"
done

# admission_review: every AdmissionReview, recorded and hand-made.
n=0
for f in "$FIXTURES"/admission/*.json; do
  [ -f "$f" ] || continue
  cp "$f" "$CORPUS/admission_review/seed-$(basename "$f")"
  n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "fuzz-seed: no AdmissionReview JSON under $FIXTURES/admission" >&2; exit 1; }

# policy: every policy file of the repo.
for f in "$ROOT"/examples/policy.yaml "$ROOT"/manifests/base/policy.yaml "$ROOT"/tests/fixtures/policy/*.yaml; do
  [ -f "$f" ] || continue
  cp "$f" "$CORPUS/policy/seed-$(basename "$(dirname "$f")")-$(basename "$f")"
done

# annotations: first byte picks the annotation (index in fuzz_targets/annotations.rs KEYS:
# 0 inject, 1 usrlib, 2 usrlib-subpath, 3 timezone, 4 host-aliases, 5 log-topic, 6 agent,
# 7 injected, 8 an unknown flink-injector.io/ key), the rest is the value. The values of
# tests/fixtures/admission/annotation-cases.yaml, valid and malformed.
seed_annotation() { # index value
  local name
  name="seed-$1-$(printf '%s' "$2" | cksum | cut -d' ' -f1)"
  { printf "\\x$(printf '%02x' "$1")"; printf '%s' "$2"; } >"$CORPUS/annotations/$name"
}
for v in true TRUE false no ""; do seed_annotation 0 "$v"; done
for v in nfs.team.internal:/exports/jobs 10.1.2.3:/x fd00::12:/exports/v6 pvc:jars-1 none \
  nfs.internal nfs.internal:relative/path :/exports pvc:Bad_Claim pvc:; do seed_annotation 1 "$v"; done
for v in job-a a/b/c /abs a/../../etc; do seed_annotation 2 "$v"; done
for v in Europe/Berlin UTC America/Argentina/Buenos_Aires Mars/Olympus CEST; do seed_annotation 3 "$v"; done
for v in "10.0.0.1=a,b;10.0.0.2=c" "10.0.0.1=a b" "fd00::1=v6.internal;" " 10.0.0.1=a,b ; fd00::2=c ;" \
  10.0.0.300=a 10.0.0.1 10.0.0.1= 10.0.0.1=Bad_Host ";"; do seed_annotation 4 "$v"; done
for v in team.logs_v2-x logs/team ..; do seed_annotation 5 "$v"; done
for v in false true off; do seed_annotation 6 "$v"; done
for v in "usrlib,host-aliases,timezone,agent" "usrlib, agent,,future-part"; do seed_annotation 7 "$v"; done
seed_annotation 8 x

# agent_pipeline: every log excerpt, behind the header of fuzz_targets/agent_pipeline.rs
# (byte 0: setup = bounds * 4 + zone, byte 1: number of read sizes, then the read sizes - 1),
# four ways: default bounds in UTC with reads of 65, 201 and 8 bytes; default bounds with a
# 1 KiB Kafka payload in Asia/Shanghai with reads of 1 to 4 bytes; small bounds in
# Europe/Berlin in one read; tiny bounds in America/Santiago with reads of 17 bytes.
n=0
for f in "$FIXTURES"/flink-logs/*; do
  case "$(basename "$f")" in *.log* | *.out* | *.err*) ;; *) continue ;; esac
  b=$(basename "$f")
  { printf '\x00\x03\x40\xc8\x07'; cat "$f"; } >"$CORPUS/agent_pipeline/seed-default-$b"
  { printf '\x05\x04\x00\x01\x02\x03'; cat "$f"; } >"$CORPUS/agent_pipeline/seed-cut-$b"
  { printf '\x0a\x00'; cat "$f"; } >"$CORPUS/agent_pipeline/seed-small-$b"
  { printf '\x0f\x01\x10'; cat "$f"; } >"$CORPUS/agent_pipeline/seed-tiny-$b"
  n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "fuzz-seed: no log files under $FIXTURES/flink-logs" >&2; exit 1; }

# patch_pod builds its pods with `arbitrary` from raw bytes: it starts from an empty corpus.
for t in admission_review patch_pod policy annotations agent_pipeline; do
  echo "fuzz-seed: $t: $(find "$CORPUS/$t" -maxdepth 1 -type f -name 'seed-*' | wc -l) seeds"
done
