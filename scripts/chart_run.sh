#!/usr/bin/env bash
# The Helm chart run for real (issue #24): `helm template` of helm/d2nn with the values in
# tests/helm/values/podman-run.yaml, the Jobs' pod templates turned into Pods (tests/helm/kube_pods.py),
# and one coordinator and two workers started with `podman kube play` on one podman network. Three runs,
# one PASS/FAIL line per assertion; exits 1 if any fails:
#   1. train   the job trains to the end; summary.json, checkpoints and the model are on the run-dir
#              volume, written by uid 1000; RANK and MASTER_ADDR reached the processes.
#   2. lose    `podman kill` (SIGKILL) one worker mid-run: the container restarts in its pod (restartPolicy
#              OnFailure, as the kubelet does) and rejoins; then `podman stop` (SIGTERM) the other: it
#              leaves at once with 143 and the Job's replacement pod joins; the run re-forms each time and
#              finishes, every example committed once per epoch. The run config comes from the ConfigMap.
#   3. stop    SIGTERM to the coordinator while it waits for workers, then mid-run: it exits at once and
#              non-zero (the Job restarts it); restarted, it resumes from the checkpoint and finishes with 0.
#
#   scripts/image_check.sh && scripts/chart_run.sh [train|lose|stop ...]    (as root: rootful podman)
#   KEEP=1 scripts/chart_run.sh lose                                          keep what the last run left
#
# Needs the image (IMAGE, default localhost/d2nn:0.1.0, from scripts/image_check.sh), helm (tools/helm/helm,
# fetched by scripts/helm_check.sh; or HELM=...), python3-yaml, and podman as scripts/image_check.sh says:
# `apt-get install podman runc` (4.3.1; netavark for the network) with scripts/podman/containers.conf
# (runc, cgroupfs, no default ulimits), which this script sets as CONTAINERS_CONF itself. What stands in for a cluster:
# the Secret is a directory of files with the pods' fsGroup as their group (kube_pods.py); the claim is a
# podman volume prepared as a kubelet applies fsGroup (root:1000, setgid, group-writable); the headless
# Service is a hostAliases entry pointing MASTER_ADDR at the coordinator pod's fixed IP.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-localhost/d2nn:0.1.0}
HELM=${HELM:-tools/helm/helm}
VALUES=tests/helm/values/podman-run.yaml
NET=d2nn-chart SUBNET=10.89.24.0/24 COORD_IP=10.89.24.10
# --max-steps of runs 2 and 3 (run 1: the values' run.maxSteps). Each must be within the epochs the values
# give (train.epochs x train_limit / batch_size), or the run ends before it: tests/helm/check_kube_pods.py.
STEPS_LOSE=800 STEPS_STOP=200
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/scripts/podman/containers.conf}
die() { echo "chart_run.sh: $*" >&2; exit 2; }
say() { printf '\033[1m[chart-run]\033[0m %s\n' "$*"; }

runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(train lose stop)
for r in "${runs[@]}"; do case "$r" in train|lose|stop) ;; *) die "unknown run '$r' (train, lose or stop)" ;; esac; done
[ "$(id -u)" = 0 ] || die "run as root (rootful podman, as the host's facts in docs/deploy.md)"
for tool in podman runc; do command -v $tool >/dev/null || die "$tool is missing (apt-get install podman runc)"; done
[ -r "$CONTAINERS_CONF" ] || die "CONTAINERS_CONF=$CONTAINERS_CONF is not a readable file"
[ -x "$HELM" ] || die "$HELM is missing: run scripts/helm_check.sh (it fetches helm into tools/) or set HELM"
python3 -c 'import yaml' 2>/dev/null || die "python3-yaml is missing (apt-get install python3-yaml)"
podman image exists "$IMAGE" || die "image $IMAGE is missing: run scripts/image_check.sh first"

work=$(mktemp -d /tmp/d2nn-chart-run.XXXXXX)
passed=0 failed=0
check() { # check NAME COMMAND...: PASS if the command succeeds
  local name=$1; shift
  if "$@" > "$work/check.log" 2>&1; then printf 'PASS  %s\n' "$name"; passed=$((passed + 1))
  else printf 'FAIL  %s\n' "$name"; sed 's/^/      /' "$work/check.log" | tail -20; failed=$((failed + 1)); fi
}
pods_json=$work/pods.json
field() { python3 -c "import json,sys; d=json.load(open('$pods_json')); print(eval(sys.argv[1]))" "$1"; }

