"""Noise models: types, purity, reproducibility, statistics, spec validation, and the preview script."""
from statistics import NormalDist

import cv2
import numpy as np
import pytest

import camera_noise
from conftest import assert_one_line_error, run_script, synthetic_photo
import noise_model
from noise_model import get_noise_model, parse_noise_spec

SPECS = ["gaussian,0,50", "clean", "text,0,50", "impulse,0,50", "poisson,5,50", "bernoulli,0,50", "camera,0,100",
         "jpeg,30,95", "grain,1,3", "gaussian,0,25+impulse,0,20", "camera,0,50+chroma,1,4+grain,1,3+jpeg,60,95"]
GREY = np.full((128, 128, 3), 128, np.uint8)


@pytest.fixture
def photo():
    return synthetic_photo(np.random.default_rng(3), 70, 90)


@pytest.mark.parametrize("spec", SPECS)
def test_noise_returns_uint8_of_same_shape_and_leaves_input_unchanged(spec, photo):
    before = photo.copy()
    noisy = get_noise_model(spec)(photo, np.random.default_rng(0))
    assert noisy.dtype == np.uint8 and noisy.shape == photo.shape
    assert noisy is not photo
    np.testing.assert_array_equal(photo, before)


@pytest.mark.parametrize("spec", SPECS)
def test_noise_is_reproducible_with_a_seed(spec, photo):
    noise = get_noise_model(spec)
    first = noise(photo, np.random.default_rng(42))
    np.testing.assert_array_equal(first, noise(photo, np.random.default_rng(42)))
    if spec != "clean":
        assert not np.array_equal(first, noise(photo, np.random.default_rng(43)))


@pytest.mark.parametrize("spec", ["text,0,95", "impulse,0,95", "gaussian,0,50", "camera,50,100", "jpeg,5,10"])
def test_noise_works_on_tiny_and_single_channel_images(spec):
    for image in (np.full((8, 8, 3), 200, np.uint8), np.full((20, 12, 1), 50, np.uint8)):
        noisy = get_noise_model(spec)(image, np.random.default_rng(1))
        assert noisy.shape == image.shape and noisy.dtype == np.uint8
        assert (noisy != image).any()  # and the noise is really there


def test_clean_is_identity(photo):
    np.testing.assert_array_equal(get_noise_model("clean")(photo, np.random.default_rng(0)), photo)


def test_gaussian_stddev_matches_spec():
    noisy = get_noise_model("gaussian,25,25")(np.full((256, 256, 3), 128, np.uint8), np.random.default_rng(0))
    residual = noisy.astype(np.float64) - 128
    # Truncation to uint8 moves the mean by about -0.5; the spread is the spec's sigma.
    assert abs(residual.std() - 25) < 0.5
    assert abs(residual.mean() + 0.5) < 0.3


def test_zero_mean_gaussian_is_unclipped_float_with_the_image_as_mean():
    """Near black, clipping and truncation bias the original's noisy pixels upwards; zero_mean does not."""
    dark = np.full((256, 256, 3), 10, np.uint8)
    clipped = get_noise_model("gaussian,25,25")(dark, np.random.default_rng(0))
    exact = get_noise_model("gaussian,25,25", zero_mean=True)(dark, np.random.default_rng(0))
    assert exact.dtype == np.float32 and exact.min() < 0 and not np.array_equal(exact, np.rint(exact))
    assert clipped.mean() - 10 > 5  # the bias zero_mean removes
    assert abs(exact.mean() - 10) < 0.2 and abs(exact.std() - 25) < 0.3


def test_zero_mean_noise_must_come_last_where_a_later_stage_needs_0_255_pixels(photo):
    """Zero-mean gaussian or poisson output is unclipped float: a later camera, jpeg, grain, ... stage would take
    arcsin of values outside 0-1 or re-clip them, so such a spec is refused; additive stages last are fine."""
    for spec in ("gaussian,0,25+camera,20,60", "gaussian,0,25+jpeg,85,95", "poisson,5,50+grain,1,3"):
        with pytest.raises(ValueError, match="takes 0-255 pixels after"):
            get_noise_model(spec, zero_mean=True)
        assert get_noise_model(spec)(photo, np.random.default_rng(0)).dtype == np.uint8  # fine without zero_mean
    for spec in ("camera,20,60+gaussian,0,25", "gaussian,0,25+poisson,5,50", "jpeg,85,95+gaussian,3,3+clean"):
        noisy = get_noise_model(spec, zero_mean=True)(photo, np.random.default_rng(0))
        assert noisy.dtype == np.float32 and np.isfinite(noisy).all(), spec


