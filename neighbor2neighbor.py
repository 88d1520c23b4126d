"""Neighbor2Neighbor (Huang et al., CVPR 2021): train a denoiser on single noisy images, no pairs, no clean images.

A noisy patch is split into 2x2 cells; in each cell a pair of pixels that are horizontal or vertical neighbours
(never diagonal) is drawn, its first pixel going to the sub-image g1, its second to g2. The network learns to
predict g2 from g1, with a consistency term weighted by gamma. Everything of the method lives here: the pair
draw and the sub-sampler in NumPy (training batches, validation sub-images) and as a Keras layer (inside the
training model), the training model, its loss and the gamma schedule.

`pairs` arrays are (batch, H/2, W/2, 8) float32 one-hot: [..., :4] the cell position (top-left, top-right,
bottom-left, bottom-right) of g1's pixel, [..., 4:] that of g2's. Images are float32 0-255 (batch, H, W, C).
"""
import keras
import numpy as np
from keras import layers, ops

from model import LossGamma

CELL = 2  # the cells are 2x2 pixels
# The 8 ordered pairs of horizontally or vertically adjacent pixels of a cell, as positions 0 top-left,
# 1 top-right, 2 bottom-left, 3 bottom-right (never the diagonals 0-3 and 1-2).
PAIRS = np.array([(0, 1), (0, 2), (1, 3), (2, 3), (1, 0), (2, 0), (3, 1), (3, 2)])


def draw_pairs(rng, batch_size, rows, columns):
    """One of PAIRS per 2x2 cell, independently: (batch_size, rows, columns, 8) float32 one-hot."""
    drawn = PAIRS[rng.integers(len(PAIRS), size=(batch_size, rows, columns))]
    one_hot = np.eye(4, dtype=np.float32)
    return np.concatenate([one_hot[drawn[..., 0]], one_hot[drawn[..., 1]]], axis=-1)


def sub_images(images, pairs):
    """(g1, g2) of (batch, H, W, C) images (H, W even) for `pairs` from draw_pairs: each (batch, H/2, W/2, C),
    the same positions in every channel (NumPy's twin of Subsample)."""
    batch, height, width, channels = images.shape
    cells = images.reshape(batch, height // 2, 2, width // 2, 2, channels).transpose(0, 1, 3, 2, 4, 5)
    cells = cells.reshape(batch, height // 2, width // 2, 4, channels)
    return tuple(np.take_along_axis(cells, np.argmax(part, axis=-1)[..., None, None], axis=3)[:, :, :, 0]
                 for part in (pairs[..., :4], pairs[..., 4:]))


def training_batch(sources, rng):
    """The batch Neighbor2Neighbor trains on, from noisy patches `sources` (batch, H, W, C): ((sources, pairs),
    g2 of the sources), the pairs drawn from `rng`."""
    batch_size, height, width = sources.shape[:3]
    pairs = draw_pairs(rng, batch_size, height // 2, width // 2)
    return (sources, pairs), sub_images(sources, pairs)[1]


def validation_data(noisy_images, seed=0):
    """[(g1, g2)] of each (1, H, W, C) float32 noisy validation image (H, W even), one draw of pairs from `seed`:
    the same sub-images every epoch, for callbacks.PairValidation (how well g1 predicts g2)."""
    rng = np.random.default_rng(seed)
    return [sub_images(noisy, draw_pairs(rng, 1, noisy.shape[1] // 2, noisy.shape[2] // 2)) for noisy in noisy_images]


def cell_pixels(images):
    """(batch, H, W, C) -> (batch, H/2, W/2, 4, C): the 4 pixels of every 2x2 cell, in the order TL, TR, BL, BR."""
    shape = ops.shape(images)
    rows, columns, channels = shape[1] // CELL, shape[2] // CELL, shape[3]
    cells = ops.reshape(images, (-1, rows, CELL, columns, CELL, channels))
    return ops.reshape(ops.transpose(cells, (0, 1, 3, 2, 4, 5)), (-1, rows, columns, 4, channels))


class Subsample(layers.Layer):
    """(images (batch, H, W, C), pairs (batch, H/2, W/2, 8)) -> the sub-images (g1, g2), each (batch, H/2, W/2, C):
    the same pixel positions in every channel."""

    def call(self, images, pairs):
        cells = cell_pixels(images)
        pairs = ops.cast(pairs, cells.dtype)
        first = ops.sum(cells * ops.expand_dims(pairs[..., :4], -1), axis=3)
        second = ops.sum(cells * ops.expand_dims(pairs[..., 4:], -1), axis=3)
        return first, second

    def compute_output_shape(self, images_shape, pairs_shape):
        # (JAX cannot trace the reshape for unknown sizes; the shapes are known without it.)
        batch, height, width, channels = images_shape
        half = [None if size is None else size // CELL for size in (height, width)]
        return (batch, *half, channels), (batch, *half, channels)


class StopGradient(layers.Layer):
    """The input, through which no gradient flows."""

    def call(self, inputs):
        return ops.stop_gradient(inputs)


def training_model(denoiser):
    """The model Neighbor2Neighbor trains: [noisy (batch, H, W, C), pairs] -> (batch, H/2, W/2, 2C), the
    concatenation of f(g1 y), through which the gradient flows, and g1 f(y) - g2 f(y) of the network on the
    whole patch, through which none does (NeighborLoss takes them apart). It shares `denoiser`'s weights."""
    channels = denoiser.input_shape[-1]
    noisy, pairs = keras.Input((None, None, channels)), keras.Input((None, None, 2 * 4))
    first, _ = Subsample(name="sub_images")(noisy, pairs)
    denoised_first = denoiser(first)
    whole_first, whole_second = Subsample(name="sub_images_of_whole")(StopGradient()(denoiser(noisy)), pairs)
    consistency = layers.Subtract(dtype="float32")([whole_first, whole_second])
    outputs = layers.Concatenate(dtype="float32")([layers.Activation("linear", dtype="float32")(denoised_first),
                                                   consistency])
    return keras.Model([noisy, pairs], outputs, name="neighbor2neighbor")


class NeighborLoss(keras.losses.Loss):
    """The loss of (g2 y, the training_model's output): mean((f(g1 y) - g2 y)^2)
    + gamma * mean((f(g1 y) - g2 y - (g1 f(y) - g2 f(y)))^2). gamma is `gamma_metric`'s variable (compile the
    model with that metric), which AnnealLossGamma raises over the training."""

    def __init__(self, gamma=0.0, name="neighbor2neighbor"):
        super().__init__(name=name)
        self.gamma_metric = LossGamma(gamma, "neighbor_gamma")
        self.gamma = self.gamma_metric.gamma

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        channels = ops.shape(y_true)[-1]
        difference = ops.cast(y_pred[..., :channels], "float32") - y_true
        consistency = ops.cast(y_pred[..., channels:], "float32")
        return ops.mean(ops.square(difference), axis=-1) + self.gamma * ops.mean(
            ops.square(difference - consistency), axis=-1)


def gamma_at(epoch, nb_epochs, gamma_max):
    """gamma during 0-based `epoch`: rising linearly, gamma_max / nb_epochs in the first, gamma_max in the last."""
    return gamma_max * (epoch + 1) / nb_epochs
