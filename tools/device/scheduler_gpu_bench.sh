#!/usr/bin/env bash
# On the GPU machine: builds the runtime (scheduler and workers; no gRPC),
# its tests and schedbench against the machine's PyTorch with the service
# off, runs the tests that use the GPU (a CUDA worker's results against the
# job run alone, the caching allocator's memory figures) and the whole
# runtime test, then schedbench's three batching modes on one CUDA worker.
# Log in $OUT/log.
#
# Needs .deps/ as tools/device/ldm_gpu_bench.sh says, plus glog's packages
# unpacked the same way: libgoogle-glog-dev, libgoogle-glog0v6,
# libgflags-dev, libgflags2.2, libunwind-dev, libunwind8 (drop glog's and
# libunwind's static libraries; gflags' CMake files need theirs).
#
#   PHASE=build: configure and build only (to overlap another script);
#   PHASE=run: run what a PHASE=build left; default both. JOBS: build jobs
#   (default 16). DURATION: seconds per mode (default 15).
source tools/device/deps_env.sh
build=/tmp/runtime-build
phase=${PHASE:-all}
if [ "$phase" != run ]; then
  configure_ldm "$build" -DLDMSERVE_BUILD_RUNTIME=ON
  cmake --build "$build" -j"${JOBS:-16}" \
    --target schedbench runtime_test ldm_test 2>&1 |
    grep -E "error|FAILED" | head -20
  echo "runtime build done"
fi
[ "$phase" = build ] && exit 0
"$build/tests/ldm_test" --gtest_filter='DeviceMemory*' 2>&1 |
  grep -E "^\[ *(OK|FAILED|SKIPPED) \]|Failure|Expected|Which"
"$build/tests/runtime_test" 2>&1 |
  grep -E "^\[  (PASSED|SKIPPED|FAILED) |Failure|Cuda" | head -30
bench="$build/bench/schedbench"
duration=${DURATION:-15}
# The mix (10/25/50 steps) at the shipped model's native size, f32:
# 16 clients on a batch of up to 16 images, then 32 on 32.
for clients in 16 32; do
  "$bench" --device cuda:0 --threads 4 --duration "$duration" \
    --concurrency "$clients" --max-batch "$clients" --steps 10,25,50
done
