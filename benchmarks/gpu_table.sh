#!/usr/bin/env bash
# The original README's result table at its own recipe, on one GPU: every cell not yet trained by it, from scratch
# (60 x 1000 steps, batch 8 of 128x128, lr 0.001, train291 -> Set14, seed 0, bfloat16), a few at a time.
#
#     KERAS_BACKEND=jax LIMIT_S=540 PARALLEL=3 bash benchmarks/gpu_table.sh DATA_DIR RUN_DIR [more train.py flags]
#
# Each call runs the first PARALLEL cells (in the order below) that have not finished, each for at most LIMIT_S
# seconds (default 540, to fit a 10-minute command), then stops; the next call continues them with --resume, so
# the table fills in over several calls. A cell is finished once train.py ended on its own (RUN_DIR/CELL/EXIT 0).
# DATA_DIR holds train291/ and Set14/. Flags after RUN_DIR are added to every cell (--nb_epochs 1 --steps 2
# --test_dir DATA/Set5 for a dry run on a CPU). RUN_DIR/CELL receives the run; finished cells are copied to
# RESULT_DIR/CELL (default result/table/CELL): train.log, history.npz, val_PSNR.png. Prints, last, one line per
# cell: its state.
set -uo pipefail
if (($# < 2)); then
    echo "usage: bash benchmarks/gpu_table.sh DATA_DIR RUN_DIR [more train.py flags]" >&2
    exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
data=$1 run=$2
shift 2
source "$repo/benchmarks/gpu_common.sh"
need_data_dirs gpu_table.sh "$data" train291 Set14
limit=${LIMIT_S:-540} parallel=${PARALLEL:-3} results=${RESULT_DIR:-$repo/result/table}
mkdir -p "$run"
# Several JAX processes share the GPU: each takes a share of its memory instead of the default 75 %.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-$(python3 -c "print(round(0.9 / $parallel, 2))")}
export PYTHONUNBUFFERED=1
recipe=(--image_dir "$data/train291" --test_dir "$data/Set14" --image_size 128 --batch_size 8 --lr 0.001
        --nb_epochs 60 --steps 1000 --seed 0 --mixed_precision --workers 4 --use_multiprocessing)
text=(--source_noise_model text,0,50 --val_noise_model text,25,25 --loss mae)
impulse=(--source_noise_model impulse,0,95 --val_noise_model impulse,70,70 --loss l0)
cells=(gaussian_clean text_noisy impulse_noisy unet_noisy unet_clean text_clean impulse_clean gaussian_noisy)
cell_flags() {  # the flags of one cell, beyond the recipe's
    case $1 in
        gaussian_clean) echo --target_noise_model clean ;;
        text_noisy) echo "${text[@]}" --target_noise_model text,0,50 ;;
        impulse_noisy) echo "${impulse[@]}" --target_noise_model impulse,0,95 ;;
        unet_noisy) echo --model unet ;;
        unet_clean) echo --model unet --target_noise_model clean ;;
        text_clean) echo "${text[@]}" --target_noise_model clean ;;
        impulse_clean) echo "${impulse[@]}" --target_noise_model clean ;;
        gaussian_noisy) echo --zero_mean_targets ;;
    esac
}
finished() { [ "$(cat "$run/$1/EXIT" 2> /dev/null)" = 0 ]; }
trap stop_gpu_sampler EXIT
start_gpu_sampler "$run/gpu_utilization.csv"
started=()
for cell in "${cells[@]}"; do
    finished "$cell" && continue
    ((${#started[@]} < parallel)) || break
    mkdir -p "$run/$cell"
    resume=()
    [ -f "$run/$cell/backup/state.json" ] && resume=(--resume)
    # shellcheck disable=SC2046  # cell_flags' words are flags
    (timeout "$limit" python3 "$repo/train.py" "${recipe[@]}" $(cell_flags "$cell") --output_path "$run/$cell" \
        "${resume[@]}" "$@" >> "$run/$cell/train.log" 2>&1; echo $? > "$run/$cell/EXIT") &
    started+=("$cell")
done
wait
stop_gpu_sampler
for cell in "${cells[@]}"; do
    if finished "$cell"; then
        mkdir -p "$results/$cell"
        cp "$run/$cell/train.log" "$run/$cell/history.npz" "$results/$cell/"
        python3 "$repo/plot_history.py" --input1 "$run/$cell" --output_dir "$run/$cell/plots" > /dev/null &&
            cp "$run/$cell/plots/val_PSNR.png" "$results/$cell/"
        echo "$cell: finished, $(ls "$run/$cell"/weights.*.weights.h5 | sort -t- -k3 -g | tail -n 1)"
    else
        echo "$cell: $(python3 -c "import json,sys; print('epoch', json.load(open(sys.argv[1]))['epoch'], 'done')" \
            "$run/$cell/backup/state.json" 2> /dev/null || echo 'not started')"
    fi
done
