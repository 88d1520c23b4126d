"""Bad input: exit status 2, one line naming the flag or file and what is accepted, no traceback,
and nothing already in the output folder changed.

Most cases call the scripts' main() in this process (conftest.run_main: the same cli.run_main and argparse
path as the __main__ guard, milliseconds a case); a few run the real script in a subprocess, where the
one-line promise also covers what TensorFlow prints while it starts."""
import pytest

from conftest import LEGACY_CHECKPOINT, assert_one_line_error, require, run_main, run_script


@pytest.fixture
def output_dir(tmp_path):
    """An output folder holding a file from an earlier run, which must survive every failure."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "history.npz").write_bytes(b"earlier run")
    return folder


@pytest.fixture
def placeholder_weights(tmp_path):
    """An existing (empty) weight file, for cases where another argument is the culprit."""
    path = tmp_path / "w.weights.h5"
    path.write_bytes(b"")
    return path


def assert_untouched(folder):
    assert [p.name for p in folder.iterdir()] == ["history.npz"]
    assert (folder / "history.npz").read_bytes() == b"earlier run"


# (extra train.py arguments, words the error line must contain), for every bad input. IMAGES, MISSING and EMPTY
# stand for the test's image folder, a path that does not exist and an empty folder.
TRAIN_CASES = [
    (["--source_noise_model", "gaussain,0,50"], ["--source_noise_model", "valid: gaussian, clean, text, impulse"]),
    (["--target_noise_model", "gaussian,0"], ["--target_noise_model", "gaussian,min_stddev,max_stddev"]),
    (["--val_noise_model", "impulse,20,10"], ["--val_noise_model", "min_occupancy <= max_occupancy"]),
    (["--source_noise_model", "text,0,150"], ["--source_noise_model", "<= 100"]),
    (["--image_dir", "MISSING"], ["--image_dir", "does not exist"]),
    (["--image_dir", "EMPTY"], ["--image_dir", "no image files"]),
    (["--batch_size", "0"], ["--batch_size", ">= 1"]),
    (["--lr", "-0.1"], ["--lr", "> 0"]),
    (["--steps", "ten"], ["--steps", "whole number"]),
    (["--loss", "l1"], ["--loss", "mse", "mae", "l0"]),
    (["--model", "resnet"], ["--model", "srresnet", "unet"]),
    (["--model", "unet", "--image_size", "40"], ["--image_size", "multiple of 16"]),
    (["--image_size", "5000", "--image_dir", "IMAGES"], ["5000x5000"]),
    (["--weight", "MISSING"], ["--weight", "no such file, and not the name of shipped weights (camera, camera_strong"]),
    (["--cache_mb", "0"], ["--cache_mb", "> 0"]),
    (["--method", "neighbor2neighbor", "--target_noise_model", "gaussian,0,50"],
     ["--target_noise_model", "neighbor2neighbor", "leave it out"]),  # even with its default value
    (["--method", "neighbor2neighbor", "--image_size", "33"], ["--image_size", "multiple of 2"]),
    (["--method", "neighbor2neighbor", "--model", "unet", "--image_size", "48"], ["--image_size", "multiple of 32"]),
    (["--method", "neighbor2neighbor", "--loss", "l0"], ["--loss", "neighbor2neighbor", "own"]),
    (["--method", "neighbour2neighbour"], ["--method", "noise2noise", "neighbor2neighbor"]),
    (["--neighbor_gamma", "-1"], ["--neighbor_gamma", ">= 0"]),
    (["--zero_mean_targets", "--target_noise_model", "gaussian,0,25+camera,20,60"],
     ["--zero_mean_targets", "camera takes 0-255 pixels after gaussian"]),
    (["--zero_mean_targets", "--target_noise_model", "gaussian,0,25+jpeg,85,95"],
     ["--zero_mean_targets", "jpeg takes 0-255 pixels after gaussian"]),
    (["--seed", "-1"], ["--seed", "from 0 to 4294967295"]),
    (["--seed", str(2**32)], ["--seed", "from 0 to 4294967295"]),
]


@pytest.mark.parametrize("args, needles", TRAIN_CASES, ids=[" ".join(args) for args, _ in TRAIN_CASES])
def test_train_rejects_bad_input(args, needles, image_folder, tmp_path, output_dir):
    (tmp_path / "empty").mkdir()
    places = {"IMAGES": image_folder, "MISSING": tmp_path / "missing", "EMPTY": tmp_path / "empty"}
    args = [places.get(arg, arg) for arg in args]
    defaults = ["--image_dir", image_folder, "--test_dir", image_folder]
    result = run_main("train", *defaults, *args, "--output_path", output_dir, "--nb_epochs", 1, "--steps", 1)
    assert_one_line_error(result, *needles)
    assert_untouched(output_dir)


def test_train_rejects_use_multiprocessing_where_there_is_no_fork(image_folder, output_dir, monkeypatch):
    monkeypatch.setattr("multiprocessing.get_all_start_methods", lambda: ["spawn"])  # as on Windows
    result = run_main("train", "--image_dir", image_folder, "--test_dir", image_folder, "--use_multiprocessing",
                      "--output_path", output_dir, "--nb_epochs", 1, "--steps", 1)
    assert_one_line_error(result, "--use_multiprocessing", "os.fork", "leave it out")
    assert_untouched(output_dir)


def test_train_rejects_steps_per_execution_on_pytorch(image_folder, output_dir, monkeypatch):
    """Keras' PyTorch trainer raises for steps_per_execution > 1 when training starts: said at parse time."""
    monkeypatch.setattr("keras.backend.backend", lambda: "torch")
    result = run_main("train", "--image_dir", image_folder, "--test_dir", image_folder, "--steps_per_execution", 4,
                      "--output_path", output_dir, "--nb_epochs", 1, "--steps", 1)
    assert_one_line_error(result, "--steps_per_execution", "PyTorch", "KERAS_BACKEND=tensorflow or jax")
    assert_untouched(output_dir)


