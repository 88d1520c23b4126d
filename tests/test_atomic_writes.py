"""Checkpoints, history and the --resume backup are written atomically: a write that fails midway, or a kill,
leaves the earlier files intact and a backup that resumes the last whole epoch."""
import json
from pathlib import Path

import cli

cli.import_keras_quietly()
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import callbacks  # noqa: E402
import model as models  # noqa: E402
import resume  # noqa: E402
from plot_history import load_history  # noqa: E402


def learning_model():
    """A 1x1 conv from zero towards y = 2x: its validation PSNR improves every epoch, so every epoch checkpoints."""
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1, kernel_initializer="zeros")(inputs))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.02), loss="mse", metrics=[models.psnr_metric()])
    return model


def fit_epochs(model, folder, epochs, initial_epoch=0):
    """`epochs` of one step each through train.py's callbacks; from initial_epoch > 0 as --resume continues the
    run backed up in `folder`."""
    x = np.random.default_rng(0).uniform(0, 10, (8, 16, 16, 3)).astype(np.float32)  # >= 11 pixels for the SSIM
    validation = [(x[:1], 2 * x[:1])]
    state = resume.read_backup(folder) if initial_epoch else None
    run_callbacks = callbacks.training_callbacks(folder, callbacks.ImageValidation(validation, "mse"), "mse",
                                                 nb_epochs=10, lr=0.02, seed=0, resume_from=state,
                                                 run_flags={"lr": 0.02})
    model.fit(x, 2 * x, batch_size=8, epochs=epochs, initial_epoch=initial_epoch, verbose=0, callbacks=run_callbacks)


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
    monkeypatch.setattr(keras.Model, "save_weights", half_written(keras.Model.save_weights))
    with pytest.raises(OSError, match="No space left"):
        fit_epochs(model, tmp_path, epochs=2, initial_epoch=1)
    assert snapshot(tmp_path) == before  # same files, same bytes: nothing half-written, nothing lost
    monkeypatch.undo()
    restored = learning_model()
    models.load_weights(restored, next(tmp_path.glob("weights.001-*.weights.h5")))
    assert len(load_history(tmp_path)["loss"]) == 1


def test_a_history_write_failing_midway_leaves_the_earlier_history(tmp_path, monkeypatch):
    path = tmp_path / "history.npz"
    callbacks.save_history(path, {"loss": [3.0, 2.0]})
    before = path.read_bytes()
    monkeypatch.setattr(np, "savez", half_written(np.savez))
    with pytest.raises(OSError):
        callbacks.save_history(path, {"loss": [3.0, 2.0, 1.0]})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["history.npz"]


def backup_files(folder):
    return snapshot(folder / resume.BACKUP_FOLDER)


def test_a_backup_weights_write_failing_midway_leaves_the_last_backup_whole(tmp_path, monkeypatch):
    """A full disk while the backup's weights are written leaves the previous epoch's backup as it was."""
    model = learning_model()
    fit_epochs(model, tmp_path, epochs=1)
    before = backup_files(tmp_path)
    assert set(before) == {"epoch_001.weights.h5", resume.STATE_FILE}
    save_weights = keras.Model.save_weights
    monkeypatch.setattr(keras.Model, "save_weights", lambda model, path, *args: (
        half_written(save_weights) if "epoch_" in str(path) else save_weights)(model, path, *args))
    with pytest.raises(OSError, match="No space left"):
        fit_epochs(model, tmp_path, epochs=2, initial_epoch=1)
    assert backup_files(tmp_path) == before and resume.read_backup(tmp_path)["epoch"] == 1


