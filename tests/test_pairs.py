"""Noise2Noise on your own shots: train.py --target_dir (pairs, noisy/clean pairs) and --bursts."""
import re

import cv2
import numpy as np
import pytest

import generator
import pairs
from conftest import assert_one_line_error, run_main
from noise_model import get_noise_model
from plot_history import load_history

CLEAN = get_noise_model("clean")
TINY = ["--nb_epochs", 2, "--steps", 3, "--batch_size", 4, "--image_size", 32, "--seed", 0]


def marked_pair(height=40, width=50):
    """Two images of one scene whose every pixel says where it is (row * width + column, in its first channel)
    and which shot it is (0 or 1, in its second): any crop tells its window and its shot."""
    rows, columns = np.mgrid[0:height, 0:width]
    position = (rows * width + columns).astype(np.int32)
    return tuple(np.dstack([position, np.full_like(position, shot), position * 0]) for shot in (0, 1))


def test_both_crops_come_from_one_window_and_the_swap_is_symmetric():
    """Every patch crops the same window from both shots of a pair, and takes either shot as the source about
    half the time over many draws."""
    pair, rng, sources = marked_pair(), np.random.default_rng(0), []
    for _ in range(2000):
        source, target = generator.random_patches([pair], 16, rng)
        np.testing.assert_array_equal(source[..., 0], target[..., 0])  # the same window
        assert source[0, 0, 1] != target[0, 0, 1]  # two different shots
        sources.append(int(source[0, 0, 1]))
    assert 0.46 < np.mean(sources) < 0.54, np.mean(sources)
    noisy_first = {int(generator.random_patches([pair], 16, rng, symmetric=False)[0][0, 0, 1]) for _ in range(200)}
    assert noisy_first == {0}  # noisy/clean pairs (--clean_targets): the first shot is always the source


def test_bursts_never_pair_a_shot_with_itself_and_draw_every_ordered_pair():
    """Of a burst of 4 shots every patch takes two different ones, and each of the 12 ordered pairs comes up
    about equally often."""
    burst = tuple(np.full((20, 20, 3), shot, np.int32) for shot in range(4))
    rng = np.random.default_rng(1)
    drawn = [tuple(int(crop[0, 0, 0]) for crop in generator.random_patches([burst], 8, rng)) for _ in range(6000)]
    assert all(source != target for source, target in drawn)
    counts = {pair: drawn.count(pair) for pair in set(drawn)}
    assert len(counts) == 12 and min(counts.values()) > 400, counts


def test_the_draw_is_reproducible_with_the_seed(own_shots):
    """The same seed, epoch and batch give the same pairs of patches; another seed other ones."""
    path_groups = pairs.matching_files(sorted((own_shots / "first").iterdir()), own_shots / "first",
                                       own_shots / "second")
    groups = pairs.load_groups(path_groups)
    batch = dict(groups=groups, source_noise_model=CLEAN, target_noise_model=CLEAN, batch_size=6, image_size=32,
                 epoch=1, index=2)
    first, again, other = (generator.make_batch(**batch, seed=seed) for seed in (3, 3, 4))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[0], first[1])  # two independent shots, not one patch twice


def test_16_bit_pairs_keep_their_depth_and_cache_mb_bounds_both_shots(tmp_path):
    """A 16-bit PNG pair trains at its depth (patches between 8-bit steps); past --cache_mb either shot of a pair
    is read from disk for every patch, and the patches are the same."""
    rng = np.random.default_rng(3)
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        cv2.imwrite(str(tmp_path / name / "a.png"), rng.integers(0, 65536, (40, 48, 3), dtype=np.uint16))
        cv2.imwrite(str(tmp_path / name / "b.png"), rng.integers(0, 65536, (40, 48, 3), dtype=np.uint16))
    path_groups = pairs.matching_files(sorted((tmp_path / "first").iterdir()), tmp_path / "first",
                                       tmp_path / "second")
    in_memory = pairs.load_groups(path_groups)
    assert all(shot.dtype == np.uint16 for group in in_memory for shot in group)
    capped = pairs.load_groups(path_groups, cache_bytes=in_memory[0][0].nbytes * 3)  # three of the four shots
    assert [isinstance(shot, generator.ImageOnDisk) for group in capped for shot in group] == [False] * 3 + [True]
    batches = [generator.make_batch(groups, CLEAN, CLEAN, 8, 16, seed=0, epoch=0, index=0)
               for groups in (in_memory, capped)]
    for a, b in zip(*batches):
        np.testing.assert_array_equal(a, b)
    assert np.mean(batches[0][0] != np.rint(batches[0][0])) > 0.9  # 16-bit values, not 8-bit steps


