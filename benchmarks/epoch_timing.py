"""Callbacks that time a training run's epochs: the training steps (device included) apart from the end-of-epoch
work (validation, checkpoint, history, backup), and each of train.py's callbacks. Imports Keras but starts no
devices, so timed_train.py can still configure --distribute."""
import contextlib
import json
import time
from pathlib import Path
from unittest import mock

import common

common.import_keras(start=False)
import callbacks  # noqa: E402
import keras  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch, up to this callback's turn at its end; with `wait_for_device` that includes the
    device finishing the epoch's steps (JAX queues them ahead), and `time_parts` times other callbacks' ends."""

    def __init__(self, wait_for_device=False):
        super().__init__()
        self.wait_for_device = wait_for_device
        # time.perf_counter() at each epoch's start, on reaching its end (before waiting for the device) and at its end
        self.starts, self.reached, self.ends = [], [], []
        self.parts = []  # per epoch: {callback class name: seconds of its on_epoch_end}, where timed (time_parts)

    def on_epoch_begin(self, epoch, logs=None):
        self.starts.append(time.perf_counter())
        self.parts.append({})

    def time_parts(self, timed_callbacks):
        """Wrap the on_epoch_end of `timed_callbacks` (run within this timer's epochs) so that each one's seconds
        go into the epoch's `parts`, under its class name."""
        for callback in timed_callbacks:
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
    """Appends one JSON line an epoch to `path`: epoch, steps_s, end_of_epoch_s, callbacks_s ({class name:
    seconds}) and since_start_s, from the two timers of timed_epochs (it must come after both)."""

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
    """Within: train.py's callbacks run between an EpochTimer of the steps and one of the whole epoch (which times
    each of them), followed, given `log_path`, by an EpochTimesWriter to it. Yields (steps timer, epoch timer)."""
    steps_timer, epoch_timer = EpochTimer(wait_for_device=True), EpochTimer()
    training_callbacks = callbacks.training_callbacks

    def timed_callbacks(*args, **kwargs):
        writer = [] if log_path is None else [EpochTimesWriter(log_path, steps_timer, epoch_timer)]
        run_callbacks = training_callbacks(*args, **kwargs)
        epoch_timer.time_parts(run_callbacks)
        return [steps_timer, *run_callbacks, epoch_timer, *writer]

    with mock.patch.object(callbacks, "training_callbacks", timed_callbacks):
        yield steps_timer, epoch_timer
