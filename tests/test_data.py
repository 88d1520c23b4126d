"""Image listing and reading, the training patch generator and the validation set."""
import gc
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import cli

cli.import_keras_quietly()
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import generator  # noqa: E402
import images  # noqa: E402
import neighbor2neighbor  # noqa: E402
from conftest import REPO, synthetic_photo  # noqa: E402
from noise_model import get_noise_model  # noqa: E402


def test_list_images_is_recursive_and_case_insensitive(image_folder):
    names = sorted(p.relative_to(image_folder).as_posix() for p in images.list_images(image_folder))
    assert names == ["a.png", "b.PNG", "e.bmp", "f.tif", "gray.png", "sub/c.jpg", "sub/d.JPEG"]


def test_read_image_gives_three_channels_for_gray_rgba_and_16_bit(tmp_path):
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (20, 1))
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    rgba = np.dstack([np.full((20, 25, 3), 90, np.uint8), np.full((20, 25), 10, np.uint8)])
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((20, 25, 3), 40000, np.uint16))
    read_gray = images.read_image(tmp_path / "gray.png")
    assert read_gray.shape == (20, 25, 3) and read_gray.dtype == np.uint8
    np.testing.assert_array_equal(read_gray[..., 0], gray)
    np.testing.assert_array_equal(images.read_image(tmp_path / "rgba.png"), rgba[..., :3])
    np.testing.assert_array_equal(images.read_image(tmp_path / "deep.png"), 40000 // 256)  # scaled, not truncated


def test_read_image_expands_palettes_and_applies_the_exif_orientation(tmp_path):
    from PIL import Image  # Pillow (a matplotlib dependency) writes palette PNGs and EXIF tags; OpenCV does not

    photo = synthetic_photo(np.random.default_rng(2), 30, 40)  # BGR
    palette = Image.fromarray(photo[..., ::-1]).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(tmp_path / "palette.png")
    expected = np.asarray(palette.convert("RGB"))[..., ::-1]
    np.testing.assert_array_equal(images.read_image(tmp_path / "palette.png"), expected)
    upright = Image.fromarray(photo[..., ::-1])
    exif = upright.getexif()
    exif[0x0112] = 6  # orientation: the camera was turned, show the pixels rotated 90 degrees clockwise
    upright.save(tmp_path / "turned.jpg", exif=exif, quality=98, subsampling=0)
    turned = images.read_image(tmp_path / "turned.jpg").astype(int)
    assert turned.shape == (40, 30, 3)
    clockwise, anticlockwise = (np.abs(turned - np.rot90(photo, k=k)).mean() for k in (-1, 1))
    assert clockwise < 2 < 10 < anticlockwise, (clockwise, anticlockwise)  # JPEG rounding only


def test_truncated_and_empty_files_are_unreadable(tmp_path):
    photo = synthetic_photo(np.random.default_rng(4), 60, 80)
    for suffix in (".png", ".jpg"):
        cv2.imwrite(str(tmp_path / f"whole{suffix}"), photo)
        data = (tmp_path / f"whole{suffix}").read_bytes()
        (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2])
        assert images.read_image(tmp_path / f"whole{suffix}").shape == photo.shape
        assert images.read_image(tmp_path / f"cut{suffix}") is None, suffix
    (tmp_path / "empty.png").write_bytes(b"")
    assert images.read_image(tmp_path / "empty.png") is None
    assert images.read_image(tmp_path) is None  # a folder named like an image


def test_unreadable_and_small_images_are_skipped_with_a_warning(tmp_path, image_folder):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((10, 10, 3), np.uint8))
    paths = [tmp_path / "broken.png", tmp_path / "small.png", image_folder / "a.png"]
    with pytest.warns(UserWarning) as caught:
        images = generator.load_images(paths, min_size=32)
    assert len(images) == 1 and len(caught) == 2
    assert "broken.png" in str(caught[0].message) and "small.png" in str(caught[1].message)
    with pytest.raises(generator.NoImagesError, match=r"among 2 files \(1 unreadable, 1 smaller\): .*broken.png: "
                                                     r"not a readable image; .*small.png: 10x10 is smaller"):
        generator.load_images(paths[:2], min_size=32)
    with pytest.raises(generator.NoImagesError, match=r"among 1 file \(1 unreadable, 0 smaller\)"):
        generator.load_images(paths[:1], min_size=32)


