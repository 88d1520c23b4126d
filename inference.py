"""Whole-image and tiled prediction with a trained network, self-ensemble, and `denoise`.

NumPy only: the network is any object with Keras' `predict_on_batch`, so this module imports no Keras and
test_model.py can read its defaults before Keras loads. Images are float32 0-255 arrays (n, H, W, C) on the
way in and out; `denoise` takes and returns HxWxC uint8.
"""
import numpy as np

from pixel_shuffle import predict_shuffled

# Inputs are mirrored up to a multiple of this many pixels: a folder of many image sizes then compiles one
# program per padded shape (JAX, XLA), not one per size, for a few per cent of extra pixels on a photo.
PAD_MULTIPLE = 64

# Neighbouring tiles share TILE_OVERLAP pixels. Each ignores the outer part of the shared band (outputs there
# lack context) and the two cross-fade linearly over TILE_BLEND pixels in its middle: seams neither show nor
# shift values. The SRResNet sees 35 pixels around a pixel, but its outputs hardly change beyond the nearest 8:
# on Set14 in 128-pixel tiles, 32 shared pixels gave the whole image's PSNR (within 0.0001 dB, values within 2
# levels) and compute 1.12x fewer pixels than 64 in 512-pixel tiles of a 12-megapixel photo.
TILE_OVERLAP = 32
TILE_BLEND = 16


