"""What runs around `fit`: whole-image validation, the best checkpoint, history.npz, the NaN stop, progress lines
for logs and the annealing of a loss' gamma; `training_callbacks` puts them in order, with resume.RunBackup.

Every file is written whole (atomic_write): a run killed at any moment leaves each file whole, old or new.
Images are float32 0-255 arrays shaped (1, H, W, C).
"""
import math
import os
import time
from pathlib import Path

import keras
import numpy as np

import neighbor2neighbor
import resume
from atomic_write import write_atomically
from inference import predict_padded, reflect_padded
from model import ImageScores, L0Loss, l0_gamma, learning_rate_at

def save_history(path, history):
    """Atomically write `history` ({metric: [per-epoch values]}) as np.savez(path, history=history)."""
    def write(temporary):
        with open(temporary, "wb") as handle:  # a handle: np.savez would add .npz to a bare name
            np.savez(handle, history=history)
    write_atomically(path, write)


def fill_to_multiple(batch, replicas):
    """`batch` with its last item repeated until its length is a multiple of `replicas`, so that a data-parallel
    prediction splits it evenly among devices; `batch` itself where it already is."""
    if len(batch) % replicas == 0:
        return batch
    return np.concatenate([batch, np.repeat(batch[-1:], -len(batch) % replicas, axis=0)])


def validation_model(model, loss, channels):
    """[padded noisy image, clean image] -> [loss, PSNR, SSIM] of `model`'s prediction: through
    predict_on_batch one compiled program per image size predicts and scores, and only three numbers return."""
    noisy, clean = keras.Input((None, None, channels)), keras.Input((None, None, channels))
    return keras.Model([noisy, clean], ImageScores(loss)(clean, model(noisy)), name="validation")


class ImageValidation(keras.callbacks.Callback):
    """Adds val_loss, val_PSNR and val_SSIM, the means over the validation images, to the epoch's logs.

    Keras' data adapters fix one shape from the first batches, so images of many sizes cannot go through
    fit(validation_data=...): each (noisy, clean) pair is mirrored up to a multiple of 64 (as test_model.py
    pads), predicted and scored by a `validation_model`. Must come before the callbacks that read val_*.
    """

    monitor = ("val_PSNR", "max")  # what the best checkpoint is chosen by (training_callbacks)

    def __init__(self, pairs, loss, replicas=1, network=None):
        super().__init__()
        self.inputs = [[fill_to_multiple(reflect_padded(noisy), replicas), fill_to_multiple(clean, replicas)]
                       for noisy, clean in pairs]
        self.loss = loss
        self.network = network  # the denoiser, where the fitted model is a training wrapper around it
        self.scores = None  # built at the first use, inside fit (and its distribution scope)

    def on_epoch_end(self, epoch, logs=None):
        if self.scores is None:
            self.scores = validation_model(self.network or self.model, self.loss, self.inputs[0][1].shape[-1])
        per_image = [np.asarray(self.scores.predict_on_batch(inputs), np.float64)[0] for inputs in self.inputs]
        logs.update(zip(("val_loss", "val_PSNR", "val_SSIM"), map(float, np.mean(per_image, axis=0))))


class PairValidation(keras.callbacks.Callback):
    """val_loss where the validation images have no clean versions: the mean squared error of the network's output
    for the first image of each (1, H, W, C) pair against the second, another noisy shot of the scene (or, for
    Neighbor2Neighbor, the other sub-image of a noisy photo). Where the two noises are independent and zero-mean,
    the clean image minimises its expectation, so the best checkpoint is the one of the lowest."""

    monitor = ("val_loss", "min")  # what the best checkpoint is chosen by (training_callbacks)

    def __init__(self, pairs, network):
        super().__init__()
        self.pairs = pairs
        self.network = network

    def on_epoch_end(self, epoch, logs=None):
        errors = [np.mean(np.square(predict_padded(self.network, first) - second)) for first, second in self.pairs]
        logs["val_loss"] = float(np.mean(errors))


