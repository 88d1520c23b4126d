"""What runs around `fit`: whole-image validation, the best checkpoint, history.npz, the --resume backup,
the NaN stop, progress lines for logs and the L0 loss' annealing.

Every file is written to a temporary name and renamed over its own (`write_atomically`): a run killed at any
moment leaves each file whole, old or new. Images are float32 0-255 arrays shaped (1, H, W, C).
"""
import json
import math
import os
import time
from pathlib import Path

import keras
import numpy as np

from inference import predict_padded, reflect_padded
from model import ImageScores, L0Loss, NeighborLoss, l0_gamma, learning_rate_at, neighbor_gamma

BACKUP_FOLDER = "backup"  # in the output folder: what --resume continues from
STATE_FILE = "state.json"  # in the backup folder, written last: {epoch, weights, flags, history}


def write_atomically(path, write):
    """write(temporary) into '.partial.' + the file's name beside `path` (no 'weights.*' pattern matches it),
    then rename it over `path`: a failure or a kill leaves the old file or the new one, never a partial one."""
    folder, name = os.path.split(str(path))
    os.makedirs(folder or ".", exist_ok=True)
    temporary = os.path.join(folder, ".partial." + name)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


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


class NeighborValidation(keras.callbacks.Callback):
    """val_loss where the validation images are noisy themselves (no PSNR can be computed): Neighbor2Neighbor's
    reconstruction error mean((f(g1 y) - g2 y)^2) over the images, with one draw of pairs fixed for the run. The
    better the network predicts a pixel from its noisy neighbours, the lower; the best checkpoint minimises it.
    `sub_images`: [(g1, g2)] of generator.neighbor_validation_data."""

    def __init__(self, sub_images, network):
        super().__init__()
        self.sub_images = sub_images
        self.network = network

    def on_epoch_end(self, epoch, logs=None):
        errors = [np.mean(np.square(predict_padded(self.network, first) - second)) for first, second in self.sub_images]
        logs["val_loss"] = float(np.mean(errors))


class AnnealLossGamma(keras.callbacks.Callback):
    """Sets a loss' gamma variable to schedule(epoch) at the start of every epoch (the L0 loss' model.l0_gamma,
    Neighbor2Neighbor's model.neighbor_gamma): from the epoch's real index, so a resumed run carries on."""

    def __init__(self, loss, schedule):
        super().__init__()
        self.loss = loss
        self.schedule = schedule

    def on_epoch_begin(self, epoch, logs=None):
        self.loss.gamma.assign(self.schedule(epoch))
        if keras.backend.backend() != "tensorflow":
            # JAX and torch trace the variable's value as a constant: retrace once per epoch.
            self.model.make_train_function(force=True)
            self.model.make_test_function(force=True)


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


def read_backup(output_path):
    """The backup state of the run in `output_path`: {"epoch": completed epochs, "weights": path of their
    weights and optimizer state, "flags": {flag: value}, "history": {metric: [values]}}; None where there is
    none; a ValueError saying why where it cannot be resumed from."""
    folder = Path(str(output_path), BACKUP_FOLDER)
    state_file = folder / STATE_FILE
    if not state_file.is_file():
        if (folder / "training_metadata.json").is_file():
            raise ValueError(f"{folder} was written by an earlier version of train.py, which this one cannot "
                             f"resume; continue from its weights with --weight {folder / 'latest.weights.h5'}")
        return None
    try:
        state = json.loads(state_file.read_text())
        state = dict(state, epoch=int(state["epoch"]), weights=str(folder / state["weights"]))
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{state_file} is damaged") from None
    if not Path(state["weights"]).is_file():
        raise ValueError(f"{state['weights']}, which {state_file} names, is missing")
    return state


