# Sourced by the scripts here, on a lent machine that has PyTorch 2.11 but no Rust toolchain:
# the carried binaries' RUNPATH names the build machine's venv (RUNPATH_SITE), which is pointed at
# this machine's site-packages; libnccl.so is linked beside libtorch, as scripts/setup.sh --cuda
# does (where the machine has NCCL); plotters' system libraries come from the folder $1 (carried
# from the build machine) when the image lacks them. Sets SITE and NCCL.
RUNPATH_SITE=${RUNPATH_SITE:-/work/main/.venv/lib/python3.11/site-packages}
SITE=$(python3 -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
mkdir -p "$(dirname "$RUNPATH_SITE")"
[ -e "$RUNPATH_SITE" ] || ln -sfn "$SITE" "$RUNPATH_SITE"
NCCL=$(find "$SITE/nvidia" -name 'libnccl.so.2' 2>/dev/null | head -1)
[ -n "$NCCL" ] && ln -sfn "$NCCL" "$SITE/torch/lib/libnccl.so"
ldconfig -p | grep -q libfontconfig.so.1 || export LD_LIBRARY_PATH=$PWD/${1:-.dev/lib}
