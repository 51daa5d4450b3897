# syntax=docker/dockerfile:1
# The d2nn image: one image for the coordinator and the workers (helm/d2nn, docs/deploy.md).
#
#   docker build -t d2nn:0.1.0 .                                  # CPU: slim torch, about 0.6 GB of libraries
#   docker build --build-arg FLAVOR=cuda -t d2nn:0.1.0-cuda .     # CUDA torch + NCCL, several GB
#   scripts/image_check.sh                                        # podman, from a host build (no registry)
#
# The build stage runs the project's own scripts/setup.sh (venv with torch 2.11.0, release build, data
# from packages). The runtime stage gets only the binary, the torch/CUDA libraries it loads, the data
# and the configs, and runs as user 1000.
ARG FLAVOR=cpu
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
# build: compile in the build stage (the default); prebuilt: see the prebuilt stage below.
ARG STAGE=build

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
# Stage the runtime files under /stage at their final absolute paths (which libraries, and why: the script).
RUN scripts/stage_runtime.sh "$FLAVOR" /stage

# ------------------------------------------------------------------------------------- prebuilt (optional)
# STAGE=prebuilt takes the staged tree from the build context's stage/ instead of building here:
# scripts/image_check.sh stages a binary built by scripts/setup.sh on the host with
# `scripts/stage_runtime.sh cpu CONTEXT/stage --relocate /src/.venv` (the same files at the same paths).
# Builders skip the stage a build does not use (BuildKit, buildah).
FROM scratch AS prebuilt
COPY stage/ /stage/

FROM ${STAGE} AS staged

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
COPY --from=staged /stage/ /
# Fail the build here, not in a cluster, if a library the loader needs is missing.
RUN if ldd /usr/local/bin/d2nn | grep 'not found'; then echo "missing libraries (above)" >&2; exit 1; fi \
 && d2nn --version
ENV D2NN_DATA_DIR=/opt/d2nn/data
WORKDIR /opt/d2nn
USER 1000:1000
ENTRYPOINT ["d2nn"]
CMD ["--help"]
