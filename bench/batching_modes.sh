#!/usr/bin/env bash
# The three batching modes side by side in one run (issue: step-level
# continuous batching): the same closed-loop load with mixed step counts
# against ldmserve --batching=none|request|step on the shipped text-to-image
# model. Prints images/s, latency p50/p95/p99 and the mean images per
# denoising call (from /metrics) per mode.
#
#   bench/batching_modes.sh [BUILD_DIR] [CONCURRENCY] [DURATION_S] [STEPS]
#   defaults: build 8 30 10,25,50. RATE=R: open loop instead (Poisson, R
#   requests/s); SERVER_FLAGS="...": more ldmserve flags (--threads=1 ...).
set -euo pipefail
build=${1:-build}
concurrency=${2:-8}
duration=${3:-30}
steps=${4:-10,25,50}
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/bench/server_lib.sh"
metrics_port=$((20000 + RANDOM % 20000))
printf "%-8s %9s %8s %8s %8s %14s\n" mode images/s p50_s p95_s p99_s images/call
for mode in none request step; do
  start_server "$work/$mode.log" --metrics-listen="127.0.0.1:$metrics_port" \
    --batching="$mode" --max-batch=8 --queue-size=256 ${SERVER_FLAGS:-}
  if [[ -n "${RATE:-}" ]]; then load=(--rate "$RATE"); else load=(--concurrency "$concurrency"); fi
  "$build/client/ldmctl" --addr="$addr" bench "${load[@]}" \
    --duration "$duration" --steps "$steps" --seed 1 \
    --prompt "a red circle above a blue square" --json "$work/$mode.json" >/dev/null 2>&1 || true
  metrics=$(curl -s "http://127.0.0.1:$metrics_port/metrics" 2>/dev/null ||
            bash -c "exec 3<>/dev/tcp/127.0.0.1/$metrics_port; printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3; cat <&3")
  images_per_call=$(awk '/^ldmserve_batch_images_sum/ {s=$2} /^ldmserve_batch_images_count/ {c=$2}
                         END {if (c > 0) printf "%.2f", s / c; else print "-"}' <<<"$metrics")
  json=$(tr -d ' \n' <"$work/$mode.json")
  field() { sed -E "s/.*\"$1\":([0-9.eE+-]+).*/\1/" <<<"$json"; }
  printf "%-8s %9.3f %8.3f %8.3f %8.3f %14s\n" "$mode" "$(field images_per_second)" \
    "$(field p50)" "$(field p95)" "$(field p99)" "$images_per_call"
  stop_server
  metrics_port=$((metrics_port + 1))
done