@pytest.mark.parametrize("spec", ["text,0,50", "impulse,0,50", "clean"])
def test_zero_mean_leaves_replacement_noise_unchanged(spec, photo):
    np.testing.assert_array_equal(get_noise_model(spec, zero_mean=True)(photo, np.random.default_rng(5)),
                                  get_noise_model(spec)(photo, np.random.default_rng(5)))


def test_poisson_variance_grows_with_intensity_as_documented():
    """Var = 255 * x / lam: for lam = 100, 127.5 at x = 50 and 382.5 at x = 150; the mean stays x."""
    noise = get_noise_model("poisson,100,100")
    for level in (50, 150):
        noisy = noise(np.full((256, 256, 3), level, np.uint8), np.random.default_rng(level)).astype(np.float64)
        assert abs(noisy.mean() - level) < 0.3
        assert abs(noisy.var() / (255 * level / 100) - 1) < 0.05, noisy.var()


def test_zero_mean_poisson_is_the_unrounded_draw():
    flat = np.full((128, 128, 3), 3, np.uint8)
    noisy = get_noise_model("poisson,20,20", zero_mean=True)(flat, np.random.default_rng(0))
    assert noisy.dtype == np.float32 and abs(noisy.mean() - 3) < 0.15 and not np.array_equal(noisy, np.rint(noisy))


@pytest.mark.parametrize("percent", [5, 30, 80])
def test_bernoulli_drops_whole_pixels_at_the_spec_rate(percent):
    noisy = get_noise_model(f"bernoulli,{percent},{percent}")(np.full((512, 512, 3), 128, np.uint8),
                                                               np.random.default_rng(percent))
    dropped = (noisy == 0).all(axis=-1)
    assert np.array_equal(dropped, (noisy == 0).any(axis=-1))  # all channels of a pixel together
    assert abs(dropped.mean() - percent / 100) < 0.01
    assert (noisy[~dropped] == 128).all()


def test_a_combination_applies_both_noises_in_order():
    """gaussian,10,10 then bernoulli,50,50: half the pixels black, the others grey with sigma 10 noise."""
    noisy = get_noise_model("gaussian,10,10+bernoulli,50,50")(np.full((256, 256, 3), 128, np.uint8),
                                                              np.random.default_rng(0))
    dropped = (noisy == 0).all(axis=-1)
    assert abs(dropped.mean() - 0.5) < 0.01
    assert abs(noisy[~dropped].astype(np.float64).std() - 10) < 0.3


@pytest.mark.parametrize("bit_generator", [np.random.PCG64, np.random.SFC64, np.random.Philox, np.random.MT19937])
def test_standard_normal_sampler_matches_the_normal_distribution(bit_generator):
    """With any numpy Generator: MT19937's raw words have only 32 random bits (cut in four they would give
    half the samples at -4.3 sigma), so it takes numpy's own sampler."""
    rng = np.random.Generator(bit_generator(0))
    samples = np.sort(noise_model.standard_normal(rng, (400_000,)).astype(np.float64))
    assert abs(samples.mean()) < 0.005 and abs(samples.std() - 1) < 0.005
    # Kolmogorov-Smirnov distance to N(0, 1): about 0.002 is expected from 400,000 samples.
    cdf = np.array([NormalDist().cdf(x) for x in samples[::97]])
    empirical = (np.arange(len(samples))[::97] + 0.5) / len(samples)
    assert np.abs(cdf - empirical).max() < 0.004


def test_gaussian_zero_sigma_changes_nothing(photo):
    np.testing.assert_array_equal(get_noise_model("gaussian,0,0")(photo, np.random.default_rng(0)), photo)


