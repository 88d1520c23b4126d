"""The README's commands, run as a user would (no display), on tiny settings: the first training run and
the denoising runs in subprocesses, the variants of train.py's flags in this process (conftest.run_main,
the same main() without a new interpreter and TensorFlow import each)."""
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

import cli
import test_model
from conftest import (DATASETS, LEGACY_CHECKPOINT, REPO, assert_one_line_error, require, run_main,
                      run_script, shipped_score, synthetic_photo)
from noise_model import get_noise_model
from plot_history import load_history

TINY = ["--nb_epochs", 2, "--steps", 3, "--batch_size", 4, "--image_size", 32]
KEYS = ("loss", "val_loss", "PSNR", "val_PSNR", "val_SSIM")


def train(tmp_path, name, train_dir, val_dir, *extra, in_process=True):
    output = tmp_path / name
    run = (lambda *args: run_main("train", *args)) if in_process else (lambda *args: run_script("train.py", *args))
    result = run("--image_dir", train_dir, "--test_dir", val_dir, *TINY,
                        "--output_path", output, "--seed", 0, *extra)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return output, result


def assert_trained(output, epochs=2):
    checkpoints = list(output.glob("weights.*.weights.h5"))
    assert checkpoints, list(output.iterdir())
    history = load_history(output)
    for key in KEYS:
        assert len(history[key]) == epochs and np.all(np.isfinite(history[key])), (key, history)
    assert cv2.imread(str(output / "sample.png")).shape[2] == 3
    return checkpoints


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, train_dir, small_photos):
    """The README's first command: SRResNet, mse, gaussian noise, 2 epochs of 3 steps, on train291 where present.
    Validated on two small photos: Set5's 0.6 MP would take half of the run's time (denoised in the test below)."""
    output, _ = train(tmp_path_factory.mktemp("train"), "x", train_dir, small_photos, in_process=False)
    return output


def test_train_writes_checkpoint_history_and_sample(trained_run):
    checkpoints = assert_trained(trained_run)
    assert all(p.name.startswith("weights.00") for p in checkpoints)
    sample = cv2.imread(str(trained_run / "sample.png"))
    assert sample.shape[1] % 3 == 0 and sample.shape[1] // 3 % 16 == 0


def test_the_unet_trains_at_its_default_learning_rate(tmp_path, image_folder):
    """train.py --model unet with no --lr: the UNet turned to NaN within 6 steps at the SRResNet's 0.01 (batch 4 of
    32x32), so it starts at its own default and its loss stays finite (the SRResNet's default: the next test)."""
    output = tmp_path / "unet"
    result = run_main("train", "--model", "unet", "--image_dir", image_folder, "--test_dir", image_folder,
                      "--nb_epochs", 1, "--steps", 6, "--batch_size", 4, "--image_size", 32, "--seed", 0,
                      "--output_path", output)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    history = load_history(output)
    assert history["learning_rate"][0] == pytest.approx(0.001)
    assert np.all(np.isfinite(history["loss"])) and np.all(np.isfinite(history["val_PSNR"])), history


