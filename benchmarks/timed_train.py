"""train.py with every epoch's time split in two: the training steps and the end-of-epoch work.

    python3 benchmarks/timed_train.py [train.py flags]

Trains exactly as train.py does with the same flags, and appends one JSON line an epoch to
OUTPUT_PATH/epoch_times.jsonl: {"epoch", "steps_s" (from the epoch's start until the device has finished its
last step), "end_of_epoch_s" (validation, checkpoint, history and backup), "callbacks_s" (the same per callback:
{class name: seconds}), "since_start_s"}. The first
epoch's steps include compiling the training step, its end the compiling of validation for each image shape
(on JAX done on a helper thread during the first epoch; its end waits for it only if it is not done).
benchmarks/gpu_recipe.sh runs the README recipe through this script, so a recipe slower than the GPU's compute
floor shows where the time goes.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cli  # noqa: E402

cli.import_keras_quietly(start=False)  # train.main starts the devices, after --distribute has configured them
import train  # noqa: E402
from bench_train import timed_epochs  # noqa: E402  (this script's folder is on sys.path)

EPOCH_TIMES = "epoch_times.jsonl"


def main(argv=None):
    with timed_epochs(Path(train.get_args(argv).output_path) / EPOCH_TIMES):
        return train.main(argv)


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