def test_pairs_train_a_unet_on_noisy_clean_pairs_validated_against_clean_versions(own_shots, tmp_path):
    """--target_dir clean --clean_targets trains noisy -> clean (the --model unet here), on the photos as they are
    (no default noise), validated by PSNR against --val_clean_dir; the run says what it trains on."""
    output = tmp_path / "run"
    result = run_main("train", "--image_dir", own_shots / "first", "--target_dir", own_shots / "clean",
                      "--clean_targets", "--test_dir", own_shots / "first", "--val_clean_dir", own_shots / "clean",
                      "--model", "unet", *TINY, "--output_path", output)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "training on 4 noisy/clean pairs from" in result.stdout and "validating on 4 images" in result.stdout
    history = load_history(output)
    assert len(history["val_PSNR"]) == 2 and np.all(np.isfinite(history["loss"]))
    assert list(output.glob("weights.00*.weights.h5"))


def test_bursts_train_and_validate_on_held_out_noisy_pairs(own_shots, tmp_path, recwarn):
    """--bursts, validated by the error of predicting second shots (--val_target_dir): said once, and the
    checkpoint of the lowest val_loss is kept. A folder of one shot is left out with a warning."""
    (own_shots / "bursts_and_one" / "single").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(own_shots / "bursts_and_one" / "single" / "only.png"), np.zeros((80, 80, 3), np.uint8))
    for scene in (own_shots / "bursts").iterdir():
        target = own_shots / "bursts_and_one" / scene.name
        target.mkdir(exist_ok=True)
        for shot in scene.iterdir():
            (target / shot.name).write_bytes(shot.read_bytes())
    output = tmp_path / "run"
    result = run_main("train", "--image_dir", own_shots / "bursts_and_one", "--bursts", "--test_dir",
                      own_shots / "first", "--val_target_dir", own_shots / "second", *TINY, "--lr", 1e-4,
                      "--weight", "gaussian", "--output_path", output)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "training on 4 bursts from" in result.stdout
    assert result.stdout.count("validating on held-out noisy pairs (--val_target_dir)") == 1
    warned = [str(warning.message) for warning in recwarn]
    assert any(re.search(r"skipping \S*single: a burst needs two or more shots", text) for text in warned), warned
    history = load_history(output)
    assert "val_PSNR" not in history and len(history["val_loss"]) == 2
    best = 1 + int(np.argmin(history["val_loss"]))
    assert f"best checkpoint: {output}/weights.{best:03d}-" in result.stdout


def mismatched(own_shots, tmp_path, case):
    """(folder of sources, folder of targets) for one kind of mismatch."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    for k in range(3):
        image = cv2.imread(str(own_shots / "first" / f"s{k}.png"))
        cv2.imwrite(str(first / f"s{k}.png"), image)
        if case == "missing" and k:
            continue
        if case == "size" and k == 1:
            image = image[:-2]
        if case == "channels" and k == 2:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        cv2.imwrite(str(second / f"s{k}.jpg"), image)
    return first, second


@pytest.mark.parametrize("case, needles", [
    ("missing", ["--target_dir", "2 of the 3 images have no file of the same name", "s1.png", "s1.*"]),
    ("size", ["--target_dir", "s1.jpg is 80x78", "must be the same size"]),
    ("channels", ["--target_dir", "s2.jpg has 1 colour channel", "must match"]),
])
def test_a_mismatched_pair_is_one_line_and_writes_nothing(own_shots, tmp_path, case, needles):
    first, second = mismatched(own_shots, tmp_path, case)
    output = tmp_path / "out"
    result = run_main("train", "--image_dir", first, "--target_dir", second, *TINY, "--output_path", output)
    assert_one_line_error(result, *needles)
    assert not output.exists()


@pytest.mark.parametrize("flags, needles", [
    (["--target_dir", "FIRST"], ["--target_dir", "the same folder as --image_dir"]),
    (["--target_dir", "SECOND", "--bursts"], ["--bursts", "not with --target_dir"]),
    (["--target_dir", "SECOND", "--method", "neighbor2neighbor"], ["--target_dir", "not with --method"]),
    (["--bursts", "--method", "neighbor2neighbor"], ["--bursts", "not with --method"]),
    (["--clean_targets"], ["--clean_targets", "pass --target_dir"]),
    (["--target_dir", "SECOND", "--val_target_dir", "SECOND"], ["--val_target_dir", "needs --test_dir"]),
])
def test_flags_that_cannot_go_together_are_one_line_before_anything_loads(own_shots, tmp_path, flags, needles):
    places = {"FIRST": own_shots / "first", "SECOND": own_shots / "second"}
    output = tmp_path / "out"
    result = run_main("train", "--image_dir", own_shots / "first", *[places.get(flag, flag) for flag in flags],
                      *TINY, "--output_path", output)
    assert_one_line_error(result, *needles)
    assert not output.exists()
