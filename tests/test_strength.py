"""test_model.py --strength: the shipped camera weights at several strengths of noise removal."""
import cv2
import numpy as np
import pytest

import cli
from conftest import assert_one_line_error, run_main
from noise_model import get_noise_model


@pytest.fixture(scope="module")
def camera_noisy(tmp_path_factory):
    """A flat grey photo with synthetic camera noise: all that the camera weights leave of it is noise."""
    folder = tmp_path_factory.mktemp("strength")
    noise, rng = get_noise_model("camera,45,45+chroma,3,3+grain,2,2+jpeg,90,90"), np.random.default_rng(0)
    cv2.imwrite(str(folder / "grey.png"), noise(np.full((128, 128, 3), 128, np.uint8), rng))
    return folder


def denoised_at(folder, out, *flags):
    result = run_main("test_model", "--image_dir", folder, "--test_noise_model", "clean", "--output_mode",
                      "denoised", "--output_dir", out, *flags)
    assert result.returncode == 0, result.stderr[-2000:]
    return cv2.imread(str(out / "grey.png")).astype(np.float64)


def test_noise_left_falls_as_the_strength_rises_and_the_default_is_strength_1(camera_noisy, tmp_path):
    """On a flat grey photo with camera noise, what the camera weights leave (the output's spread) falls with each
    higher --strength; without the flag the output is --strength 1's, bit for bit."""
    strengths = sorted(cli.shipped_family(cli.shipped_weights()["camera"]))
    assert len(strengths) >= 3 and 1.0 in strengths, strengths
    outputs = {value: denoised_at(camera_noisy, tmp_path / f"s{value:g}", "--strength", value) for value in strengths}
    left = [outputs[value].std() for value in strengths]
    assert all(a > b for a, b in zip(left, left[1:])), dict(zip(strengths, left))
    np.testing.assert_array_equal(denoised_at(camera_noisy, tmp_path / "default"), outputs[1.0])


def test_a_strength_the_weights_do_not_come_at_is_one_line(camera_noisy, tmp_path):
    result = run_main("test_model", "--image_dir", camera_noisy, "--test_noise_model", "clean", "--strength", 7,
                      "--output_dir", tmp_path / "out")
    assert_one_line_error(result, "--strength 7", "camera.weights.h5 come at")
    result = run_main("test_model", "--image_dir", camera_noisy, "--weight_file", "gaussian", "--strength", 2,
                      "--output_dir", tmp_path / "out")
    assert_one_line_error(result, "--strength 2", "gaussian.weights.h5 comes at one strength")
