"""Steady-state training step time: train.py's generator against pre-made in-memory tensors, in one run.

    python3 benchmarks/bench_train.py [--models srresnet unet] [--steps 10]

For each model, trains one warm-up epoch (tracing) and one timed epoch of
--steps batches, twice: fed by train.py's NoisyImageGenerator (gaussian
noise, its default worker threads) and fed by numpy arrays made beforehand.
Prints one JSON line per measurement and the ratio generator / in-memory.
"""
import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cli  # noqa: E402

cli.import_keras_quietly()
import keras  # noqa: E402

import generator  # noqa: E402
import images  # noqa: E402
import model as models  # noqa: E402
from noise_model import get_noise_model  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch, up to this callback's turn at the epoch's end. With `wait_for_device`, that
    time includes the device finishing the epoch's steps (JAX dispatches them ahead of the device): it reads
    a weight back first."""

    def __init__(self, wait_for_device=False):
        super().__init__()
        self.wait_for_device = wait_for_device
        # time.perf_counter() at each epoch's start, on reaching its end (before waiting for the device) and at its end
        self.starts, self.reached, self.ends = [], [], []
        self.parts = []  # per epoch: {callback class name: seconds of its on_epoch_end}, where timed (time_parts)

    def on_epoch_begin(self, epoch, logs=None):
        self.starts.append(time.perf_counter())
        self.parts.append({})

    def time_parts(self, callbacks):
        """Wraps the on_epoch_end of `callbacks` (they must run within this timer's epochs) so that each one's
        seconds go into this epoch's `parts`, under its class name."""
        for callback in callbacks:
            def timed(epoch, logs=None, hook=callback.on_epoch_end, name=type(callback).__name__):
                start = time.perf_counter()
                hook(epoch, logs)
                self.parts[-1][name] = self.parts[-1].get(name, 0.0) + time.perf_counter() - start

            callback.on_epoch_end = timed

    def on_epoch_end(self, epoch, logs=None):
        self.reached.append(time.perf_counter())
        if self.wait_for_device:
            keras.ops.convert_to_numpy(self.model.trainable_weights[-1])
        self.ends.append(time.perf_counter())

    @property
    def seconds(self):
        """Seconds of every completed epoch, from its start to this timer's end."""
        return [end - start for start, end in zip(self.starts, self.ends)]


class EpochTimesWriter(keras.callbacks.Callback):
    """Appends one JSON line an epoch to `path`: {"epoch", "steps_s", "end_of_epoch_s", "callbacks_s" (the
    end-of-epoch seconds of each of train.py's callbacks), "since_start_s"}, from the two timers of timed_epochs
    (it must come after both)."""

    def __init__(self, path, steps_timer, epoch_timer):
        super().__init__()
        self.path, self.steps_timer, self.epoch_timer = Path(path), steps_timer, epoch_timer
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        steps, whole = self.steps_timer.seconds[-1], self.epoch_timer.seconds[-1]
        parts = {name: round(seconds, 3) for name, seconds in self.epoch_timer.parts[-1].items()}
        line = dict(epoch=epoch + 1, steps_s=round(steps, 3), end_of_epoch_s=round(whole - steps, 3),
                    callbacks_s=parts, since_start_s=round(time.perf_counter() - self.start, 1))
        with open(self.path, "a") as times:
            times.write(json.dumps(line) + "\n")


@contextlib.contextmanager
def timed_epochs(log_path=None):
    """Within: train.py's callbacks are preceded by an EpochTimer (its epochs' training steps, device included)
    and followed by one (the whole epoch, with validation, checkpoint, history and backup), and with `log_path`
    by an EpochTimesWriter to it; the second times each of train.py's callbacks (its `parts`). Yields both
    timers."""
    steps_timer, epoch_timer = EpochTimer(wait_for_device=True), EpochTimer()
    training_callbacks = models.training_callbacks

    def timed_callbacks(*args, **kwargs):
        writer = [] if log_path is None else [EpochTimesWriter(log_path, steps_timer, epoch_timer)]
        callbacks = training_callbacks(*args, **kwargs)
        epoch_timer.time_parts(callbacks)
        return [steps_timer, *callbacks, epoch_timer, *writer]

    with mock.patch.object(models, "training_callbacks", timed_callbacks):
        yield steps_timer, epoch_timer


def compiled(model_name):
    model = models.get_model(model_name)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.001), loss="mse", metrics=[models.psnr_metric()])
    return model


def timed_step(model_name, fit_data, steps, **fit_kwargs):
    """Seconds per step of the second (traced, steady) epoch."""
    timer = EpochTimer()
    compiled(model_name).fit(fit_data, epochs=2, verbose=0, callbacks=[timer], **fit_kwargs)
    return timer.seconds[1] / steps


def get_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--image_dir", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/train291"),
                        help="training images")
    parser.add_argument("--models", nargs="+", default=list(models.MODEL_NAMES), help="models to time")
    parser.add_argument("--steps", type=int, default=10, help="batches per epoch")
    parser.add_argument("--batch_size", type=int, default=16, help="patches per batch")
    parser.add_argument("--image_size", type=int, default=64, help="patch size")
    return parser.parse_args()


def main():
    args = get_args()
    cached = generator.load_images(images.list_images(args.image_dir), min_size=args.image_size)
    noise = get_noise_model("gaussian,0,50")
    common = dict(batch_size=args.batch_size, image_size=args.image_size, steps=args.steps,
                  backend=keras.backend.backend())
    for model_name in args.models:
        data = generator.NoisyImageGenerator(cached, noise, noise, batch_size=args.batch_size,
                                             image_size=args.image_size, steps=args.steps, seed=0,
                                             workers=cli.default_workers())
        batches = [data[index] for index in range(args.steps)]
        x, y = np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
        in_memory = timed_step(model_name, x, args.steps, y=y, batch_size=args.batch_size, shuffle=False)
        print(json.dumps(dict(bench="train_step", model=model_name, feed="in_memory", seconds=round(in_memory, 4),
                              **common)), flush=True)
        fed = timed_step(model_name, data, args.steps, shuffle=False)  # as train.py feeds it
        print(json.dumps(dict(bench="train_step", model=model_name, feed="generator", seconds=round(fed, 4),
                              workers=data.workers, ratio_to_in_memory=round(fed / in_memory, 3), **common)),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
