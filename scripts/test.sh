#!/usr/bin/env bash
# The test command (README): sets up what it needs, then runs the gates
# and every test, unit, integration and end-to-end, in one cargo profile.
set -euo pipefail
. "$(dirname "$0")/../scripts/as-root.sh"
cd "$(dirname "$0")/.."

scripts/setup-test-env.sh

cargo fmt --check
cargo clippy --locked --workspace --all-targets -- -D warnings
# The test kit's servers run as processes in the network-namespace suite:
# build every binary of the workspace (same profile as the tests).
cargo build --locked --workspace
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --no-fail-fast
else
  cargo test --locked --workspace --no-fail-fast
fi
