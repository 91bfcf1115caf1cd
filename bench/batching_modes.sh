#!/usr/bin/env bash
# The three batching modes side by side in one run (issue: step-level
# continuous batching): the same closed-loop load with mixed step counts
# against ldmserve --batching=none|request|step on the shipped text-to-image
# model. Prints images/s, latency p50/p95/p99 and the mean images per
# denoising call (from /metrics) per mode.
#
#   bench/batching_modes.sh [BUILD_DIR] [CONCURRENCY] [DURATION_S] [STEPS]
#   defaults: build 8 30 10,25,50
set -euo pipefail
build=${1:-build}
concurrency=${2:-8}
duration=${3:-30}
steps=${4:-10,25,50}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
server_pid=
cleanup() {
  [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
metrics_port=$((20000 + RANDOM % 20000))
printf "%-8s %9s %8s %8s %8s %14s\n" mode images/s p50_s p95_s p99_s images/call
for mode in none request step; do
  rm -f "$work/port"
  "$build/server/ldmserve" --listen=127.0.0.1:0 --port-file="$work/port" \
    --metrics-listen="127.0.0.1:$metrics_port" --models="$root/models/registry.json" \
    --batching="$mode" --max-batch=8 --queue-size=256 >"$work/$mode.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 600); do [[ -s "$work/port" ]] && break; sleep 0.1; done
  addr="127.0.0.1:$(cat "$work/port")"
  until "$build/client/ldmctl" --addr="$addr" health >/dev/null 2>&1; do sleep 0.1; done
  "$build/client/ldmctl" --addr="$addr" bench --concurrency "$concurrency" \
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
  kill "$server_pid"
  wait "$server_pid" || true
  server_pid=
  metrics_port=$((metrics_port + 1))
done
