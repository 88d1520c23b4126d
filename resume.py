"""--resume (docs/resume.md): the backup of a run after every completed epoch, reading it back, and what a resumed
run checks, draws and says. Knows train.py's flag names (RUN_FLAGS) but not its parser: its errors are
ValueErrors, which train.py turns into one-line errors.

The backup is a folder in the output folder: epoch_NNN.weights.h5 (weights and optimizer state) and STATE_FILE,
written last, naming it, with the run's flags, the seed it trains from and the history so far.
"""
import json
import math
import shutil
import warnings
from pathlib import Path

import keras
import numpy as np

from atomic_write import write_atomically

BACKUP_FOLDER = "backup"  # in the output folder: what --resume continues from
STATE_FILE = "state.json"  # in the backup folder, written last: {epoch, weights, flags, seed, history}
# The flags that shape what a run learns; --resume warns where they differ from those the run was started with.
RUN_FLAGS = ("image_dir", "test_dir", "image_size", "batch_size", "nb_epochs", "steps", "lr", "loss",
             "source_noise_model", "target_noise_model", "val_noise_model", "zero_mean_targets", "seed", "method",
             "neighbor_gamma", "pixel_shuffle", "target_dir", "bursts")


def read_backup(output_path):
    """The backup state of the run in `output_path`: {"epoch": completed epochs, "weights": path of their
    weights and optimizer state, "flags": {flag: value}, "seed", "history": {metric: [values]}}; None where there
    is none; a ValueError saying why where it cannot be resumed from."""
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


def run_seed(seed, state):
    """The seed a run trains from: --seed where given, else the one an interrupted run drew (so that --resume
    continues its very patch stream), else a new one, drawn from the system's entropy (0 .. 2**32 - 1)."""
    if seed is not None:
        return seed
    if state is not None and state.get("seed") is not None:
        return int(state["seed"])
    return int(np.random.SeedSequence().entropy % 2**32)


class RunBackup(keras.callbacks.Callback):
    """The --resume backup. After every epoch whose loss and val_loss are finite: the weights and optimizer
    state as epoch_NNN.weights.h5, then STATE_FILE naming it, with the run's flags, its seed and `history_saver`'s
    history. The state is written last, so it always names a whole file; older weights go after it.
    `resume_from` (read_backup's state) is loaded into the model when training begins; `to_beat`, the starting
    weights' score that a checkpoint must beat, is kept for the resumed run."""

    def __init__(self, backup_dir, history_saver, run_flags=None, resume_from=None, seed=None, to_beat=None):
        super().__init__()
        self.backup_dir = Path(backup_dir)
        self.history_saver = history_saver
        self.run_flags = run_flags or {}
        self.resume_from = resume_from
        self.seed = seed
        self.to_beat = to_beat

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
        state = {"epoch": epoch + 1, "weights": weights, "flags": self.run_flags, "seed": self.seed,
                 "to_beat": self.to_beat, "history": self.history_saver.history}
        write_atomically(self.backup_dir / STATE_FILE, lambda temporary: Path(temporary).write_text(json.dumps(state)))
        for old in self.backup_dir.glob("epoch_*.weights.h5"):
            if old.name != weights:
                old.unlink()


def flag_text(name, value):
    """How a flag's value is written on the command line: '--lr 0.001', '--zero_mean_targets', 'no --seed'."""
    if value is None or value is False:
        return f"no --{name}"
    return f"--{name}" if value is True else f"--{name} {value}"


def changed_flags(flags, state):
    """'--lr 0.002 (the run: --lr 0.001)' for each of RUN_FLAGS whose value in `flags` ({name: value}) differs
    from the one the interrupted run recorded."""
    recorded = state.get("flags", {})
    return [f"{flag_text(name, flags[name])} (the run: {flag_text(name, recorded[name])})"
            for name in RUN_FLAGS if name in recorded and name in flags and recorded[name] != flags[name]]


def interrupted_run(output_path):
    """The backup state of the run in `output_path` to continue; a ValueError saying why where there is none to
    continue or it cannot be read."""
    try:
        state = read_backup(output_path)
    except ValueError as error:
        raise ValueError(f"{error}; leave out --resume to start a new run there") from None
    if state is None:
        raise ValueError(f"no interrupted run in --output_path {output_path} (no completed epoch in its "
                         f"{BACKUP_FOLDER}/ folder); leave out --resume to start one")
    return state


def announce(output_path, nb_epochs, flags, state):
    """Say which epoch the run continues after, and warn of flags ({name: value}) given other values than the
    run's."""
    completed = state["epoch"]
    print(f"resuming {output_path} after epoch {completed} of {nb_epochs}" if completed < nb_epochs
          else f"{output_path}: the run has finished its {completed} epochs; nothing to train (a larger "
               f"--nb_epochs continues it)")
    changed = changed_flags(flags, state)
    if changed:
        warnings.warn(f"--resume with other flags than the run was started with: {'; '.join(changed)}; "
                      f"the remaining epochs use the new values")


def replace_old_backup(output_path):
    """A new run in a folder holding an earlier run's backup: remove that backup, saying so (called once the new
    run is about to train, not before, so that a mistake in the flags does not cost an interrupted run its
    backup)."""
    backup = Path(output_path) / BACKUP_FOLDER
    if backup.exists():
        print(f"a new run in {output_path}: replacing the backup of the earlier run there (--resume continues a run)")
        shutil.rmtree(backup)


def how_to_continue(output_path):
    """After Ctrl-C: whether there is a completed epoch to --resume from, in a line."""
    if (Path(output_path) / BACKUP_FOLDER / STATE_FILE).is_file():
        return (f"interrupted: the same command with --resume continues from the last completed epoch "
                f"(backed up in {Path(output_path) / BACKUP_FOLDER})")
    return "interrupted before the first epoch ended: nothing to resume; run the command again to start over"