class RunBackup(keras.callbacks.Callback):
    """The --resume backup. After every epoch whose loss and val_loss are finite: the weights and optimizer
    state as epoch_NNN.weights.h5, then STATE_FILE naming it, with the run's flags and `history_saver`'s
    history. The state is written last, so it always names a whole file; older weights go after it.
    `resume_from` (read_backup's state) is loaded into the model when training begins."""

    def __init__(self, backup_dir, history_saver, run_flags=None, resume_from=None):
        super().__init__()
        self.backup_dir = Path(backup_dir)
        self.history_saver = history_saver
        self.run_flags = run_flags or {}
        self.resume_from = resume_from

    def on_train_begin(self, logs=None):
        if self.resume_from is not None:
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)  # so that its state loads too
            self.model.load_weights(self.resume_from["weights"])

    def on_epoch_end(self, epoch, logs=None):
        broken = [f"{name} is {value}" for name, value in (logs or {}).items()
                  if name in ("loss", "val_loss") and not math.isfinite(value)]
        if broken:  # no state to resume from: the backup keeps the last good epoch
            print(f"\nEpoch {epoch + 1}: {', '.join(broken)}: not backed up (--resume continues after the last "
                  f"epoch whose loss and val_loss were finite)")
            return
        weights = f"epoch_{epoch + 1:03d}.weights.h5"
        write_atomically(self.backup_dir / weights, self.model.save_weights)
        state = {"epoch": epoch + 1, "weights": weights, "flags": self.run_flags,
                 "history": self.history_saver.history}
        write_atomically(self.backup_dir / STATE_FILE, lambda temporary: Path(temporary).write_text(json.dumps(state)))
        for old in self.backup_dir.glob("epoch_*.weights.h5"):
            if old.name != weights:
                old.unlink()


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


def training_callbacks(output_path, validation_pairs, nb_epochs, lr, loss, nan_advice="Lower the learning rate.",
                       resume_from=None, replicas=1, run_flags=None, progress_lines=None, network=None,
                       neighbor_gamma_max=2.0, noisy_validation=None):
    """The callbacks of a training run, in the order they must run: validation, LR schedule, best-val_PSNR
    checkpoint, history, --resume backup (`resume_from`: read_backup's state, continued), NaN stop, L0 annealing
    where `loss` is an L0Loss (Neighbor2Neighbor's gamma where a NeighborLoss), and ProgressLines with
    `progress_lines` (steps per epoch). `network`: the denoiser validated and saved, where the fitted model is a
    training wrapper around it; `noisy_validation`: where the validation images are noisy themselves, their
    sub-images for NeighborValidation (val_loss, lowest best), in place of `validation_pairs`."""
    history = (resume_from or {}).get("history", {})
    noisy = noisy_validation is not None
    monitor, mode = ("val_loss", "min") if noisy else ("val_PSNR", "max")
    name = "weights.{epoch:03d}-" + ("{val_loss:.3f}" if noisy else "{val_loss:.3f}-{val_PSNR:.5f}") + ".weights.h5"
    finite_scores = [value for value in history.get(monitor, []) if math.isfinite(value)]
    history_saver = HistorySaver(os.path.join(str(output_path), "history.npz"), history)
    callbacks = [
        NeighborValidation(noisy_validation, network) if noisy
        else ImageValidation(validation_pairs, "mse" if isinstance(loss, NeighborLoss) else loss, replicas, network),
        keras.callbacks.LearningRateScheduler(lambda epoch: learning_rate_at(epoch, nb_epochs, lr)),
        BestCheckpoint(os.path.join(str(output_path), name), monitor=monitor, mode=mode, network=network,
                       best=(max if mode == "max" else min)(finite_scores, default=None)),
        history_saver,
        RunBackup(os.path.join(str(output_path), BACKUP_FOLDER), history_saver, run_flags, resume_from),
        StopOnNaN(nan_advice),
    ]
    if isinstance(loss, L0Loss):
        callbacks.append(AnnealLossGamma(loss, lambda epoch: l0_gamma(epoch, nb_epochs)))
    if isinstance(loss, NeighborLoss):
        callbacks.append(AnnealLossGamma(loss, lambda epoch: neighbor_gamma(epoch, nb_epochs, neighbor_gamma_max)))
    if progress_lines:
        callbacks.append(ProgressLines(nb_epochs, progress_lines))
    return callbacks
