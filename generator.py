"""Training and validation data: random noisy patch pairs and a fixed noisy validation set.

Images are uint8 BGR arrays (OpenCV order), HxWx3, values 0-255. Batches
handed to Keras are float32 in the same 0-255 range, shaped
(batch, height, width, 3).
"""
import collections
import gc
import math
import mmap
import multiprocessing
import os
import queue
import signal
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import keras
import numpy as np

import neighbor2neighbor
import pixel_shuffle
from images import SIZE_MULTIPLE, crop_to_multiple, read_image, read_image_file, to_channels
from noise_model import noise_at_full_depth


# Natural photos that scikit-image ships inside its package, used when no
# --image_dir/--test_dir is given (grayscale ones are read as 3 channels).
BUNDLED_TRAIN_PHOTOS = ("astronaut.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg",
                        "retina.jpg", "ihc.png", "brick.png", "grass.png", "gravel.png", "coins.png", "moon.png")
BUNDLED_VAL_PHOTOS = ("chelsea.png", "camera.png")


class NoImagesError(ValueError):
    """No usable image was found where images were expected."""


def bundled_photo_paths(names):
    """Paths of photos that scikit-image ships (no download needed)."""
    try:
        import skimage
    except ImportError:
        raise NoImagesError("scikit-image is not installed, so there are no bundled photos; "
                            "pass --image_dir and --test_dir") from None
    folder = Path(skimage.__file__).parent / "data"
    return [folder / name for name in names if (folder / name).is_file()]


class ImageOnDisk:
    """A training image past the cache cap: its shape is known, and its pixels are decoded again from the file
    for every patch taken from it (as the original did for every image), so memory stays bounded.

    Indexing returns the pixels of the decoded image (HxWxC, `dtype`: uint8, or uint16 for a shot of a 16-bit
    pair), like the arrays it stands in for.
    """

    def __init__(self, path, shape, channels, dtype=np.uint8):
        self.path, self.shape, self.channels, self.dtype = path, shape, channels, np.dtype(dtype)

    def __getitem__(self, key):
        if self.dtype == np.uint8:
            image = read_image(self.path)
        else:
            image_file = read_image_file(self.path)
            image = None if image_file is None else image_file.pixels
            image = image if image is None or image.dtype == np.uint16 else image.astype(np.uint16) * 257
        if image is None:
            raise OSError(f"{self.path} could not be read again during training")
        return to_channels(image, self.channels)[key]


def decoded_images(paths, threads=None):
    """(path, HxWx3 uint8 BGR image, or None where unreadable) for each of `paths`, in their order, decoded by
    `threads` threads (default: one per core, at most 8; OpenCV releases the GIL while it decodes, so the 291
    training photos load in about half the time on 2 cores) at most 2 x threads images ahead of the caller, so
    that memory stays bounded where the caller drops images (--cache_mb)."""
    threads = threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(threads) as pool:
        ahead = collections.deque()  # (path, future of its image), oldest first
        for path in paths:
            ahead.append((path, pool.submit(read_image, path)))
            if len(ahead) > 2 * threads:
                oldest, decoding = ahead.popleft()
                yield oldest, decoding.result()
        for oldest, decoding in ahead:
            yield oldest, decoding.result()


def no_images_message(count, skipped, min_size):
    """Why none of `count` files is usable, naming the first three (`skipped`: load_images' 'skipping ...')."""
    unreadable = sum("not a readable" in reason for reason in skipped)
    reasons = "; ".join(reason.removeprefix("skipping ") for reason in skipped[:3])
    more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    return (f"no image of at least {min_size}x{min_size} pixels among {count} file{'s' if count != 1 else ''} "
            f"({unreadable} unreadable, {len(skipped) - unreadable} smaller): {reasons}{more}")


