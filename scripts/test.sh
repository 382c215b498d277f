#!/usr/bin/env bash
# The test command: installs what the tests need (idempotent), builds the binaries the
# end-to-end tests start, the images (static binaries, OCI archives: scripts/build-images.sh), and runs
# every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
# Tools it installed (kubectl where the machine has none) come before the machine's.
export PATH="$PWD/.tools/bin:$PATH"
cargo build --workspace --bins
scripts/build-images.sh
cargo test --workspace "$@"