def test_train_rejects_a_corrupt_weight_file_in_a_real_process(image_folder, tmp_path, output_dir):
    """In a subprocess: the error comes after TensorFlow started, and its start-up lines must not show."""
    corrupt = tmp_path / "corrupt.weights.h5"
    corrupt.write_bytes(b"\x00" * 100)
    result = run_script("train.py", "--weight", corrupt, "--image_dir", image_folder, "--test_dir", image_folder,
                        "--output_path", output_dir)
    assert_one_line_error(result, "--weight", "not a Keras weight file")
    assert_untouched(output_dir)


def test_train_rejects_weights_of_the_other_architecture(image_folder, output_dir):
    require(LEGACY_CHECKPOINT)
    result = run_main("train", "--model", "unet", "--weight", LEGACY_CHECKPOINT, "--image_dir", image_folder,
                        "--test_dir", image_folder, "--output_path", output_dir)
    assert_one_line_error(result, "--weight", "1,231,683", "31,031,875", "--model srresnet")
    assert_untouched(output_dir)


def test_train_rejects_a_file_in_the_way_of_output_path(image_folder, output_dir):
    result = run_main("train", "--image_dir", image_folder, "--output_path", output_dir / "history.npz")
    assert_one_line_error(result, "--output_path", "a file is in the way")
    assert_untouched(output_dir)


def test_test_model_rejects_a_corrupt_weight_file(image_folder, tmp_path, output_dir):
    """In a subprocess: the error comes after TensorFlow started, and its start-up lines must not show."""
    corrupt = tmp_path / "corrupt.weights.h5"
    corrupt.write_bytes(b"\x00" * 100)
    result = run_script("test_model.py", "--weight_file", corrupt, "--image_dir", image_folder,
                        "--output_dir", output_dir)
    assert_one_line_error(result, "--weight_file", "not a Keras weight file")
    assert_untouched(output_dir)


def test_test_model_rejects_an_unknown_test_noise(image_folder, placeholder_weights, output_dir):
    result = run_main("test_model", "--weight_file", placeholder_weights, "--image_dir", image_folder,
                        "--test_noise_model", "salt,0,5", "--output_dir", output_dir)
    assert_one_line_error(result, "--test_noise_model", "valid:")
    assert_untouched(output_dir)


