# syntax=docker/dockerfile:1
# The d2nn image: one image for the coordinator and the workers (helm/d2nn, docs/deploy.md).
#
#   docker build -t d2nn:0.1.0 .                                  # CPU: slim torch, about 0.6 GB of libraries
#   docker build --build-arg FLAVOR=cuda -t d2nn:0.1.0-cuda .     # CUDA torch + NCCL, several GB
#
# The build stage runs the project's own scripts/setup.sh (venv with torch 2.11.0, release build, data
# from packages). The runtime stage gets only the binary, the torch/CUDA libraries it loads, the data
# and the configs, and runs as user 1000.
ARG FLAVOR=cpu
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ------------------------------------------------------------------------------------------------ build
FROM ${RUST_IMAGE} AS build
ARG FLAVOR
# setup.sh needs python3 with venv and pip; it installs the fontconfig/freetype headers itself (as root,
# no sudo). apt lists stay: `d2nn data fetch` runs `apt-get download dataset-fashion-mnist`.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends python3 python3-venv python3-pip \
      pkg-config fontconfig libfontconfig1-dev libfreetype-dev fonts-dejavu-core >/dev/null
# The binary's RUNPATH is the absolute path of the venv's torch/lib under this directory, so the runtime
# stage puts the libraries at the same path (see the staging step).
WORKDIR /src
COPY . .
RUN case "$FLAVOR" in \
      cpu) scripts/setup.sh ;; \
      cuda) scripts/setup.sh --cuda ;; \
      *) echo "FLAVOR must be cpu or cuda, not '$FLAVOR'" >&2; exit 2 ;; \
    esac
# Stage the runtime files under /stage at their final absolute paths.
#  - cpu: exactly the venv libraries the loader resolves for the binary (libtorch_cpu, libc10, libgomp,
#    and the two CUDA runtime libraries libtorch_cpu links against).
#  - cuda: torch/lib (without the Python binding) and every nvidia/* wheel library, since libtorch and
#    cuDNN dlopen parts of them at run time that ldd cannot see; the libnccl.so link setup.sh makes
#    for d2nn's NCCL loader comes along.
# Not `cp -a --parents`: bookworm's coreutils 9.1 fails on it ("No such file or directory").
RUN set -eu; \
    mkdir -p /stage/usr/local/bin /stage/opt/d2nn; \
    cp target/release/d2nn /stage/usr/local/bin/d2nn; \
    cp -r data configs /stage/opt/d2nn/; \
    rm -rf /stage/opt/d2nn/data/.download; \
    SITE=$(readlink -f .venv/libtorch/..); \
    if [ "$FLAVOR" = cuda ]; then \
      find "$SITE/torch/lib" -maxdepth 1 -name '*.so*' ! -name libtorch_python.so > /tmp/libs; \
      find "$SITE/nvidia" \( -type f -o -type l \) -name '*.so*' >> /tmp/libs; \
    else \
      ldd target/release/d2nn | awk '$2 == "=>" && $3 ~ "^/src/" { print $3 }' > /tmp/libs; \
    fi; \
    stage() { mkdir -p "/stage$(dirname "$1")" && cp -a "$1" "/stage$1"; }; \
    while read -r lib; do \
      lib=$(realpath -s "$lib"); \
      stage "$lib"; \
      if [ -L "$lib" ]; then stage "$(readlink -f "$lib")"; fi; \
    done < /tmp/libs; \
    readelf -d target/release/d2nn | grep -i runpath; \
    du -sh /stage

# ---------------------------------------------------------------------------------------------- runtime
FROM ${RUNTIME_IMAGE}
ARG FLAVOR
# The binary's system libraries (plotters needs fontconfig, freetype and a font); tar for `kubectl cp`.
# CUDA: NCCL opens libibverbs (and the Mellanox provider) for InfiniBand/RoCE; without them it uses sockets.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends libfontconfig1 libfreetype6 fonts-dejavu-core \
      libstdc++6 libgcc-s1 tar $([ "$FLAVOR" = cuda ] && echo libibverbs1 ibverbs-providers) >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin d2nn
COPY --from=build /stage/ /
# Fail the build here, not in a cluster, if a library the loader needs is missing.
RUN if ldd /usr/local/bin/d2nn | grep 'not found'; then echo "missing libraries (above)" >&2; exit 1; fi \
 && d2nn --version
ENV D2NN_DATA_DIR=/opt/d2nn/data
WORKDIR /opt/d2nn
USER 1000:1000
ENTRYPOINT ["d2nn"]
CMD ["--help"]
