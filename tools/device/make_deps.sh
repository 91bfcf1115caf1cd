#!/usr/bin/env bash
# Here (Debian 12, apt reachable): packs what the GPU scripts build against
# into .deps.tar.xz, an ignored file a device call carries (the GPU machine
# has no package registry). tools/device/deps_env.sh unpacks it into .deps/
# there. Debian 12's packages: gRPC, Protobuf (protoc and the gRPC plugin),
# Abseil, prometheus-cpp, libspng, libjpeg-turbo, libwebp, glog (+ gflags, libunwind), OpenSSL's and
# c-ares' and RE2's CMake needs, nlohmann-json, GoogleTest, ICU. Docs, man
# pages and static libraries (but GoogleTest's and gflags', whose CMake
# files name them) are dropped, as are the ICU libraries nothing here
# links: about 76 MB unpacked, 19 MB packed.
#
#   bash tools/device/make_deps.sh        # writes .deps.tar.xz (~1 minute)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
packages=(
  libgrpc++-dev libgrpc-dev libgrpc++1.51 libgrpc29 protobuf-compiler-grpc
  libprotobuf-dev libprotobuf32 libprotoc32 protobuf-compiler
  libabsl-dev libabsl20220623
  prometheus-cpp-dev libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0
  libprometheus-cpp-push1.0 libcurl4
  libcivetweb-dev libcivetweb1 civetweb
  libspng-dev libspng0
  libturbojpeg0-dev libturbojpeg0 libwebp-dev libwebp7 libwebpmux3
  libwebpdemux2
  libc-ares-dev libc-ares2 libre2-dev libre2-9 libssl-dev libssl3 zlib1g-dev
  libupb-dev
  libgoogle-glog-dev libgoogle-glog0v6 libgflags-dev libgflags2.2
  libunwind-dev libunwind8
  nlohmann-json3-dev libgtest-dev libgmock-dev libicu-dev libicu72
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download "${packages[@]}" >/dev/null)
mkdir "$work/deps"
for deb in "$work"/*.deb; do dpkg -x "$deb" "$work/deps"; done
lib="$work/deps/usr/lib/x86_64-linux-gnu"
rm -rf "$work/deps/usr/share/doc" "$work/deps/usr/share/man" \
  "$work/deps/usr/share/lintian"
find "$work/deps" -name '*.a' ! -name 'libgtest*' ! -name 'libgmock*' \
  ! -name 'libgflags*' -delete
rm -f "$lib"/libicui18n* \
  "$lib"/libicuio* "$lib"/libicutest* "$lib"/libicutu*
tar -C "$work/deps" -cf - . | xz -T0 -6 > "$root/.deps.tar.xz.part"
mv "$root/.deps.tar.xz.part" "$root/.deps.tar.xz"
du -h "$root/.deps.tar.xz"