def load_images(paths, min_size=1, what="image", channels=3, cache_bytes=None):
    """Decode `paths` once into HxWxC uint8 arrays (C = `channels`: 3 BGR, or 1 gray), skipping unreadable and
    too small files with a warning each (NoImagesError where none is left). With `cache_bytes`, the images past
    that many bytes become ImageOnDisk (read again per patch)."""
    images, skipped, cached = [], [], 0
    for path, image in decoded_images(paths):
        if image is None:
            skipped.append(f"skipping {path}: not a readable image")
        elif min(image.shape[:2]) < min_size:
            skipped.append(f"skipping {path}: {image.shape[1]}x{image.shape[0]} is smaller than the "
                           f"{min_size}x{min_size} {what}")
        else:
            image = to_channels(image, channels)
            if cache_bytes is not None and cached + image.nbytes > cache_bytes:
                image = ImageOnDisk(path, image.shape, channels)
            else:
                cached += image.nbytes
            images.append(image)
    if not images:
        raise NoImagesError(no_images_message(len(paths), skipped, min_size))
    for reason in skipped:
        warnings.warn(reason, stacklevel=2)
    return images


def two_shots(rng, count, symmetric=True):
    """(source, target) indices into a group of `count` images: (0, 0) for one image (its noise is drawn twice);
    for more, any ordered pair of two different shots, each equally likely (symmetric), or (0, 1): a noisy image
    and its clean version, in that order."""
    if count == 1:
        return 0, 0
    if not symmetric:
        return 0, 1
    first = int(rng.integers(count))
    return first, (first + 1 + int(rng.integers(count - 1))) % count


def random_patches(groups, image_size, rng, symmetric=True):
    """(source crop, target crop): the same random image_size x image_size window of two shots (two_shots) of a
    random group (a tuple of images of one size: one photo, a pair or a burst); views, or copies from an
    ImageOnDisk, uint8 or uint16."""
    group = groups[rng.integers(len(groups))]
    source, target = two_shots(rng, len(group), symmetric)
    height, width = group[0].shape[:2]
    top = rng.integers(height - image_size + 1)
    left = rng.integers(width - image_size + 1)
    window = (slice(top, top + image_size), slice(left, left + image_size))
    return group[source][window], group[target][window]


def noisy(noise_model, patch, rng):
    """`noise_model` on a patch, float32 0-255: uint16 (a 16-bit shot) at its depth (the noise drawn on its 8-bit
    rounding, the difference added: noise_model.noise_at_full_depth); uint8 and the rest as the noise takes it."""
    if patch.dtype == np.uint16:
        return noise_at_full_depth(noise_model, patch.astype(np.float32) / 257, rng)
    return noise_model(patch, rng)


def make_batch(groups, source_noise_model, target_noise_model, batch_size, image_size, seed, epoch, index,
               out=None, symmetric=True):
    """Batch `index` of epoch `epoch`: (sources, targets), float32 0-255 (batch_size, image_size, image_size, C),
    a function of its arguments alone (written into `out` where given); `groups` and `symmetric` as
    random_patches'. Patches, source noise and target noise come from three streams, so runs that differ only by
    their targets see the very same inputs."""
    patch_rng, source_rng, target_rng = (np.random.default_rng(stream) for stream in
                                         np.random.SeedSequence([seed, epoch, index]).spawn(3))
    shape = (batch_size, image_size, image_size, groups[0][0].shape[2])
    sources, targets = out if out is not None else (np.empty(shape, np.float32), np.empty(shape, np.float32))
    for k in range(batch_size):
        source, target = random_patches(groups, image_size, patch_rng, symmetric)
        sources[k] = noisy(source_noise_model, source, source_rng)
        targets[k] = noisy(target_noise_model, target, target_rng)
    return sources, targets


# Seeds (seed, epoch, index, STREAM) of the draws made after a batch's patches and noise (make_batch's streams).
NEIGHBOR_STREAM, SHUFFLE_STREAM = 1, 2


def shared_batch_buffers(count, shape):
    """`count` (sources, targets) pairs of float32 arrays of `shape`, as one array (2, count, *shape) in an
    anonymous shared mapping: a process forked after this writes a batch into it and the parent reads it,
    with no pickling."""
    memory = mmap.mmap(-1, 2 * count * math.prod(shape) * np.dtype(np.float32).itemsize)
    return np.frombuffer(memory, np.float32).reshape(2, count, *shape)


