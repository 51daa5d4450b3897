#!/usr/bin/env bash
# Builds the d2nn runtime image with podman from packages only, then checks it (issue #24). One PASS/FAIL
# line per check; exits 1 if any fails.
#
#   scripts/image_check.sh [--rebuild-base] [--base-only] [--no-cache]   (as root: rootful podman; after scripts/setup.sh)
#   (--no-cache: every layer built again, as a first build; for measuring. --base-only: build the base, stop)
#   D2NN_BIN=/other/checkout/target/release/d2nn scripts/image_check.sh   stage that binary (default
#                                                                          target/release/d2nn)
#
# Prerequisites (Debian bookworm host, docs/deploy.md "Run for real"):
#   apt-get install podman runc mmdebstrap patchelf binutils     (podman 4.3.1, runc 1.1.5)
#   the podman settings in scripts/podman/containers.conf: runc (crun fails on hybrid cgroups), the
#   cgroupfs manager, no default ulimits. This script points CONTAINERS_CONF there itself, so the host's
#   /etc/containers need not change; set CONTAINERS_CONF to use another file.
#   scripts/setup.sh's binary, venv (the binary's RUNPATH names its torch/lib) and data/.
#
# No container registry is needed:
#  - the base: Debian bookworm's minbase from Debian's packages (mmdebstrap, with debian:bookworm-slim's
#    dpkg excludes and apt settings, scripts/podman/apt-docker.conf), imported as BASE (default
#    localhost/d2nn-base:bookworm-slim); built once, then reused unless --rebuild-base;
#  - the build: the repository's Dockerfile with STAGE=prebuilt and RUNTIME_IMAGE=BASE. Its build stage
#    (rust image, scripts/setup.sh) is skipped: the binary scripts/setup.sh built here (D2NN_BIN) is
#    staged by scripts/stage_runtime.sh exactly as the build stage stages its own, with the venv's
#    libraries relocated to /src/.venv, where the build stage has them. The runtime stage is the same
#    one `docker build .` runs.
# The image is tagged IMAGE (default localhost/d2nn:0.1.0, what scripts/chart_run.sh runs).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-localhost/d2nn:0.1.0}
BASE=${BASE:-localhost/d2nn-base:bookworm-slim}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin   # debian:bookworm-slim's
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/scripts/podman/containers.conf}
die() { echo "image_check.sh: $*" >&2; exit 2; }
say() { printf '\033[1m[image-check]\033[0m %s\n' "$*"; }

rebuild_base=0 base_only=0 cache=()
for arg in "$@"; do
  case "$arg" in
    --rebuild-base) rebuild_base=1 ;;
    --base-only) base_only=1 ;;
    --no-cache) cache=(--no-cache) ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) die "unknown argument '$arg' (see --help)" ;;
  esac
done
[ "$(id -u)" = 0 ] || die "run as root (rootful podman with runc; see docs/deploy.md)"
for tool in podman runc mmdebstrap patchelf readelf; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install podman runc mmdebstrap patchelf binutils)"
done
[ -r "$CONTAINERS_CONF" ] || die "CONTAINERS_CONF=$CONTAINERS_CONF is not a readable file"
export D2NN_BIN=${D2NN_BIN:-target/release/d2nn}
[ "$base_only" = 1 ] || [ -x "$D2NN_BIN" ] || die "$D2NN_BIN is missing: run scripts/setup.sh first (or set D2NN_BIN)"
# What podman will use: runc and cgroupfs, as this host needs (a wrong CONTAINERS_CONF shows here).
say "$(podman --version), runtime $(podman info -f '{{.Host.OCIRuntime.Name}}'), cgroups $(podman info -f '{{.Host.CgroupManager}}') $(podman info -f '{{.Host.CgroupsVersion}}')"