def test_images_decoded_in_threads_come_in_the_order_of_their_paths(tmp_path):
    """Several threads decode, a few images ahead: every image (or None) still comes with its own path, in order."""
    rng = np.random.default_rng(0)
    paths = []
    for index in range(11):  # more than 2 x threads, so the look-ahead window moves
        paths.append(tmp_path / f"{index:02d}.png")
        cv2.imwrite(str(paths[-1]), rng.integers(0, 256, (8 + index, 20, 3), np.uint8))
    paths.insert(4, tmp_path / "missing.png")
    decoded = list(generator.decoded_images(paths, threads=3))
    assert [path for path, _ in decoded] == paths
    for path, image in decoded:
        expected = images.read_image(path)
        assert image is None if expected is None else np.array_equal(image, expected), path


def test_a_capped_cache_reads_the_rest_from_disk_and_gives_the_same_patches(image_folder):
    paths = images.list_images(image_folder)
    everything = generator.load_images(paths, min_size=32)
    cap = everything[0].nbytes + everything[1].nbytes
    capped = generator.load_images(paths, min_size=32, cache_bytes=cap)
    in_memory = [image for image in capped if isinstance(image, np.ndarray)]
    assert len(in_memory) == 2 and sum(image.nbytes for image in in_memory) <= cap
    assert all(isinstance(image, generator.ImageOnDisk) for image in capped[2:]) and len(capped) == len(everything)
    assert [image.shape for image in capped] == [image.shape for image in everything]
    noise = get_noise_model("gaussian,0,50")
    batches = [generator.NoisyImageGenerator(loaded, noise, noise, batch_size=8, image_size=32, steps=2, seed=5)
               for loaded in (everything, capped)]
    for index in range(2):
        for expected, got in zip(batches[0][index], batches[1][index]):
            np.testing.assert_array_equal(got, expected)


@pytest.fixture(scope="module")
def photos(image_folder):
    return generator.load_images(images.list_images(image_folder))


def test_patch_batches_have_the_right_shape_type_and_length(photos):
    images = photos
    data = generator.NoisyImageGenerator(images, get_noise_model("gaussian,0,50"), get_noise_model("clean"),
                                         batch_size=5, image_size=24, steps=7, seed=0)
    sources, targets = data[0]
    assert len(data) == 7
    assert sources.shape == targets.shape == (5, 24, 24, 3)
    assert sources.dtype == targets.dtype == np.float32
    assert 0 <= sources.min() and sources.max() <= 255
    assert not np.array_equal(sources, targets)  # noise on the source only


def test_every_patch_position_can_be_drawn_including_the_last():
    """An image one pixel larger than the patch has two positions per axis, both drawn (the original's
    randint(0, h - size + 1)); one exactly the patch's size has one."""
    rng = np.random.default_rng(0)
    image = np.arange(17 * 17 * 3, dtype=np.int32).reshape(17, 17, 3)
    corners = {tuple(generator.random_patches([(image,)], 16, rng)[0][0, 0, :1]) for _ in range(200)}
    assert corners == {(image[top, left, 0],) for top in (0, 1) for left in (0, 1)}
    exact = image[:16, :16]
    np.testing.assert_array_equal(generator.random_patches([(exact,)], 16, rng)[0], exact)


def test_clean_targets_are_real_crops_of_the_images():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40 + k, 50, 3), dtype=np.uint8) for k in range(3)]
    data = generator.NoisyImageGenerator(images, get_noise_model("clean"), get_noise_model("clean"),
                                         batch_size=4, image_size=16, steps=1, seed=5)
    sources, targets = data[0]
    np.testing.assert_array_equal(sources, targets)
    for patch in targets.astype(np.uint8):
        windows = [np.lib.stride_tricks.sliding_window_view(image, patch.shape) for image in images]
        assert any((w == patch).all(axis=(-3, -2, -1)).any() for w in windows)


