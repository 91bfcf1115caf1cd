#!/usr/bin/env bash
# The three batching modes side by side in one run (issue: step-level
# continuous batching): the same closed-loop load with mixed step counts
# against ldmserve --batching=none|request|step on the shipped text-to-image
# model. Prints images/s, latency p50/p95/p99, the mean images per
# denoising call, and where the workers' time went (from /metrics): the
# UNet calls' mean ms and their seconds in all, and the seconds spent
# encoding (text, init images) and decoding.
#
#   bench/batching_modes.sh [BUILD_DIR] [CONCURRENCY] [DURATION_S] [STEPS]
#   defaults: build 8 30 10,25,50. RATE=R: open loop instead (Poisson, R
#   requests/s); SERVER_FLAGS="...": more ldmserve flags (--threads=1 ...);
#   MODES="request step": which modes (default "none request step").
set -euo pipefail
build=${1:-build}
concurrency=${2:-8}
duration=${3:-30}
steps=${4:-10,25,50}
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/bench/server_lib.sh"
metrics_port=$((20000 + RANDOM % 20000))
printf "%-8s %9s %8s %8s %8s %12s %8s %8s %8s %8s\n" mode images/s p50_s p95_s p99_s images/call call_ms unet_s encode_s decode_s
for mode in ${MODES:-none request step}; do
  start_server "$work/$mode.log" --metrics-listen="127.0.0.1:$metrics_port" \
    --batching="$mode" --max-batch=8 --queue-size=256 ${SERVER_FLAGS:-}
  if [[ -n "${RATE:-}" ]]; then load=(--rate "$RATE"); else load=(--concurrency "$concurrency"); fi
  "$build/client/ldmctl" --addr="$addr" bench "${load[@]}" \
    --duration "$duration" --steps "$steps" --seed 1 \
    --prompt "a red circle above a blue square" --json "$work/$mode.json" >/dev/null 2>&1 || true
  metrics=$(curl -s "http://127.0.0.1:$metrics_port/metrics" 2>/dev/null ||
            bash -c "exec 3<>/dev/tcp/127.0.0.1/$metrics_port; printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3; cat <&3")
  # Histogram sums and counts: images per call, UNet call seconds, stages.
  breakdown=$(awk '
    /^ldmserve_batch_images_sum/ {images = $2}
    /^ldmserve_batch_images_count/ {calls = $2}
    /^ldmserve_denoise_call_seconds_sum/ {unet = $2}
    /^ldmserve_stage_seconds_sum.*stage="encode"/ {encode = $2}
    /^ldmserve_stage_seconds_sum.*stage="decode"/ {decode = $2}
    END {
      if (calls > 0) printf "%12.2f %8.1f", images / calls, 1000 * unet / calls;
      else printf "%12s %8s", "-", "-";
      printf " %8.2f %8.2f %8.2f", unet, encode, decode
    }' <<<"$metrics")
  json=$(tr -d ' \n' <"$work/$mode.json")
  field() { sed -E "s/.*\"$1\":([0-9.eE+-]+).*/\1/" <<<"$json"; }
  printf "%-8s %9.3f %8.3f %8.3f %8.3f %s\n" "$mode" "$(field images_per_second)" \
    "$(field p50)" "$(field p95)" "$(field p99)" "$breakdown"
  stop_server
  metrics_port=$((metrics_port + 1))
done
