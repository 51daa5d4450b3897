#!/usr/bin/env bash
# The full test suite from nothing: set-up (venv, debug build, data), then every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --debug
cargo test --workspace --locked