def test_source_and_target_noise_are_independent():
    flat = [np.full((64, 64, 3), 128, np.uint8)]  # a flat image: the noise is what differs from 128
    noise = get_noise_model("gaussian,25,25")
    sources, targets = generator.NoisyImageGenerator(flat, noise, noise, batch_size=8, image_size=32,
                                                     steps=1, seed=0)[0]
    source_noise, target_noise = (sources - 128).ravel(), (targets - 128).ravel()
    assert abs(np.corrcoef(source_noise, target_noise)[0, 1]) < 0.02
    assert 24 < source_noise.std() < 26 and 24 < target_noise.std() < 26


def test_the_target_noise_model_changes_nothing_but_the_targets(photos):
    """Same seed: clean, clipped and zero-mean target runs get the same patches and source noise, and the
    zero-mean targets are the clipped ones before clipping (an equal-budget comparison of targets alone)."""
    def batch(target, zero_mean=False):
        return generator.NoisyImageGenerator(photos, get_noise_model("gaussian,0,50"),
                                             get_noise_model(target, zero_mean=zero_mean),
                                             batch_size=4, image_size=24, steps=1, seed=3)[0]

    clean_sources, clean_targets = batch("clean")
    noisy_sources, noisy_targets = batch("gaussian,0,50")
    zero_mean_sources, zero_mean_targets = batch("gaussian,0,50", zero_mean=True)
    np.testing.assert_array_equal(clean_sources, noisy_sources)
    np.testing.assert_array_equal(clean_sources, zero_mean_sources)
    assert zero_mean_targets.min() < 0 or zero_mean_targets.max() > 255  # really unclipped
    np.testing.assert_array_equal(np.clip(zero_mean_targets, 0, 255).astype(np.uint8), noisy_targets)
    assert np.abs(noisy_targets - clean_targets).mean() > 5


def test_batches_are_reproducible_and_change_every_epoch(photos):
    images = photos
    def make():
        return generator.NoisyImageGenerator(images, get_noise_model("impulse,0,50"), get_noise_model("text,0,30"),
                                             batch_size=3, image_size=24, steps=2, seed=11)

    first, second = make(), make()
    for a, b in zip(first[1], second[1]):
        np.testing.assert_array_equal(a, b)
    before = first[1][0]
    first.on_epoch_end()
    assert not np.array_equal(before, first[1][0])


def test_batches_made_in_processes_are_the_batches_made_in_threads(image_folder):
    """--use_multiprocessing: the same batches, epoch after epoch, also from images read from disk per patch and
    with OpenCV's text noise, while more threads ask for batches than the processes have buffers."""
    paths = images.list_images(image_folder)
    loaded = generator.load_images(paths, min_size=32, cache_bytes=generator.load_images(paths)[0].nbytes)
    assert any(isinstance(image, generator.ImageOnDisk) for image in loaded)
    def make(processes=0):
        return generator.NoisyImageGenerator(loaded, get_noise_model("text,0,30"),
                                             get_noise_model("gaussian,0,50", zero_mean=True),
                                             batch_size=4, image_size=32, steps=6, seed=7, processes=processes)

    in_threads, in_processes = make(), make(processes=2)
    try:
        for _ in range(2):
            with ThreadPoolExecutor(6) as asking:  # 6 at once, 4 buffers
                made = list(asking.map(in_processes.__getitem__, range(6)))
            for index, (sources, targets) in enumerate(made):
                expected_sources, expected_targets = in_threads[index]
                np.testing.assert_array_equal(sources, expected_sources)
                np.testing.assert_array_equal(targets, expected_targets)
            in_threads.on_epoch_end()
            in_processes.on_epoch_end()
    finally:
        in_processes.close()


