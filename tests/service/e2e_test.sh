#!/usr/bin/env bash
# End-to-end: start the real ldmserve on the shipped models (port 0, found
# through --port-file), drive it with the real ldmctl, stop it with SIGTERM.
set -euo pipefail
ldmserve=$1
ldmctl=$2
registry=$3
work=$(mktemp -d)
source "$(dirname "$0")/e2e_lib.sh"

# ldmctl SUBCOMMAND --help: that subcommand's flags and the connection
# flags, no others (every listed name is checked to be a flag).
for command in txt2img img2img inpaint upscale models health bench jobs job model; do
  "$ldmctl" "$command" --help >"$work/help_$command.txt" \
    || fail "ldmctl $command --help: exit $?"
  grep -q -- "--tls-ca" "$work/help_$command.txt" \
    || fail "$command --help lacks the connection flags"
done
grep -q -- "--prompt" "$work/help_txt2img.txt" || fail "txt2img --help lacks --prompt"
grep -q -- "--lora" "$work/help_txt2img.txt" || fail "txt2img --help lacks --lora"
grep -q -- "--cancel-jobs" "$work/help_model.txt" || fail "model --help lacks --cancel-jobs"
grep -q -- "--lora" "$work/help_model.txt" && fail "model --help lists txt2img's flags"
grep -q -- "--concurrency" "$work/help_txt2img.txt" && fail "txt2img --help lists bench's flags"
grep -q -- "--mask" "$work/help_inpaint.txt" || fail "inpaint --help lacks --mask"
grep -q -- "--concurrency" "$work/help_bench.txt" || fail "bench --help lacks --concurrency"
grep -q -- "--prompt" "$work/help_health.txt" && fail "health --help lists generation flags"

# A device this machine lacks: exit 2 at once with one line naming it.
code=0
"$ldmserve" --listen=127.0.0.1:0 --metrics-listen= --models="$registry" \
  --devices=cuda:99 2>"$work/devices.txt" || code=$?
[[ $code -eq 2 ]] || fail "--devices=cuda:99 exit code $code"
grep -q "^ldmserve: --devices: cuda:99 is not available (" "$work/devices.txt" \
  || fail "--devices=cuda:99: $(cat "$work/devices.txt")"

# Flags from LDMSERVE_* environment variables: a bad value is refused
# naming the variable.
code=0
LDMSERVE_QUEUE_SIZE=many "$ldmserve" --listen=127.0.0.1:0 --metrics-listen= \
  --models="$registry" 2>"$work/env.txt" || code=$?
[[ $code -eq 2 ]] || fail "LDMSERVE_QUEUE_SIZE=many exit code $code"
grep -q "^ldmserve: LDMSERVE_QUEUE_SIZE: " "$work/env.txt" \
  || fail "LDMSERVE_QUEUE_SIZE=many: $(cat "$work/env.txt")"

# A limit flag out of range: exit 2 naming the flag and its range.
timeout 60 "$ldmserve" --max-steps=0 --listen=127.0.0.1:0 --metrics-listen= \
  --models="$registry" 2>"$work/limit.txt" && fail "--max-steps=0 accepted"
grep -q "^ldmserve: --max-steps must be in \[1, 10000\], not 0" "$work/limit.txt" \
  || fail "--max-steps=0: $(cat "$work/limit.txt")"

# A corrupt model file: a required model stops the start (exit 2, one line
# naming the file); an optional one is FAILED in ListModels while the others
# serve.
models_dir=$(cd "$(dirname "$registry")" && pwd)
head -c 4096 /dev/urandom >"$work/broken.safetensors"
corrupt_registry() {  # REQUIRED
  cat <<EOF
{"models": [
  {"name": "shapes-txt2img", "config": "$models_dir/shapes-txt2img/config.json",
   "weights": "$models_dir/shapes-txt2img/weights.safetensors",
   "tasks": ["text_to_image"], "default_for": ["text_to_image"], "required": true},
  {"name": "broken", "config": "$models_dir/shapes-txt2img/config.json",
   "weights": "$work/broken.safetensors", "tasks": ["text_to_image"],
   "required": $1}]}
EOF
}
corrupt_registry true >"$work/required.json"
code=0
timeout 120 "$ldmserve" --listen=127.0.0.1:0 --metrics-listen= \
  --models="$work/required.json" 2>"$work/required.txt" || code=$?
