"""Inference: tiled prediction against whole-image prediction, and the weights shipped in result/weights."""
import argparse

import cli

cli.import_keras_quietly()
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from skimage.metrics import peak_signal_noise_ratio  # noqa: E402

from conftest import DATASETS, require, shipped_score, synthetic_photo  # noqa: E402
import images  # noqa: E402
import inference  # noqa: E402
import model as models  # noqa: E402
import pixel_shuffle  # noqa: E402
from noise_model import get_noise_model  # noqa: E402
import test_model  # noqa: E402

@pytest.fixture(scope="module")
def gaussian_model():
    model = models.get_model("srresnet")
    models.load_weights(model, cli.shipped_weights()["gaussian"])
    return model


@pytest.mark.parametrize("overlap", [0, 32, 64, 96])
def test_tile_weights_cross_fade_and_ignore_the_edges_inside_the_image(overlap):
    """Where tiles overlap by exactly `overlap` the weights add up to 1; where the last tile overlaps more,
    to at least 1 (predict_tiled divides by the sum); outputs within the dead zone of an inner edge get 0."""
    tile = 160
    dead = (overlap - min(inference.TILE_BLEND, overlap)) // 2
    for size, regular in ((tile + 2 * (tile - overlap), True), (tile + 2 * (tile - overlap) + 37, False)):
        total = np.zeros(size, np.float32)
        for start, length in inference.tile_spans(size, tile, overlap):
            weights = inference.tile_weights(length, start, size, overlap)
            total[start:start + length] += weights
            if start > 0:
                assert not weights[:dead].any()
            if start + length < size:
                assert not weights[length - dead:].any()
        assert total.min() >= 1 - 1e-6
        if regular:
            np.testing.assert_allclose(total, 1.0, atol=1e-6)


@pytest.mark.parametrize("size", [1024, 1088, 1152, 1216, 4032])
def test_tiles_cover_the_image_full_size_but_the_last(size):
    """Full 256-pixel tiles 192 apart, then the last one as short as the rest plus the overlap allows (a multiple
    of 64), so that the computed pixels exceed the image by little more than the overlaps."""
    spans = inference.tile_spans(size, 256, 64)
    assert spans[0][0] == 0 and sum(spans[-1]) == size
    assert all(length == 256 for _, length in spans[:-1]) and spans[-1][1] % 64 == 0
    assert all(start + length - next_start >= 64 for (start, length), (next_start, _) in zip(spans, spans[1:]))
    assert sum(length for _, length in spans) < size + 64 * len(spans)


def test_tiled_denoising_matches_the_whole_image_within_rounding(gaussian_model):
    """A trained SRResNet on a 200x300 photo in 128x128 tiles (64 shared): the same uint8 image, give or take 1."""
    photo = synthetic_photo(np.random.default_rng(7), 200, 300)
    noisy = get_noise_model("gaussian,25,25")(photo, np.random.default_rng(0))
    whole = inference.denoise(gaussian_model, noisy).astype(int)
    tiled = inference.denoise(gaussian_model, noisy, tile=128, overlap=64).astype(int)
    difference = np.abs(whole - tiled)
    assert difference.mean() <= 0.01 and difference.max() <= 1, (difference.mean(), difference.max())
    seams = np.abs(whole - inference.denoise(gaussian_model, noisy, tile=128, overlap=0).astype(int))
    assert seams.max() > 1  # without overlap the tile borders do show: the blending is what removes them


def test_every_shipped_name_loads_into_the_network_its_manifest_names():
    """Each name the weights manifest lists is a file that train.py --weight and test_model.py --weight_file take,
    and loads into the network and channels the manifest gives; every shipped file is listed."""
    manifest = cli.weights_manifest()
    assert set(cli.shipped_weights()) == set(manifest) and manifest
    files = {path.name for path in cli.SHIPPED_WEIGHTS_DIR.glob("*.weights.h5")}
    assert files == {entry["file"] for entry in manifest.values()}
    for name, entry in manifest.items():
        assert cli.weight_file(name) == cli.SHIPPED_WEIGHTS_DIR / entry["file"]
        models.load_weights(models.get_model(entry["model"], entry["channels"]), cli.weight_file(name))


