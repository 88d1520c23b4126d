"""train.py --resume: a run killed in the middle of an epoch continues from its last completed epoch, exactly as
the uninterrupted run would, on TensorFlow and on JAX (the GPU recipe's backend, whose data adapter hands the
generator's batches to the epochs differently)."""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cli
from conftest import REPO, assert_one_line_error, require_backend, run_main, run_script
from test_networks import original_schedule

cli.import_keras_quietly()
import model as models  # noqa: E402
import resume  # noqa: E402
from plot_history import load_history  # noqa: E402

EPOCHS, LR = 4, 0.001


def train_args(image_folder, output, val_folder=None):
    """Tiny l0 runs on `image_folder`, or on the data the list of flags `image_folder` names (your own shots);
    validation on `val_folder` (default: the training folder)."""
    data = image_folder if isinstance(image_folder, list) else ["--image_dir", image_folder]
    return [*data, "--test_dir", val_folder or data[1], "--nb_epochs", EPOCHS, "--steps", 4,
            "--batch_size", 2, "--image_size", 32, "--lr", LR, "--loss", "l0", "--seed", 3,
            "--workers", 2, "--output_path", output]


def completed_epochs(output):
    """The epochs the backup of `output` has completed (0 without one)."""
    state = resume.read_backup(output)
    return state["epoch"] if state else 0


def train(env, *args):
    """train.py with `args`: in this process on TensorFlow (env None), else in a process with `env`."""
    return run_main("train", *args) if env is None else run_script("train.py", *args, env=env)


def kill_during_epoch(image_folder, output, after_epochs, env=None, val_folder=None):
    """Start train.py and SIGKILL it as soon as it prints that epoch after_epochs + 1 has begun (Keras' 'Epoch
    N/M', printed after the earlier epochs' files are written): whatever the machine's speed, mid-run."""
    environment = {**os.environ, **(env or {}), "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(REPO / "train.py"), *map(str, train_args(image_folder, output, val_folder))]
    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    printed = []
    for line in process.stdout:
        printed.append(line)
        if line.startswith(f"Epoch {after_epochs + 1}/{EPOCHS}"):
            break
    assert process.poll() is None, "training ended before it could be killed: " + "".join(printed[-20:])
    process.send_signal(signal.SIGKILL)
    process.wait()


# TensorFlow resumes your own pairs, JAX bursts: the loop and its state are the same for synthetic noise, whose patch
# stream test_data.py checks is a function of (seed, epoch, batch) alone.
@pytest.mark.parametrize("backend, shots", [("tensorflow", "pairs"), ("jax", "bursts")])
def test_killed_run_resumes_exactly_and_a_finished_run_stays_as_it_is(backend, shots, own_shots, small_photos,
                                                                      tmp_path):
    env = None if backend == "tensorflow" else require_backend(backend)
    image_folder = (["--image_dir", own_shots / "first", "--target_dir", own_shots / "second"] if shots == "pairs"
                    else ["--image_dir", own_shots / "bursts", "--bursts"])
    output = tmp_path / "run"
    kill_during_epoch(image_folder, output, after_epochs=2, env=env, val_folder=small_photos)
    done = completed_epochs(output)
    assert done == 2
    result = train(env, *train_args(image_folder, output, small_photos), "--resume")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    backup = completed_epochs(output)
    assert f"resuming {output} after epoch" in result.stdout and "other flags" not in result.stderr
    assert f"Epoch {done + 1}/{EPOCHS}" in result.stdout and "Epoch 1/" not in result.stdout
    history = load_history(output)
    assert backup == EPOCHS
    for key in ("loss", "val_loss", "PSNR", "val_PSNR", "learning_rate"):
        assert len(history[key]) == EPOCHS, (key, history[key])  # every epoch exactly once
    # Resumed epochs get their real index, so the LR (and the L0 gamma, set the same way) follow the schedule.
    np.testing.assert_allclose(history["learning_rate"], [original_schedule(e, EPOCHS, LR) for e in range(EPOCHS)],
                               rtol=1e-5)
    for checkpoint in output.glob("weights.*.weights.h5"):
        models.load_weights(models.get_model("srresnet"), checkpoint)
    # The sample and the printed test_model command use the best epoch of the whole run, resumed part or not.
    best_epoch = int(np.nanargmax(history["val_PSNR"])) + 1
    assert f"best checkpoint: {output}/weights.{best_epoch:03d}-" in result.stdout, result.stdout[-1500:]
    assert "denoise photos with: python3 test_model.py" in result.stdout
    # The same seed trains the same model: the resumed epochs (weights, optimizer state, patches) carry on
    # exactly where an uninterrupted run would be; that run also makes 2 steps per compiled call
    # (--steps_per_execution), which must not change the training either.
    uninterrupted = tmp_path / "uninterrupted"
    uninterrupted_run = train(env, *train_args(image_folder, uninterrupted, small_photos), "--steps_per_execution", 2)
    assert uninterrupted_run.returncode == 0
    expected = load_history(uninterrupted)
    for key in ("loss", "val_loss", "val_PSNR"):
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-4, err_msg=key)
    if env is not None:
        return  # what follows does not depend on the backend: the TensorFlow run checks it
    # --resume of a finished run trains nothing and changes nothing.
    before = (uninterrupted / "history.npz").read_bytes()
    again = train(env, *train_args(image_folder, uninterrupted, small_photos), "--steps_per_execution", 2, "--resume")
    finished = f"has finished its {EPOCHS} epochs; nothing to train"
    assert again.returncode == 0 and finished in again.stdout, again.stderr[-2000:]
    assert (uninterrupted / "history.npz").read_bytes() == before