# Everything a run leaves behind: its pods, the claim's volume, the network (at the start too: a run that
# was interrupted must not leak into the next).
teardown() {
  local p
  for p in $(podman pod ps -q --filter label=app.kubernetes.io/instance=rel 2>/dev/null); do podman pod rm -f "$p" >/dev/null 2>&1; done
  # The claim's volume, and the one `kube play --configmap` fills from the ConfigMap (run 2): left behind,
  # it would outlive the run and hold an old config.
  podman volume rm -f rel-d2nn-runs rel-d2nn-config >/dev/null 2>&1 || true
}
# KEEP=1 leaves the last run's pods, volume and rendering for a look (podman logs, podman volume inspect).
cleanup() {
  if [ "${KEEP:-0}" = 1 ]; then say "kept the pods, the volume rel-d2nn-runs and $work"; return; fi
  teardown; podman network rm -f "$NET" >/dev/null 2>&1 || true; rm -rf "$work"
}
trap cleanup EXIT
teardown
podman network exists "$NET" || podman network create --subnet "$SUBNET" "$NET" >/dev/null

# render NAME [helm args...]: template and convert into $work/NAME/; prepares a fresh claim volume.
render() {
  local name=$1; shift
  "$HELM" template rel helm/d2nn -f "$VALUES" --set image.repository="${IMAGE%:*}",image.tag="${IMAGE##*:}" \
    "$@" > "$work/$name.yaml"
  python3 tests/helm/kube_pods.py "$work/$name.yaml" "$work/$name" --coordinator-ip "$COORD_IP" > "$pods_json"
  teardown
  # A fresh claim as the kubelet hands it to pods with fsGroup 1000: root-owned, group 1000, setgid.
  podman volume create rel-d2nn-runs >/dev/null
  podman run --rm --user 0 --network none -v rel-d2nn-runs:/v --entrypoint sh "$IMAGE" \
    -c 'chown 0:1000 /v && chmod 2775 /v'
  RUNS=$(podman volume inspect rel-d2nn-runs -f '{{.Mountpoint}}')/rel
  CM=()
  if [ "$(field "d.get('configmap_file') or ''")" != "" ]; then CM=(--configmap "$(field "d['configmap_file']")"); fi
}
# play POD: start one pod of the rendering (the coordinator at its fixed IP), niced for the host's others.
play() {
  local pod=$1 ip=()
  [ "$pod" = "$(field "d['coordinator']")" ] && ip=(--ip "$COORD_IP")
  if ! nice -n 19 podman kube play --network "$NET" "${ip[@]}" "${CM[@]}" "$(field "d['pods']['$pod']['file']")" \
    > "$work/play.log" 2>&1; then
    cat "$work/play.log" >&2
    die "podman kube play of $pod failed"
  fi
}
ctr() { field "d['pods']['$1']['container']"; }
state() { podman inspect "$(ctr "$1")" -f "{{$2}}"; }
logs() { podman logs "$(ctr "$1")" 2>&1; }
last_step() { tail -n 1 "$RUNS/metrics.jsonl" 2>/dev/null | sed -n 's/^{"step":\([0-9]*\),.*/\1/p'; }
# wait_for SECONDS WHAT COMMAND...: polls the command until it succeeds; dies (FAIL) after SECONDS.
wait_for() {
  local limit=$1 what=$2 t=0; shift 2
  until "$@" >/dev/null 2>&1; do
    sleep 1; t=$((t + 1))
    if [ "$t" -ge "$limit" ]; then printf 'FAIL  waiting %s s for %s\n' "$limit" "$what"; failed=$((failed + 1)); return 1; fi
  done
}
step_at_least() { local s; s=$(last_step); [ -n "$s" ] && [ "$s" -ge "$1" ]; }
exited() { [ "$(state "$1" .State.Status)" = exited ]; }
exited_with() { exited "$1" && [ "$(state "$1" .State.ExitCode)" = "$2" ]; }
count() { logs "$1" | grep -c -- "$2" || true; }
coord() { field "d['coordinator']"; }
workers() { field "' '.join(d['workers'])"; }

