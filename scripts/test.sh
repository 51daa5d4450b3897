#!/usr/bin/env bash
# The full test suite from nothing: set-up (venv, debug build, data), then every test of the workspace,
# then the offline checks of the Helm chart (scripts/helm_check.sh).
#
#   scripts/test.sh                 the README's test command (what CI runs)
#   scripts/test.sh --portability   the workspace's tests again under each forced libtorch kernel path and
#                                   thread count of PORTABILITY_RUNS below, as another CPU would run them
#                                   (about 4 × 10 min on 2 cores; see docs/RESULTS.md "Tests on other CPUs")
set -euo pipefail
cd "$(dirname "$0")/.."
PORTABILITY=0
for arg in "$@"; do
  case "$arg" in
    --portability) PORTABILITY=1 ;;
    -h|--help) sed -n 2,8p "$0"; exit 0 ;;
    *) echo "test.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done
scripts/setup.sh --debug
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# No doc-tests: the crates have none, and an empty run's "0 passed" would close the log.
cargo_tests() { cargo test --workspace --locked --no-fail-fast --lib --bins --tests "$@"; }

if [ "$PORTABILITY" = 1 ]; then
  # libtorch picks its kernels by CPU (ATEN_CPU_CAPABILITY caps the choice) and splits sums by thread
  # count, so each pair below rounds floats differently and a trained router ends elsewhere: what a
  # machine without AVX-512, or with another core count, sees. Every test must pass under each.
  PORTABILITY_RUNS=("default 1" "default 2" "avx2 1" "avx2 2")
  failed_runs=0
  summary=()
  for run in "${PORTABILITY_RUNS[@]}"; do
    read -r cap threads <<< "$run"
    echo "=== ATEN_CPU_CAPABILITY=$cap OMP_NUM_THREADS=$threads ==="
    status=0
    ATEN_CPU_CAPABILITY=$cap OMP_NUM_THREADS=$threads cargo_tests 2>&1 | tee "$log" || status=$?
    counts=$(awk -v status="$status" '/^test result:/ { p += $4; f += $6 }
      END { if (status != 0 && f == 0) f = 1; printf "%d passed, %d failed", p, f }' "$log")
    summary+=("ATEN_CPU_CAPABILITY=$cap OMP_NUM_THREADS=$threads: $counts")
    [ "$status" = 0 ] || failed_runs=$((failed_runs + 1))
  done
  printf '%s\n' "${summary[@]}"
  printf '%s\n' "${summary[@]}" | awk -F': ' '{ split($2, c, " "); p += c[1]; f += c[3] }
    END { printf "%d passed, %d failed\n", p, f }'
  [ "$failed_runs" = 0 ]
  exit
fi

# Every part runs even if one fails, so the summary counts everything; the exit status is theirs.
cargo_status=0
cargo_tests 2>&1 | tee "$log" || cargo_status=$?
# The tests that assert a learned value once more on libtorch's portable kernels with one thread, as a
# CPU without AVX2 or AVX-512 rounds (issue #17: a threshold one machine barely cleared failed on the
# next); about 2 minutes. `--portability` runs everything under four such settings.
echo "=== learned-value tests again with ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 ==="
on_portable_kernels() { ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 "$@"; }
on_portable_kernels cargo test --workspace --locked --lib -- train::tests coordinator::tests 2>&1 | tee -a "$log" \
  || cargo_status=$?
on_portable_kernels cargo test --workspace --locked --test cluster 2>&1 | tee -a "$log" || cargo_status=$?
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