def padded_size(size, multiple=PAD_MULTIPLE):
    """`size` rounded up to a multiple of `multiple`."""
    return -(-size // multiple) * multiple


def reflect_padded(batch):
    """A (n, H, W, C) batch mirrored (numpy 'reflect') at the bottom and right up to multiples of PAD_MULTIPLE,
    so that edge pixels see image-like context and padded shapes repeat across images."""
    height, width = batch.shape[1:3]
    padding = ((0, 0), (0, padded_size(height) - height), (0, padded_size(width) - width), (0, 0))
    return np.pad(batch, padding, mode="reflect")


def predict_padded(model, batch):
    """The network's float32 output for a (n, H, W, C) float32 0-255 batch, same shape: the batch is
    mirrored up to multiples of PAD_MULTIPLE, predicted whole, and cropped back."""
    height, width = batch.shape[1:3]
    output = model.predict_on_batch(reflect_padded(batch))
    return np.asarray(output, dtype=np.float32)[:, :height, :width]


def tile_spans(size, tile, overlap):
    """(start, length) of the tiles that cover 0..size (a multiple of PAD_MULTIPLE), neighbours sharing at least
    `overlap` pixels: full tiles, then one just long enough for the rest (rounded up to PAD_MULTIPLE pixels, so
    that few shapes occur), which spares up to a tile's worth of computed pixels per row and column."""
    if size <= tile:
        return [(0, size)]
    starts = range(0, size - tile, tile - overlap)
    last = min(tile, padded_size(size - starts[-1] - tile + overlap))
    return [(start, tile) for start in starts] + [(size - last, last)]


def tile_weights(length, start, size, overlap):
    """1-D blending weights of the tile [start, start + length) of 0..size, float32 in [0, 1]: zero over the
    outer (overlap - blend) / 2 pixels of every edge inside the image, then rising linearly over the blend,
    so that in a shared band the two tiles' weights add up to 1."""
    blend = min(TILE_BLEND, overlap)
    dead = (overlap - blend) // 2
    position = np.arange(length, dtype=np.float32)
    weights = np.ones(length, np.float32)
    if start > 0:
        weights = np.minimum(weights, np.clip((position - dead + 1) / (blend + 1), 0, 1))
    if start + length < size:
        weights = np.minimum(weights, np.clip((length - position - dead) / (blend + 1), 0, 1))
    return weights


def predict_tiled(model, batch, tile, *, overlap=TILE_OVERLAP, progress=None):
    """`predict_padded` in tile x tile pieces (tile and overlap multiples of 16; shorter ones at the bottom and
    right, see tile_spans): memory bounded by the tile, and few tile shapes, so few compiled programs serve any
    image size. `progress(done, total)`, where given, is called after every tile."""
    height, width = batch.shape[1:3]
    padded = reflect_padded(batch)
    total = np.zeros(padded.shape, np.float32)
    weight_sum = np.zeros(padded.shape[1:3], np.float32)
    tiles = [(rows, columns) for rows in tile_spans(padded.shape[1], tile, overlap)
             for columns in tile_spans(padded.shape[2], tile, overlap)]
    for done, ((top, rows), (left, columns)) in enumerate(tiles, 1):
        piece = padded[:, top:top + rows, left:left + columns]
        weights = np.outer(tile_weights(rows, top, padded.shape[1], overlap),
                           tile_weights(columns, left, padded.shape[2], overlap))
        output = np.asarray(model.predict_on_batch(piece), dtype=np.float32)
        total[:, top:top + rows, left:left + columns] += output * weights[:, :, np.newaxis]
        weight_sum[top:top + rows, left:left + columns] += weights
        if progress:
            progress(done, len(tiles))
    return (total / weight_sum[:, :, np.newaxis])[:, :height, :width]


# The eight symmetries of the square as (transpose, flip rows, flip columns), applied in that order.
SYMMETRIES = [(transpose, rows, columns) for transpose in (False, True) for rows in (False, True)
              for columns in (False, True)]


def transformed(batch, transpose, flip_rows, flip_columns):
    """A (n, H, W, C) batch transposed (to (n, W, H, C)), then flipped top-bottom and left-right as asked."""
    batch = batch.transpose(0, 2, 1, 3) if transpose else batch
    batch = batch[:, ::-1] if flip_rows else batch
    return np.ascontiguousarray(batch[:, :, ::-1] if flip_columns else batch)


def untransformed(batch, transpose, flip_rows, flip_columns):
    """The inverse of transformed: the flips undone, then the transpose."""
    batch = batch[:, :, ::-1] if flip_columns else batch
    batch = batch[:, ::-1] if flip_rows else batch
    return batch.transpose(0, 2, 1, 3) if transpose else batch


def predict_self_ensemble(batch, predict):
    """The mean of predict(batch) over the batch's eight flips and transposes, each turned back (self-ensemble:
    8x the compute; the errors of the eight passes partly cancel). float32 (n, H, W, C) 0-255 in and out."""
    total = np.zeros(batch.shape, np.float32)
    for symmetry in SYMMETRIES:
        total += untransformed(predict(transformed(batch, *symmetry)), *symmetry)
    return total / len(SYMMETRIES)


def predict_images(model, batch, *, tile=0, overlap=TILE_OVERLAP, stride=1, self_ensemble=False, progress=None):
    """float32 network output for a (n, H, W, C) 0-255 batch of any size: in tiles where tile > 0, else whole;
    stride > 1: on its pixel-shuffled sub-images (pixel_shuffle.predict_shuffled), for a network trained on such;
    self_ensemble: the mean over the batch's eight flips and transposes (predict_self_ensemble); progress as
    predict_tiled's."""
    if self_ensemble:
        return predict_self_ensemble(batch, lambda symmetric: predict_images(
            model, symmetric, tile=tile, overlap=overlap, stride=stride, progress=progress))
    if stride > 1:
        return predict_shuffled(batch, stride, lambda sub_image: predict_images(
            model, sub_image, tile=tile, overlap=overlap, progress=progress))
    if tile:
        return predict_tiled(model, batch, tile, overlap=overlap, progress=progress)
    return predict_padded(model, batch)


def denoise(model, image, *, tile=0, overlap=TILE_OVERLAP, stride=1, self_ensemble=False, progress=None):
    """Denoise one HxWxC uint8 image (BGR 0-255) into HxWxC uint8 (rounded, clipped); the options as
    predict_images'."""
    prediction = predict_images(model, image[np.newaxis].astype(np.float32), tile=tile, overlap=overlap,
                                stride=stride, self_ensemble=self_ensemble, progress=progress)[0]
    return np.clip(np.rint(prediction), 0, 255).astype(np.uint8)