[[ $code -eq 2 ]] || fail "a corrupt required model: exit $code"
grep -q "^ldmserve: .*broken.safetensors" "$work/required.txt" \
  || fail "a corrupt required model: $(cat "$work/required.txt")"
corrupt_registry false >"$work/optional.json"
"$ldmserve" --listen=127.0.0.1:0 --metrics-listen= --threads=1 \
  --models="$work/optional.json" --port-file="$work/optional_port" \
  >"$work/server.log" 2>&1 &
server_pid=$!
optional_addr=$(wait_for_port "$work/optional_port")
for _ in $(seq 1 600); do
  "$ldmctl" --addr="$optional_addr" health >/dev/null 2>&1 && break
  sleep 0.1
done
"$ldmctl" --addr="$optional_addr" models >"$work/optional_models.txt" \
  || fail "models with a corrupt optional model"
grep -q "^broken	MODEL_STATE_FAILED.*broken.safetensors" "$work/optional_models.txt" \
  || fail "the corrupt model: $(cat "$work/optional_models.txt")"
grep -q "^shapes-txt2img	MODEL_STATE_READY" "$work/optional_models.txt" \
  || fail "the good model: $(cat "$work/optional_models.txt")"
"$ldmctl" --addr="$optional_addr" txt2img --prompt "a red circle" --steps 2 \
  --out "$work/optional.png" 2>/dev/null || fail "txt2img beside a corrupt model"
kill -TERM "$server_pid"
wait "$server_pid" || fail "server exit code $?"
server_pid=