# The run directory after a finished run: what Kubernetes users fetch from the claim.
check_outputs() {
  local steps=$1 workers=$2
  check "summary.json: $steps steps, $workers workers at the end" python3 -c "
import json; s = json.load(open('$RUNS/summary.json'))
assert (s['steps'], s['workers']) == ($steps, $workers), (s['steps'], s['workers'])"
  check "every epoch committed every example exactly once (summary.json coverage)" python3 -c "
import json; c = json.load(open('$RUNS/summary.json'))['coverage']
bad = [e for e in c if e['examples_committed'] != e['examples_in_epoch'] or e['duplicates']]
assert c and not bad, bad; print(c)"
  check "checkpoints/LATEST names step $steps, with the model and optimizer tensors" sh -c "
    d=\$(cat '$RUNS/checkpoints/LATEST') && echo \$d | grep -q 'step-0*$steps\$' &&
    test -s '$RUNS/checkpoints/'\$d/model.safetensors && test -s '$RUNS/checkpoints/'\$d/optimizer.safetensors"
  check "model.safetensors, metrics.jsonl, config.toml, curves.png in the run directory" sh -c "
    for f in model.safetensors metrics.jsonl config.toml curves.png; do test -s '$RUNS/'\$f || { echo no \$f; exit 1; }; done"
  check "every file on the claim written by uid 1000 (runAsUser), group 1000" sh -c "
    ! find '$RUNS' \\( ! -uid 1000 -o ! -gid 1000 \\) -print | grep ."
}

run_train() {
  say "run 1: train to the end (2 workers, the config file in the image)"
  local start=$SECONDS c w i
  render train
  c=$(coord)
  play "$c"
  for w in $(workers); do play "$w"; done
  wait_for 300 "the coordinator to exit" exited "$c" || return 0
  say "finished in $((SECONDS - start)) s"
  check "the coordinator exits 0 (its Job completes)" exited_with "$c" 0
  for w in $(workers); do check "$w exits 0 (its index of the worker Job completes)" exited_with "$w" 0; done
  i=0
  for w in $(workers); do
    check "$w got RANK $i from its completion index and was assigned rank $i" sh -c "podman logs $(ctr "$w") 2>&1 | grep 'assigned generation=1' | grep -q 'rank=$i '"
    i=$((i + 1))
  done
  check "the workers reached MASTER_ADDR $(field "d['master_addr']") (no --join given)" sh -c "
    [ \$(podman logs $(ctr "$c") 2>&1 | grep -c 'worker node connected') -ge 2 ]"
  check_outputs "$(sed -n 's/^  maxSteps: //p' "$VALUES")" 2
}

run_lose() {
  say "run 2: SIGKILL one worker, SIGTERM the other (run config from the ConfigMap)"
  local start=$SECONDS c w0 w1 t0 steps=$STEPS_LOSE
  render lose --set-file run.config=configs/high_low.toml --set run.maxSteps=$steps
  c=$(coord); read -r w0 w1 <<< "$(workers)"
  check "the coordinator reads its config from the ConfigMap mount" sh -c "
    grep -q -- '--config=/etc/d2nn/config/config.toml' $work/lose/coordinator.yaml"
  play "$c"; play "$w0"; play "$w1"
  wait_for 240 "step 40" step_at_least 40 || return 0
  podman kill "$(ctr "$w0")" >/dev/null
  say "killed $w0 (SIGKILL) at step $(last_step)"
  wait_for 30 "$w0 to exit" exited "$w0" || return 0
  check "$w0 exited 137 (SIGKILL)" exited_with "$w0" 137
  # `podman kill` counts as a user's stop, so podman's on-failure policy leaves it; the kubelet restarts a
  # failed container of an OnFailure pod in place (same pod, same IP), after a back-off of 10 s. Here after
  # 1 s: one worker alone runs about 50 steps/s on this host, and it must rejoin before the run ends.
  sleep 1
  podman start "$(ctr "$w0")" >/dev/null
  wait_for 120 "$w0 to be restarted in its pod and taken in again" sh -c "
    [ \$(podman logs $(ctr "$c") 2>&1 | grep -c 'a worker joined; re-forming') -ge 1 ]" || return 0
  check "the coordinator dropped it and re-formed without it" sh -c "podman logs $(ctr "$c") 2>&1 | grep -q 're-forming the cluster'"
  local s=$(( $(last_step) + 20 ))
  wait_for 120 "step $s" step_at_least "$s" || return 0
  t0=$SECONDS
  podman stop -t "$(field "d['grace_seconds']")" "$(ctr "$w1")" >/dev/null
  say "stopped $w1 (SIGTERM) at step $(last_step) in $((SECONDS - t0)) s"
  check "$w1 left on SIGTERM with 143 (not finished: the Job replaces it)" exited_with "$w1" 143
  check "$w1 stopped well within its grace period ($((SECONDS - t0)) s < 20 s)" test $((SECONDS - t0)) -lt 20
  check "$w1 said why it left" sh -c "podman logs $(ctr "$w1") 2>&1 | grep -q 'left the run (SIGTERM)'"
  # The worker Job's replacement pod for index 1 (same name: the old one is gone).
  podman pod rm -f "$w1" >/dev/null 2>&1
  play "$w1"
  wait_for 300 "the coordinator to exit" exited "$c" || return 0
  say "finished in $((SECONDS - start)) s"
  check "the coordinator exits 0 (its Job completes)" exited_with "$c" 0
  check "the cluster re-formed after each loss and each join (4 times)" sh -c "
    [ \$(podman logs $(ctr "$c") 2>&1 | grep -c 'cluster re-formed') -ge 4 ]"
  check "$w0 (restarted) exits 0" exited_with "$w0" 0
  check "$w1 (replacement) exits 0" exited_with "$w1" 0
  check_outputs "$steps" 2
}

