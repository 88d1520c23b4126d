#!/usr/bin/env bash
# The shipped text and impulse SRResNets: the gaussian weights fine-tuned with clean targets on the original's
# patches, batch and learning rate, both runs at once on one GPU (each is held back by its host loop, not the GPU).
#
#     KERAS_BACKEND=jax bash benchmarks/gpu_text_impulse.sh DATA_DIR RUN_DIR [more train.py flags]
#
# DATA_DIR holds train291/ and Set5/ (validation). Flags after RUN_DIR are added to both runs and override the
# ones below. LIMIT_S, if set, stops each run after that many seconds (its best checkpoint so far stays).
# RUN_DIR receives text/ and impulse/ (checkpoints, history.npz), text.log, impulse.log and
# gpu_utilization.csv (time, GPU %, MiB in use, every second, where nvidia-smi is found).
set -uo pipefail
if (($# < 2)); then
    echo "usage: bash benchmarks/gpu_text_impulse.sh DATA_DIR RUN_DIR [more train.py flags]" >&2
    exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
data=$1 run=$2
shift 2
source "$repo/benchmarks/gpu_common.sh"
need_data_dirs gpu_text_impulse.sh "$data" train291 Set5
mkdir -p "$run"
# two JAX processes share the GPU: each takes under half its memory instead of the default 75 %
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45} PYTHONUNBUFFERED=1
trap stop_gpu_sampler EXIT
start_gpu_sampler "$run/gpu_utilization.csv"
limit=()
[ -z "${LIMIT_S:-}" ] || limit=(timeout "$LIMIT_S")
common=(--image_dir "$data/train291" --test_dir "$data/Set5" --image_size 128 --batch_size 8 --lr 0.001
        --nb_epochs 24 --steps 1000 --seed 0 --weight gaussian --target_noise_model clean --mixed_precision
        --workers 6 --use_multiprocessing)
start=$SECONDS
"${limit[@]}" python3 "$repo/train.py" "${common[@]}" --source_noise_model text,0,50 --val_noise_model text,25,25 \
    --loss mae --output_path "$run/text" "$@" > "$run/text.log" 2>&1 &
text=$!
"${limit[@]}" python3 "$repo/train.py" "${common[@]}" --source_noise_model impulse,0,95 \
    --val_noise_model impulse,70,70 --loss l0 --output_path "$run/impulse" "$@" > "$run/impulse.log" 2>&1 &
impulse=$!
wait "$text"; text_status=$?
wait "$impulse"; impulse_status=$?
stop_gpu_sampler
echo "text exit $text_status, impulse exit $impulse_status, $((SECONDS - start)) s for both"
for name in text impulse; do
    echo "$name: $(ls "$run/$name"/weights.*.weights.h5 2> /dev/null | sort -t- -k3 -g | tail -n 1)"
done
