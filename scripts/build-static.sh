#!/usr/bin/env bash
# A binary as its image ships it: one statically linked, position-independent executable,
# copied to target/static/<binary> (under CARGO_TARGET_DIR if set), whose path it prints.
#   flink-agent:   glibc, OpenSSL, zlib and librdkafka inside.
#   flink-webhook: glibc inside (its TLS is rustls); static so that its image is the same
#                  from-scratch root as the agent's, with no loader or shared library to ship.
# The agent is static because the idle sidecar's memory is mostly code and data mapped from
# files: the shared libraries took ~3.8 MiB of it (~1.2 MiB only for the loader to relocate
# libcrypto), where the parts of them linked in add ~1.9 MiB to the executable's (BENCHMARKS.md).
# glibc's NSS "files" and "dns" are built into its static library, so broker names resolve as
# in a dynamic build; what a static glibc cannot do is load librdkafka plugins
# (plugin.library.paths).
#   scripts/build-static.sh flink-agent|flink-webhook [extra cargo args]
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:?usage: scripts/build-static.sh flink-agent|flink-webhook [cargo args]}"
shift
case "$bin" in
  flink-agent | flink-webhook) ;;
  *) echo "build-static: unknown binary '$bin' (flink-agent or flink-webhook)" >&2; exit 2 ;;
esac
target="$(rustc -vV | sed -n 's/^host: //p')"
# With --target, these flags reach only the target's crates, not build scripts or proc-macros
# (which cannot be static). They replace .cargo/config.toml's rustflags, so DT_RELR is here too.
# Identical code folded (--icf=safe: only functions whose address is never taken; the C
# objects, without address-significance tables, keep theirs) and fat LTO in one unit: the
# executable is ~2 MB smaller, and 0.5-0.9 MiB less of it is resident (BENCHMARKS.md).
export RUSTFLAGS="-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs -C link-arg=-Wl,--icf=safe"
export CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
export OPENSSL_STATIC=1
cargo build --release --locked --target "$target" -p "$bin" --bin "$bin" "$@" >&2
out="${CARGO_TARGET_DIR:-target}"
mkdir -p "$out/static"
# Copied beside and renamed over: a copy onto an executable that is running (a benchmark's
# agent) fails with "text file busy", and the old binary would be measured again.
cp "$out/$target/release/$bin" "$out/static/$bin.new"
mv -f "$out/static/$bin.new" "$out/static/$bin"
echo "$out/static/$bin"
