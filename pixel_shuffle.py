"""Pixel-shuffle downsampling (--pixel_shuffle STRIDE of train.py and test_model.py): a photo as the STRIDE x STRIDE
sub-images of every STRIDE-th pixel, whose neighbours are STRIDE pixels apart in the photo, where the spatial
correlation of camera noise has faded. Training, validation and denoising on sub-images all live here (NumPy).

Batches are (n, H, W, C) arrays, float32 0-255 or uint8.
"""
import numpy as np

from images import SIZE_MULTIPLE


def pixel_unshuffle(batch, stride):
    """(n, H, W, C) with H, W multiples of `stride` -> (stride**2, n, H/stride, W/stride, C): sub-image (i, j),
    at index i * stride + j, holds every stride-th pixel from (i, j) on."""
    return np.stack([batch[:, i::stride, j::stride] for i in range(stride) for j in range(stride)])


def pixel_shuffle(sub_images, stride):
    """The inverse of pixel_unshuffle: (stride**2, n, h, w, C) -> (n, h * stride, w * stride, C)."""
    _, n, height, width, channels = sub_images.shape
    batch = np.empty((n, height * stride, width * stride, channels), sub_images.dtype)
    for index, sub_image in enumerate(sub_images):
        batch[:, index // stride::stride, index % stride::stride] = sub_image
    return batch


def predict_shuffled(batch, stride, predict):
    """predict(sub-image batch) on each of the `stride`**2 pixel-unshuffled sub-images of a (n, H, W, C) float32
    batch (mirrored at the bottom and right up to multiples of stride first), reassembled and cropped back."""
    height, width = batch.shape[1:3]
    padding = ((0, 0), (0, -height % stride), (0, -width % stride), (0, 0))
    sub_images = pixel_unshuffle(np.pad(batch, padding, mode="reflect"), stride)
    predicted = np.stack([predict(sub_image) for sub_image in sub_images])
    return pixel_shuffle(predicted, stride)[:, :height, :width]


def random_sub_images(batches, stride, rng):
    """Training: for each patch of (stride * size)-pixel patch batches (sources and targets alike, after the noise
    was added to the whole patch), every stride-th pixel from an offset drawn from `rng`, the same in every batch."""
    offsets = rng.integers(stride, size=(len(batches[0]), 2))
    return tuple(np.stack([batch[k, top::stride, left::stride] for k, (top, left) in enumerate(offsets)])
                 for batch in batches)


def validation_sub_images(pairs, stride):
    """Validation: each (noisy, clean) pair (1, H, W, C) as its stride**2 sub-image pairs, cropped to a multiple of
    16, so a network trained on sub-images is validated on what it denoises. A ValueError where no image is large
    enough."""
    shuffled = []
    for noisy, clean in pairs:
        height, width = (size // (stride * SIZE_MULTIPLE) * SIZE_MULTIPLE for size in noisy.shape[1:3])
        if min(height, width) == 0:
            continue
        shuffled += [(sub_noisy[:, :height, :width], sub_clean[:, :height, :width]) for sub_noisy, sub_clean in
                     zip(pixel_unshuffle(noisy, stride), pixel_unshuffle(clean, stride))]
    if not shuffled:
        raise ValueError(f"no validation image is at least {stride * SIZE_MULTIPLE} pixels on each side, as a "
                         f"pixel-shuffle stride of {stride} needs")
    return shuffled