class AnnealLossGamma(keras.callbacks.Callback):
    """Sets a loss' gamma variable to schedule(epoch) at the start of every epoch (the L0 loss' model.l0_gamma,
    Neighbor2Neighbor's neighbor2neighbor.gamma_at): from the epoch's real index, so a resumed run carries on.
    The variable is a metric's (model.LossGamma), which the compiled step reads as state: nothing is retraced."""

    def __init__(self, loss, schedule):
        super().__init__()
        self.loss = loss
        self.schedule = schedule

    def on_epoch_begin(self, epoch, logs=None):
        self.loss.gamma.assign(self.schedule(epoch))


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the weights (of `network`, else of the fitted model) each time `monitor` beats its best ("max":
    rises, "min": falls), as Keras' ModelCheckpoint with save_best_only, but atomically. `path_template` is
    formatted with epoch (1-based) and the epoch's logs; `best` carries an interrupted run's best value over."""

    def __init__(self, path_template, monitor="val_PSNR", best=None, mode="max", network=None):
        super().__init__()
        self.path_template = str(path_template)
        self.monitor = monitor
        self.best = best
        self.better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
        self.network = network

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value):
            print(f"\nEpoch {epoch + 1}: {self.monitor} is {value}: no checkpoint")
            return
        if self.best is not None and not self.better(value, self.best):
            print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")
            return
        path = self.path_template.format(epoch=epoch + 1, **logs)
        previous = "None" if self.best is None else f"{self.best:.5f}"
        print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {previous} to {value:.5f}, saving weights to {path}")
        write_atomically(path, (self.network or self.model).save_weights)
        self.best = value


def best_checkpoint(output_path, history):
    """The checkpoint of the run's best epoch by val_PSNR in `history` (its per-epoch lists, a resumed run's
    earlier epochs included; by the lowest val_loss where the validation had no PSNR), or None. BestCheckpoint
    writes on a strict improvement, so that is the first epoch with the best score; of several files of that epoch
    (an older run's left in the folder) the newest."""
    by_loss = "val_PSNR" not in history
    values = history.get("val_loss" if by_loss else "val_PSNR", [])
    scores = [(-value if by_loss else value, -epoch) for epoch, value in enumerate(values) if math.isfinite(value)]
    if not scores:
        return None
    epoch = -max(scores)[1]
    files = Path(output_path).glob(f"weights.{epoch + 1:03d}-*.weights.h5")
    return max(files, key=lambda path: path.stat().st_mtime_ns, default=None)


class HistorySaver(keras.callbacks.Callback):
    """Appends every epoch's logs to `history` ({metric: [values]}, an interrupted run's to start with) and
    writes it to an .npz after every epoch, for plot_history.py."""

    def __init__(self, path, history=None):
        super().__init__()
        self.path = str(path)
        self.history = {key: list(values) for key, values in (history or {}).items()}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        save_history(self.path, self.history)


class StopOnNaN(keras.callbacks.Callback):
    """Stops training at the first NaN/inf loss and says what to change (`advice`).

    async_safe: on JAX and torch Keras then runs batch hooks on a helper thread, so reading the loss does not
    make the loop wait for every step; training stops by the end of that epoch at the latest.
    """

    async_safe = True

    def __init__(self, advice):
        super().__init__()
        self.advice = advice
        self.stopped_at = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if self.stopped_at is None and loss is not None and not math.isfinite(float(loss)):
            self.stopped_at = batch
            self.model.stop_training = True
            print(f"\nthe loss became {loss} at batch {batch + 1}: training stopped. {self.advice}")


def rough_duration(seconds):
    """'40 s', '12 min' or '3.5 h': a time left, as precise as an estimate is."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class ProgressLines(keras.callbacks.Callback):
    """For output that is no terminal (a log file, a pipe), where Keras says nothing until an epoch ends: a line
    every `interval_s` seconds with the step, the mean loss so far, seconds a step and the time left in the epoch.
    async_safe: it reads the loss (a wait for the device) only when it prints."""

    async_safe = True

    def __init__(self, nb_epochs, steps, interval_s=60.0, clock=time.monotonic):
        super().__init__()
        self.nb_epochs, self.steps, self.interval_s, self.clock = nb_epochs, steps, interval_s, clock
        self.on_epoch_begin(0)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.epoch_start = epoch, self.clock()
        self.last_line = self.epoch_start

    def on_train_batch_end(self, batch, logs=None):
        now = self.clock()
        if now - self.last_line < self.interval_s:
            return
        self.last_line, done = now, batch + 1
        per_step = (now - self.epoch_start) / done
        loss = (logs or {}).get("loss")
        loss_text = f", loss {float(loss):.4g} (mean so far)" if loss is not None else ""
        print(f"epoch {self.epoch + 1}/{self.nb_epochs}: step {done}/{self.steps}{loss_text}, {per_step:.2f} s a "
              f"step, about {rough_duration(per_step * (self.steps - done))} left in this epoch", flush=True)


def start_score(validation):
    """The validation score (validation.monitor's key) of the weights the network holds before training: a
    fine-tune keeps an epoch only where it beats its start."""
    logs = {}
    validation.on_epoch_end(-1, logs)
    return logs.get(validation.monitor[0])


def training_callbacks(output_path, validation, loss, *, nb_epochs, lr, seed, nan_advice="Lower the learning rate.",
                       resume_from=None, run_flags=None, progress_lines=None, network=None, neighbor_gamma_max=2.0,
                       to_beat=None):
    """The callbacks of a training run, in the order they must run: `validation` (an ImageValidation, or another
    callback with a `monitor` (log key, "max" or "min") that sets val_loss), LR schedule, best checkpoint by that
    key, history, --resume backup (`resume_from`: read_backup's state, continued; `seed`: the run's), NaN stop,
    annealing of the loss' gamma where `loss` has one (L0Loss, NeighborLoss), and ProgressLines with
    `progress_lines` (steps per epoch). `network`: the denoiser saved, where the fitted model is a training
    wrapper around it. `to_beat`: a score (start_score's) the first checkpoint must beat."""
    history = (resume_from or {}).get("history", {})
    monitor, mode = validation.monitor
    scores = "{val_loss:.3f}-{val_PSNR:.5f}" if monitor == "val_PSNR" else "{val_loss:.3f}"
    earlier = [*history.get(monitor, []), *([] if to_beat is None else [to_beat])]
    finite_scores = [value for value in earlier if math.isfinite(value)]
    history_saver = HistorySaver(os.path.join(str(output_path), "history.npz"), history)
    callbacks = [
        validation,
        keras.callbacks.LearningRateScheduler(lambda epoch: learning_rate_at(epoch, nb_epochs, lr)),
        BestCheckpoint(os.path.join(str(output_path), "weights.{epoch:03d}-" + scores + ".weights.h5"),
                       monitor=monitor, mode=mode, network=network,
                       best=(max if mode == "max" else min)(finite_scores, default=None)),
        history_saver,
        resume.RunBackup(os.path.join(str(output_path), resume.BACKUP_FOLDER), history_saver, run_flags,
                         resume_from, seed, to_beat),
        StopOnNaN(nan_advice),
    ]
    if isinstance(loss, L0Loss):
        callbacks.append(AnnealLossGamma(loss, lambda epoch: l0_gamma(epoch, nb_epochs)))
    if isinstance(loss, neighbor2neighbor.NeighborLoss):
        callbacks.append(AnnealLossGamma(loss, lambda epoch: neighbor2neighbor.gamma_at(epoch, nb_epochs,
                                                                                       neighbor_gamma_max)))
    if progress_lines:
        callbacks.append(ProgressLines(nb_epochs, progress_lines))
    return callbacks