def test_a_kill_before_the_state_is_written_resumes_the_last_state_exactly(tmp_path, monkeypatch):
    """The state file is written after the weights it names: a failure or kill while writing it leaves the
    previous state, naming the previous (whole) weights, which --resume restores with the optimizer's state; the
    next backup removes the weights the lost state would have named."""
    model = learning_model()
    fit_epochs(model, tmp_path, epochs=1)
    weights_1, optimizer_1 = model.get_weights(), [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
    write_text = Path.write_text

    def failing_state(path, text):
        write_text(path, text[: len(text) // 2])
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(Path, "write_text", failing_state)
    with pytest.raises(OSError, match="No space left"):
        fit_epochs(model, tmp_path, epochs=2, initial_epoch=1)
    monkeypatch.undo()
    assert sorted(backup_files(tmp_path)) == ["epoch_001.weights.h5", "epoch_002.weights.h5", resume.STATE_FILE]
    state = resume.read_backup(tmp_path)
    assert state["epoch"] == 1 and state["weights"].endswith("epoch_001.weights.h5") and state["flags"] == {"lr": 0.02}
    restored = learning_model()
    backup = resume.RunBackup(tmp_path / resume.BACKUP_FOLDER, callbacks.HistorySaver(tmp_path / "h.npz"),
                                 resume_from=state)
    backup.set_model(restored)
    backup.on_train_begin()
    for got, expected in zip(restored.get_weights() + [keras.ops.convert_to_numpy(v)
                                                      for v in restored.optimizer.variables], weights_1 + optimizer_1):
        np.testing.assert_array_equal(got, expected)
    fit_epochs(restored, tmp_path, epochs=2, initial_epoch=1)
    assert sorted(backup_files(tmp_path)) == ["epoch_002.weights.h5", resume.STATE_FILE]
    assert len(json.loads((tmp_path / "backup" / resume.STATE_FILE).read_text())["history"]["loss"]) == 2


def test_an_epoch_with_a_nan_loss_or_validation_is_not_backed_up_and_the_run_flags_go_with_a_backup(tmp_path, capsys):
    """Weights that diverged (a loss of 1e33 can still be finite; their validation is NaN) are no state for
    --resume, which would stop again at once; the run's flags are written with each backup that is."""
    model = learning_model()
    history = callbacks.HistorySaver(tmp_path / "history.npz")
    backup = resume.RunBackup(tmp_path / resume.BACKUP_FOLDER, history, run_flags={"lr": 0.02})
    backup.set_model(model)
    backup.on_epoch_end(0, {"loss": 1.3e33, "val_loss": float("nan")})
    backup.on_epoch_end(1, {"loss": float("inf"), "val_loss": 3.0})
    assert not (tmp_path / resume.BACKUP_FOLDER).exists()
    assert "Epoch 1: val_loss is nan: not backed up" in capsys.readouterr().out
    backup.on_epoch_end(2, {"loss": 2.0, "val_loss": 3.0})
    state = resume.read_backup(tmp_path)
    assert state["epoch"] == 3 and state["flags"] == {"lr": 0.02}


def test_a_file_written_whole_is_flushed_to_disk_before_and_its_folder_after_the_rename(tmp_path, monkeypatch):
    """write_atomically fsyncs the temporary file, renames it, then fsyncs the folder: a power cut leaves the old
    file or the new one, both on the disk."""
    import atomic_write

    events = []
    monkeypatch.setattr(atomic_write, "_fsync", lambda path, *args: events.append(("fsync", str(path))))
    replace = atomic_write.os.replace
    monkeypatch.setattr(atomic_write.os, "replace", lambda a, b: (events.append(("rename", str(b))), replace(a, b)))
    atomic_write.write_atomically(tmp_path / "h.npz", lambda temporary: open(temporary, "w").write("new"))
    assert events == [("fsync", str(tmp_path / ".partial.h.npz")), ("rename", str(tmp_path / "h.npz")),
                      ("fsync", str(tmp_path))]
    assert (tmp_path / "h.npz").read_text() == "new"


def test_a_damaged_or_incomplete_backup_is_a_value_error_saying_why(tmp_path):
    """read_backup: no backup is None; a state that is not JSON, or names a missing file, says so."""
    assert resume.read_backup(tmp_path) is None
    folder = tmp_path / resume.BACKUP_FOLDER
    folder.mkdir()
    (folder / resume.STATE_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="damaged"):
        resume.read_backup(tmp_path)
    (folder / resume.STATE_FILE).write_text('{"epoch": 2, "weights": "epoch_002.weights.h5"}')
    with pytest.raises(ValueError, match="epoch_002.weights.h5.*missing"):
        resume.read_backup(tmp_path)
