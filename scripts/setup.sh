#!/usr/bin/env bash
# One idempotent set-up for d2nn: a Python venv with PyTorch 2.11.0 (libtorch for tch), a build of the
# `d2nn` binary, and the datasets (from packages only). Quick when everything is already there.
#
#   scripts/setup.sh            CPU set-up (slim torch, about 1.3 GB), release build
#   scripts/setup.sh --debug    the same with a debug build (what the tests use)
#   scripts/setup.sh --cuda     full CUDA-capable torch (about 4.6 GB) and a build with the `cuda` feature
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TORCH_VERSION=2.11.0
CUDA=0
PROFILE=release
for arg in "$@"; do
  case "$arg" in
    --cuda) CUDA=1 ;;
    --debug) PROFILE=dev ;;
    -h|--help) sed -n 2,7p "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# ---------------------------------------------------------------- system packages
# plotters (the sweep's PNG) builds against fontconfig and freetype and needs a font.
if ! pkg-config --exists fontconfig freetype2 2>/dev/null || ! fc-list 2>/dev/null | grep -q .; then
  say "installing pkg-config, fontconfig and freetype headers, and a font"
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq pkg-config libfontconfig1-dev libfreetype-dev fonts-dejavu-core >/dev/null
fi

# ---------------------------------------------------------------- Python venv with torch
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
VPY=$ROOT/.venv/bin/python
SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
have_torch() { [ -f "$SITE/torch/lib/libtorch_cpu.so" ] && grep -qx "$TORCH_VERSION" "$SITE/torch/.d2nn-version" 2>/dev/null; }
have_full_torch() { [ -d "$SITE/nvidia/cublas" ]; }
if [ "$CUDA" = 1 ] && ! have_full_torch; then
  say "installing torch==$TORCH_VERSION with CUDA libraries (about 4.6 GB)"
  "$VPY" -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION"
  echo "$TORCH_VERSION" > "$SITE/torch/.d2nn-version"
elif ! have_torch; then
  # PyPI serves only the CUDA build of torch. libtorch_cpu.so needs just two of its CUDA packages
  # (found through its RPATH), so the CPU set-up skips the other 3 GB of them.
  say "installing torch==$TORCH_VERSION (CPU libraries only, about 1.3 GB)"
  "$VPY" -m pip install -q --disable-pip-version-check --no-deps "torch==$TORCH_VERSION" \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
  echo "$TORCH_VERSION" > "$SITE/torch/.d2nn-version"
fi
# .cargo/config.toml points LIBTORCH at .venv/libtorch, whatever the venv's Python version.
ln -sfn "$SITE/torch" .venv/libtorch
# NCCL's dynamic loader looks for libnccl.so, the wheel ships only libnccl.so.2.
if [ -f "$SITE/nvidia/nccl/lib/libnccl.so.2" ]; then
  ln -sfn "$SITE/nvidia/nccl/lib/libnccl.so.2" "$SITE/torch/lib/libnccl.so"
fi

# ---------------------------------------------------------------- build, then data
FEATURES=()
[ "$CUDA" = 1 ] && FEATURES=(--features cuda)
say "building d2nn ($PROFILE)"
cargo build --profile "$PROFILE" --locked -q "${FEATURES[@]}" -p d2nn-coordinator
BIN_DIR=target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
# Datasets come from packages only (Debian's dataset-fashion-mnist, the scikit-image wheel), verified.
"$BIN_DIR/d2nn" data fetch --data-dir data --python "$VPY"
say "ready: $BIN_DIR/d2nn"
