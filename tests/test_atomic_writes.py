"""Checkpoints and history are written atomically: a write that fails midway leaves the earlier files intact."""
import contextlib
import threading
from unittest import mock

import cli

cli.import_keras_quietly()
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import model as models  # noqa: E402
from plot_history import load_history  # noqa: E402


def learning_model():
    """A 1x1 conv from zero towards y = 2x: its validation PSNR improves every epoch, so every epoch checkpoints."""
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1, kernel_initializer="zeros")(inputs))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.02), loss="mse", metrics=[models.psnr_metric()])
    return model


def fit_epochs(model, folder, epochs, history=None, initial_epoch=0, first_callbacks=()):
    """`epochs` of one step each through train.py's callbacks (after `first_callbacks`)."""
    x = np.random.default_rng(0).uniform(0, 10, (8, 16, 16, 3)).astype(np.float32)  # >= 11 pixels for the SSIM
    validation = [(x[:1], 2 * x[:1])]
    callbacks = [*first_callbacks, *models.training_callbacks(folder, validation, 10, 0.02, "mse", history=history)]
    model.fit(x, 2 * x, batch_size=8, epochs=epochs, initial_epoch=initial_epoch, verbose=0, callbacks=callbacks)


def half_written(original):
    """A writer that writes the first half of what `original` would write, then fails like a full disk."""
    def write(*args, **kwargs):
        original(*args, **kwargs)
        # Model.save_weights(self, path) or np.savez(open file, ...) (save_history passes its handle)
        target = args[1] if isinstance(args[0], keras.Model) else args[0]
        if hasattr(target, "truncate"):
            target.truncate(max(1, target.tell() // 2))
        else:
            with open(target, "r+b") as handle:
                handle.truncate(max(1, handle.seek(0, 2) // 2))
        raise OSError(28, "No space left on device")
    return write


def snapshot(folder):
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


def test_a_checkpoint_write_failing_midway_leaves_the_earlier_checkpoint_and_history(tmp_path, monkeypatch):
    model = learning_model()
    fit_epochs(model, tmp_path, epochs=1)
    before = snapshot(tmp_path)
    assert [name for name in before if name.startswith("weights.001-")] and "history.npz" in before
    history = load_history(tmp_path)
    monkeypatch.setattr(keras.Model, "save_weights", half_written(keras.Model.save_weights))
    with pytest.raises(OSError, match="No space left"):
        fit_epochs(model, tmp_path, epochs=2, history=history, initial_epoch=1)
    assert snapshot(tmp_path) == before  # same files, same bytes: nothing half-written, nothing lost
    monkeypatch.undo()
    restored = learning_model()
    models.load_weights(restored, next(tmp_path.glob("weights.001-*.weights.h5")))
    assert len(load_history(tmp_path)["loss"]) == 1


def test_a_history_write_failing_midway_leaves_the_earlier_history(tmp_path, monkeypatch):
    path = tmp_path / "history.npz"
    models.save_history(path, {"loss": [3.0, 2.0]})
    before = path.read_bytes()
    monkeypatch.setattr(np, "savez", half_written(np.savez))
    with pytest.raises(OSError):
        models.save_history(path, {"loss": [3.0, 2.0, 1.0]})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["history.npz"]


def test_checkpoint_saves_build_no_throwaway_layers(tmp_path):
    """Keras 3.15 rebuilds its per-kind attribute sets with some hundred throw-away layers in every save (a cache
    looked up under another name than it is stored); with cache_keras_save_skipsets (in save_weights_atomically)
    only a thread's first save builds them, and the weights written load back the same."""
    model = learning_model()
    fit_epochs(model, tmp_path, 1)  # the optimizer has its state, as in a training run's saves
    built = []

    def two_saves():  # in a new thread: Keras keeps the sets per thread, and this one's are cached already
        models.save_weights_atomically(model, tmp_path / "first.weights.h5")
        with counting_layer_inits() as count:
            models.save_weights_atomically(model, tmp_path / "second.weights.h5")
        built.extend(count)

    saver = threading.Thread(target=two_saves)
    saver.start()
    saver.join()
    assert built == [0]  # 3 throw-away layers a save for this small model without the cache, ~100 for the SRResNet
    restored = learning_model()
    restored.load_weights(tmp_path / "second.weights.h5")
    np.testing.assert_array_equal(restored.get_weights()[0], model.get_weights()[0])


@contextlib.contextmanager
def counting_layer_inits():
    """Within: keras.layers.Layer.__init__ counts its calls into the yielded list's first item."""
    count = [0]
    layer_init = keras.layers.Layer.__init__

    def counting_init(self, *args, **kwargs):
        count[0] += 1
        layer_init(self, *args, **kwargs)

    with mock.patch.object(keras.layers.Layer, "__init__", counting_init):
        yield count


def test_a_backup_write_failing_midway_leaves_the_last_backup_whole(tmp_path, monkeypatch):
    """--resume's files are replaced atomically too: a copy that fails halfway (a full disk, a kill) leaves the
    previous epoch's backup as it was, readable."""
    model = learning_model()
    fit_epochs(model, tmp_path, epochs=1)
    backup = tmp_path / models.BACKUP_FOLDER
    before = snapshot(backup)
    assert set(before) == {"latest.weights.h5", "training_metadata.json"}

    def half_copied(source, target):
        with open(source, "rb") as reading, open(target, "wb") as writing:
            writing.write(reading.read()[:100])
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(models.shutil, "copyfile", half_copied)
    with pytest.raises(OSError, match="No space left"):
        fit_epochs(model, tmp_path, epochs=2, history=load_history(tmp_path), initial_epoch=1)
    assert snapshot(backup) == before and models.backup_epoch(tmp_path) == 1


def test_a_kill_between_the_backups_weights_and_its_epoch_count_resumes_the_counted_epoch(tmp_path, capsys):
    """The backup's weights are replaced before its epoch count: a kill between the two leaves the next epoch's
    weights under the last epoch's count. --resume must restore the weights of the epoch it counts."""
    model = learning_model()
    fit_epochs(model, tmp_path, epochs=2)
    counted = model.get_weights()
    fit_epochs(model, tmp_path / "ahead", epochs=3, initial_epoch=2)  # the third epoch, written elsewhere
    backup = tmp_path / models.BACKUP_FOLDER  # the third epoch's backup, killed before its epoch count:
    (backup / "latest.weights.h5.bkp").write_bytes((backup / "latest.weights.h5").read_bytes())
    (backup / "training_metadata.json.bkp").write_bytes((backup / "training_metadata.json").read_bytes())
    (backup / "latest.weights.h5").write_bytes(next((tmp_path / "ahead").glob("weights.003-*")).read_bytes())
    assert not np.array_equal(model.get_weights()[0], counted[0])

    restored = learning_model()
    restored.optimizer.build(restored.trainable_variables)
    callbacks = models.training_callbacks(tmp_path, [], 10, 0.02, "mse")
    backup_callback = next(callback for callback in callbacks if isinstance(callback, models.EpochBackup))
    backup_callback.set_model(restored)
    backup_callback.on_train_begin()
    assert restored._initial_epoch == 2 and "interrupted while it saved" in capsys.readouterr().out
    for got, expected in zip(restored.get_weights(), counted):
        np.testing.assert_array_equal(got, expected)


def test_an_epoch_with_a_nan_loss_or_validation_is_not_backed_up_and_the_run_flags_go_with_a_backup(tmp_path, capsys):
    """Weights that diverged (a loss of 1e33 can still be finite; their validation is NaN) are no state for
    --resume, which would stop again at once; the run's flags are written with each backup that is."""
    model = learning_model()
    callbacks = models.training_callbacks(tmp_path, [], 10, 0.02, "mse", run_flags={"lr": 0.02})
    backup = next(callback for callback in callbacks if isinstance(callback, models.EpochBackup))
    backup.set_model(model)
    backup.on_epoch_end(0, {"loss": 1.3e33, "val_loss": float("nan")})
    backup.on_epoch_end(1, {"loss": float("inf"), "val_loss": 3.0})
    backup.on_train_end()
    assert not (tmp_path / models.BACKUP_FOLDER).exists()
    assert "Epoch 1: val_loss is nan: not backed up" in capsys.readouterr().out
    backup.on_epoch_end(2, {"loss": 2.0, "val_loss": 3.0})
    backup.on_train_end()
    assert models.backup_epoch(tmp_path) == 3
    assert (tmp_path / models.BACKUP_FOLDER / models.RUN_FLAGS_FILE).read_text() == '{"lr": 0.02}'


def test_the_backup_of_an_improving_epoch_is_a_copy_of_its_checkpoint(tmp_path, monkeypatch):
    """Every epoch of learning_model improves, so writes a checkpoint: the --resume backup of the same weights and
    optimizer state is then a copy of it, not a second serialisation; it holds what --resume needs."""
    serialised = []
    save_weights = keras.Model.save_weights
    monkeypatch.setattr(keras.Model, "save_weights",
                        lambda model, *args, **kwargs: (serialised.append(str(args[0] if args else kwargs["filepath"])),
                                                        save_weights(model, *args, **kwargs)))
    model = learning_model()
    fit_epochs(model, tmp_path, 2)
    checkpoints = sorted(tmp_path.glob("weights.*.weights.h5"))
    assert len(checkpoints) == 2 and len(serialised) == 2 and all(".partial." in path for path in serialised)
    backup = tmp_path / models.BACKUP_FOLDER
    assert (backup / "latest.weights.h5").read_bytes() == checkpoints[-1].read_bytes()
    assert (backup / "latest.weights.h5.bkp").read_bytes() == checkpoints[0].read_bytes()
    assert models.backup_epoch(tmp_path) == 2 and "save_weights" not in vars(model)
    restored = learning_model()  # as --resume restores it: weights and optimizer state
    restored.optimizer.build(restored.trainable_variables)
    restored.load_weights(backup / "latest.weights.h5")
    for got, expected in zip(restored.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(expected))


class HoldWrites(keras.callbacks.Callback):
    """Holds every save_weights (on any thread) until the second epoch has trained a step; records each epoch's
    weights at its end, the thread of each save and whether the save had to wait for nothing."""

    def __init__(self, monkeypatch):
        super().__init__()
        self.released, self.epoch_weights, self.saves = threading.Event(), [], []
        save_weights = keras.Model.save_weights

        def held_save(model, *args, **kwargs):
            self.saves.append((threading.current_thread().name, self.released.wait(timeout=20)))
            save_weights(model, *args, **kwargs)
        monkeypatch.setattr(keras.Model, "save_weights", held_save)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1:
            self.released.set()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_weights.append(self.model.get_weights())


def test_an_epoch_is_written_from_its_own_state_while_the_next_one_trains(tmp_path, monkeypatch):
    """The checkpoint of epoch 1 is held until epoch 2 has trained: it is written on a helper thread (a save in the
    training thread would wait 20 s for a release that never comes) and holds the weights epoch 1 ended with, not
    those of epoch 2 (it is written from a copy of the state taken at epoch 1's end)."""
    model, hold = learning_model(), HoldWrites(monkeypatch)
    fit_epochs(model, tmp_path, 2, first_callbacks=[hold])
    assert len(hold.saves) == 2 and all(name.startswith("epoch-writer") and not_held for name, not_held in hold.saves)
    for epoch, weights in enumerate(hold.epoch_weights, start=1):
        restored = learning_model()
        models.load_weights(restored, next(tmp_path.glob(f"weights.{epoch:03d}-*.weights.h5")))
        for got, expected in zip(restored.get_weights(), weights):
            np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(hold.epoch_weights[0][0], hold.epoch_weights[1][0])  # epoch 2 changed them
    assert models.backup_epoch(tmp_path) == 2 and len(load_history(tmp_path)["loss"]) == 2