work=$(mktemp -d /tmp/d2nn-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
# Images this run leaves untagged (the prebuilt stage, about 0.5 GB a build; a replaced base or image) are
# removed at the end; untagged images that were there before are left alone.
dangling() { podman images -q --no-trunc --filter dangling=true | sort -u; }
dangling > "$work/dangling.before"
drop_dangling() {
  local id n=0
  for id in $(dangling | comm -13 "$work/dangling.before" -); do podman rmi "$id" >/dev/null 2>&1 && n=$((n + 1)); done
  [ "$n" = 0 ] || say "removed $n image(s) this run left untagged"
}
passed=0 failed=0
check() { # check NAME COMMAND...: PASS if the command succeeds; its output is shown on failure
  local name=$1; shift
  if "$@" > "$work/check.log" 2>&1; then printf 'PASS  %s\n' "$name"; passed=$((passed + 1))
  else printf 'FAIL  %s\n' "$name"; sed 's/^/      /' "$work/check.log" | tail -20; failed=$((failed + 1)); fi
}
mb() { podman image inspect "$1" -f '{{.Size}}' | awk '{ printf "%.0f MB", $1 / 1e6 }'; }

# ---------------------------------------------------------------------------------------------- base
if [ "$rebuild_base" = 1 ] || ! podman image exists "$BASE"; then
  say "building $BASE: mmdebstrap bookworm (minbase, slim's excludes) from $MIRROR"
  t=$SECONDS
  # shellcheck disable=SC2016  # "$1" is for the hook (mmdebstrap passes the root), not this shell
  nice -n 19 mmdebstrap --variant=minbase --quiet \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    --customize-hook="cp '$PWD/scripts/podman/apt-docker.conf' \"\$1/etc/apt/apt.conf.d/docker-clean\"" \
    bookworm "$work/base.tar" "$MIRROR"
  # debian:bookworm-slim's config: its PATH too. `podman run` adds a default PATH to an image without one,
  # but `podman kube play` does not, and the chart's `command: [d2nn]` is looked up in it.
  podman import -q --change "ENV PATH=$IMAGE_PATH" --change 'CMD ["bash"]' "$work/base.tar" "$BASE" >/dev/null
  rm -f "$work/base.tar"
  say "base built in $((SECONDS - t)) s: $(mb "$BASE")"
else
  say "base $BASE exists ($(mb "$BASE")); --rebuild-base rebuilds it"
fi
[ "$base_only" = 0 ] || { drop_dangling; exit 0; }

# --------------------------------------------------------------------------------------------- image
say "staging $D2NN_BIN, its torch libraries, data and configs (scripts/stage_runtime.sh)"
t=$SECONDS
scripts/stage_runtime.sh cpu "$work/context/stage" --relocate /src/.venv
say "building $IMAGE (Dockerfile, STAGE=prebuilt, RUNTIME_IMAGE=$BASE)"
nice -n 19 podman build -q "${cache[@]}" -f Dockerfile --build-arg STAGE=prebuilt --build-arg RUNTIME_IMAGE="$BASE" \
  -t "$IMAGE" "$work/context" > "$work/build.log" 2>&1 || { cat "$work/build.log" >&2; die "podman build failed"; }
say "staged and built in $((SECONDS - t)) s: $IMAGE $(mb "$IMAGE") (base $(mb "$BASE"))"
rm -rf "$work/context"
drop_dangling

# -------------------------------------------------------------------------------------------- checks
run() { podman run --rm --network none "$@"; }
check "the image runs as uid/gid 1000 (USER 1000:1000)" sh -c "
  [ \"\$(podman image inspect $IMAGE -f '{{.Config.User}}')\" = 1000:1000 ] &&
  [ \"\$(podman run --rm --network none --entrypoint id $IMAGE -u):\$(podman run --rm --network none --entrypoint id $IMAGE -g)\" = 1000:1000 ]"
check "the image sets PATH (debian:bookworm-slim's), which finds d2nn without podman run's default" sh -c "
  podman image inspect $IMAGE -f '{{range .Config.Env}}{{println .}}{{end}}' | grep -qx 'PATH=$IMAGE_PATH' &&
  podman image inspect $BASE -f '{{range .Config.Env}}{{println .}}{{end}}' | grep -qx 'PATH=$IMAGE_PATH'"
check "ldd finds every library of /usr/local/bin/d2nn" sh -c "
  out=\$(podman run --rm --network none --entrypoint ldd $IMAGE /usr/local/bin/d2nn) && echo \"\$out\" &&
  ! echo \"\$out\" | grep -q 'not found'"
check "libtorch resolves under /src/.venv, where the Dockerfile's build stage puts it" sh -c "
  podman run --rm --network none --entrypoint ldd $IMAGE /usr/local/bin/d2nn |
    grep -q 'libtorch_cpu.so => /src/.venv/lib/python3.[0-9]*/site-packages/torch/lib/libtorch_cpu.so'"
check "the entrypoint is d2nn: \`podman run IMAGE --version\`" sh -c "podman run --rm --network none $IMAGE --version | grep -q '^d2nn '"
check "d2nn doctor works (libtorch loads, reports no CUDA on a CPU image)" sh -c "
  out=\$(podman run --rm --network none $IMAGE doctor) && echo \"\$out\" && echo \"\$out\" | grep -q '^CUDA *no'"
check "a bad argument is one clear error and a non-zero exit" sh -c "
  ! podman run --rm --network none $IMAGE train --no-such-flag > $work/bad.log 2>&1 && grep -q 'no-such-flag' $work/bad.log"
check "as uid 1000 in /opt/d2nn, 3 steps of high_low train from the image's data and write a run directory" \
  run --cpus 1 --tmpfs /tmp:rw,mode=1777 "$IMAGE" train --config configs/high_low.toml --run-dir /tmp/r \
    --max-steps 3 --quiet --set data.train_limit=512 --set data.test_limit=256
# PID 1 ignores SIGTERM unless the process handles it: the coordinator must, even before any step.
podman rm -f d2nn-image-check-sigterm >/dev/null 2>&1 || true
podman run -d --network none --name d2nn-image-check-sigterm -e D2NN_CLUSTER_COOKIE=image-check-cookie-0123456789 \
  --tmpfs /tmp:rw,mode=1777 "$IMAGE" coordinator --config configs/high_low.toml --run-dir /tmp/r \
  --workers 2 --listen 0.0.0.0:29500 >/dev/null
for _ in $(seq 1 30); do
  podman logs d2nn-image-check-sigterm 2>&1 | grep -q 'waiting for workers' && break
  sleep 1
done
t=$SECONDS
podman stop -t 30 d2nn-image-check-sigterm >/dev/null
took=$((SECONDS - t))
code=$(podman inspect d2nn-image-check-sigterm -f '{{.State.ExitCode}}')
podman rm -f d2nn-image-check-sigterm >/dev/null
check "PID 1 (a coordinator waiting for workers) ends on SIGTERM in ${took} s (< 10 s), exit $code (1, not 137)" \
  test "$took" -lt 10 -a "$code" = 1

echo "image check: $passed passed, $failed failed"
[ "$failed" = 0 ]