# A LoRA adapter of zeros (rank 1) on the txt2img model's first query
# projection, as a safetensors file: 8-byte little-endian header length,
# the JSON header, then the float32 data.
mkdir -p "$work/loras"
lora_module=lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q
lora_header="{\"$lora_module.lora_down.weight\":{\"dtype\":\"F32\",\"shape\":[1,64],\"data_offsets\":[0,256]},\"$lora_module.lora_up.weight\":{\"dtype\":\"F32\",\"shape\":[64,1],\"data_offsets\":[256,512]}}"
{
  length=${#lora_header}
  for shift in 0 8 16 24 32 40 48 56; do
    printf "\\x$(printf %02x $(( (length >> shift) & 255 )))"
  done
  printf '%s' "$lora_header"
  head -c 512 /dev/zero
} >"$work/loras/zero.safetensors"

# The server the rest talks to takes its flags from the environment; the
# command line wins over it (LDMSERVE_DEVICES would fail to start).
LDMSERVE_LISTEN=127.0.0.1:0 LDMSERVE_METRICS_LISTEN=127.0.0.1:0 \
  LDMSERVE_MODELS="$registry" LDMSERVE_PORT_FILE="$work/port" \
  LDMSERVE_THREADS=1 LDMSERVE_DEVICES=cuda:99 LDMSERVE_MAX_STEPS=1000 \
  "$ldmserve" --devices=cpu --model-admin --lora-dir="$work/loras" \
  >"$work/server.log" 2>&1 &
server_pid=$!
addr=$(wait_for_port "$work/port")

# Health turns SERVING once the models are loaded.
for _ in $(seq 1 600); do
  if "$ldmctl" --addr="$addr" health >"$work/health.txt" 2>&1; then break; fi
  sleep 0.1
done
grep -qx SERVING "$work/health.txt" || fail "health: $(cat "$work/health.txt")"

"$ldmctl" --addr="$addr" models >"$work/models.txt" || fail "models"
grep -q "MODEL_STATE_READY" "$work/models.txt" || fail "models: $(cat "$work/models.txt")"

"$ldmctl" --addr="$addr" txt2img --prompt "a red circle above a blue square" \
  --steps 5 --seed 7 --out "$work/out.png" 2>"$work/progress.txt" \
  || fail "txt2img: $(cat "$work/progress.txt")"
for step in 1 2 3 4 5; do
  grep -q "step $step/5" "$work/progress.txt" || fail "no progress for step $step: $(cat "$work/progress.txt")"
done
# On a terminal (script gives one) the progress is a bar redrawn in place.
if command -v script >/dev/null; then
  script -qec "'$ldmctl' --addr=$addr txt2img --prompt 'a red circle' --steps 4 --out '$work/tty.png'" \
    /dev/null >"$work/tty.txt" 2>&1 || fail "txt2img on a terminal: $(cat "$work/tty.txt")"
  grep -q "\[############------------\] step 2/4 .* eta " "$work/tty.txt" \
    || fail "no progress bar on a terminal: $(tr '\r' '\n' <"$work/tty.txt")"
fi

# A PNG signature and the model's native 64x64 size in the IHDR chunk.
[[ "$(head -c 8 "$work/out.png" | od -An -tx1 | tr -d ' \n')" == "89504e470d0a1a0a" ]] \
  || fail "out.png is not a PNG"
[[ "$(dd if="$work/out.png" bs=1 skip=16 count=8 2>/dev/null | od -An -tx1 | tr -d ' \n')" == "0000004000000040" ]] \
  || fail "out.png is not 64x64"

# LoRA adapters (--lora-dir): listed, applied (zeros change nothing but
# the parameters say so), a missing one NOT_FOUND (exit 5), a bad flag a
# usage error.
grep -q "^loras: zero$" "$work/models.txt" \
  || fail "models: no LoRA line: $(cat "$work/models.txt")"
"$ldmctl" --addr="$addr" txt2img --prompt "a red circle" --steps 2 --seed 3 \
  --lora zero:0.5 --out "$work/lora.png" 2>"$work/lora.txt" \
  || fail "txt2img --lora: $(cat "$work/lora.txt")"
grep -qa "a red circle <lora:zero:0.5>" "$work/lora.png" \
  || fail "the PNG parameters do not name the LoRA"
code=0
"$ldmctl" --addr="$addr" txt2img --prompt x --steps 2 --lora nope \
  2>"$work/lora_missing.txt" || code=$?
grep -q "NOT_FOUND.*loras\[0\].name: no file 'nope.safetensors'" \
  "$work/lora_missing.txt" || fail "--lora nope: $(cat "$work/lora_missing.txt")"
code=0
"$ldmctl" --addr="$addr" txt2img --prompt x --lora a:b 2>/dev/null || code=$?
[[ $code -eq 2 ]] || fail "--lora a:b: exit $code"

# Models at run time (--model-admin): the txt2img weights again under
# another name, served beside the others, then unloaded; nothing outside
# the model folder (the registry's) can be named.
"$ldmctl" --addr="$addr" model load again shapes-txt2img/weights.safetensors \
  --config shapes-txt2img/config.json >"$work/load.txt" 2>&1 \
  || fail "model load: $(cat "$work/load.txt")"
grep -q "^again	MODEL_STATE_READY	[0-9.]* MiB of weights" "$work/load.txt" \
  || fail "model load: $(cat "$work/load.txt")"
"$ldmctl" --addr="$addr" models >"$work/models_again.txt" || fail "models"
grep -q "^again	MODEL_STATE_READY" "$work/models_again.txt" \
  || fail "the loaded model is not listed: $(cat "$work/models_again.txt")"
grep -q "^model memory cpu: [0-9.]* MiB of [0-9.]* MiB" "$work/models_again.txt" \
  || fail "no model memory line: $(cat "$work/models_again.txt")"
"$ldmctl" --addr="$addr" txt2img --model again --prompt "a red circle" \
  --steps 2 --out "$work/again.png" 2>/dev/null || fail "txt2img on a loaded model"
"$ldmctl" --addr="$addr" model unload again >"$work/unload.txt" 2>&1 \
  || fail "model unload: $(cat "$work/unload.txt")"
grep -q "^again	unloaded	0 jobs drained" "$work/unload.txt" \
  || fail "model unload: $(cat "$work/unload.txt")"
code=0
"$ldmctl" --addr="$addr" model load escape ../../etc/passwd 2>"$work/escape.txt" \
  || code=$?
[[ $code -ne 0 ]] || fail "a weights path outside the model folder was loaded"
grep -q "INVALID_ARGUMENT.*weights: must be relative" "$work/escape.txt" \
  || fail "model load ../: $(cat "$work/escape.txt")"

# A detached job: its id on stdout at once; found again by id, watched to
# its end (the same image as a plain call), listed, and a cancel of an
# unknown id is NOT_FOUND (exit 10 + 5).
job_id=$("$ldmctl" --addr="$addr" txt2img --detach --prompt "a red circle" \
  --steps 5 --seed 7 2>"$work/detach.txt") || fail "txt2img --detach: $(cat "$work/detach.txt")"
[[ "$job_id" == job-* ]] || fail "txt2img --detach printed '$job_id'"
"$ldmctl" --addr="$addr" job watch "$job_id" --out "$work/watched.png" \
  2>"$work/watch.txt" || fail "job watch: $(cat "$work/watch.txt")"
"$ldmctl" --addr="$addr" txt2img --prompt "a red circle" --steps 5 --seed 7 \
  --out "$work/attached.png" 2>/dev/null || fail "txt2img --seed 7"
cmp -s "$work/watched.png" "$work/attached.png" \
  || fail "the watched job's image differs from the attached call's"
"$ldmctl" --addr="$addr" job get "$job_id" >"$work/job.txt" || fail "job get"
grep -qx "state: SUCCEEDED" "$work/job.txt" && grep -qx "progress: step 5/5" "$work/job.txt" \
  || fail "job get: $(cat "$work/job.txt")"
"$ldmctl" --addr="$addr" jobs >"$work/jobs.txt" || fail "jobs"
grep -q "^$job_id *SUCCEEDED" "$work/jobs.txt" || fail "jobs: $(cat "$work/jobs.txt")"
code=0
"$ldmctl" --addr="$addr" job cancel job-00000000-1 2>"$work/cancel.txt" || code=$?
[[ $code -eq 15 ]] && grep -q NOT_FOUND "$work/cancel.txt" \
  || fail "job cancel of an unknown id: exit $code, $(cat "$work/cancel.txt")"

# A newer sampler on Karras sigmas, named as other front ends name it.
"$ldmctl" --addr="$addr" txt2img --prompt "a red circle" --steps 3 \
  --sampler heun --schedule karras --out "$work/heun.png" 2>"$work/heun.txt" \
  || fail "--sampler heun --schedule karras: $(cat "$work/heun.txt")"
grep -aq "Sampler: Heun Karras" "$work/heun.png" || fail "heun.png lacks its parameters"

# JPEG out, named by its format when --out is left empty, its parameters in
# the EXIF block; then that JPEG as an img2img input (--resize is accepted;
# 64x64 fits, so nothing is cropped), the result as WebP.
(cd "$work" && "$ldmctl" --addr="$addr" txt2img --prompt "a red circle" --steps 2 \
  --format jpeg --quality 85 2>"$work/jpeg.txt") || fail "--format jpeg: $(cat "$work/jpeg.txt")"
[[ "$(head -c 3 "$work/out.jpg" | od -An -tx1 | tr -d ' \n')" == "ffd8ff" ]] \
  || fail "out.jpg is not a JPEG"
head -c 200 "$work/out.jpg" | grep -aq "Exif" || fail "out.jpg lacks its EXIF block"
"$ldmctl" --addr="$addr" txt2img --prompt "a red circle" --steps 2 \
  --format gif --out "$work/gif" 2>/dev/null && fail "--format gif accepted"
"$ldmctl" --addr="$addr" img2img --image "$work/out.jpg" --strength 0.5 --steps 2 \
  --prompt "a red circle" --resize crop --format webp --out "$work/i2i.webp" \
  2>"$work/fit.txt" || fail "img2img of a JPEG: $(cat "$work/fit.txt")"
[[ "$(head -c 12 "$work/i2i.webp" | tail -c 4)" == "WEBP" ]] || fail "i2i.webp is not a WebP"

# Over --max-steps (1000 above; the default is 200): refused, naming the
# field and the limit.
if "$ldmctl" --addr="$addr" txt2img --prompt "a red circle" --steps 1001 \
    --out "$work/over.png" 2>"$work/over.txt"; then
  fail "1001 steps accepted over --max-steps=1000"
fi
grep -q "INVALID_ARGUMENT" "$work/over.txt" && grep -q "at most 1000" "$work/over.txt" \
  || fail "1001 steps: $(cat "$work/over.txt")"

# The same seed gives the same bytes.
"$ldmctl" --addr="$addr" txt2img --prompt "a red circle above a blue square" \
  --steps 5 --seed 7 --out "$work/again.png" 2>/dev/null || fail "txt2img again"
cmp -s "$work/out.png" "$work/again.png" || fail "same seed, different image"

# img2img and inpaint on the PNG just made (as inpaint mask it serves too:
# its red channel >= 128 marks what to repaint); both keep the input's size.
"$ldmctl" --addr="$addr" img2img --image "$work/out.png" --strength 0.5 \
  --prompt "a blue square" --steps 4 --seed 2 --out "$work/i2i.png" 2>"$work/i2i.txt" \
  || fail "img2img: $(cat "$work/i2i.txt")"
grep -q "step 2/2" "$work/i2i.txt" || fail "img2img ran $(grep -o 'step [0-9]*/[0-9]*' "$work/i2i.txt" | tail -1)"
"$ldmctl" --addr="$addr" inpaint --image "$work/out.png" --mask "$work/out.png" \
  --prompt "a blue square" --steps 3 --seed 2 --out "$work/inpaint.png" 2>"$work/inp.txt" \
  || fail "inpaint: $(cat "$work/inp.txt")"
for f in i2i inpaint; do
  [[ "$(dd if="$work/$f.png" bs=1 skip=16 count=8 2>/dev/null | od -An -tx1 | tr -d ' \n')" == "0000004000000040" ]] \
    || fail "$f.png is not 64x64"
done

# Errors: one line, exit code 10 + gRPC code.
set +e
"$ldmctl" --addr="$addr" txt2img --model no-such-model --out "$work/x.png" 2>"$work/err.txt"
code=$?
set -e
[[ $code -eq 15 ]] || fail "unknown model exit code $code"
grep -q "^ldmctl: NOT_FOUND: " "$work/err.txt" || fail "error line: $(cat "$work/err.txt")"

# Previews: a small PNG every --preview_every steps.
mkdir -p "$work/previews"
"$ldmctl" --addr="$addr" txt2img --prompt "a red circle" --steps 4 \
  --previews "$work/previews" --preview_every 2 --out "$work/p.png" 2>/dev/null \
  || fail "txt2img with previews"
for step in 2 4; do
  [[ "$(head -c 8 "$work/previews/step-$step.png" | od -An -tx1 | tr -d ' \n')" == "89504e470d0a1a0a" ]] \
    || fail "no preview PNG for step $step: $(ls "$work/previews")"
done
[[ ! -e "$work/previews/step-1.png" ]] || fail "preview at step 1 with --preview_every 2"

# Ctrl-C cancels the call cleanly: exit 10 + CANCELLED, one line.
"$ldmctl" --addr="$addr" txt2img --prompt "a red circle" --steps 200 --n 4 \
  --out "$work/cancelled.png" 2>"$work/cancel.txt" &
client_pid=$!
for _ in $(seq 1 200); do
  grep -q "step 1/200" "$work/cancel.txt" 2>/dev/null && break
  sleep 0.05  # polling another process's output
done
kill -INT "$client_pid"
set +e
wait "$client_pid"
code=$?
set -e
[[ $code -eq 11 ]] || fail "Ctrl-C exit code $code: $(cat "$work/cancel.txt")"
grep -q "^ldmctl: CANCELLED: " "$work/cancel.txt" || fail "Ctrl-C line: $(cat "$work/cancel.txt")"
[[ ! -e "$work/cancelled.png" ]] || fail "a cancelled call wrote an image"

# The load generator: closed and open loop, a JSON summary, errors counted
# by status.
"$ldmctl" --addr="$addr" bench --concurrency 2 --requests 4 --steps 2,3 \
  --prompt "a red circle" --json "$work/bench.json" >"$work/bench.txt" 2>&1 \
  || fail "bench: $(cat "$work/bench.txt")"
for key in '"requests": 4' '"ok": 4' '"images_per_second"' '"p50"' '"p95"' \
           '"p99"' '"errors": {}'; do
  grep -q "$key" "$work/bench.json" || fail "bench.json lacks $key: $(cat "$work/bench.json")"
done
"$ldmctl" --addr="$addr" bench --rate 20 --requests 3 --steps 2 \
  >"$work/open.txt" 2>&1 || fail "open-loop bench: $(cat "$work/open.txt")"
grep -q "requests 3, ok 3" "$work/open.txt" || fail "open loop: $(cat "$work/open.txt")"
set +e
"$ldmctl" --addr="$addr" bench --requests 2 --steps 2 --model no-such-model \
  --json "$work/bad.json" >/dev/null 2>&1
code=$?
set -e
[[ $code -eq 1 ]] || fail "bench with errors exit code $code"
grep -q '"NOT_FOUND": 2' "$work/bad.json" || fail "errors by code: $(cat "$work/bad.json")"

# SIGTERM drains and exits 0.
kill -TERM "$server_pid"
wait "$server_pid" || fail "server exit code $?"
server_pid=
echo "e2e: OK"