def test_text_occupancy_matches_spec():
    fractions = [(get_noise_model("text,20,20")(GREY, np.random.default_rng(s)) != GREY).any(axis=-1).mean()
                 for s in range(5)]
    assert abs(np.mean(fractions) - 0.20) < 0.03, fractions


def test_text_noise_draws_one_string_even_at_zero_occupancy():
    """The original checks the coverage after drawing, so text,0,0 still stamps one string (5-10 characters)."""
    noisy = get_noise_model("text,0,0")(GREY, np.random.default_rng(0))
    assert 20 < (noisy != GREY).any(axis=-1).sum() < 0.15 * GREY.shape[0] * GREY.shape[1]


def test_text_noise_terminates_when_occupancy_is_unreachable(monkeypatch):
    # 100 % coverage is practically unreachable: the string cap must end the loop.
    monkeypatch.setattr(noise_model, "TEXT_MAX_STRINGS", 300)
    noisy = get_noise_model("text,100,100")(np.full((64, 64, 3), 128, np.uint8), np.random.default_rng(0))
    assert 0.8 < (noisy != 128).any(axis=-1).mean() < 1.0


def test_impulse_fraction_matches_spec():
    noisy = get_noise_model("impulse,50,50")(GREY, np.random.default_rng(0))
    # Half of the values are replaced; 1 in 256 replacements happens to equal the original.
    changed = (noisy != GREY).mean(axis=(0, 1))
    np.testing.assert_allclose(changed, 0.5 * 255 / 256, atol=0.02)
    replaced = noisy[noisy != GREY]
    assert replaced.min() < 20 and replaced.max() > 235  # uniform over 0-255


def test_noise_level_is_drawn_in_range():
    noise = get_noise_model("impulse,10,30")
    rates = [(noise(GREY, np.random.default_rng(s)) != GREY).mean() for s in range(20)]
    assert 0.09 < min(rates) and max(rates) < 0.31 and max(rates) - min(rates) > 0.05


def test_gaussian_sigma_is_drawn_per_image_in_the_range_as_a_real_number():
    """One sigma per image, uniform in [MIN, MAX], not an integer, not fixed at MAX (the original's
    np.random.uniform)."""
    noise = get_noise_model("gaussian,10,40", zero_mean=True)  # unclipped: the residual's std is the sigma
    sigmas = np.array([(noise(GREY, np.random.default_rng(s)) - 128.0).std() for s in range(40)])
    assert 9.8 < sigmas.min() and sigmas.max() < 40.2 and sigmas.max() - sigmas.min() > 20
    assert abs(sigmas.mean() - 25) < 4 and np.abs(sigmas - np.rint(sigmas)).max() > 0.1


def test_text_occupancy_is_drawn_per_image_in_the_range():
    noise = get_noise_model("text,10,40")
    covered = [(noise(GREY, np.random.default_rng(s)) != GREY).any(axis=-1).mean() for s in range(12)]
    assert 0.08 < min(covered) and max(covered) < 0.45 and max(covered) - min(covered) > 0.1


