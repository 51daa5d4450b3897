#!/usr/bin/env bash
# A manual check on a GPU machine (not part of scripts/test.sh): is the library set the Dockerfile's
# CUDA runtime stage copies enough for a CUDA build of d2nn? It stages that set from this machine's
# torch wheel (same rule as the Dockerfile: torch/lib without the Python binding + every nvidia/*
# library + the libnccl.so link setup.sh makes) at the binary's RUNPATH, then runs the binary with
# only those, and lists every library the process loaded, to show none came from elsewhere (except
# the driver's libcuda).
#   BIN=path/to/cuda-built/d2nn [LIB=dir/with/libfontconfig] tests/helm/cuda_staging_check.sh   (data/ here for the train step)
set -uo pipefail
BIN=${BIN:-tools/d2nn-cuda}
OUT=${OUT:-/tmp/cuda_staging_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/cuda_staging.log") 2>&1

runpath=$(readelf -d "$BIN" | sed -n 's/.*Library runpath: \[\(.*\)\]/\1/p')
want_site=$(dirname "$(dirname "$runpath")")          # .../site-packages the binary expects
site=$(python3 -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
echo "binary RUNPATH $runpath; this machine's torch: $site ($(python3 -c 'import torch; print(torch.__version__)'))"
stage=/tmp/staged-site
# A rerun on the same machine replaces its own earlier staging, nothing else.
if [ -L "$want_site" ] && [ "$(readlink "$want_site")" = "$stage" ]; then rm -f "$want_site"; rm -rf "$stage"; fi
[ -e "$want_site" ] && { echo "$want_site exists already; this check needs it free"; exit 2; }
# plotters' system libraries (fontconfig, freetype), carried in LIB when this machine lacks them.
[ -n "${LIB:-}" ] && export LD_LIBRARY_PATH=$LIB

{ find "$site/torch/lib" -maxdepth 1 -name '*.so*' ! -name libtorch_python.so
  find "$site/nvidia" \( -type f -o -type l \) -name '*.so*'; } > /tmp/libs
while read -r lib; do
  rel=${lib#"$site"/}
  mkdir -p "$stage/$(dirname "$rel")"
  cp -a "$lib" "$stage/$rel"
done < /tmp/libs
nccl=$(cd "$stage" && find nvidia -name 'libnccl.so.2' | head -1)
ln -sfn "$want_site/$nccl" "$stage/torch/lib/libnccl.so"
mkdir -p "$(dirname "$want_site")"
ln -s "$stage" "$want_site"
echo "staged $(wc -l < /tmp/libs) files, $(du -shL "$stage" | cut -f1)"

echo "== libraries in the binary's closure that need the driver's libcuda.so.1 directly"
ldd "$BIN" | awk '$2 == "=>" && $3 ~ "^/" { print $3 }' | while read -r lib; do
  readelf -d "$lib" | grep -q 'NEEDED.*\[libcuda\.so' && echo "  $lib"
done
echo "== ldd: missing"
ldd "$BIN" | grep 'not found' || echo "  none"
echo "== ldd: resolved outside the staged site-packages (system libraries are expected)"
ldd "$BIN" | awk '$2 == "=>" { print $3 }' | grep -vE "^($want_site|$stage)/" | sed 's/^/  /'

status=0
"$BIN" --version || status=1
"$BIN" doctor --require-gpu > "$OUT/doctor.log" 2>&1 || status=1
tail -15 "$OUT/doctor.log"
echo "== 20 steps of high_low on cuda:0, recording every library loaded"
LD_DEBUG=files LD_DEBUG_OUTPUT=/tmp/ld timeout 240 "$BIN" train --config configs/high_low.toml --device cuda:0 \
  --workers 1 --max-steps 20 --quiet --run-dir /tmp/staging-run > "$OUT/train.log" 2>&1 || status=1
tail -8 "$OUT/train.log"
cat /tmp/ld.* 2>/dev/null | sed -n 's/.*calling init: \(.*\)/\1/p' | sort -u > "$OUT/loaded.txt"
echo "== loaded from the staged site-packages: $(grep -cE "^($want_site|$stage)/" "$OUT/loaded.txt")"
echo "== loaded from elsewhere:"
grep -vE "^($want_site|$stage)/" "$OUT/loaded.txt" | sed 's/^/  /'
echo "status $status"
exit $status