def test_batches_come_from_the_forked_processes_which_close_ends(photos):
    def pid_noise(patch, rng):  # a closure: the processes are forked, nothing is pickled
        return np.full(patch.shape, os.getpid(), np.float32)

    data = generator.NoisyImageGenerator(photos, pid_noise, get_noise_model("clean"), batch_size=2, image_size=24,
                                         steps=4, seed=0, processes=2)
    processes = data.processes.processes
    makers = {int(data[index][0][0, 0, 0, 0]) for index in range(4)}
    assert makers and makers <= {process.pid for process in processes} and os.getpid() not in makers
    data.close()
    assert not any(process.is_alive() for process in processes)


FORK_AFTER_BUSY_OPENCV = """
import time, cv2, numpy as np
import generator
from noise_model import get_noise_model
photo = np.random.default_rng(0).integers(0, 256, (1500, 1500, 3), dtype=np.uint8)
for _ in range(3):
    cv2.GaussianBlur(photo, (0, 0), 3)  # OpenCV's pool threads now exist, idle on their condition variable
time.sleep(0.3)
threads = cv2.getNumThreads()
data = generator.NoisyImageGenerator([photo], get_noise_model("gaussian,25,25"), get_noise_model("clean"),
                                     batch_size=2, image_size=32, steps=2, seed=0, processes=2)
print(data[0][0].shape, data[1][0].shape, cv2.getNumThreads() == threads, flush=True)
data.close()
"""


def test_batch_processes_start_after_opencv_has_used_its_threads():
    """A training process whose OpenCV thread pool has run (reading and noising photos does) forks its batch
    processes, and they make batches: none waits forever on the pool threads it did not inherit (a child
    that resized OpenCV's pool itself did), and this process keeps its OpenCV threads. In a new interpreter, so a
    deadlock fails here instead of hanging."""
    result = subprocess.run([sys.executable, "-c", FORK_AFTER_BUSY_OPENCV], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(2, 32, 32, 3) (2, 32, 32, 3) True" in result.stdout, result.stdout


class Finalized:
    """Garbage in a reference cycle whose finalizer writes the pid of the process that ran it to `marker`."""

    def __init__(self, marker):
        self.marker, self.cycle = marker, self

    def __del__(self):
        with open(self.marker, "a") as marker:
            marker.write(f"{os.getpid()}\n")


def test_garbage_the_batch_processes_inherit_is_never_finalized_in_them(photos, tmp_path):
    """Garbage of the training process (a backend's arrays, whose finalizers take locks that its threads may have
    held at the fork) is collected before forking, and the children's collector skips all they inherit."""
    marker = tmp_path / "finalized_in"

    def collecting_noise(patch, rng):  # makes each process run its cyclic garbage collector
        gc.collect()
        return patch

    gc.disable()  # the cycle stays uncollected until the fork (as the parent's garbage can)
    try:
        Finalized(marker)
        data = generator.NoisyImageGenerator(photos, collecting_noise, get_noise_model("clean"), batch_size=2,
                                             image_size=24, steps=4, seed=0, processes=2)
    finally:
        gc.enable()
    try:
        for index in range(4):
            data[index]
    finally:
        data.close()
    assert marker.read_text().split() == [str(os.getpid())]


def test_a_failure_in_a_batch_process_is_raised_where_the_batch_was_asked_for(tmp_path):
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), synthetic_photo(np.random.default_rng(0), 48, 48))
    noise = get_noise_model("gaussian,0,50")
    data = generator.NoisyImageGenerator([generator.ImageOnDisk(path, (48, 48, 3), 3)], noise, noise, batch_size=2,
                                         image_size=32, steps=3, seed=0, processes=1)
    asking = ThreadPoolExecutor(1)  # with a timeout: a buffer not given back would make the next batch wait forever
    try:
        assert asking.submit(data.__getitem__, 0).result(timeout=60)[0].shape == (2, 32, 32, 3)
        path.unlink()
        with pytest.raises(OSError, match="photo.png could not be read again"):  # the process's own exception
            asking.submit(data.__getitem__, 1).result(timeout=60)
        data.processes.processes[0].kill()
        with pytest.raises(RuntimeError, match=r"batch-making process \d+ ended \(exit code -9\)"):
            asking.submit(data.__getitem__, 2).result(timeout=60)
    finally:
        asking.shutdown()
        data.close()