def _serve_batches(connection, slot, batch_args, buffers):
    """A forked batch-making process: for each (seed, epoch, index) received, make that batch into buffer
    `slot` and answer None (or the exception); None received, or the parent gone, ends it. Ctrl-C is the
    parent's to handle. OpenCV runs single-threaded here (set by the parent before the fork): the processes are
    the parallelism."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            request = connection.recv()
        except EOFError:
            return
        if request is None:
            return
        try:
            make_batch(**batch_args, seed=request[0], epoch=request[1], index=request[2],
                       out=(buffers[0, slot], buffers[1, slot]))
            connection.send(None)
        except Exception as error:  # noqa: BLE001 (any failure is the parent's to raise)
            try:
                connection.send(error)
            except Exception:  # noqa: BLE001 (an exception that cannot be pickled)
                connection.send(RuntimeError(f"{type(error).__name__}: {error}"))


class BatchProcesses:
    """`count` forked processes, each making batches into its own shared buffer when asked through its pipe: a
    few bytes each way per batch, no pickled arrays, so the parent's GIL stays with the training loop. They
    inherit `batch_args` and run NumPy and OpenCV only, so the warnings about forking threads do not apply."""

    def __init__(self, count, batch_args, shape):
        if "fork" not in multiprocessing.get_all_start_methods():
            raise ValueError("batch-making processes need os.fork (Linux); use threads on this system")
        self.buffers = shared_batch_buffers(count, shape)
        context = multiprocessing.get_context("fork")
        self.idle = queue.SimpleQueue()  # (slot, connection) of the processes not making a batch
        self.processes, self.connections = [], []
        # The parent's garbage (a backend's arrays among it, whose finalizers take locks that its threads may hold
        # at the fork) is freed here, and gc.freeze() keeps the children's collector off all they inherit, so no
        # child ever finalizes it (nor writes to the pages it shares with the parent, as a collection would).
        gc.collect()
        gc.freeze()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
            warnings.filterwarnings("ignore", r".*multi-threaded, use of fork\(\)", DeprecationWarning)
            # OpenCV's thread pool is shrunk to one thread around the fork, in this process: a child that did it
            # itself would wait forever on the condition variable of the parent's idle pool threads, which it lacks.
            opencv_threads = cv2.getNumThreads()
            cv2.setNumThreads(1)
            try:
                self._fork(context, count, batch_args)
            finally:
                cv2.setNumThreads(opencv_threads)
                gc.unfreeze()  # in this process only: the children keep theirs frozen

    def _fork(self, context, count, batch_args):
        """Start the `count` processes, each with its own pipe and its slot of the buffers."""
        for slot in range(count):
            connection, child_end = context.Pipe()
            process = context.Process(target=_serve_batches, args=(child_end, slot, batch_args, self.buffers),
                                      name=f"batch-maker-{slot}", daemon=True)
            process.start()
            child_end.close()
            self.processes.append(process)
            self.connections.append(connection)
            self.idle.put((slot, connection))

    def make(self, seed, epoch, index):
        """Batch (seed, epoch, index) as make_batch makes it, by the next idle process (waits for one)."""
        slot, connection = self.idle.get()
        try:
            error = self._ask(slot, connection, (seed, epoch, index))
            if error is not None:
                raise error  # the process's own exception (an image file gone, say)
            sources, targets = self.buffers[:, slot].copy()  # one allocation: a third of the time of two here
            return sources, targets
        finally:
            self.idle.put((slot, connection))  # only now may the process overwrite its buffer

    def _ask(self, slot, connection, request):
        """Send `request` to process `slot` and return its answer; a process that died is a RuntimeError."""
        try:
            connection.send(request)
            return connection.recv()
        except (EOFError, OSError):
            process = self.processes[slot]
            process.join(timeout=1)
            raise RuntimeError(f"batch-making process {process.pid} ended (exit code {process.exitcode})") from None

    def close(self):
        """Ask every process to end, and wait for it (a second at most each)."""
        for connection, process in zip(self.connections, self.processes):
            try:
                connection.send(None)
            except OSError:
                pass
            process.join(timeout=1)
            if process.is_alive():
                process.terminate()


class NoisyImageGenerator(keras.utils.PyDataset):
    """Batches of random (source-noise patch, target-noise patch) pairs, float32 0-255. `images`: photos (HxWxC
    arrays) on which both noises are drawn, or groups of shots of one scene (tuples: pairs, bursts), of which each
    patch takes two (random_patches; `symmetric` False: the first shot the source, the second the target).

    One epoch is `steps` batches; batch `index` of epoch `e` is drawn from generators seeded by (seed, e, index),
    so runs are reproducible whatever the number or scheduling of workers. With `processes` > 0 the same batches
    are made in forked processes, off the training loop's GIL (for a fast GPU); close() ends them. With
    `neighbor2neighbor` a batch is ((noisy sources, pairs), g2 of the sources) instead (neighbor_batch). With
    `pixel_shuffle` > 1 the patches are every pixel_shuffle-th pixel of larger ones (shuffled_sub_images).
    """

    def __init__(self, images, source_noise_model, target_noise_model, batch_size=16, image_size=64,
                 steps=1000, seed=None, processes=0, neighbor2neighbor=False, pixel_shuffle=1, symmetric=True,
                 **pydataset_kwargs):
        super().__init__(**pydataset_kwargs)
        crop = image_size * pixel_shuffle  # the patch whose every pixel_shuffle-th pixel makes the training patch
        groups = [group if isinstance(group, tuple) else (group,) for group in images]
        self.groups = [group for group in groups if min(group[0].shape[:2]) >= crop]
        if not self.groups:
            raise NoImagesError(f"no training image is at least {crop}x{crop} pixels")
        self.batch_args = dict(groups=self.groups, source_noise_model=source_noise_model,
                               target_noise_model=target_noise_model, batch_size=batch_size, image_size=crop,
                               symmetric=symmetric)
        self.steps = steps
        self.seed = int(np.random.SeedSequence().entropy if seed is None else seed)
        self.epoch = 0
        self.neighbor2neighbor = neighbor2neighbor
        self.pixel_shuffle = pixel_shuffle
        self.processes = None
        if processes:
            shape = (batch_size, crop, crop, self.groups[0][0].shape[2])
            self.processes = BatchProcesses(processes, self.batch_args, shape)
            weakref.finalize(self, self.processes.close)

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        if self.processes is None:
            sources, targets = make_batch(**self.batch_args, seed=self.seed, epoch=self.epoch, index=index)
        else:
            sources, targets = self.processes.make(self.seed, self.epoch, index)
        if self.pixel_shuffle > 1:
            sources, targets = self.shuffled_sub_images(sources, targets, index)
        return self.neighbor_batch(sources, index) if self.neighbor2neighbor else (sources, targets)

    def shuffled_sub_images(self, sources, targets, index):
        """Pixel-shuffle downsampling of a batch of (stride * size)-pixel patches (pixel_shuffle.random_sub_images),
        the offsets drawn from their own stream of (seed, epoch, index)."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, index, SHUFFLE_STREAM]))
        return pixel_shuffle.random_sub_images((sources, targets), self.pixel_shuffle, rng)

    def neighbor_batch(self, sources, index):
        """Neighbor2Neighbor's batch of the noisy patches `sources` (neighbor2neighbor.training_batch), the pairs
        drawn from their own stream of (seed, epoch, index): new every step, the same in every run."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, index, NEIGHBOR_STREAM]))
        return neighbor2neighbor.training_batch(sources, rng)

    def on_epoch_end(self):
        self.epoch += 1

    def close(self):
        """End the batch-making processes, if any (after training; batches cannot be made any more)."""
        if self.processes is not None:
            self.processes.close()


def load_validation_data(images, val_noise_model, seed=0):
    """The validation set: [(noisy, clean)], float32 0-255 arrays of shape (1, H, W, 3), one per image.

    Each image is cropped to a multiple of 16 and its noise is drawn once from
    `seed`, so every epoch (and every run with the same seed) sees the same data.
    """
    rng = np.random.default_rng(seed)
    cropped = [crop_to_multiple(image) for image in images if min(image.shape[:2]) >= SIZE_MULTIPLE]
    if not cropped:
        raise NoImagesError(f"no validation image is at least {SIZE_MULTIPLE}x{SIZE_MULTIPLE} pixels")
    return [(val_noise_model(clean, rng)[np.newaxis].astype(np.float32), clean[np.newaxis].astype(np.float32))
            for clean in cropped]