def test_resume_without_an_interrupted_run_says_so(image_folder, tmp_path):
    result = run_main("train", *train_args(image_folder, tmp_path / "new"), "--resume")
    assert_one_line_error(result, "--resume", "no interrupted run")


def test_a_run_without_a_seed_resumes_with_the_seed_it_drew(image_folder, tmp_path):
    """Without --seed a run draws one, says so and records it in its backup; --resume goes on with that seed (the
    run's patch stream, not a new one), and a new run draws another."""
    unseeded = [str(arg) for arg in train_args(image_folder, tmp_path / "run")]
    del unseeded[unseeded.index("--seed"):unseeded.index("--seed") + 2]
    first = run_main("train", *unseeded, "--nb_epochs", 1)
    assert first.returncode == 0, first.stderr[-2000:]
    drawn = int(re.search(r"seed (\d+) \(drawn: --seed \d+ repeats the run\)", first.stdout).group(1))
    assert resume.read_backup(tmp_path / "run")["seed"] == drawn
    resumed = run_main("train", *unseeded, "--nb_epochs", 2, "--resume")
    assert resumed.returncode == 0 and f"seed {drawn} (drawn" in resumed.stdout, resumed.stderr[-2000:]
    other = run_main("train", *unseeded, "--nb_epochs", 1, "--output_path", tmp_path / "other")
    assert f"seed {drawn} " not in other.stdout


@pytest.fixture
def interrupted_run(tmp_path):
    """An output folder as a run killed after its first epoch leaves it: a backup of a colour SRResNet."""
    output = tmp_path / "interrupted"
    write_backup(output, flags={})
    return output


def write_backup(output, flags):
    """The backup a run of `flags` leaves after its first epoch: an untrained colour SRResNet's weights."""
    backup = output / resume.BACKUP_FOLDER
    backup.mkdir(parents=True)
    models.get_model("srresnet").save_weights(backup / "epoch_001.weights.h5")
    state = {"epoch": 1, "weights": "epoch_001.weights.h5", "flags": flags, "history": {}}
    (backup / resume.STATE_FILE).write_text(json.dumps(state))


def backup_files(output):
    return {path.name: path.read_bytes() for path in (output / resume.BACKUP_FOLDER).iterdir()}