@pytest.mark.parametrize("name, extra", [
    ("l0_impulse", ["--loss", "l0", "--source_noise_model", "impulse,0,95", "--target_noise_model", "impulse,0,95",
                    "--val_noise_model", "impulse,70,70"]),
    ("mae_text", ["--loss", "mae", "--source_noise_model", "text,0,50", "--target_noise_model", "text,0,50",
                  "--val_noise_model", "text,25,25"]),
    ("unet_clean", ["--model", "unet", "--target_noise_model", "clean", "--val_noise_model", "gaussian,10,10"]),
    ("clean_source_val_capped_cache", ["--source_noise_model", "clean", "--target_noise_model", "text,0,10",
                                       "--val_noise_model", "clean", "--cache_mb", 0.05, "--use_multiprocessing"]),
    ("mixed_zero_mean_processes", ["--mixed_precision", "--zero_mean_targets", "--use_multiprocessing",
                                   "--workers", 3, "--target_noise_model", "poisson,5,50",
                                   "--val_noise_model", "bernoulli,10,10"]),
])
def test_train_with_each_loss_model_and_noise(tmp_path, image_folder, name, extra, capfd):
    """Every loss, both models, every noise model as source, target and validation noise, and batches made in
    processes (--use_multiprocessing); no native log line of TensorFlow's on file descriptor 2 (capfd: the in-process
    runs' C++ logs bypass sys.stderr). Small synthetic images keep these runs short; the first test covers the
    real data sets."""
    import model as models  # (imported by train.py's main() in this process already)

    # unet in a real process: its first step made TensorFlow's C++ code log an "E0000 ... oneDNN" notice
    output, result = train(tmp_path, name, image_folder, image_folder, "--lr", 0.001, *extra,
                           in_process="unet" not in name)
    native = result.stderr + capfd.readouterr().err
    assert not re.search(r"^[IWEF]\d{4} ", native, re.MULTILINE), native[-2000:]  # no native logs
    checkpoints = assert_trained(output)
    models.load_weights(models.get_model("unet" if "unet" in name else "srresnet"), checkpoints[0])
    if "unet" in name:  # test_model.py --model unet denoises with the trained UNet
        tested = run_main("test_model", "--model", "unet", "--weight_file", checkpoints[0], "--image_dir",
                          image_folder, "--output_dir", tmp_path / "unet_tested")
        assert tested.returncode == 0 and "mean over 7 images" in tested.stdout, tested.stderr[-2000:]
        triptych = cv2.imread(str(tmp_path / "unet_tested" / "a.png"))
        assert triptych.shape == (48, 3 * 64, 3)
    if "l0" in name:  # annealed: gamma 2 (a squared error) in epoch 1, 1 (an absolute error) in epoch 2
        loss = load_history(output)["loss"]
        assert 0 < loss[1] < loss[0] / 5, loss  # impulse targets: errors of tens of grey levels a pixel
    if "cache" in name:  # the 7 synthetic photos take 7-26 KB each: 0.05 MiB holds some, not all
        assert "past --cache_mb 0.05 read from disk per patch" in result.stdout
    if "mixed" in name:  # bfloat16 compute, float32 weights: the checkpoint serves float32 inference
        assert "mixed precision: mixed_bfloat16" in result.stdout
        tested = run_main("test_model", "--weight_file", checkpoints[0], "--image_dir", image_folder,
                          "--output_dir", tmp_path / "tested")
        assert tested.returncode == 0 and "mean over" in tested.stdout, tested.stderr[-2000:]


def test_train_continues_from_the_original_keras2_checkpoint(tmp_path, image_folder):
    checkpoint = require(LEGACY_CHECKPOINT)
    output, result = train(tmp_path, "continued", image_folder, image_folder, "--lr", 0.001, "--weight", checkpoint)
    assert f"loaded weights from {checkpoint}" in result.stdout
    assert_trained(output)


def test_weight_starts_training_from_the_given_weights(tmp_path, image_folder, small_photos):
    """--weight gaussian (a shipped name, or a file) starts from those weights: after one tiny step its first
    validation is 5 dB above the noisy input's (sigma 25: about 20 dB), where an untrained network is far below."""
    output, shipped = train(tmp_path, "shipped", image_folder, small_photos, "--nb_epochs", 1, "--steps", 1,
                            "--lr", 1e-6, "--weight", "gaussian")
    assert "loaded weights from" in shipped.stdout and "gaussian.weights.h5" in shipped.stdout
    assert load_history(output)["val_PSNR"][0] > 25.5, load_history(output)


def test_a_fine_tune_that_never_beats_its_start_keeps_the_start(tmp_path, image_folder, small_photos):
    """--weight's validation score comes first: an epoch's checkpoint is written only where it beats it. A learning
    rate that wrecks the gaussian weights writes none, and the run names the starting weights to keep using."""
    output, result = train(tmp_path, "wrecked", image_folder, small_photos, "--nb_epochs", 1, "--steps", 2,
                           "--lr", 0.05, "--weight", "gaussian")
    start = float(re.search(r"the starting weights \(\S+\): val_PSNR ([\d.]+)", result.stdout).group(1))
    assert load_history(output)["val_PSNR"][0] < start - 1, (start, load_history(output))
    assert not list(output.glob("weights.*.weights.h5"))
    shipped = cli.shipped_weights()["gaussian"]
    assert f"no epoch beat the starting weights ({shipped}, {start:.5f}): keep using them" in result.stdout
    assert f"--weight_file {shipped} " in result.stdout
    assert cv2.imread(str(output / "sample.png")).shape[2] == 3


