#!/usr/bin/env bash
# On the GPU machine: builds ldmtrain against the machine's PyTorch (service
# and tests off) and trains the shipped shapes models: the autoencoder first,
# then the three latent diffusion models side by side on the one GPU, each
# within the time left before a deadline. Weights, configs and the log come
# back in $OUT (8 files). Needs .deps/ as tools/device/ldm_gpu_bench.sh says.
#
#   DEADLINE_SECONDS (default 540): when the last model must be saved, from
#   the script's start; AE_SECONDS (default 100): the autoencoder's share.
#   CONTINUE=1: continue the shipped models instead: no autoencoder stage
#   (theirs is read from models/shapes-txt2img, as served), each model starts
#   from models/shapes-TASK's weights.
#   BATCH, LR: the diffusion stages' (default 512, 6e-4).
#   TASKS: which diffusion models (default "txt2img inpaint sr").
#   PREDICTION: what their UNets predict, eps or v (default v; ldmtrain
#   --prediction). CONTINUE=1 may turn an eps model into a v one.
#   OUTLINE_WEIGHT: ldmtrain --outline-weight (default 0; the shipped
#   txt2img model's last CPU steps used 20). TWO_OBJECTS: ldmtrain
#   --two-objects, the share of two-object scenes (default the dataset's
#   0.4).
start=$(date +%s)
source tools/device/deps_env.sh
deadline=$((start + ${DEADLINE_SECONDS:-540}))
build=/tmp/ldm-build
# The trainer reads no GPU memory figures: build without them.
configure_ldm "$build" -DLDMSERVE_BUILD_TESTS=OFF -DLDMSERVE_CUDA_MEMORY=OFF
cmake --build "$build" -j16 --target ldmtrain 2>&1 | grep -E "error|FAILED" | head -20
train="$build/tools/ldmtrain"
[ -x "$train" ] || { echo "build failed"; exit 1; }
echo "built in $(($(date +%s) - start)) s"
work=/tmp/shapes-train
mkdir -p "$work"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader \
  -l 30 &
utilization_logger=$!
ae_dir="$work/ae"
init=()
if [ -n "${CONTINUE:-}" ]; then
  # The trainer reads only the first_stage_model.* tensors of this file.
  mkdir -p "$ae_dir"
  ln -sf "$root/models/shapes-txt2img/weights.safetensors" \
    "$ae_dir/ae.safetensors"
else
  "$train" ae --device cuda --threads 12 --out "$work/ae" --seed 1 \
    --steps 40000 --batch 128 --lr 5e-4 --warmup 100 \
    --max-seconds "${AE_SECONDS:-100}" --log-every 500
  cp "$work/ae/ae.safetensors" "$out/"
fi
left=$((deadline - $(date +%s) - 15))
echo "diffusion models: $left s each, side by side"
seed=2
trainers=()
# Each model's files go to $OUT as soon as it is saved, so that a run cut
# short still returns what finished. Batch 512 gave 1.5x the images/s of
# 128 here (2900 vs 1900 for txt2img, three runs sharing an H200), but the
# models then want more steps than the deadline leaves: continue with
# CONTINUE=1 and BATCH=256.
tasks=${TASKS:-txt2img inpaint sr}
for task in $tasks; do
  [ -n "${CONTINUE:-}" ] &&
    init=(--init "$root/models/shapes-$task/weights.safetensors" --warmup 50)
  ("$train" "$task" --device cuda --threads 5 --ae "$ae_dir" \
     --out "$work/$task" --seed $seed --steps 40000 --batch "${BATCH:-512}" \
     --lr "${LR:-6e-4}" --prediction "${PREDICTION:-v}" "${init[@]}" \
     --outline-weight "${OUTLINE_WEIGHT:-0}" \
     --two-objects "${TWO_OBJECTS:-0.4}" \
     --max-seconds "$left" --log-every 500 > "$work/$task.log" 2>&1 &&
   mkdir -p "$out/$task" &&
   cp "$work/$task/weights.safetensors" "$work/$task/config.json" \
     "$out/$task/") &
  trainers+=($!)
  seed=$((seed + 1))
done
wait "${trainers[@]}"
kill "$utilization_logger"
for task in $tasks; do
  echo "== $task"
  cat "$work/$task.log"
done
echo "total $(($(date +%s) - start)) s"
