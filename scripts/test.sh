#!/usr/bin/env bash
# The full test suite from nothing: set-up (venv, debug build, data), then every test of the workspace,
# then the offline checks of the Helm chart (scripts/helm_check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --debug
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# No doc-tests: the crates have none, and an empty run's "0 passed" would close the log.
# Both parts run even if the first fails, so the summary counts everything; the exit status is theirs.
cargo_status=0
cargo test --workspace --locked --lib --bins --tests 2>&1 | tee "$log" || cargo_status=$?
helm_status=0
scripts/helm_check.sh 2>&1 | tee -a "$log" || helm_status=$?
# A part that failed without counting a failed test (a build error, no npm) counts as one failure.
awk -v cargo_status="$cargo_status" -v helm_status="$helm_status" '
  /^test result:/ { passed += $4; failed += $6 }
  /^helm check:/ { hp = $3; hf = $5 }
  END {
    if (cargo_status != 0 && failed == 0) failed = 1
    if (helm_status != 0 && hf == 0) hf = 1
    printf "%d passed, %d failed (helm check: %d passed, %d failed)\n", passed + hp, failed + hf, hp, hf
  }' "$log"
[ "$cargo_status" = 0 ] && [ "$helm_status" = 0 ]