def shipped_inference_network(name):
    """The shipped weights `name` in the network test_model.py denoises with (model.inference_network)."""
    return test_model.load_model(argparse.Namespace(model="srresnet", weight_file=cli.shipped_weights()[name],
                                                    mixed_precision=False, test_noise_model="clean",
                                                    strength=None))


# gaussian, test_model.py's default, is checked on its command line: test_scripts.py's triptych test.
@pytest.mark.parametrize("name", sorted(set(cli.shipped_weights()) - {"gaussian"}))
def test_regression_shipped_weights_reproduce_their_reported_set5_psnr(name):
    """Regression test: test_model.py's triptych path (its noise spec, seed 0, crop to 16) still gives the figure
    the weights manifest reports, within 0.05 dB, scored by the project's PSNR and, independently, by
    scikit-image's."""
    folder = require(DATASETS / "Set5")
    model = shipped_inference_network(name)
    score = shipped_score(name, "Set5")
    noise_spec, reported = score["test_noise_model"], score["psnr"]
    noise, rng = get_noise_model(noise_spec), np.random.default_rng(0)
    args = argparse.Namespace(tile=0, tile_overlap=inference.TILE_OVERLAP, pixel_shuffle=1, self_ensemble=False,
                              clean_dir=None)
    ours, independent = [], []
    for path in images.list_images(folder):
        original, _, denoised, _ = test_model.triptych_result(model, path, noise, rng, args)
        ours.append(test_model.image_scores(original, denoised)[0])
        independent.append(peak_signal_noise_ratio(original, denoised, data_range=255))
    assert abs(np.mean(ours) - reported) <= 0.05 and abs(np.mean(independent) - reported) <= 0.05, (ours, independent)


# Every 7th PolyU-Canon5D2 photo (sorted by name): smooth and textured scenes, ISO 3200 and 6400; all 29 take
# several minutes on a 2-core CPU, and the test above ties the reported mean to the per-photo figures.
REAL_PHOTO_SAMPLE = slice(0, None, 7)


def test_regression_camera_weights_reproduce_their_reported_real_photo_psnr(name="camera"):
    """Regression test: test_model.py --test_noise_model clean --clean_dir with the shipped camera weights on
    real noisy photos of PolyU-Canon5D2 gives the per-photo PSNRs the weights manifest reports, within 0.05 dB
    (the project's PSNR and, independently, scikit-image's); the reported mean is the mean of those 29."""
    folder = require(DATASETS / "PolyU-Canon5D2")
    model = shipped_inference_network(name)
    args = argparse.Namespace(tile=0, tile_overlap=inference.TILE_OVERLAP, pixel_shuffle=1, self_ensemble=False,
                              image_dir=folder / "noisy", clean_dir=folder / "clean")
    noise, rng = get_noise_model("clean"), np.random.default_rng(0)
    paths = images.list_images(folder / "noisy")
    assert len(paths) == 29
    score = shipped_score(name, "PolyU-Canon5D2")
    assert len(score["per_image_psnr"]) == 29 and abs(np.mean(score["per_image_psnr"]) - score["psnr"]) < 0.01
    reported = score["per_image_psnr"][REAL_PHOTO_SAMPLE]
    for path, expected in zip(paths[REAL_PHOTO_SAMPLE], reported, strict=True):
        clean, _, denoised, _ = test_model.triptych_result(model, path, noise, rng, args)
        ours = test_model.image_scores(clean, denoised)[0]
        independent = peak_signal_noise_ratio(clean, denoised, data_range=255)
        assert abs(ours - expected) <= 0.05 and abs(independent - expected) <= 0.05, (path.name, ours, expected)


