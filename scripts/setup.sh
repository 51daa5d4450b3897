#!/usr/bin/env bash
# One idempotent set-up for d2nn: Python venv with PyTorch 2.11.0, the libtorch link for cargo,
# the datasets (from packages only), then a release build. Quick when everything is already there.
#
#   scripts/setup.sh            CPU set-up (slim torch, about 1.3 GB)
#   scripts/setup.sh --cuda     full CUDA-capable torch (about 4.6 GB) and a build with the `cuda` feature
#   scripts/setup.sh --no-build skip the cargo build
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TORCH_VERSION=2.11.0
CUDA=0
BUILD=1
for arg in "$@"; do
  case "$arg" in
    --cuda) CUDA=1 ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n 2,8p "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

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

# ---------------------------------------------------------------- data (packages only)
mkdir -p data/fashion-mnist data/lfw data/.download
FM=data/fashion-mnist
if [ ! -s "$FM/t10k-labels-idx1-ubyte.gz" ]; then
  say "fetching Fashion-MNIST from the Debian package dataset-fashion-mnist"
  (
    cd data/.download
    if ! apt-get download dataset-fashion-mnist >/dev/null 2>&1; then
      say "apt lists are stale; running apt-get update"
      if [ "$(id -u)" = 0 ]; then apt-get update -qq; else sudo apt-get update -qq; fi
      apt-get download dataset-fashion-mnist
    fi
    rm -rf extract && dpkg-deb -x dataset-fashion-mnist_*.deb extract
  )
  cp data/.download/extract/usr/share/datasets/fashion-mnist/*.gz "$FM/"
fi
LFW=data/lfw/lfw_subset.npy
if [ ! -s "$LFW" ]; then
  say "fetching the LFW face/non-face subset from the scikit-image==0.26.0 wheel"
  "$VPY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    -d data/.download scikit-image==0.26.0
  "$VPY" - <<'PY'
import glob, zipfile
whl = sorted(glob.glob("data/.download/scikit_image-0.26.0-*.whl"))[0]
with zipfile.ZipFile(whl) as z, open("data/lfw/lfw_subset.npy.part", "wb") as out:
    out.write(z.read("skimage/data/lfw_subset.npy"))
PY
  mv data/lfw/lfw_subset.npy.part "$LFW"
fi
rm -rf data/.download

# ---------------------------------------------------------------- build
if [ "$BUILD" = 1 ]; then
  FEATURES=()
  [ "$CUDA" = 1 ] && FEATURES=(--features cuda)
  say "building d2nn (release)"
  cargo build --release --locked -q "${FEATURES[@]}" -p d2nn-coordinator
fi
say "ready"