def test_grayscale_model_trains_and_denoises_a_grayscale_folder(tmp_path, image_folder):
    output, _ = train(tmp_path, "gray", image_folder, image_folder, "--channels", 1, "--lr", 0.001)
    checkpoint = assert_trained(output)[0]
    gray = tmp_path / "gray_photos"
    gray.mkdir()
    for path in sorted(image_folder.glob("*.png"))[:2]:
        cv2.imwrite(str(gray / path.name), cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
    # test_model.py reads the channel count off the weights
    result = run_main("test_model", "--weight_file", checkpoint, "--image_dir", gray, "--output_mode", "denoised",
                      "--output_dir", tmp_path / "out")
    assert result.returncode == 0 and "mean over 2 images" in result.stdout, result.stderr[-3000:]
    for path in gray.iterdir():
        written = cv2.imread(str(tmp_path / "out" / path.name), cv2.IMREAD_UNCHANGED)
        assert written.shape == cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape  # gray in, gray out
    # A colour photo: the model denoises its luma, and the result keeps the photo's colour (chroma as it was).
    colour = tmp_path / "colour_photo"
    colour.mkdir()
    photo = sorted(image_folder.glob("*.png"))[0]
    (colour / photo.name).write_bytes(photo.read_bytes())
    result = run_main("test_model", "--weight_file", checkpoint, "--image_dir", colour, "--output_mode", "denoised",
                      "--test_noise_model", "clean", "--output_dir", tmp_path / "colour_out")
    assert result.returncode == 0, result.stderr[-3000:]
    source, written = (cv2.imread(str(folder / photo.name)) for folder in (colour, tmp_path / "colour_out"))
    chroma = [cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb)[:, :, 1:].astype(float) for image in (source, written)]
    assert np.abs(chroma[0] - chroma[1]).mean() < 1.0 and np.abs(chroma[1] - 128).mean() > 2  # in colour
    luma = [cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(float) for image in (source, written)]
    assert np.abs(luma[0] - luma[1]).mean() > 0.5  # and its luma denoised, not copied


def test_unstable_learning_rate_stops_with_advice(tmp_path, image_folder):
    result = run_main("train", "--image_dir", image_folder, "--test_dir", image_folder, *TINY,
                        "--lr", 1e6, "--output_path", tmp_path / "nan", "--seed", 0)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "training stopped. Lower --lr (now 1e+06" in result.stdout, result.stdout[-2000:]
    assert len(load_history(tmp_path / "nan")["loss"]) == 1  # stopped in the first of 2 epochs
    assert not list((tmp_path / "nan").glob("weights.*.weights.h5"))  # a NaN validation PSNR is no checkpoint
    assert not (tmp_path / "nan" / "backup").exists()  # nor NaN weights a state for --resume