run_stop() {
  say "run 3: SIGTERM to the coordinator, waiting for workers and then mid-run"
  local start=$SECONDS c t0 grace cp
  render stop --set run.maxSteps=$STEPS_STOP
  c=$(coord); grace=$(field "d['grace_seconds']")
  play "$c"
  wait_for 60 "the coordinator to listen" sh -c "podman logs $(ctr "$c") 2>&1 | grep -q 'waiting for workers'" || return 0
  t0=$SECONDS
  podman stop -t "$grace" "$(ctr "$c")" >/dev/null
  check "waiting for workers, it stops on SIGTERM within 10 s, not at the ${grace} s grace period ($((SECONDS - t0)) s)" \
    test $((SECONDS - t0)) -lt 10
  check "... and exits non-zero, not 137 (the Job restarts it; nothing to checkpoint yet)" sh -c "
    [ \"\$(podman inspect $(ctr "$c") -f '{{.State.ExitCode}}')\" = 1 ]"
  podman start "$(ctr "$c")" >/dev/null   # what the kubelet does for OnFailure
  for w in $(workers); do play "$w"; done
  wait_for 240 "step 60" step_at_least 60 || return 0
  t0=$SECONDS
  podman stop -t "$grace" "$(ctr "$c")" >/dev/null
  cp=$(cat "$RUNS/checkpoints/LATEST" 2>/dev/null || true)
  say "stopped the coordinator (SIGTERM) in $((SECONDS - t0)) s; LATEST $cp"
  check "mid-run, it checkpoints and exits 1 on SIGTERM (not finished: the Job restarts it)" exited_with "$c" 1
  check "... within 20 s of SIGTERM" test $((SECONDS - t0)) -lt 20
  check "... and said so" sh -c "podman logs $(ctr "$c") 2>&1 | grep -q 'stopped before the run finished'"
  podman start "$(ctr "$c")" >/dev/null
  wait_for 300 "the restarted coordinator to exit" exited "$c" || return 0
  say "finished in $((SECONDS - start)) s"
  check "restarted (--auto-resume), it resumes from $cp" sh -c "podman logs $(ctr "$c") 2>&1 | grep -q 'resum'"
  check "the coordinator exits 0 at the end (its Job completes)" exited_with "$c" 0
  for w in $(workers); do check "$w exits 0 at the end" exited_with "$w" 0; done
  check_outputs "$STEPS_STOP" 2
}

say "image $IMAGE, $(podman --version), $("$HELM" version --short), runtime $(podman info -f '{{.Host.OCIRuntime.Name}}'), cgroups $(podman info -f '{{.Host.CgroupManager}}')"
for r in "${runs[@]}"; do "run_$r"; done
echo "chart run: $passed passed, $failed failed"
[ "$failed" = 0 ]