def test_noise_preview_rejects_a_bad_image_size(tmp_path):
    result = run_script("noise_model.py", "--image_size", "-3", "--output", tmp_path / "n.png")
    assert_one_line_error(result, "--image_size", "from 1 to 8192")
    assert not (tmp_path / "n.png").exists()


def test_plot_history_rejects_a_folder_without_history(tmp_path, output_dir):
    (tmp_path / "run").mkdir()
    result = run_script("plot_history.py", "--input1", tmp_path / "run", "--output_dir", output_dir)
    assert_one_line_error(result, "no history.npz")
    assert_untouched(output_dir)


def test_noise_preview_rejects_a_bad_noise_spec(tmp_path):
    result = run_script("noise_model.py", "--noise_model", "gaussian,50", "--output", tmp_path / "n.png")
    assert_one_line_error(result, "--noise_model", "gaussian,min_stddev,max_stddev")
    assert not (tmp_path / "n.png").exists()


def test_noise_preview_rejects_a_photo_that_is_not_an_image(tmp_path):
    fake = tmp_path / "photo.jpg"
    fake.write_text("not a jpeg")
    result = run_script("noise_model.py", "--image", fake, "--output", tmp_path / "n.png")
    assert_one_line_error(result, "--image", "not a readable image")
    assert not (tmp_path / "n.png").exists()


def test_noise_preview_rejects_a_missing_photo(tmp_path):
    result = run_script("noise_model.py", "--image", tmp_path / "none.png", "--output", tmp_path / "n.png")
    assert_one_line_error(result, "--image", "does not exist")


def test_plot_history_rejects_a_missing_run_folder(tmp_path, output_dir):
    result = run_script("plot_history.py", "--input1", tmp_path / "nowhere", "--output_dir", output_dir)
    assert_one_line_error(result, "--input1", "does not exist")
    assert_untouched(output_dir)


def test_plot_history_rejects_a_corrupt_history_file(tmp_path, output_dir):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "history.npz").write_bytes(b"garbage")
    result = run_script("plot_history.py", "--input1", tmp_path / "run", "--output_dir", output_dir)
    assert_one_line_error(result, "history.npz", "not a train.py history file")
    assert_untouched(output_dir)


def test_test_model_rejects_a_folder_without_images(tmp_path, placeholder_weights, output_dir):
    (tmp_path / "empty").mkdir()
    result = run_main("test_model", "--weight_file", placeholder_weights, "--image_dir", tmp_path / "empty",
                        "--output_dir", output_dir)
    assert_one_line_error(result, "--image_dir", "no image files")
    assert_untouched(output_dir)


def test_test_model_rejects_weights_of_the_other_architecture(image_folder, output_dir):
    require(LEGACY_CHECKPOINT)
    result = run_main("test_model", "--model", "unet", "--weight_file", LEGACY_CHECKPOINT,
                        "--image_dir", image_folder, "--output_dir", output_dir)
    assert_one_line_error(result, "--weight_file", "pass --model srresnet")
    assert_untouched(output_dir)


def test_test_model_rejects_a_file_in_the_way_of_output_dir(image_folder, output_dir, placeholder_weights):
    result = run_main("test_model", "--weight_file", placeholder_weights, "--image_dir", image_folder,
                        "--output_dir", output_dir / "history.npz")
    assert_one_line_error(result, "--output_dir", "a file is in the way")
    assert_untouched(output_dir)


@pytest.mark.parametrize("args, needles", [
    (["--tile", "60"], ["--tile", "multiple of 16"]),
    (["--tile", "32"], ["--tile", "larger than --tile_overlap"]),
    (["--tile_overlap", "-16", "--tile", "128"], ["--tile_overlap", "multiple of 16"]),
    (["--weight_file", "gausian"], ["--weight_file", "gausian", "shipped weights (camera, camera_strong"]),
    (["--clean_dir", "."], ["--clean_dir", "--test_noise_model clean"]),  # scores noisy photos, adds no noise
    (["--clean_dir", "MISSING", "--test_noise_model", "clean"], ["--clean_dir", "MISSING"]),
])
def test_test_model_rejects_bad_tiles_weight_names_and_clean_dirs(args, needles, image_folder, output_dir):
    result = run_main("test_model", "--image_dir", image_folder, "--output_dir", output_dir, *args)
    assert_one_line_error(result, *needles)
    assert_untouched(output_dir)