@pytest.mark.parametrize("spec, message", [
    ("foo", "valid: gaussian, clean, text, impulse"),
    ("gaussian,1", "expected gaussian,min_stddev,max_stddev"),
    ("gaussian,a,b", "must be numbers"),
    ("gaussian,5,1", "min_stddev <= max_stddev"),
    ("gaussian,-1,5", "0 <= min_stddev"),
    ("text,0,120", "<= 100"),
    ("impulse,-5,5", "0 <= min_occupancy"),
    ("clean,1", "expected clean"),
    ("gaussian,0,inf", "min_stddev <= max_stddev"),
    ("poisson,0,10", "1 <= min_lambda"),
    ("bernoulli,10,200", "<= 100"),
    ("gaussian,0,25+", "an empty part"),
    ("gaussian,0,25+salt,1,2", "unknown noise model 'salt'"),
])
def test_bad_spec_names_what_is_accepted(spec, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        get_noise_model(spec)


def test_spec_accepts_decimals_and_spaces():
    assert parse_noise_spec("gaussian, 2.5, 10") == ("gaussian", (2.5, 10.0))


def test_preview_script_writes_png(tmp_path):
    output = tmp_path / "n.png"
    result = run_script("noise_model.py", "--noise_model", "text,0,95", "--output", output, "--image_size", 96)
    assert result.returncode == 0, result.stderr
    preview = cv2.imread(str(output))
    assert preview.shape == (96, 96, 3) and (preview != 128).any()


def test_preview_script_on_a_photo(tmp_path, image_folder):
    output = tmp_path / "photo.png"
    result = run_script("noise_model.py", "--noise_model", "impulse,30,30", "--image", image_folder / "a.png",
                        "--output", output, "--seed", 1)
    assert result.returncode == 0, result.stderr
    photo, preview = cv2.imread(str(image_folder / "a.png")), cv2.imread(str(output))
    assert preview.shape == photo.shape
    # impulse,30,30 on the photo: 30 % of the values replaced, 1 in 256 of them by the value already there
    assert abs((preview != photo).mean() - 0.3 * 255 / 256) < 0.03


def test_preview_without_display_or_output_saves_a_png(tmp_path):
    result = run_script("noise_model.py", "--noise_model", "text,0,95", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no display" in result.stdout and "--output" in result.stdout
    assert cv2.imread(str(tmp_path / "noise_preview.png")).shape == (256, 256, 3)


def test_preview_refuses_an_output_name_without_image_suffix(tmp_path):
    result = run_script("noise_model.py", "--output", tmp_path / "preview")
    assert_one_line_error(result, "--output", "preview.png")
    assert list(tmp_path.iterdir()) == []


def test_text_noise_gives_up_once_no_string_adds_pixels(monkeypatch):
    """On a 4x4 image most strings are clipped away; the stall rule ends the loop after TEXT_MAX_STALLED strings
    that added nothing, long before the cap (raised here so that only the stall rule can end it)."""
    monkeypatch.setattr(noise_model, "TEXT_MAX_STRINGS", 10**9)
    calls = []
    real_put_text = cv2.putText
    monkeypatch.setattr(noise_model.cv2, "putText", lambda *args: calls.append(1) or real_put_text(*args))
    noisy = get_noise_model("text,95,95")(np.full((4, 4, 3), 128, np.uint8), np.random.default_rng(0))
    assert noisy.shape == (4, 4, 3) and (noisy != 128).any()
    strings = len(calls) // 2  # each string is drawn twice: on the image and on the coverage mask
    assert noise_model.TEXT_MAX_STALLED <= strings < 20 * noise_model.TEXT_MAX_STALLED


def test_zero_mean_gaussian_then_poisson_takes_the_negative_pixels_as_no_light():
    """The zero-mean gaussian part leaves pixels below 0; Poisson counts them as a rate of 0 (no crash)."""
    dark = np.full((64, 64, 3), 3, np.uint8)
    noisy = get_noise_model("gaussian,0,25+poisson,5,50", zero_mean=True)(dark, np.random.default_rng(0))
    assert noisy.dtype == np.float32 and noisy.min() >= 0 and noisy.max() > 3


def test_level_specs_span_min_to_max_of_every_part():
    assert noise_model.level_specs("gaussian,0,50+impulse,10,20", 3) == [
        "gaussian,0,0+impulse,10,10", "gaussian,25,25+impulse,15,15", "gaussian,50,50+impulse,20,20"]
    assert noise_model.level_specs("clean", 2) == ["clean", "clean"]
    assert noise_model.level_specs("gaussian,0,25+clean+poisson,5,1000", 4)[1] == \
        "gaussian,8.33,8.33+clean+poisson,337,337"  # 3 significant digits, never an exponent


def test_a_combined_label_is_written_one_noise_a_line_within_its_tile():
    """Each tile of a --levels preview is labelled with its whole spec: a combination one noise a line, the font
    shrunk to fit the tile (the label of gaussian,8.33,8.33+impulse,6.67,6.67 was cut at 'impulse,6')."""
    specs = noise_model.level_specs("gaussian,0,25+impulse,0,20+text,0,10", 4)
    preview = noise_model.draw_preview(np.full((128, 128, 3), 128, np.uint8), specs, np.random.default_rng(0))
    first_tile_box = (preview[:, :128] == 0).all(axis=-1)  # the black label box; noise-free tile: nothing else 0
    rows, columns = np.nonzero(first_tile_box)
    assert columns.max() < 127 and 3 * 15 < rows.max() < 80, (columns.max(), rows.max())  # 3 lines
    assert (preview[2, 128:256] == 0).all(axis=-1).sum() > 30  # the second tile has its own label
    assert noise_model.level_specs("text,0,50", 1) == ["text,0,50"]


def test_preview_grid_shows_each_level_side_by_side(tmp_path):
    result = run_script("noise_model.py", "--noise_model", "poisson,5,50", "--levels", 4, "--image_size", 64,
                        "--output", tmp_path / "grid.png", "--seed", 0)
    assert result.returncode == 0, result.stderr
    grid = cv2.imread(str(tmp_path / "grid.png"))
    assert grid.shape == (64, 4 * 64, 3)
    spreads = [grid[30:, k * 64:(k + 1) * 64].std() for k in range(4)]  # below the labels
    assert spreads == sorted(spreads, reverse=True)  # more photons, less noise


def horizontal_correlation(noisy, clean):
    """Lag-1 autocorrelation of the residual along the rows, over all channels."""
    residual = noisy.astype(np.float64) - clean
    residual -= residual.mean(axis=(0, 1))
    return float(np.mean(residual[:, 1:] * residual[:, :-1]) / np.mean(residual**2))


def test_camera_noise_is_correlated_between_neighbours_and_grows_with_the_level():
    """Demosaicing spreads each sample's noise to its neighbours (gaussian noise stays white), and a higher
    level means more shot and read noise."""
    grey = np.full((96, 96, 3), 128, np.uint8)
    camera = [get_noise_model(f"camera,{level},{level}")(grey, np.random.default_rng(5)) for level in (0, 50, 100)]
    gaussian = get_noise_model("gaussian,10,10")(grey, np.random.default_rng(5))
    assert all(horizontal_correlation(noisy, grey) >= 0.1 for noisy in camera)
    assert abs(horizontal_correlation(gaussian, grey)) < 0.05
    variances = [float(np.var(noisy.astype(np.float64) - grey)) for noisy in camera]
    assert variances[0] < variances[1] < variances[2] and variances[2] > 10 * variances[0], variances


def test_camera_noise_keeps_the_mean_colour_and_the_level_maps_log_uniformly_onto_the_shot_noise():
    """At the lowest level a photo keeps its mean colour (within 3 grey levels: only noise is added), and the
    shot-noise factor runs log-uniformly from 1e-4 (level 0) to 0.012 (level 100)."""
    photo = synthetic_photo(np.random.default_rng(4), 64, 80)
    noisy = get_noise_model("camera,0,0")(photo, np.random.default_rng(0))
    assert np.abs(noisy.astype(float).mean(axis=(0, 1)) - photo.mean(axis=(0, 1))).max() < 3
    np.testing.assert_allclose([camera_noise.camera_shot_noise(level) for level in (0, 50, 100)],
                               [1e-4, np.sqrt(1e-4 * 0.012), 0.012], rtol=1e-9)


def test_processing_the_raw_back_inverts_the_unprocessing():
    """sRGB -> raw (inverse tone curve, gamma, colour matrix, white balance) and back gives the same colours, for
    many random cameras' settings (below the highlights, where the white balance fades out on purpose)."""
    rng = np.random.default_rng(8)
    rgb = rng.uniform(0.02, 0.8, (16, 16, 3))
    for _ in range(5):
        matrix, gains, _, _ = camera_noise._camera_settings(rng, 50)
        back = camera_noise._from_raw(camera_noise._to_raw(rgb, matrix, gains), matrix, gains)
        np.testing.assert_allclose(back, rgb, atol=1e-6)


def test_the_mosaic_puts_each_colour_where_the_demosaicking_reads_it():
    """A flat colour mosaicked (RGGB) and developed as the camera develops it comes back that colour: the mosaic
    and OpenCV's demosaicking agree on where red, green and blue are (a red/blue swap turns orange into blue)."""
    rng = np.random.default_rng(9)
    matrix, gains, _, _ = camera_noise._camera_settings(rng, 50)
    camera = np.broadcast_to(np.array([0.30, 0.20, 0.08]), (12, 12, 3))  # raw camera RGB, distinct channels
    developed = camera_noise._developed(camera_noise._mosaic(camera), matrix, gains)
    expected = camera_noise._from_raw(camera, matrix, gains)
    np.testing.assert_allclose(developed[2:-2, 2:-2], expected[2:-2, 2:-2], atol=2e-4)  # (16-bit raw rounding)


def test_jpeg_noise_changes_the_image_in_8x8_blocks_at_the_drawn_quality():
    """The residual of a smooth ramp plus fine noise jumps at the 8x8 block edges: its mean step across
    block edges is larger than within blocks; a higher quality changes less."""
    rng = np.random.default_rng(2)
    ramp = np.clip(np.linspace(0, 255, 64)[np.newaxis, :, np.newaxis] + rng.normal(0, 6, (64, 64, 3)), 0, 255)
    image = ramp.astype(np.uint8)
    low, high = (get_noise_model(f"jpeg,{q},{q}")(image, np.random.default_rng(0)).astype(float) for q in (10, 95))
    residual = low - image
    steps = np.abs(np.diff(residual, axis=1)).mean(axis=(0, 2))  # step between columns c and c + 1
    at_edges, inside = steps[7::8].mean(), np.delete(steps, np.s_[7::8]).mean()
    assert at_edges > 1.2 * inside, (at_edges, inside)
    assert np.abs(high - image).mean() < np.abs(residual).mean()


def test_chroma_smoothing_after_camera_noise_leaves_luma_noise_correlated_across_channels():
    """The camera pipeline's inverse colour matrix anti-correlates the channels' noise; blurring the chroma, as
    cameras do, leaves luma noise, positively correlated across channels, and keeps a flat image's colour."""
    grey = np.full((96, 96, 3), 128, np.uint8)

    def channel_correlation(noisy):
        residual = noisy.astype(np.float64) - noisy.mean(axis=(0, 1))
        return float(np.mean(residual[..., 0] * residual[..., 1]) / np.sqrt(np.var(residual[..., 0]) *
                                                                            np.var(residual[..., 1])))
    camera = get_noise_model("camera,50,50")(grey, np.random.default_rng(1))
    smoothed = get_noise_model("camera,50,50+chroma,3,3")(grey, np.random.default_rng(1))
    assert channel_correlation(camera) < 0 < 0.3 < channel_correlation(smoothed), (channel_correlation(camera),
                                                                                 channel_correlation(smoothed))
    assert np.abs(smoothed.mean(axis=(0, 1)) - 128).max() < 2
    np.testing.assert_array_equal(get_noise_model("chroma,0,0")(grey, np.random.default_rng(0)), grey)


def test_coarse_grain_is_correlated_pixels_apart_the_same_in_every_channel_at_the_drawn_strength():
    """grain is low-frequency noise: still correlated 3 pixels away (camera noise alone about 0.2 there, real
    photos 0.36), its std the drawn one, identical in the three channels; grain,0,0 changes nothing."""
    grey = np.full((256, 256, 3), 128, np.uint8)
    grainy = get_noise_model("grain,4,4")(grey, np.random.default_rng(6))
    residual = grainy.astype(np.float64) - grey
    assert abs(residual.std() - 4) < 0.3, residual.std()
    np.testing.assert_array_equal(residual[..., 0], residual[..., 2])
    centred = residual[..., 0] - residual[..., 0].mean()
    lag3 = float(np.mean(centred[:, 3:] * centred[:, :-3]) / np.mean(centred**2))
    assert lag3 > 0.5, lag3
    np.testing.assert_array_equal(get_noise_model("grain,0,0")(grey, np.random.default_rng(0)), grey)
