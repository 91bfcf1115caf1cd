#!/usr/bin/env bash
# Server overhead: the end-to-end time of one request alone through ldmserve
# (ldmctl's "done in") over the engine's own time for the same job
# (ldmtool txt2img, a warmed-up RunJob), medians of N runs each, same
# threads. The server runs with --batch-invariant=false first (the same
# kernels as the engine), then with the default (per-image compute).
#
#   bench/server_overhead.sh [BUILD_DIR] [RUNS] [STEPS] [THREADS]
set -euo pipefail
build=${1:-build}
runs=${2:-7}
steps=${3:-25}
threads=${4:-1}
root=$(cd "$(dirname "$0")/.." && pwd)
model=$root/models/shapes-txt2img
prompt="a red circle above a blue square"
source "$root/bench/server_lib.sh"
median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

for i in $(seq "$runs"); do
  "$build/tools/ldmtool" txt2img --config "$model/config.json" \
    --weights "$model/weights.safetensors" --prompt "$prompt" --steps "$steps" \
    --threads "$threads" \
    --seed "$i" --out "$work/engine.ppm" | sed -E 's/.* in ([0-9.]+) s/\1/'
done | median >"$work/engine"
echo "engine (ldmtool, RunJob): $(cat "$work/engine") s"

for invariant in false true; do
  start_server "$work/server.log" --metrics-listen= --threads="$threads" \
    --batch-invariant=$invariant
  "$build/client/ldmctl" --addr="$addr" txt2img --prompt "$prompt" \
    --steps "$steps" --seed 99 --out "$work/warm.png" 2>/dev/null
  for i in $(seq "$runs"); do
    "$build/client/ldmctl" --addr="$addr" txt2img --prompt "$prompt" \
      --steps "$steps" --seed "$i" --out "$work/server.png" 2>&1 |
      sed -nE 's/^done in ([0-9.]+)s.*/\1/p'
  done | median >"$work/server"
  stop_server
  awk -v s="$(cat "$work/server")" -v e="$(cat "$work/engine")" -v inv=$invariant \
    'BEGIN {printf "server end-to-end (--batch-invariant=%s): %.4f s, overhead %.3fx\n", inv, s, s / e}'
done
