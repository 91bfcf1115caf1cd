#!/usr/bin/env bash
# On the GPU machine: builds ldmbench alone (service and tests off) against
# the machine's PyTorch and prints what a fuller guided UNet call costs per
# image on the GPU (`ldmbench --batches`): the economics behind step-level
# batching. Log in $OUT/log. Needs .deps/ as ldm_gpu_bench.sh says.
source tools/device/deps_env.sh
build=/tmp/ldm-build
configure_ldm "$build" -DLDMSERVE_BUILD_TESTS=OFF
cmake --build "$build" -j16 --target ldmbench 2>&1 | grep -E "error|FAILED" | head
bench="$build/bench/ldmbench"
shapes=models/shapes-txt2img/config.json
"$bench" --config "$shapes" --device cuda --repeats 20 --batches 1,2,4,8,16,32
"$bench" --config "$shapes" --device cuda --repeats 20 --batches 1,8,32 \
  --batch-invariant 1
"$bench" --config models/configs/sd-v1.json --sizes 512 --device cuda \
  --dtype f16 --repeats 5 --batches 1,2,4,8