def test_test_model_refuses_to_write_into_its_image_dir(image_folder, tmp_path):
    before = sorted(p.relative_to(image_folder) for p in image_folder.rglob("*"))
    for output in (image_folder, image_folder / "sub" / "results"):
        result = run_main("test_model", "--image_dir", image_folder, "--output_dir", output)
        assert_one_line_error(result, "--output_dir", "inside --image_dir", "--allow_output_in_image_dir")
    assert sorted(p.relative_to(image_folder) for p in image_folder.rglob("*")) == before


@pytest.mark.parametrize("script, args", [
    ("noise_model.py", ["--seed", "-1", "--output", "n.png"]),
    ("noise_model.py", ["--image_size", "40000", "--output", "n.png"]),
    ("noise_model.py", ["--levels", "1000", "--output", "n.png"]),
    ("test_model.py", ["--seed", str(2**32), "--image_dir", ".", "--output_dir", "out"]),
])
def test_seeds_and_sizes_out_of_range_are_refused_when_parsed(script, args, tmp_path):
    """A seed NumPy and Keras cannot take, or a preview too large for memory: the flag's range, not a traceback."""
    result = run_script(script, *args, cwd=tmp_path)
    flag = args[0]
    assert_one_line_error(result, flag, "expected a whole number from")
    assert list(tmp_path.iterdir()) == []


def test_noise_preview_refuses_an_output_below_a_file(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    result = run_script("noise_model.py", "--output", tmp_path / "afile" / "n.png")
    assert_one_line_error(result, "--output", "a file where a folder should be")
    assert (tmp_path / "afile").read_text() == "not a folder"


@pytest.mark.parametrize("history, needles", [
    (5, ["not a train.py history file", "int"]),
    ({"loss": [1.0, 2.0]}, ["no val_loss, val_PSNR, val_SSIM"]),
])
def test_plot_history_refuses_histories_without_validation_before_writing(history, needles, tmp_path):
    import numpy as np

    (tmp_path / "run").mkdir()
    np.savez(tmp_path / "run" / "history.npz", history=history)
    result = run_script("plot_history.py", "--input1", tmp_path / "run", "--output_dir", tmp_path / "plots")
    assert_one_line_error(result, "history.npz", *needles)
    assert not (tmp_path / "plots").exists()


def test_train_says_which_channels_weights_of_a_gray_model_need(image_folder, tmp_path, output_dir):
    import cli

    cli.import_keras_quietly()
    import model as models

    gray = tmp_path / "gray.weights.h5"
    models.get_model("srresnet", channels=1).save_weights(gray)
    result = run_main("train", "--weight", gray, "--image_dir", image_folder, "--test_dir", image_folder,
                      "--output_path", output_dir)
    assert_one_line_error(result, "--weight", "srresnet (gray)", "pass --model srresnet --channels 1")
    assert_untouched(output_dir)


@pytest.mark.parametrize("script, args, needles", [
    ("train", ["--image_size", "5000"], ["5000x5000"]),
    ("train", ["--resume"], ["--resume", "no interrupted run"]),
    ("test_model", ["--weight_file", "CORRUPT"], ["--weight_file", "not a Keras weight file"]),
])
def test_a_failed_start_leaves_no_output_folder_behind(script, args, needles, image_folder, tmp_path):
    """The output folder (and its missing parents) is made before the inputs are all checked, so that an
    unwritable one fails at once; where a later check fails, the empty folders made are removed again."""
    corrupt = tmp_path / "corrupt.weights.h5"
    corrupt.write_bytes(b"\x00" * 100)
    args = [corrupt if arg == "CORRUPT" else arg for arg in args]
    folder_flag = "--output_path" if script == "train" else "--output_dir"
    common = ["--image_dir", image_folder]
    if script == "train":
        common += ["--test_dir", image_folder, "--nb_epochs", 1, "--steps", 1]
    result = run_main(script, *common, *args, folder_flag, tmp_path / "new" / "run")
    assert_one_line_error(result, *needles)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["corrupt.weights.h5"]