def test_a_run_that_fails_to_start_keeps_the_backup_of_the_interrupted_run(image_folder, interrupted_run, tmp_path):
    """Forgetting --resume and making a mistake must not cost the interrupted run: the old backup goes only once
    the new run trains."""
    before = backup_files(interrupted_run)
    corrupt = tmp_path / "corrupt.weights.h5"
    corrupt.write_bytes(b"\x00" * 100)
    result = run_main("train", *train_args(image_folder, interrupted_run), "--weight", corrupt)
    assert_one_line_error(result, "--weight", "not a Keras weight file")
    assert backup_files(interrupted_run) == before


@pytest.mark.parametrize("flags, needles", [
    (["--model", "unet"], ["--resume", "another network", "pass --model srresnet"]),
    (["--channels", "1"], ["--resume", "another network", "srresnet (gray)", "--channels 3"]),
])
def test_resume_with_another_network_says_which_flags_in_one_line(flags, needles, image_folder, interrupted_run):
    before = backup_files(interrupted_run)
    result = run_main("train", *train_args(image_folder, interrupted_run), "--resume", *flags)
    assert_one_line_error(result, *needles)
    assert backup_files(interrupted_run) == before and "resuming" not in result.stdout


def test_resume_of_a_damaged_backup_says_so_in_one_line(image_folder, interrupted_run):
    (interrupted_run / resume.BACKUP_FOLDER / resume.STATE_FILE).write_text("")  # damaged outside training
    result = run_main("train", *train_args(image_folder, interrupted_run), "--resume")
    assert_one_line_error(result, "--resume", "state.json is damaged")


def test_resume_warns_of_flags_other_than_the_runs(image_folder, tmp_path, recwarn):
    """Other --nb_epochs, --lr or noise on --resume change the rest of a run (the learning-rate schedule follows
    --nb_epochs): allowed, to extend a run, but said in one warning naming each flag, its value and the run's."""
    import train as train_script

    started = train_script.get_args(list(map(str, train_args(image_folder, tmp_path / "run"))))
    write_backup(tmp_path / "run", train_script.run_flags(started))
    resumed = train_script.get_args(list(map(str, train_args(image_folder, tmp_path / "run")))
                                    + ["--resume", "--nb_epochs", "9", "--zero_mean_targets"])
    resume.announce(resumed.output_path, resumed.nb_epochs, train_script.run_flags(resumed),
                    resume.read_backup(tmp_path / "run"))
    [warning] = [str(record.message) for record in recwarn if "--resume" in str(record.message)]
    assert f"--nb_epochs 9 (the run: --nb_epochs {EPOCHS})" in warning, warning
    assert "--zero_mean_targets (the run: no --zero_mean_targets)" in warning and "--lr" not in warning
    # A resumed run's backups record its own flags: the next --resume compares with those.
    recwarn.clear()
    resume.announce(resumed.output_path, resumed.nb_epochs, train_script.run_flags(resumed),
                    {"epoch": 1, "flags": train_script.run_flags(resumed)})
    assert not [str(record.message) for record in recwarn if "--resume" in str(record.message)]


def test_ctrl_c_after_an_epoch_says_how_to_continue(image_folder, tmp_path, monkeypatch, capsys):
    """Ctrl-C once an epoch is backed up: exit status 130 and the hint to add --resume; before that, 130 and
    that there is nothing to resume, and the empty output folder made for the run is removed."""
    import train as train_script

    def interrupted(args, distribution, backed_up):
        if backed_up:
            write_backup(Path(args.output_path), flags={})
        raise KeyboardInterrupt
    argv = list(map(str, train_args(image_folder, tmp_path / "run")))
    monkeypatch.setattr(train_script, "train", lambda args, distribution: interrupted(args, distribution, True))
    assert train_script.main(argv) == 130
    assert "the same command with --resume continues" in capsys.readouterr().err
    monkeypatch.setattr(train_script, "train", lambda args, distribution: interrupted(args, distribution, False))
    assert train_script.main(list(map(str, train_args(image_folder, tmp_path / "fresh")))) == 130
    assert "before the first epoch ended: nothing to resume" in capsys.readouterr().err
    assert not (tmp_path / "fresh").exists()
