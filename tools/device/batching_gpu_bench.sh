#!/usr/bin/env bash
# On the GPU machine: builds ldmbench alone (service and tests off) against
# the machine's PyTorch and prints what a fuller guided UNet call costs per
# image on the GPU (`ldmbench --batches`): the economics behind step-level
# batching. Log in $OUT/log. Needs .deps/ as ldm_gpu_bench.sh says.
set -uo pipefail
root=$(pwd)
out=${OUT:-/tmp}
exec > >(tee "$out/log") 2>&1
source "$root/tools/device/deps_env.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
build=/tmp/ldm-build
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DLDMSERVE_BUILD_SERVICE=OFF -DLDMSERVE_BUILD_TESTS=OFF \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$root/.deps/usr" \
  -Dnlohmann_json_DIR="$root/.deps/usr/share/cmake/nlohmann_json" \
  -DICU_ROOT="$root/.deps/usr" 2>&1 | grep -iE "error" | head
cmake --build "$build" -j16 --target ldmbench 2>&1 | grep -E "error|FAILED" | head
bench="$build/bench/ldmbench"
shapes=models/shapes-txt2img/config.json
"$bench" --config "$shapes" --device cuda --repeats 20 --batches 1,2,4,8,16,32
"$bench" --config "$shapes" --device cuda --repeats 20 --batches 1,8,32 \
  --batch-invariant 1
"$bench" --config models/configs/sd-v1.json --sizes 512 --device cuda \
  --dtype f16 --repeats 5 --batches 1,2,4,8