def test_pixel_shuffle_splits_into_every_stride_th_pixel_and_reassembles_exactly():
    batch = np.random.default_rng(0).uniform(0, 255, (2, 12, 9, 3)).astype(np.float32)
    sub_images = pixel_shuffle.pixel_unshuffle(batch, 3)
    assert sub_images.shape == (9, 2, 4, 3, 3)
    np.testing.assert_array_equal(sub_images[5], batch[:, 1::3, 2::3])  # index i * stride + j: offset (i, j)
    np.testing.assert_array_equal(pixel_shuffle.pixel_shuffle(sub_images, 3), batch)


def test_pixel_shuffled_denoising_denoises_each_sub_image_and_keeps_the_size(gaussian_model):
    """--pixel_shuffle 2 at inference: each output pixel is the network's output on the sub-image it belongs to
    (within rounding); an odd-sized photo comes back at its size; with white noise (alike in the sub-images) it
    still denoises."""
    photo = synthetic_photo(np.random.default_rng(3), 131, 97)
    noisy = get_noise_model("gaussian,25,25")(photo, np.random.default_rng(1))
    even = noisy[:130, :96]
    alone = inference.denoise(gaussian_model, even[1::2, 0::2]).astype(int)  # the sub-image of offset (1, 0)
    assert np.abs(inference.denoise(gaussian_model, even, stride=2)[1::2, 0::2].astype(int) - alone).max() <= 1
    shuffled = inference.denoise(gaussian_model, noisy, stride=2)
    assert shuffled.shape == photo.shape
    gain = peak_signal_noise_ratio(photo, shuffled) - peak_signal_noise_ratio(photo, noisy)
    assert gain > 3, gain


def test_the_eight_symmetries_differ_and_each_turns_back_exactly():
    batch = np.random.default_rng(0).random((2, 3, 5, 3)).astype(np.float32)  # not square: transposes show
    variants = [inference.transformed(batch, *symmetry) for symmetry in inference.SYMMETRIES]
    assert len({variant.tobytes() + bytes(variant.shape) for variant in variants}) == 8
    for variant, symmetry in zip(variants, inference.SYMMETRIES):
        np.testing.assert_array_equal(inference.untransformed(variant, *symmetry), batch)


class RollRight:
    """A stand-in network that moves every pixel one column right (wrapping): not symmetric under flips."""

    def predict_on_batch(self, batch):
        return np.roll(batch, 1, axis=2)


def test_self_ensemble_averages_the_network_over_flips_and_transposes():
    """Through the eight symmetries a one-column shift becomes a shift in each of the four directions, twice
    each: the ensemble is their mean (64x128: no padding, so the rolls wrap within the image)."""
    batch = np.random.default_rng(1).uniform(0, 255, (1, 64, 128, 3)).astype(np.float32)
    expected = sum(np.roll(batch, shift, axis) for shift in (1, -1) for axis in (1, 2)) / 4
    ensemble = inference.predict_images(RollRight(), batch, self_ensemble=True)
    np.testing.assert_allclose(ensemble, expected, rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(inference.predict_images(RollRight(), batch), np.roll(batch, 1, axis=2))


def test_self_ensemble_is_symmetric_and_denoises_better(gaussian_model):
    """A trained SRResNet with --self_ensemble: the result of a flipped photo is the flipped result (within
    rounding), in tiles too, and it scores above the single pass on a noisy photo."""
    photo = synthetic_photo(np.random.default_rng(4), 96, 160)
    noisy = get_noise_model("gaussian,25,25")(photo, np.random.default_rng(2))
    ensemble = inference.denoise(gaussian_model, noisy, self_ensemble=True)
    flipped = inference.denoise(gaussian_model, np.ascontiguousarray(noisy[:, ::-1]), self_ensemble=True)
    assert np.abs(flipped[:, ::-1].astype(int) - ensemble).max() <= 1
    tiled = inference.denoise(gaussian_model, noisy, tile=64, overlap=32, self_ensemble=True)
    assert np.abs(tiled.astype(int) - ensemble).mean() <= 0.05
    single = inference.denoise(gaussian_model, noisy)
    assert peak_signal_noise_ratio(photo, ensemble) > peak_signal_noise_ratio(photo, single) + 0.05
