#!/usr/bin/env bash
# Builds server/ldm (service off) against the GPU machine's PyTorch, runs the
# model tests there, and times the shipped model on CPU and CUDA.
#
# The GPU machine has no package registry: Abseil, nlohmann-json and
# GoogleTest travel in .deps/ (Debian packages unpacked with dpkg -x), the
# golden sets in .golden/. Results go to $OUT/log.
set -uo pipefail
root=$(pwd)
out=${OUT:-/tmp}
exec > >(tee "$out/log") 2>&1
# Transitive Abseil libraries are found through the loader path, not rpath.
export LD_LIBRARY_PATH="$root/.deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
build=/tmp/ldm-build
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DLDMSERVE_BUILD_SERVICE=OFF \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$root/.deps/usr" \
  -Dnlohmann_json_DIR="$root/.deps/usr/share/cmake/nlohmann_json" \
  2>&1 | grep -vE "^-- (Looking|Performing|Found|Check)" | tail -15
cmake --build "$build" -j16 2>&1 | grep -E "error|warning: .*deprecated|Linking" | head -30
(cd "$build" && LDM_GOLDEN_DIR="$root/.golden" ctest --output-on-failure 2>&1 | tail -12)
tool="$build/tools/ldmtool"
model=(--config models/shapes-tiny/config.json
       --weights models/shapes-tiny/weights.safetensors --prompt "a red circle")
"$tool" txt2img "${model[@]}" --steps 25 --n 4 --device cpu --out "$out/cpu.ppm"
"$tool" txt2img "${model[@]}" --steps 25 --n 4 --device cuda --out "$out/cuda.ppm"
"$tool" txt2img "${model[@]}" --steps 25 --n 4 --device cuda --dtype f16 \
  --out "$out/cuda16.ppm"
python3 - "$out" <<'PY'
import sys, numpy as np
def read(p):
    data = open(p, "rb").read()
    parts = data.split(b"\n", 3)
    w, h = map(int, parts[1].split())
    return np.frombuffer(parts[3], np.uint8).reshape(h, w, 3).astype(int)
cpu = read(sys.argv[1] + "/cpu.ppm")
for name in ("cuda", "cuda16"):
    d = np.abs(cpu - read(sys.argv[1] + f"/{name}.ppm"))
    print(f"{name} vs cpu: max |diff| {d.max()} levels, mean {d.mean():.3f}")
PY
