#!/usr/bin/env bash
# The README recipe on a GPU machine that has JAX but no Keras and no network (this project's lent device
# machine: one command at most 10 minutes, the working tree and what travels with it at most 64 MiB).
#
# Here (with the network), once:
#     bash benchmarks/device_kit.sh stage        # .device/: Keras' wheels (Python 3.12) + the datasets, and sizes
#     bash benchmarks/device_kit.sh light on     # move result/weights/ out of the tree while the device runs
# There, in the repository root, with .device travelling along (the device tool: carry [".device"]):
#     WAIT_S=565 bash benchmarks/device_kit.sh start --mixed_precision --zero_mean_targets --workers 8 \
#         --use_multiprocessing
#     bash benchmarks/device_kit.sh collect 200  # at once, in a second command: waits up to 200 s more
# (2026-11-27 on an H200, as the device tool reported: start returned after epoch 58, collect after 56 s with
# everything; 667 s of device time held, the machine's start included.)
# (The device tool: run's timeout_s 600 for both; WAIT_S plus the bench below must end inside it. Send collect
# within the 30 s the machine stays warm, with SECONDS = the device time left minus a minute.)
# Here, afterwards:
#     bash benchmarks/device_kit.sh light off    # result/weights/ back
#
# start installs the wheels (where Keras is missing), optionally times train.py's step with batches made
# beforehand against its generator (BENCH_STEPS=N: benchmarks/bench_host.py --real_steps --real_network, 2 epochs
# of N steps each, the first compiling; at N=300, run by hand after the recipe, the two configurations took a
# command of 53 s together on an H200), then starts
# benchmarks/gpu_recipe.sh detached (setsid, so that it outlives the command) with the flags given, and waits
# up to WAIT_S seconds (default 480) for it to finish. start and collect copy what there is so far into $OUT:
# summary.json (once finished), epoch_times.jsonl, gpu_recipe.out, progress.txt, run.tgz (the run's logs, history
# and sample) and best.weights.h5 (the best checkpoint so far, 15 MB with its optimizer state).
set -euo pipefail
cd "$(dirname "$0")/.."
kit=.device
run=/tmp/n2n-device-recipe
parked=.git/n2n-parked-weights
limit=$((64 * 1024 * 1024))

tree_bytes() {  # the files git tracks or would track, as they are now (what the device tool sends)
    # (a tracked file moved away by `light on` is listed but has no size: stat's complaint is not an error here)
    git ls-files -co --exclude-standard -z | xargs -0 -r stat -c %s 2> /dev/null | awk '{s += $1} END {print s + 0}' \
        || true
}

stage() {
    mkdir -p "$kit/wheels" "$kit/data"
    local keras_version
    keras_version=$(python3 -c "import keras; print(keras.__version__)")
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$kit/wheels" "keras==$keras_version" namex optree
    # train291 as lossless WebP (2/3 of the PNGs' bytes, the same pixels); Set14 and Set5 as they are.
    python3 - "$kit/data" <<'PY'
import sys
from pathlib import Path

import cv2

shared, data = Path("../shared/datasets"), Path(sys.argv[1])
for name in ("train291", "Set14", "Set5"):
    (data / name).mkdir(parents=True, exist_ok=True)
    for path in sorted((shared / name).iterdir()):
        if name != "train291":
            (data / name / path.name).write_bytes(path.read_bytes())
            continue
        target = data / name / (path.stem + ".webp")
        if not target.exists():
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            ok, encoded = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 101])  # > 100: lossless
            if not ok or (cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED) != image).any():
                sys.exit(f"device_kit.sh: {path} does not survive lossless WebP")
            target.write_bytes(encoded.tobytes())
PY
    sizes
}

sizes() {
    local tree kit_bytes
    tree=$(tree_bytes)
    kit_bytes=$(du -sb "$kit" | cut -f1)
    echo "working tree $((tree / 1000000)) MB + $kit $((kit_bytes / 1000000)) MB" \
         "= $(((tree + kit_bytes) / 1000000)) MB (the device takes $((limit / 1000000)) MB)"
    if ((tree + kit_bytes > limit)); then
        echo "too big: bash benchmarks/device_kit.sh light on (moves result/weights/ out of the tree)"
    fi
}

light() {
    case ${1:-} in
        on) mkdir -p "$parked" && mv result/weights/*.weights.h5 "$parked"/ && sizes ;;
        off) mv "$parked"/*.weights.h5 result/weights/ && rmdir "$parked" && git status --short result ;;
        *) echo "usage: device_kit.sh light on|off" >&2; exit 2 ;;
    esac
}

install_keras() {  # the device has JAX but not Keras: the staged wheels, into /tmp/site
    if ! python3 -c "import keras" 2> /dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            "$kit"/wheels/*.whl
    fi
}

copy_out() {  # what the run has written so far, into $OUT (the device tool brings back 8 files at most)
    local out=${OUT:?OUT: the folder whose files come back}
    [ -f "$run/summary.json" ] && cp "$run/summary.json" "$out/"
    [ -f "$run/epoch_times.jsonl" ] && cp "$run/epoch_times.jsonl" "$out/"
    [ -f "$run.out" ] && cp "$run.out" "$out/gpu_recipe.out"
    # (without weights, the denoised test images and the --resume backup: the logs, history and sample: about 2 MB)
    tar czf "$out/run.tgz" --exclude='*.weights.h5' --exclude=Set14 --exclude=Set5 --exclude=backup \
        -C "$(dirname "$run")" "$(basename "$run")" 2> /dev/null || true
    local best
    best=$(ls -t "$run"/weights.*.weights.h5 2> /dev/null | head -n 1) || true
    [ -n "$best" ] && cp "$best" "$out/best.weights.h5"
    {
        date -u
        if [ -f "$run/epoch_times.jsonl" ]; then
            echo "epochs logged: $(wc -l < "$run/epoch_times.jsonl")"
            tail -n 2 "$run/epoch_times.jsonl"
        fi
        if [ -f "$run/EXIT" ]; then echo "gpu_recipe.sh exit status $(cat "$run/EXIT")"; else echo "still running"; fi
    } | tee "$out/progress.txt"
}

wait_for_run() {  # until gpu_recipe.sh has finished (it writes EXIT last) or $1 seconds have passed
    local deadline=$((SECONDS + $1))
    while [ ! -f "$run/EXIT" ] && ((SECONDS < deadline)); do
        sleep 5
    done
}

start() {
    install_keras
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1
    if [ "${BENCH_STEPS:-0}" -gt 0 ]; then
        python3 benchmarks/bench_host.py --real_steps --real_network --nb_epochs 2 --steps "$BENCH_STEPS" \
            --image_dir "$kit/data/train291" --test_dir "$kit/data/Set14" --config "premade $*" "$*" \
            | tee "$OUT/bench_host.jsonl" || echo "bench_host.py failed; the recipe starts all the same"
    fi
    rm -rf "$run" "$run.out"
    setsid nohup bash benchmarks/gpu_recipe.sh "$kit/data" "$run" "$@" > "$run.out" 2>&1 < /dev/null &
    wait_for_run "${WAIT_S:-480}"
    copy_out
}

collect() {
    wait_for_run "${1:?collect SECONDS}"
    copy_out
}

command=${1:-}
shift || true
case $command in
    stage) stage ;;
    sizes) sizes ;;
    light) light "$@" ;;
    start) start "$@" ;;
    collect) collect "$@" ;;
    *)
        echo "usage: device_kit.sh stage | sizes | light on|off | start [train.py flags] | collect SECONDS" >&2
        exit 2
        ;;
esac
