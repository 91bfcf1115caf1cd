# Two images from one CMake tree, each built in a stage of its own and run
# from a slim stage with the run-time libraries only:
#
#   docker build --target cpu -t ldmserve:cpu .   Debian's LibTorch 1.13
#   docker build --target gpu -t ldmserve:gpu .   a CUDA LibTorch (PyTorch 2.x)
#
# Both run as uid 10001 with the shipped models baked in, listen on 50051
# (gRPC) and 9464 (metrics), and take every flag as an LDMSERVE_* variable
# too (docs/deploy.md). `docker build` with no --target builds the last
# stage, cpu.

# ---------------------------------------------------------------- gpu build
FROM debian:12 AS build-gpu
# PyTorch wheels from 2.7 on are built with the C++11 string ABI, as Debian's
# gRPC, Abseil and glog are: one binary can link both. The CUDA toolkit
# (not run here: LibTorch's CMake package looks for it) matches the wheel's.
ARG TORCH_VERSION=2.7.1
ARG TORCH_CUDA=cu126
ARG CUDA_PACKAGE_VERSION=12-6
WORKDIR /src
COPY deploy/install-deps.sh deploy/install-deps.sh
COPY tools/buf/package.json tools/buf/package-lock.json tools/buf/
# Debian's LibTorch goes: its headers in /usr/include would shadow the wheel's.
RUN bash deploy/install-deps.sh \
 && apt-get remove -y -qq libtorch-dev libtorch1.13 \
 && apt-get install -y -qq --no-install-recommends python3-venv wget \
 && wget -q https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb \
 && dpkg -i cuda-keyring_1.1-1_all.deb && rm cuda-keyring_1.1-1_all.deb \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
      cuda-toolkit-${CUDA_PACKAGE_VERSION} \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/torch \
 && /opt/torch/bin/pip install --no-cache-dir "torch==${TORCH_VERSION}" \
      --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}"
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DLDMSERVE_BUILD_TESTS=OFF \
      -DCMAKE_PREFIX_PATH="$(/opt/torch/bin/python -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
      -DCUDAToolkit_ROOT=/usr/local/cuda -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc \
 && cmake --build /build -j"$(nproc)" --target ldmserve ldmctl
# What ldmserve loads at run time: LibTorch and the CUDA libraries that the
# wheel takes from its nvidia-* packages (the driver comes from the host,
# through the NVIDIA container toolkit).
RUN mkdir -p /opt/ldmserve/lib \
 && site=$(/opt/torch/bin/python -c 'import site; print(site.getsitepackages()[0])') \
 && cp -a "$site"/torch/lib/*.so* /opt/ldmserve/lib/ \
 && for lib in "$site"/nvidia/*/lib; do cp -a "$lib"/*.so* /opt/ldmserve/lib/; done

# ---------------------------------------------------------------- runtime
# What both images share; the cpu and gpu stages add their libraries and
# binaries and switch to the user.
FROM debian:12-slim AS runtime
RUN useradd --system --uid 10001 ldmserve
COPY models /opt/ldmserve/models
EXPOSE 50051 9464
# Docker's own check (Kubernetes uses the gRPC probes instead). The start
# period allows for loading a large model.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
  CMD ["/usr/local/bin/ldmctl", "--addr=127.0.0.1:50051", "health"]
# Exec form: SIGTERM reaches ldmserve, which drains and exits 0.
ENTRYPOINT ["/usr/local/bin/ldmserve", "--listen=0.0.0.0:50051", \
            "--metrics-listen=0.0.0.0:9464", \
            "--models=/opt/ldmserve/models/registry.json"]

# ---------------------------------------------------------------- gpu
FROM runtime AS gpu
COPY deploy/install-deps.sh /tmp/install-deps.sh
RUN bash /tmp/install-deps.sh --runtime-gpu \
 && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh
COPY --from=build-gpu /opt/ldmserve/lib /opt/ldmserve/lib
COPY --from=build-gpu /build/server/ldmserve /build/client/ldmctl /usr/local/bin/
ENV LD_LIBRARY_PATH=/opt/ldmserve/lib \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LDMSERVE_DEVICES=cuda:0
USER 10001

# ---------------------------------------------------------------- cpu build
FROM debian:12 AS build
WORKDIR /src
COPY deploy/install-deps.sh deploy/install-deps.sh
COPY tools/buf/package.json tools/buf/package-lock.json tools/buf/
RUN bash deploy/install-deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DLDMSERVE_BUILD_TESTS=OFF \
 && cmake --build /build -j"$(nproc)" --target ldmserve ldmctl

# ---------------------------------------------------------------- cpu
FROM runtime AS cpu
COPY deploy/install-deps.sh /tmp/install-deps.sh
RUN bash /tmp/install-deps.sh --runtime && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh
COPY --from=build /build/server/ldmserve /build/client/ldmctl /usr/local/bin/
USER 10001
