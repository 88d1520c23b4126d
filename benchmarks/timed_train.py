"""train.py with every epoch's time split in two: the training steps and the end-of-epoch work.

    python3 benchmarks/timed_train.py [train.py flags]

Trains exactly as train.py does with the same flags, and appends one JSON line an epoch to
OUTPUT_PATH/epoch_times.jsonl: {"epoch", "steps_s" (from the epoch's start until the device has finished its
last step), "end_of_epoch_s" (validation, checkpoint, history and backup), "since_start_s"}. The first
epoch's steps include compiling the training step, its end the compiling of validation for each image shape.
benchmarks/gpu_recipe.sh runs the README recipe through this script, so a recipe slower than the GPU's compute
floor shows where the time goes.
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cli  # noqa: E402

cli.import_keras_quietly()
import keras  # noqa: E402

import model as models  # noqa: E402
import train  # noqa: E402
from bench_train import timed_epochs  # noqa: E402  (this script's folder is on sys.path)

EPOCH_TIMES = "epoch_times.jsonl"


class EpochTimesWriter(keras.callbacks.Callback):
    """Appends the last epoch's steps and end-of-epoch seconds (from timed_epochs' timers) to `path`."""

    def __init__(self, path, steps_timer, epoch_timer):
        super().__init__()
        self.path, self.steps_timer, self.epoch_timer = Path(path), steps_timer, epoch_timer
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        steps, whole = self.steps_timer.seconds[-1], self.epoch_timer.seconds[-1]
        line = dict(epoch=epoch + 1, steps_s=round(steps, 3), end_of_epoch_s=round(whole - steps, 3),
                    since_start_s=round(time.perf_counter() - self.start, 1))
        with open(self.path, "a") as times:
            times.write(json.dumps(line) + "\n")


def main(argv=None):
    output_path = Path(train.get_args(argv).output_path)
    with timed_epochs() as (steps_timer, epoch_timer):
        timed_callbacks = models.training_callbacks

        def with_writer(*args, **kwargs):
            writer = EpochTimesWriter(output_path / EPOCH_TIMES, steps_timer, epoch_timer)
            return [*timed_callbacks(*args, **kwargs), writer]

        models.training_callbacks = with_writer
        try:
            return train.main(argv)
        finally:
            models.training_callbacks = timed_callbacks


if __name__ == "__main__":
    sys.exit(main())