def test_a_single_image_fills_a_larger_batch(photos):
    data = generator.NoisyImageGenerator(photos[:1], get_noise_model("clean"), get_noise_model("gaussian,5,5"),
                                         batch_size=8, image_size=24, steps=1, seed=0)
    sources, targets = data[0]
    assert sources.shape == (8, 24, 24, 3)
    assert len({patch.tobytes() for patch in sources}) > 1  # different crops of the one image


def test_images_smaller_than_the_patch_are_left_out(photos):
    images = photos
    data = generator.NoisyImageGenerator(images, get_noise_model("clean"), get_noise_model("clean"),
                                         batch_size=2, image_size=50, steps=1, seed=0)
    assert all(min(group[0].shape[:2]) >= 50 for group in data.groups) and data.groups
    with pytest.raises(generator.NoImagesError, match="1000x1000"):
        generator.NoisyImageGenerator(images, None, None, image_size=1000)


def test_validation_set_is_cropped_to_16_and_noised_once(photos):
    images = photos
    noise = get_noise_model("gaussian,25,25")
    val = generator.load_validation_data(images, noise, seed=0)
    assert len(val) == len(images)
    for (noisy, clean), image in zip(val, images):
        height, width = image.shape[:2]
        assert noisy.shape == clean.shape == (1, height // 16 * 16, width // 16 * 16, 3)
        np.testing.assert_array_equal(clean[0], image[: height // 16 * 16, : width // 16 * 16])
    assert all(not np.array_equal(noisy, clean) for noisy, clean in val)  # noise was applied
    again = generator.load_validation_data(images, noise, seed=0)
    np.testing.assert_array_equal(val[2][0], again[2][0])
    assert not np.array_equal(val[2][0], generator.load_validation_data(images, noise, seed=1)[2][0])


def test_bundled_photos_ship_with_scikit_image():
    train = generator.bundled_photo_paths(generator.BUNDLED_TRAIN_PHOTOS)
    val = generator.bundled_photo_paths(generator.BUNDLED_VAL_PHOTOS)
    assert len(train) >= 8 and len(val) == 2 and not set(train) & set(val)
    assert all(min(image.shape[:2]) >= 256 for image in generator.load_images(train + val))


def position_image(batch, height, width, channels=3):
    """(batch, H, W, C) float32 whose value encodes where it is: 1000 * (y * W + x) + 10 * item + channel."""
    item, y, x, channel = np.meshgrid(np.arange(batch), np.arange(height), np.arange(width), np.arange(channels),
                                      indexing="ij")
    return (1000 * (y * width + x) + 10 * item + channel).astype(np.float64)


def test_neighbor_pairs_are_adjacent_one_per_cell_and_the_same_in_every_channel():
    """g1 and g2 take one pixel of every 2x2 cell each, horizontal or vertical neighbours (never diagonal, never
    the same pixel), at the same position in every channel; all 8 ordered pairs occur."""
    batch, height, width = 3, 16, 12
    images = position_image(batch, height, width)
    pairs = neighbor2neighbor.draw_pairs(np.random.default_rng(0), batch, height // 2, width // 2)
    assert pairs.shape == (batch, height // 2, width // 2, 8)
    np.testing.assert_array_equal(pairs[..., :4].sum(-1), 1)
    np.testing.assert_array_equal(pairs[..., 4:].sum(-1), 1)
    first, second = neighbor2neighbor.sub_images(images, pairs)
    assert first.shape == second.shape == (batch, height // 2, width // 2, 3)
    for sub_image in (first, second):
        np.testing.assert_array_equal(sub_image - sub_image[..., :1],
                                      np.broadcast_to(np.arange(3), sub_image.shape))  # one position, all channels
        np.testing.assert_array_equal(sub_image[..., 0] % 1000 // 10,
                                      np.broadcast_to(np.arange(batch)[:, None, None], sub_image.shape[:3]))
    positions = [np.divmod(sub_image[..., 0] // 1000, width) for sub_image in (first, second)]  # (y, x) each
    (y1, x1), (y2, x2) = positions
    rows, columns = np.meshgrid(np.arange(height // 2), np.arange(width // 2), indexing="ij")
    for y, x in positions:  # inside its own cell
        np.testing.assert_array_equal(y // 2, np.broadcast_to(rows, y.shape))
        np.testing.assert_array_equal(x // 2, np.broadcast_to(columns, x.shape))
    distance = np.abs(y1 - y2) + np.abs(x1 - x2)
    np.testing.assert_array_equal(distance, 1)  # adjacent: no diagonal (2) and no shared pixel (0)
    drawn = {(int(a), int(b)) for a, b in zip((y1 % 2 * 2 + x1 % 2).ravel(), (y2 % 2 * 2 + x2 % 2).ravel())}
    assert drawn == {tuple(pair) for pair in neighbor2neighbor.PAIRS.tolist()} and len(drawn) == 8


def test_neighbor2neighbor_batches_change_every_step_and_repeat_with_the_seed(photos):
    """--method neighbor2neighbor batches: ((noisy, pairs), g2 of the noisy patches); the draw of pairs differs
    between steps and epochs, and the same --seed gives the same batches, threads or processes."""
    def batches(seed, processes=0):
        data = generator.NoisyImageGenerator(photos, get_noise_model("gaussian,25,25"), get_noise_model("clean"),
                                             batch_size=2, image_size=32, steps=3, seed=seed, processes=processes,
                                             neighbor2neighbor=True)
        made = [data[0], data[1]]
        data.on_epoch_end()
        made.append(data[0])
        data.close()
        return made

    first = batches(seed=5)
    (noisy, pairs), target = first[0]
    assert noisy.shape == (2, 32, 32, 3) and pairs.shape == (2, 16, 16, 8) and target.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(target, neighbor2neighbor.sub_images(noisy, pairs)[1])
    assert not np.array_equal(first[0][0][1], first[1][0][1])  # another step
    assert not np.array_equal(first[0][0][1], first[2][0][1])  # another epoch, same index
    for again in (batches(seed=5), batches(seed=5, processes=2)):
        for (inputs, target), (inputs_again, target_again) in zip(first, again):
            for a, b in zip((*inputs, target), (*inputs_again, target_again)):
                np.testing.assert_array_equal(a, b)
    assert not np.array_equal(batches(seed=6)[0][0][1], first[0][0][1])


def test_pixel_shuffled_patches_are_every_stride_th_pixel_of_a_larger_crop():
    """--pixel_shuffle 3: each 8x8 training patch holds every 3rd pixel of a 24x24 crop, from an offset drawn per
    patch; sources and targets alike (targets clean: the same pixels); the same seed gives the same batches."""
    image = (np.arange(60 * 50)[:, None] * [1, 1, 1]).reshape(60, 50, 3)  # pixel value: its index y * 50 + x
    image = image.astype(np.float32)
    clean = get_noise_model("clean")
    data = generator.NoisyImageGenerator([image], clean, clean, batch_size=6, image_size=8, steps=2, seed=1,
                                         pixel_shuffle=3)
    sources, targets = data[0]
    assert sources.shape == (6, 8, 8, 3)
    np.testing.assert_array_equal(sources, targets)
    rows, columns = np.divmod(sources[..., 0], 50)
    np.testing.assert_array_equal(np.diff(rows, axis=1), 3)
    np.testing.assert_array_equal(np.diff(columns, axis=2), 3)
    assert len({(int(r % 3), int(c % 3)) for r, c in zip(rows[:, 0, 0], columns[:, 0, 0])}) > 1  # offsets vary
    again = generator.NoisyImageGenerator([image], clean, clean, batch_size=6, image_size=8, steps=2, seed=1,
                                          pixel_shuffle=3)
    np.testing.assert_array_equal(again[0][0], sources)
