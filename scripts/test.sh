#!/usr/bin/env bash
# The test command: installs what the tests need (idempotent), builds the binaries the
# end-to-end tests start (the agent also as its image ships it, statically linked), and runs
# every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
cargo build --workspace --bins
scripts/build-agent-static.sh >/dev/null
cargo test --workspace "$@"
