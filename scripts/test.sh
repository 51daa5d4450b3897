#!/usr/bin/env bash
# The full test suite from nothing: set-up (venv, debug build, data), then every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --debug
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# No doc-tests: the crates have none, and an empty run's "0 passed" would close the log.
cargo test --workspace --locked --lib --bins --tests 2>&1 | tee "$log"
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' "$log"
