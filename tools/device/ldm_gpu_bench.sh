#!/usr/bin/env bash
# On the GPU machine: builds server/ldm, its tests, tools and ldmbench
# (service off) against the machine's PyTorch, runs the model and parity
# tests, ldmbench on CUDA (f16 and f32) and on the machine's CPU, and a whole
# shipped-model job on CPU and CUDA, comparing pixels. Log in $OUT/log.
# Needs .deps/ (Debian 12 packages unpacked with dpkg -x: libabsl-dev,
# libabsl20220623, nlohmann-json3-dev, libgtest-dev, libgmock-dev, libicu-dev,
# libicu72; drop static libraries but GoogleTest's and compress ICU's data
# as tools/device/deps_env.sh says, to stay under the 64 MiB carry limit) and optionally .golden/ (a copy of some golden sets).
source tools/device/deps_env.sh
build=/tmp/ldm-build
configure_ldm "$build"
cmake --build "$build" -j16 2>&1 | grep -E "error|FAILED" | head -20
(cd "$build" && LDM_GOLDEN_DIR="$root/.golden" ctest 2>&1 |
  grep -E "tests passed|Failed|Skipped|FAILED")
bench="$build/bench/ldmbench"
sd=models/configs/sd-v1.json
"$bench" --config "$sd" --sizes 256,512 --device cuda --dtype f16 --repeats 10
"$bench" --config "$sd" --sizes 256,512 --device cuda --dtype f32 --repeats 5
"$bench" --config models/shapes-txt2img/config.json --device cuda --repeats 20
"$bench" --config "$sd" --sizes 256 --device cpu --repeats 2 --threads 16
# The shipped model, a whole job: CPU vs CUDA f32 and f16 pixels.
tool="$build/tools/ldmtool"
model=(--config models/shapes-txt2img/config.json
       --weights models/shapes-txt2img/weights.safetensors --prompt "a red circle")
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