def test_train_without_data_flags_uses_bundled_photos(tmp_path):
    """The demo's defaults, short: the bundled photos, the SRResNet at its default --lr 0.01, a finite loss."""
    result = run_script("train.py", "--nb_epochs", 1, "--steps", 2, "--batch_size", 2, "--image_size", 32,
                        "--output_path", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scikit-image's bundled photos" in result.stdout
    assert_trained(tmp_path / "run", epochs=1)  # --output_path is relative to the current directory
    assert load_history(tmp_path / "run")["learning_rate"][0] == pytest.approx(0.01)


def assert_printed_scores_match_the_panels(stdout, inputs, image_dir, output_dir, improves=True):
    """Every input's line 'name: noisy X dB, denoised Y dB' matches scikit-image's PSNR of the written triptych's
    panels (original | noisy | denoised), with `improves` the denoised beats the noisy one, and the printed means
    are theirs. Returns the mean denoised PSNR."""
    printed = dict((name, (float(noisy), float(denoised))) for name, noisy, denoised in
                   re.findall(r"\] (\S+): noisy ([\d.]+) dB, denoised ([\d.]+) dB", stdout))
    assert len(printed) == len(inputs), stdout[-2000:]
    for source in inputs:
        name = source.relative_to(image_dir).as_posix()
        triptych = cv2.imread(str((output_dir / source.relative_to(image_dir)).with_suffix(".png")))
        width = triptych.shape[1] // 3
        original, noisy, denoised = (triptych[:, k * width:(k + 1) * width] for k in range(3))
        independent = [peak_signal_noise_ratio(original, panel, data_range=255) for panel in (noisy, denoised)]
        np.testing.assert_allclose(printed[name], independent, atol=0.006, err_msg=name)
        assert printed[name][1] > printed[name][0] or not improves, (name, printed[name])
    means = re.search(r"mean over \d+ images: noisy ([\d.]+) dB, denoised ([\d.]+) dB", stdout).groups()
    np.testing.assert_allclose([float(m) for m in means], np.mean(list(printed.values()), axis=0), atol=0.006)
    return float(means[1])


def test_test_model_writes_triptychs_and_psnr(val_dir, tmp_path):
    """The shipped default weights (no --weight_file) on the validation photos: one triptych per image, each
    panel what it says, and printed scores that an independent PSNR of the panels confirms."""
    result = run_script("test_model.py", "--image_dir", val_dir, "--output_dir", tmp_path / "y")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "using the shipped gaussian weights" in result.stdout
    inputs = sorted(p for p in val_dir.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif"))
    outputs = sorted((tmp_path / "y").rglob("*.png"))
    assert len(outputs) == len(inputs)
    for source in inputs:
        image = cv2.imread(str(source))
        triptych = cv2.imread(str((tmp_path / "y" / source.relative_to(val_dir)).with_suffix(".png")))
        height, width = image.shape[0] // 16 * 16, image.shape[1] // 16 * 16
        assert triptych.shape == (height, 3 * width, 3)
        original, noisy = (triptych[:, k * width:(k + 1) * width].astype(float) for k in range(2))
        np.testing.assert_array_equal(original, image[:height, :width])
        # the middle panel has the default test noise (gaussian, sigma 25: clipping and truncation narrow it)
        assert 18 < (noisy - original).std() < 27
    denoised = assert_printed_scores_match_the_panels(result.stdout, inputs, val_dir, tmp_path / "y")
    if val_dir == DATASETS / "Set5":  # the gaussian row of result/README.md's shipped-weights table, on its command
        assert abs(denoised - shipped_score("gaussian", "Set5")["psnr"]) <= 0.05, denoised


def test_test_model_takes_the_original_keras2_checkpoint(tmp_path):
    """The original's Keras 2 SRResNet checkpoint runs on Set5, and the printed scores are those of the written
    panels. (That checkpoint is an early one of the original's training and does not denoise: on baby_GT its output
    scores 12.4 dB against the noisy input's 20.8; test_legacy_checkpoint.py shows it computes what the original's
    graph computes.)"""
    checkpoint = require(LEGACY_CHECKPOINT)
    folder = require(DATASETS / "Set5")
    result = run_main("test_model", "--weight_file", checkpoint, "--image_dir", folder, "--output_dir", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(tmp_path.glob("*.png"))) == 5
    for triptych in tmp_path.glob("*.png"):
        image = cv2.imread(str(folder / triptych.name))
        assert cv2.imread(str(triptych)).shape == (image.shape[0] // 16 * 16, image.shape[1] // 16 * 16 * 3, 3)
    assert_printed_scores_match_the_panels(result.stdout, sorted(folder.glob("*.png")), folder, tmp_path,
                                           improves=False)


def test_test_model_tiles_through_the_command_line(image_folder, tmp_path):
    """--tile: a tile larger than every image gives the whole-image result exactly; 64-pixel tiles with
    --tile_overlap 32 (the default; several tiles across, one down for the 48-pixel-high image) stay within a
    few grey levels of it at their seams and equal it on average."""
    # (the gaussian weights, which the seam bound was measured with; for clean noise the default is now camera)
    common = ["--image_dir", image_folder, "--weight_file", "gaussian", "--test_noise_model", "clean",
              "--output_mode", "denoised"]
    runs = {"whole": [], "large": ["--tile", 256], "small": ["--tile", 64, "--tile_overlap", 32]}
    for name, flags in runs.items():
        result = run_main("test_model", *common, *flags, "--output_dir", tmp_path / name)
        assert result.returncode == 0, result.stderr[-2000:]
    for path in sorted((tmp_path / "whole").rglob("*.*")):
        whole, large, small = (cv2.imread(str(tmp_path / name / path.relative_to(tmp_path / "whole")),
                                          cv2.IMREAD_UNCHANGED).astype(int) for name in runs)
        np.testing.assert_array_equal(large, whole, err_msg=path.name)
        assert np.abs(small - whole).max() <= 4 and np.abs(small - whole).mean() < 0.2, path.name


def test_test_model_writes_into_its_image_dir_when_allowed(image_folder, tmp_path):
    """--allow_output_in_image_dir: the results go to a folder inside --image_dir, the inputs stay as they were."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted(image_folder.glob("*.png"))[:2]:
        (folder / path.name).write_bytes(path.read_bytes())
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    result = run_main("test_model", "--image_dir", folder, "--output_dir", folder / "results",
                      "--allow_output_in_image_dir")
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (folder / "results").iterdir()) == ["a.png", "gray.png", "report.csv"]
    assert {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()} == before


def test_a_full_disk_during_training_is_one_line_and_keeps_the_earlier_epoch(tmp_path, image_folder, small_photos,
                                                                             monkeypatch):
    """No space left while epoch 2 is saved: exit status 1 with one line saying what to do, and epoch 1's
    checkpoint, history and --resume backup whole."""
    import keras

    import resume

    save_weights, saves = keras.Model.save_weights, []

    def full_after_two(model, path, *args, **kwargs):
        saves.append(path)
        if len(saves) > 2:  # epoch 1's checkpoint and backup go through
            raise OSError(28, "No space left on device")
        save_weights(model, path, *args, **kwargs)
    monkeypatch.setattr(keras.Model, "save_weights", full_after_two)
    result = run_main("train", "--image_dir", image_folder, "--test_dir", small_photos, *TINY, "--steps", 1,
                      "--lr", 1e-4, "--output_path", tmp_path / "full", "--seed", 0)
    monkeypatch.undo()
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
    assert "No space left on device: free some space and run again (train.py: add --resume)" in result.stderr
    (checkpoint,) = (tmp_path / "full").glob("weights.001-*.weights.h5")
    import model as models

    models.load_weights(models.get_model("srresnet"), checkpoint)
    # (the history is written before the backup: it holds epoch 2 where epoch 2 wrote no checkpoint)
    assert len(load_history(tmp_path / "full")["loss"]) in (1, 2) and resume.read_backup(tmp_path / "full")["epoch"] == 1


def test_test_model_clean_noise_denoises_photos_as_they_are(trained_run, image_folder, tmp_path):
    weights = sorted(trained_run.glob("weights.*.weights.h5"))[-1]
    result = run_main("test_model", "--weight_file", weights, "--image_dir", image_folder,
                        "--test_noise_model", "clean", "--output_dir", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    triptych = cv2.imread(str(tmp_path / "a.png"))
    width = triptych.shape[1] // 3
    np.testing.assert_array_equal(triptych[:, :width], triptych[:, width:2 * width])  # input shown unchanged
    assert "dB" not in result.stdout  # no clean reference, so no PSNR


def test_test_model_scores_noisy_photos_against_their_clean_dir(trained_run, image_folder, tmp_path):
    """--clean_dir: each already-noisy photo is scored against its same-named clean version, which the triptych
    shows first; a photo without one is denoised, left unscored, and named in a warning."""
    noisy_dir, clean_dir = tmp_path / "noisy", tmp_path / "clean"
    rng = np.random.default_rng(3)
    for name in ("a.png", "sub/c.png", "lonely.png"):
        clean = synthetic_photo(rng, 48, 64)
        for folder, image in ((clean_dir, clean), (noisy_dir, get_noise_model("gaussian,20,20")(clean, rng))):
            if folder == noisy_dir or name != "lonely.png":
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(folder / name), image)
    weights = sorted(trained_run.glob("weights.*.weights.h5"))[-1]
    result = run_main("test_model", "--weight_file", weights, "--image_dir", noisy_dir, "--clean_dir", clean_dir,
                      "--test_noise_model", "clean", "--output_dir", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "not scoring" in result.stderr and "lonely.png" in result.stderr
    scored = [noisy_dir / "a.png", noisy_dir / "sub" / "c.png"]
    assert_printed_scores_match_the_panels(result.stdout, scored, noisy_dir, tmp_path / "out", improves=False)
    for path in scored:
        triptych = cv2.imread(str(tmp_path / "out" / path.relative_to(noisy_dir)))
        np.testing.assert_array_equal(triptych[:, :64], cv2.imread(str(clean_dir / path.relative_to(noisy_dir))))
        np.testing.assert_array_equal(triptych[:, 64:128], cv2.imread(str(path)))
    assert (tmp_path / "out" / "lonely.png").exists() and "mean over 2 images" in result.stdout


def test_already_noisy_photos_get_the_camera_weights_by_default(monkeypatch):
    """Without --weight_file, test_model.py picks the shipped camera weights for --test_noise_model clean (real
    photos) and the gaussian ones for added noise; without shipped camera weights, gaussian for both."""
    shipped = {"gaussian": "g.weights.h5", "camera": "c.weights.h5"}
    monkeypatch.setattr(cli, "shipped_weights", lambda: shipped)
    assert [test_model.default_weights(spec) for spec in ("clean", "gaussian,25,25", "clean+clean")] == \
           ["camera", "gaussian", "camera"]
    del shipped["camera"]
    assert test_model.default_weights("clean") == "gaussian"


def test_test_model_without_display_or_output_dir_says_what_to_do(trained_run, image_folder):
    weights = sorted(trained_run.glob("weights.*.weights.h5"))[-1]
    result = run_script("test_model.py", "--weight_file", weights, "--image_dir", image_folder)
    assert_one_line_error(result, "--output_dir")


def test_plot_history_compares_two_runs_and_accepts_one(trained_run, tmp_path):
    result = run_script("plot_history.py", "--input1", trained_run, "--input2", trained_run, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("val_loss.png", "val_PSNR.png"):
        assert cv2.imread(str(tmp_path / name)).shape[2] == 3
    many = run_script("plot_history.py", "--input1", trained_run, "--input2", trained_run, "--inputs", trained_run,
                      trained_run, "--output_dir", tmp_path / "many")
    assert many.returncode == 0 and (tmp_path / "many" / "val_SSIM.png").is_file(), many.stderr
    single = run_script("plot_history.py", "--input1", trained_run, "--output_dir", tmp_path / "one")
    assert single.returncode == 0, single.stderr
    assert (tmp_path / "one" / "val_PSNR.png").is_file()


def test_plot_history_draws_one_line_per_run_with_its_values(trained_run, tmp_path):
    import matplotlib.pyplot as plt

    import plot_history

    other = {"val_PSNR": [20.0, 21.0, 23.5]}
    histories = {"trained": load_history(trained_run), "other": other}
    figure = plot_history.metric_figure(histories, "val_PSNR")
    lines = figure.axes[0].get_lines()
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    plt.close(figure)
    assert legend == ["trained", "other"] and len(lines) == 2
    np.testing.assert_allclose(lines[0].get_ydata(), histories["trained"]["val_PSNR"])
    np.testing.assert_allclose(lines[1].get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(lines[1].get_ydata(), other["val_PSNR"])


def test_plot_history_leaves_a_run_without_the_metric_out_of_the_legend_and_says_so():
    import matplotlib.pyplot as plt

    import plot_history

    histories = {"new": {"val_PSNR": [20.0, 21.0], "val_SSIM": [0.5, 0.6]}, "old": {"val_PSNR": [19.0, 20.0]}}
    figure = plot_history.metric_figure(histories, "val_SSIM")
    axes = figure.axes[0]
    legend, title = [text.get_text() for text in axes.get_legend().get_texts()], axes.get_title()
    plt.close(figure)
    assert legend == ["new"] and len(axes.get_lines()) == 1 and title == "no val_SSIM in old"


def test_plot_history_numbers_epochs_with_whole_numbers():
    import matplotlib.pyplot as plt

    import plot_history

    figure = plot_history.metric_figure({"short": {"val_PSNR": [19.5, 23.6, 24.4, 24.7]}}, "val_PSNR")
    ticks = [tick for tick in figure.axes[0].get_xticks() if 1 <= tick <= 4]
    plt.close(figure)
    assert ticks == [1, 2, 3, 4]


ORIGINAL_FLAGS = {
    "train.py": ["--image_dir", "--test_dir", "--image_size", "--batch_size", "--nb_epochs", "--lr", "--steps",
                 "--loss", "--weight", "--output_path", "--source_noise_model", "--target_noise_model",
                 "--val_noise_model", "--model"],
    "test_model.py": ["--image_dir", "--model", "--weight_file", "--test_noise_model", "--output_dir"],
    "noise_model.py": ["--image_size", "--noise_model"],
    "plot_history.py": ["--input1", "--input2"],
}


@pytest.mark.parametrize("script", sorted(ORIGINAL_FLAGS))
def test_help_explains_every_flag(script):
    """--help lists the original's flags, and every flag has a help text and its default (a required flag
    has none, and says 'required' in the usage line instead of '(default: None)')."""
    result = run_main(script[:-3], "--help")
    assert result.returncode == 0
    options = result.stdout.split("options:")[1]
    entries = [entry for entry in options.split("\n  --")[1:]]
    names = ["--" + entry.split()[0] for entry in entries]
    assert set(ORIGINAL_FLAGS[script]) <= set(names), names
    usage = result.stdout.split("options:")[0]
    for name, entry in zip(names, entries):
        required = f" {name} " in usage and f"[{name} " not in usage
        assert ("(default:" in entry) != required and len(entry.split()) > 4, entry


def test_train_suggests_processes_on_a_gpu_fed_by_threads(monkeypatch):
    """On a GPU without --use_multiprocessing train.py suggests it (threads kept an H200 waiting); not with it,
    and not on a CPU (this machine)."""
    import mixed_precision
    import train

    args = train.get_args(["--workers", "2"])
    assert train.gpu_feeding_tip(args) is None  # no GPU here
    monkeypatch.setattr(mixed_precision, "gpu_compute_capability", lambda: (9, 0))
    assert "--use_multiprocessing --workers 8" in train.gpu_feeding_tip(args)
    assert train.gpu_feeding_tip(train.get_args(["--use_multiprocessing"])) is None


# Runs a script as `python3 SCRIPT ARGS` does, then prints which of Keras' and TensorFlow's modules were loaded.
LOADED_AFTER_SCRIPT = """
import runpy, sys
script, *sys.argv[1:] = sys.argv[1:]
sys.argv[0] = script
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as end:
    print("exit", end.code)
print("loaded", sorted(name for name in ("keras.src", "tensorflow", "jax", "torch") if name in sys.modules))
"""


@pytest.mark.parametrize("script, args", [("train.py", ["--help"]), ("train.py", ["--steps", "0"]),
                                          ("train.py", ["--model", "unet", "--image_size", "40"]),
                                          ("test_model.py", ["--help"]), ("test_model.py", ["--tile", "20"])])
def test_help_and_flag_errors_answer_before_keras_is_imported(script, args):
    """--help and a flag error need no Keras: the scripts import it (seconds) only once the flags have parsed."""
    result = subprocess.run([sys.executable, "-c", LOADED_AFTER_SCRIPT, str(REPO / script), *args],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-2:] == ["exit " + ("0" if args == ["--help"] else "2"), "loaded []"], \
        result.stdout + result.stderr


def test_results_are_named_after_their_inputs_even_where_two_inputs_share_a_stem(tmp_path):
    """a.jpg beside a.png: a.png holds a.png's result, a.jpg's is a_jpg.png (whichever comes first); a name
    that another input would take is never given to a result that is not its own."""
    import test_model

    inputs = [tmp_path / name for name in ("a.jpg", "a.png", "b.bmp", "sub/c.tif", "a_jpg.png", "e.jpg", "e.bmp")]
    names = {path.relative_to(tmp_path).as_posix(): name.as_posix()
             for path, name in test_model.output_names(inputs, tmp_path).items()}
    assert names == {"a.jpg": "a_jpg_2.png", "a.png": "a.png", "b.bmp": "b.png", "sub/c.tif": "sub/c.png",
                     "a_jpg.png": "a_jpg.png", "e.jpg": "e_jpg.png", "e.bmp": "e_bmp.png"}
    kept = test_model.output_names(inputs, tmp_path, keep_suffix=True)  # --output_mode denoised: own names
    assert [name.as_posix() for name in kept.values()] == [p.relative_to(tmp_path).as_posix() for p in inputs]


def test_the_reported_checkpoint_is_the_best_epoch_of_the_whole_run(tmp_path):
    """After --resume the best epoch may be one of the interrupted process's: found from the history, and of
    two files of that epoch (one an older run's) the newer."""
    import os

    import callbacks

    for name, mtime in (("weights.001-9.000-20.00000.weights.h5", 1), ("weights.002-8.000-22.00000.weights.h5", 2),
                        ("weights.002-7.000-21.00000.weights.h5", 3), ("weights.004-6.000-21.50000.weights.h5", 4)):
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, ns=(mtime * 10**9, mtime * 10**9))
    history = {"val_PSNR": [20.0, 22.0, float("nan"), 21.5, 22.0]}  # epoch 5 ties epoch 2: no new checkpoint
    assert callbacks.best_checkpoint(tmp_path, history).name == "weights.002-7.000-21.00000.weights.h5"
    assert callbacks.best_checkpoint(tmp_path, {"val_PSNR": [float("nan")]}) is None
    assert callbacks.best_checkpoint(tmp_path, {}) is None


def test_tensorflows_retracing_advice_is_not_shown():
    """Validation and test_model trace one graph per padded size on purpose; TensorFlow's multi-line advice about
    retracing is filtered out of its logger (cli.import_keras_quietly), its other warnings are not."""
    import logging

    import cli

    cli.import_keras_quietly()  # (the suite runs on TensorFlow, the default backend)
    shown = []
    handler = logging.Handler()
    handler.emit = lambda record: shown.append(record.getMessage())
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        logger.warning("5 out of the last 5 calls to <function f> triggered tf.function retracing. Tracing is ...")
        logger.warning("another warning")
    finally:
        logger.removeHandler(handler)
    assert shown == ["another warning"]


def test_the_parsers_network_names_are_the_ones_model_py_builds():
    """cli.py repeats the network names so that parsing needs no Keras: they must agree."""
    import cli
    import model as models

    assert cli.MODEL_NAMES == models.MODEL_NAMES


@pytest.fixture(scope="module")
def noisy_photos(tmp_path_factory, image_folder):
    """Three of image_folder's photos with gaussian noise of sigma 15, as PNGs of the same names: noisy photos
    with no clean versions beside them (image_folder has those, for scoring)."""
    folder = tmp_path_factory.mktemp("noisy_photos")
    noise, rng = get_noise_model("gaussian,15,15"), np.random.default_rng(4)
    for name in ("a.png", "e.bmp", "f.tif"):
        cv2.imwrite(str(folder / name), noise(cv2.imread(str(image_folder / name)), rng))
    return folder


# On JAX the neighbour loss and its gamma schedule are unit-tested (test_backends.py runs test_networks.py there),
# and JAX trains through train.py in test_resume.py and test_distribute.py.
@pytest.mark.parametrize("network, stride", [("srresnet", 1), ("unet", 2)])
def test_neighbor2neighbor_trains_on_noisy_photos_alone(network, stride, noisy_photos, image_folder, tmp_path):
    """--method neighbor2neighbor on a folder of noisy photos, validated on them (--val_noise_model clean): the
    run says how it validates, keeps the checkpoint of the lowest val_loss, and test_model.py loads it. What the
    training itself gives: the SRResNet starts from the shipped text weights, which make these gaussian-noisy
    photos worse, and 20 steps on the photos alone make it denoise them (scored against their clean versions);
    the UNet starts from scratch, on pixel-shuffled sub-images (--pixel_shuffle 2: 64-pixel crops, the
    48-pixel-high photo left out), and its val_loss falls."""
    start = ["--weight", "text"] if network == "srresnet" else []
    output = tmp_path / "n2n"
    args = ["--method", "neighbor2neighbor", "--model", network, "--source_noise_model", "clean",
            "--image_dir", noisy_photos, "--test_dir", noisy_photos, "--val_noise_model", "clean",
            *TINY, "--steps", 10 if network == "srresnet" else 5, "--lr", 1e-3, "--output_path", output, "--seed", 0,
            "--pixel_shuffle", stride, *start]
    result = run_main("train", *args)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.count("validating on noisy photos (--val_noise_model clean)") == 1, result.stdout[-2000:]
    history = load_history(output)
    assert "val_PSNR" not in history and len(history["val_loss"]) == 2 and np.all(np.isfinite(history["loss"]))
    best = 1 + int(np.argmin(history["val_loss"]))
    (checkpoint,) = output.glob(f"weights.{best:03d}-*.weights.h5")
    assert f"best checkpoint: {checkpoint}" in result.stdout
    assert (f"--weight_file {checkpoint}" + (f" --pixel_shuffle {stride}" if stride > 1 else "")) in result.stdout

    def scored(weights):  # (noisy, denoised) mean PSNR of test_model.py with `weights` against the clean photos
        tested = run_main("test_model", "--model", network, "--weight_file", weights, "--image_dir", noisy_photos,
                          "--test_noise_model", "clean", "--clean_dir", image_folder, "--output_dir",
                          tmp_path / "denoised", "--pixel_shuffle", stride)
        assert tested.returncode == 0, tested.stdout[-2000:] + tested.stderr[-2000:]
        return map(float, re.search(r"mean over 3 images: noisy ([\d.]+) dB, denoised ([\d.]+) dB",
                                    tested.stdout).groups())

    noisy, denoised = scored(checkpoint)
    if network == "srresnet":
        _, before = scored("text")
        assert before < noisy and denoised > noisy + 1, (before, noisy, denoised)
    else:
        assert history["val_loss"][1] < 0.99 * history["val_loss"][0], history["val_loss"]
