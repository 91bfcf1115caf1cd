#!/usr/bin/env bash
# The one list of Debian 12 packages ldmserve needs. Used by the Makefile,
# .ci/run and the Dockerfile. Idempotent; prints nothing when all is there.
#
#   deploy/install-deps.sh            build + test dependencies (default)
#   deploy/install-deps.sh --runtime  only what the binaries need to run
#   deploy/install-deps.sh --runtime-gpu  the same, less Debian's LibTorch
#                                     (the gpu image brings a CUDA LibTorch)
set -euo pipefail

# Run-time libraries. libopenblas0-openmp: without it LibTorch falls back to
# the reference BLAS and matrix products run ~20x slower.
RUNTIME_PACKAGES=(
  libtorch1.13
  libopenblas0-openmp
  libgrpc++1.51
  libgrpc29
  libprotobuf32
  libabsl20220623
  libprometheus-cpp-core1.0
  libspng0
  libturbojpeg0
  libwebp7
  libwebpmux3
  libgoogle-glog0v6
  libicu72
  ca-certificates
)

BUILD_PACKAGES=(
  "${RUNTIME_PACKAGES[@]}"
  build-essential
  cmake
  pkg-config
  libtorch-dev
  libgrpc++-dev
  libprotobuf-dev
  protobuf-compiler
  protobuf-compiler-grpc
  libabsl-dev
  prometheus-cpp-dev
  libspng-dev
  libturbojpeg0-dev
  libwebp-dev
  libgoogle-glog-dev
  nlohmann-json3-dev
  libicu-dev
  libgtest-dev
  libgmock-dev
  libbenchmark-dev
  clang-format
  # clang: the thread-safety analysis (lint.thread_safety); its runtime
  # package (only recommended, so named): libFuzzer and the sanitizers.
  clang
  libclang-rt-14-dev
  python3
  openssl
  python3-grpcio
  python3-protobuf
  python3-yaml
  # python3-pil: the Python tests read the JPEG/WebP metadata with an
  # independent reader.
  python3-pil
  python3-pip
  python3-venv
  python3-setuptools
  python3-wheel
  yamllint
)

mode=build
[[ "${1:-}" == "--runtime" ]] && mode=runtime
[[ "${1:-}" == "--runtime-gpu" ]] && mode=runtime-gpu
if [[ $mode == runtime ]]; then
  packages=("${RUNTIME_PACKAGES[@]}")
elif [[ $mode == runtime-gpu ]]; then
  packages=()
  for package in "${RUNTIME_PACKAGES[@]}"; do
    [[ $package == libtorch1.13 || $package == libopenblas0-openmp ]] ||
      packages+=("$package")
  done
else
  packages=("${BUILD_PACKAGES[@]}")
fi

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null |
      grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
# kubectl renders the Kubernetes manifests in a test (its built-in
# kustomize). Any kubectl will do: one already installed (another package may
# own /usr/bin/kubectl) is kept, since Debian's would collide with it.
if [[ $mode == build ]] && ! command -v kubectl >/dev/null 2>&1; then
  missing+=(kubernetes-client)
fi
# npm runs buf (the proto linter) offline; any Node.js >= 18 will do.
if [[ $mode == build ]] && ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi

SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO=sudo
if ((${#missing[@]} > 0)); then
  echo "install-deps: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ $mode == build ]]; then
  root=$(cd "$(dirname "$0")/.." && pwd)
  # promtool checks the Prometheus rules and a live scrape in a test. Only
  # the binary is taken from Debian's prometheus package (a static Go
  # program): installing the package would start a Prometheus server.
  if ! command -v promtool >/dev/null 2>&1 &&
      [[ ! -x "$root/tools/prometheus/promtool" ]]; then
    echo "install-deps: unpacking promtool from Debian's prometheus" >&2
    download=$(mktemp -d)
    chmod 777 "$download" # apt's download sandbox user writes here
    if (cd "$download" && { apt-get download -qq prometheus 2>/dev/null ||
        { $SUDO apt-get update -qq && apt-get download -qq prometheus; }; } &&
        dpkg-deb -x prometheus_*.deb tree); then
      mkdir -p "$root/tools/prometheus"
      install -m 755 "$download/tree/usr/bin/promtool" "$root/tools/prometheus/promtool"
    else
      echo "install-deps: WARNING: no promtool; deploy.monitoring will be skipped" >&2
    fi
    rm -rf "$download"
  fi
  if [[ ! -x "$root/tools/buf/node_modules/.bin/buf" ]]; then
    echo "install-deps: installing buf (npm)" >&2
    # Without the npm registry the proto lint test reports itself skipped;
    # everything else still builds and runs.
    (cd "$root/tools/buf" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
      echo "install-deps: WARNING: npm could not install buf; proto.buf_lint will be skipped" >&2
  fi
fi
