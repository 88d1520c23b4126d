#!/usr/bin/env bash
# The original README's full recipe on one GPU, timed end to end: needs no network, only this repository, its
# Python requirements and the data.
#
#     KERAS_BACKEND=jax bash benchmarks/gpu_recipe.sh DATA_DIR RUN_DIR [more train.py flags]
#
# DATA_DIR holds train291/ (training) and Set14/ and Set5/ (evaluation). Flags after RUN_DIR are added to the
# recipe's and override them: e.g. --mixed_precision --zero_mean_targets --workers 8 --use_multiprocessing, or
# --nb_epochs 1 --steps 5 for a dry run. RUN_DIR receives train.py's checkpoints and history.npz, train.log,
# gpu_utilization.csv (time, GPU %, MiB in use; sampled every second where nvidia-smi is found), test_set14.log
# and test_set5.log (test_model.py on the best checkpoint, seed 0), summary.json and, last, EXIT (exit status).
set -euo pipefail
if (($# < 2)); then
    echo "usage: bash benchmarks/gpu_recipe.sh DATA_DIR RUN_DIR [more train.py flags]" >&2
    exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
data=$1 run=$2
shift 2
source "$repo/benchmarks/gpu_common.sh"
need_data_dirs gpu_recipe.sh "$data" train291 Set14 Set5
mkdir -p "$run"
finish() {
    local status=$?
    stop_gpu_sampler
    echo "$status" > "$run/EXIT"
}
trap finish EXIT
start_gpu_sampler "$run/gpu_utilization.csv"
start=$(date +%s.%N)
python3 "$repo/train.py" --image_dir "$data/train291" --test_dir "$data/Set14" \
    --image_size 128 --batch_size 8 --lr 0.001 --nb_epochs 60 --steps 1000 --seed 0 --output_path "$run" "$@" \
    > "$run/train.log" 2>&1
end=$(date +%s.%N)
stop_gpu_sampler
best=$(ls -t "$run"/weights.*.weights.h5 | head -n 1)
for set in Set14 Set5; do
    python3 "$repo/test_model.py" --weight_file "$best" --image_dir "$data/$set" --output_dir "$run/$set" --seed 0 \
        > "$run/test_${set,,}.log" 2>&1
done
python3 - "$run" "$start" "$end" "$best" "$@" <<'PY'
import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

run, start, end, best, flags = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5:]


def median(values):
    return sorted(values)[len(values) // 2] if values else None


def mean(values):
    return round(sum(values) / len(values), 1) if values else None


def version(package):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def gpu_name():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True).stdout.strip() or None
    except OSError:
        return None


log = re.sub(r"\x1b\[[0-9;]*m", "", (run / "train.log").read_text()).replace("\r", "\n").replace("\b", "")
unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}
step_ms = [float(value) * unit[u] for value, u in re.findall(r"([\d.]+)(us|ms|s)/step - [^\n]*val_PSNR", log)]
samples = []
if (run / "gpu_utilization.csv").is_file():
    samples = [int(line.split(",")[1]) for line in (run / "gpu_utilization.csv").read_text().splitlines()
               if line.count(",") == 2 and line.split(",")[1].strip().isdigit()]
epoch_s = [float(value) for value in re.findall(r" - (\d+)s - [\d.]+(?:us|ms|s)/step - [^\n]*val_PSNR", log)]
tests = {name: re.findall(r"mean over (\d+) images: noisy ([\d.]+) dB, denoised ([\d.]+) dB",
                          (run / f"test_{name.lower()}.log").read_text()) for name in ("Set14", "Set5")}
summary = {
    "wall_s": round(end - start, 1), "flags": flags, "epochs_logged": len(step_ms),
    "median_epoch_ms_per_step": median(step_ms), "later_epochs_ms_per_step": step_ms[1:],
    "first_epoch_s": epoch_s[0] if epoch_s else None, "later_epochs_median_s": median(epoch_s[1:]),
    "gpu_util_mean": mean(samples), "gpu_util_mean_after_first_minute": mean(samples[60:]),
    "best_checkpoint": best, "test_model": tests,
    "gpu": gpu_name(), "versions": {name: version(name) for name in ("keras", "jax", "tensorflow", "torch")},
}
(run / "summary.json").write_text(json.dumps(summary) + "\n")
PY
cat "$run/summary.json"
