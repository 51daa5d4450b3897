#!/usr/bin/env bash
# Stages what the d2nn runtime image holds, at its final absolute paths under DEST: the binary
# (/usr/local/bin/d2nn), the data and configs (/opt/d2nn), and the torch/CUDA libraries the binary loads,
# at the path its RUNPATH names. The Dockerfile's build stage runs it after scripts/setup.sh; the
# prebuilt path (scripts/image_check.sh) runs it on the host, with --relocate.
#
#   scripts/stage_runtime.sh cpu|cuda DEST [--relocate VENV]
#   D2NN_BIN=/elsewhere/target/release/d2nn scripts/stage_runtime.sh ...   (default target/release/d2nn)
#
#  - cpu: exactly the venv libraries the loader resolves for the binary (libtorch_cpu, libc10, libgomp,
#    and the two CUDA runtime libraries libtorch_cpu links against).
#  - cuda: torch/lib (without the Python binding) and every nvidia/* wheel library, since libtorch and
#    cuDNN dlopen parts of them at run time that ldd cannot see; the libnccl.so link setup.sh makes
#    for d2nn's NCCL loader comes along.
#  - --relocate VENV (cpu only): stage the venv's libraries under VENV instead of where they are on this
#    host, and point the staged binary's RUNPATH there (patchelf), so that a binary built on the host
#    yields the same image layout as one built in the image (VENV = /src/.venv there).
# Not `cp -a --parents`: bookworm's coreutils 9.1 fails on it ("No such file or directory").
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "stage_runtime.sh: $*" >&2; exit 2; }

[ $# = 2 ] || [ $# = 4 ] || die "usage: scripts/stage_runtime.sh cpu|cuda DEST [--relocate VENV]"
FLAVOR=$1 DEST=$2 RELOCATE=
case "$FLAVOR" in cpu|cuda) ;; *) die "FLAVOR must be cpu or cuda, not '$FLAVOR'" ;; esac
if [ $# = 4 ]; then
  [ "$3" = --relocate ] || die "unknown argument '$3' (want --relocate VENV)"
  [ "$FLAVOR" = cpu ] || die "--relocate is for the cpu flavor only"
  case "$4" in /*) RELOCATE=${4%/} ;; *) die "--relocate needs an absolute path, not '$4'" ;; esac
fi
BIN=${D2NN_BIN:-target/release/d2nn}
[ -x "$BIN" ] || die "$BIN is missing: build it first (scripts/setup.sh)"
[ -d data/fashion-mnist ] || die "data/ has no datasets: run scripts/setup.sh (d2nn data fetch)"

# The venv the binary's RUNPATH points into (.../VENV/lib/python3.X/site-packages/torch/lib).
RUNPATH=$(readelf -d "$BIN" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]$/\1/p')
VENV=$(printf '%s' "$RUNPATH" | sed -n 's#^\(/.*\)/lib/python3[^/]*/site-packages/torch/lib$#\1#p')
[ -n "$VENV" ] || die "$BIN has RUNPATH '$RUNPATH', not a venv's torch/lib"
VENV_REAL=$(readlink -f "$VENV")

mkdir -p "$DEST/usr/local/bin" "$DEST/opt/d2nn/data"
cp "$BIN" "$DEST/usr/local/bin/d2nn"
cp -r configs "$DEST/opt/d2nn/"
cp -r data/. "$DEST/opt/d2nn/data/"
rm -rf "$DEST/opt/d2nn/data/.download"

libs=$(mktemp)
trap 'rm -f "$libs"' EXIT
if [ "$FLAVOR" = cuda ]; then
  SITE=$(readlink -f .venv/libtorch/..)
  find "$SITE/torch/lib" -maxdepth 1 -name '*.so*' ! -name libtorch_python.so > "$libs"
  find "$SITE/nvidia" \( -type f -o -type l \) -name '*.so*' >> "$libs"
else
  ldd "$BIN" | awk -v v="$VENV/" '$2 == "=>" && index($3, v) == 1 { print $3 }' > "$libs"
  [ -s "$libs" ] || die "ldd $BIN resolves no library under $VENV (is the venv there?)"
fi
# Where a file of this host goes in the image: the same path, or under RELOCATE instead of the venv.
target() {
  local p=$1
  if [ -n "$RELOCATE" ]; then
    case "$p" in
      "$VENV"/*) p=$RELOCATE${p#"$VENV"} ;;
      "$VENV_REAL"/*) p=$RELOCATE${p#"$VENV_REAL"} ;;
      *) die "$p is outside the venv $VENV" ;;
    esac
  fi
  printf '%s' "$DEST$p"
}
stage() { local t; t=$(target "$1"); mkdir -p "$(dirname "$t")" && cp -a "$1" "$t"; }
while read -r lib; do
  lib=$(realpath -s "$lib")
  stage "$lib"
  if [ -L "$lib" ]; then stage "$(readlink -f "$lib")"; fi
done < "$libs"
if [ -n "$RELOCATE" ]; then
  command -v patchelf >/dev/null || die "--relocate needs patchelf (apt-get install patchelf)"
  patchelf --set-rpath "$RELOCATE${RUNPATH#"$VENV"}" "$DEST/usr/local/bin/d2nn"
fi
readelf -d "$DEST/usr/local/bin/d2nn" | grep -i runpath
du -sh "$DEST"
