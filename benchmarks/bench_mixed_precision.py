"""train.py in float32 against train.py --mixed_precision: time per step and validation PSNR at equal budget.

    python3 benchmarks/bench_mixed_precision.py [--nb_epochs 3] [--steps 50]

Runs the real train.py twice, one after the other, with the same seed, data and
flags (SRResNet, batch 16 of 64x64, gaussian,0,50 noisy targets, lr 0.005,
train291 -> Set5 by default), and reads the per-epoch lines it prints when its
output is not a terminal. Time per step counts training and the epoch's
validation together and leaves out the first epoch (graph tracing). Prints one
JSON line per run and one with the ratios.
"""
import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"


def get_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--image_dir", default=str(DATASETS / "train291"), help="training images")
    parser.add_argument("--test_dir", default=str(DATASETS / "Set5"), help="validation images")
    parser.add_argument("--nb_epochs", type=int, default=3, help="epochs per run (the first is not timed)")
    parser.add_argument("--steps", type=int, default=50, help="batches per epoch")
    return parser.parse_args()


def train(args, output, *extra):
    """Run train.py; returns (per-epoch ms per step, val_PSNR history, wall seconds)."""
    command = [sys.executable, str(REPO / "train.py"), "--image_dir", args.image_dir, "--test_dir", args.test_dir,
               "--nb_epochs", str(args.nb_epochs), "--steps", str(args.steps), "--batch_size", "16",
               "--image_size", "64", "--lr", "0.005", "--seed", "0", "--output_path", str(output), *extra]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    # Epoch lines read "50/50 - 203s - 4s/step - ...": whole seconds per epoch are precise to 1 %, per step not.
    epoch_seconds = re.findall(r" - (\d+)s - [\d.]+\w*/step - ", result.stdout)
    epochs = [1000.0 * float(seconds) / args.steps for seconds in epoch_seconds]
    history = np.load(Path(output) / "history.npz", allow_pickle=True)["history"].item()
    return epochs, history["val_PSNR"], wall


def main():
    args = get_args()
    runs = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, extra in (("float32", ()), ("mixed_bfloat16", ("--mixed_precision",))):
            epochs, val_psnr, wall = train(args, Path(folder) / name, *extra)
            runs[name] = {"run": name, "ms_per_step": round(float(np.mean(epochs[1:])), 1),
                          "epoch_ms_per_step": epochs, "val_PSNR": [round(v, 3) for v in val_psnr],
                          "wall_s": round(wall, 1), "steps": args.nb_epochs * args.steps}
            print(json.dumps(runs[name]), flush=True)
    print(json.dumps({"speed_up": round(runs["float32"]["ms_per_step"] / runs["mixed_bfloat16"]["ms_per_step"], 2),
                      "val_PSNR_difference_db": round(runs["mixed_bfloat16"]["val_PSNR"][-1]
                                                      - runs["float32"]["val_PSNR"][-1], 3)}))


if __name__ == "__main__":
    main()
