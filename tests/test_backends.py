"""The suite on Keras' other backends: JAX and PyTorch train and denoise (train.py -> test_model.py), give the
same output as TensorFlow from the same weights, and the backend-dependent unit tests pass on JAX.

Each backend's tests are skipped, with the reason, where its package is not installed
(pip install -r requirements-backends.txt installs both; CI does).
"""
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

import cli

from conftest import LEGACY_CHECKPOINT, REPO, require_backend, run_main, run_script

OTHER_BACKENDS = ("jax", "torch")
# The unit tests whose outcome depends on the backend (networks, losses, SSIM, weight files, inference);
# the rest of the suite is numpy/OpenCV or runs the scripts, which the tests below cover per backend.
# (test_inference.py's computations are covered by the shipped-weights comparison below.)
BACKEND_DEPENDENT_TESTS = ["tests/test_networks.py", "tests/test_legacy_checkpoint.py", "tests/test_atomic_writes.py"]


@pytest.mark.parametrize("backend", ["torch"])  # JAX trains in test_distribute.py and denoises below
def test_train_then_test_model_on_backend(backend, tmp_path, image_folder, small_photos):
    """Fine-tune the shipped weights for two small steps, then denoise with the weights train.py names (the
    checkpoint, or the start where the two steps did not beat it): they still denoise."""
    env = require_backend(backend)
    output = tmp_path / "run"
    trained = run_script("train.py", "--image_dir", image_folder, "--test_dir", small_photos, "--nb_epochs", 1,
                         "--steps", 2, "--batch_size", 2, "--image_size", 32, "--lr", 1e-5, "--weight", "gaussian",
                         "--output_path", output, env=env)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert (output / "backup" / "epoch_001.weights.h5").is_file()  # the backend wrote the epoch's weights
    checkpoint = re.search(r"^denoise photos with: .* --weight_file (\S+) ", trained.stdout, re.MULTILINE).group(1)
    assert checkpoint == str(next(output.glob("weights.*.weights.h5"), cli.shipped_weights()["gaussian"]))
    tested = run_script("test_model.py", "--weight_file", checkpoint, "--image_dir", small_photos,
                        "--output_dir", tmp_path / "denoised", env=env)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    noisy, denoised = map(float, re.search(r"mean over 2 images: noisy ([\d.]+) dB, denoised ([\d.]+) dB",
                                           tested.stdout).groups())
    assert denoised > noisy + 5, (noisy, denoised)
    assert sorted(p.name for p in (tmp_path / "denoised").glob("*.png")) == ["a.png", "b.png"]


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_shipped_weights_denoise_alike_on_every_backend(backend, tmp_path, small_photos):
    env = require_backend(backend)
    common = ["--image_dir", small_photos, "--weight_file", "gaussian", "--test_noise_model", "clean",
              "--output_mode", "denoised"]
    reference = run_main("test_model", *common, "--output_dir", tmp_path / "tensorflow")  # this process: TensorFlow
    assert reference.returncode == 0, reference.stderr
    other = run_script("test_model.py", *common, "--output_dir", tmp_path / backend, env=env)
    assert other.returncode == 0, other.stdout + other.stderr
    for name in ("a.png", "b.png"):
        expected = cv2.imread(str(tmp_path / "tensorflow" / name)).astype(int)
        got = cv2.imread(str(tmp_path / backend / name)).astype(int)
        assert np.abs(got - expected).max() <= 1, name  # float summation order may flip a rounding


def test_backend_dependent_unit_tests_pass_on_jax(tmp_path):
    """The backend-dependent unit tests, run on JAX: all pass, and none is skipped but for a missing ../shared."""
    env = require_backend("jax")
    environment = {**os.environ, **env, "MPLBACKEND": "Agg"}
    # -n 0: no xdist workers of its own (pytest.ini's default); the outer run already has one per core. The
    # parameter counts do not depend on the backend, and JAX takes 20 s to initialise the UNet's 31 M weights.
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-n", "0", "-p", "no:cacheprovider",
                             "-k", "not test_parameter_counts_match_the_original", *BACKEND_DEPENDENT_TESTS],
                            cwd=REPO, env=environment, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0 and " passed" in result.stdout, result.stdout[-3000:]
    skipped = re.findall(r"^SKIPPED .*$", result.stdout, re.MULTILINE)
    assert all("../shared is optional" in line for line in skipped), skipped
    assert not skipped or not LEGACY_CHECKPOINT.exists(), skipped
