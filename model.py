"""Networks, losses, metrics, learning-rate schedule and weight loading.

Written with `keras.ops` and `keras.layers` only, so the TensorFlow (default), JAX and PyTorch backends all
work. Knows nothing of files of images or of noise: tensors are float pixel values on the 0-255 scale, shaped
(batch, height, width, channels).
"""
import functools
import math
import warnings

import h5py
import keras
import numpy as np
from keras import layers, ops

# One set of arguments shared by every 3x3 convolution of the SRResNet.
SRRESNET_CONV = dict(kernel_size=3, padding="same", kernel_initializer="he_normal")


def _srresnet_residual_block(inputs, filters, batch_norm):
    x = layers.Conv2D(filters, **SRRESNET_CONV)(inputs)
    x = batch_norm()(x)
    x = layers.PReLU(shared_axes=[1, 2])(x)
    x = layers.Conv2D(filters, **SRRESNET_CONV)(x)
    x = batch_norm()(x)
    return layers.Add()([x, inputs])


def get_srresnet_model(channels=3, filters=64, residual_blocks=16, synchronized_bn=False):
    """SRResNet without upsampling (Ledig et al. 2017): 1,231,683 parameters for RGB.

    synchronized_bn (TensorFlow, under a tf.distribute strategy): batch normalisation over the global batch
    of all replicas, so data-parallel training computes what one device would on the same batch.
    """
    batch_norm = functools.partial(layers.BatchNormalization, synchronized=synchronized_bn)
    inputs = keras.Input((None, None, channels))
    x = layers.Conv2D(filters, **SRRESNET_CONV)(inputs)
    first_features = layers.PReLU(shared_axes=[1, 2])(x)
    x = first_features
    for _ in range(residual_blocks):
        x = _srresnet_residual_block(x, filters, batch_norm)
    x = layers.Conv2D(filters, **SRRESNET_CONV)(x)
    x = batch_norm()(x)
    x = layers.Add()([x, first_features])
    # float32 output layer: under mixed precision the pixels, loss and PSNR stay float32.
    outputs = layers.Conv2D(channels, dtype="float32", **SRRESNET_CONV)(x)
    return keras.Model(inputs, outputs, name="srresnet")


def _unet_conv_pair(x, filters, dropout=0.0):
    # Two ReLU 3x3 convolutions, with dropout between them at the bottom level only.
    x = layers.Conv2D(filters, 3, activation="relu", padding="same")(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    return layers.Conv2D(filters, 3, activation="relu", padding="same")(x)


def _unet_level(x, filters, depth, dropout):
    """One U-Net level: conv pair, pool, recurse, upsample + 2x2 conv, concat, conv pair."""
    if depth == 0:
        return _unet_conv_pair(x, filters, dropout)
    skip = _unet_conv_pair(x, filters)
    x = layers.MaxPooling2D()(skip)
    x = _unet_level(x, filters * 2, depth - 1, dropout)
    x = layers.UpSampling2D()(x)
    x = layers.Conv2D(filters, 2, activation="relu", padding="same")(x)
    x = layers.Concatenate()([skip, x])
    return _unet_conv_pair(x, filters)


def get_unet_model(channels=3, start_filters=64, depth=4, dropout=0.5):
    """U-Net (Ronneberger et al. 2015): 31,031,875 parameters for RGB.

    Four 2x poolings: height and width must be multiples of 16.
    """
    inputs = keras.Input((None, None, channels))
    x = _unet_level(inputs, start_filters, depth, dropout)
    outputs = layers.Conv2D(channels, 1, dtype="float32")(x)  # float32 even under mixed precision
    return keras.Model(inputs, outputs, name="unet")


MODEL_NAMES = ("srresnet", "unet")  # (cli.py repeats them for the parsers, which must not wait for Keras)


def get_model(model_name="srresnet", channels=3, synchronized_bn=False):
    """An untrained denoiser by name (one of MODEL_NAMES); synchronized_bn as get_srresnet_model (the UNet has
    no batch normalisation)."""
    if model_name == "srresnet":
        return get_srresnet_model(channels=channels, synchronized_bn=synchronized_bn)
    if model_name == "unet":
        return get_unet_model(channels=channels)
    raise ValueError(f"model name should be one of {', '.join(MODEL_NAMES)}, got {model_name!r}")


def psnr(y_true, y_pred):
    """PSNR in dB of the batch's mean squared error, 0-255 images; the prediction is clipped to [0, 255] first."""
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.clip(ops.cast(y_pred, "float32"), 0.0, 255.0)
    mse = ops.mean(ops.square(y_pred - y_true))
    return 10.0 / math.log(10.0) * ops.log(255.0**2 / mse)


SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
SSIM_MAPS = 5  # the local statistics SSIM blurs: a, b, a*a, b*b, a*b


def _ssim_kernels(size=SSIM_WINDOW, sigma=SSIM_SIGMA):
    """The (size x size) Gaussian window summing to 1 as its two 1-D factors (it is separable): depthwise kernels
    of shape (size, 1, SSIM_MAPS, 1) (down the columns) and (1, size, SSIM_MAPS, 1) (along the rows), float32."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
    line = np.exp(-offsets**2 / (2 * sigma**2))
    line = (line / line.sum()).astype(np.float32)
    column = np.tile(line[:, np.newaxis, np.newaxis, np.newaxis], (1, 1, SSIM_MAPS, 1))
    return ops.convert_to_tensor(column), ops.convert_to_tensor(column.reshape(1, size, SSIM_MAPS, 1))


def ssim(y_true, y_pred):
    """Mean SSIM of 0-255 images (batch, H, W, C), H and W >= 11; the prediction is clipped to [0, 255].

    As skimage's structural_similarity(gaussian_weights=True, use_sample_covariance=False) and tf.image.ssim:
    11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, valid windows, channels averaged. The separable window
    runs as a column then a row depthwise pass over the five local statistics; one channel at a time bounds memory.
    """
    column, row = _ssim_kernels()
    x = ops.cast(y_true, "float32") / 255.0
    y = ops.clip(ops.cast(y_pred, "float32"), 0.0, 255.0) / 255.0
    c1, c2 = 0.01**2, 0.03**2
    channel_means = []
    for channel in range(y_true.shape[-1]):
        a, b = x[..., channel:channel + 1], y[..., channel:channel + 1]
        statistics = ops.concatenate([a, b, a * a, b * b, a * b], axis=-1)  # (batch, H, W, SSIM_MAPS)
        blurred = ops.depthwise_conv(ops.depthwise_conv(statistics, column, padding="valid"), row, padding="valid")
        mean_a, mean_b, mean_aa, mean_bb, mean_ab = (blurred[..., k] for k in range(SSIM_MAPS))
        covariance = mean_ab - mean_a * mean_b
        variances = mean_aa + mean_bb - mean_a**2 - mean_b**2
        numerator = (2 * mean_a * mean_b + c1) * (2 * covariance + c2)
        ssim_map = numerator / ((mean_a**2 + mean_b**2 + c1) * (variances + c2))
        channel_means.append(ops.mean(ssim_map))
    return ops.mean(ops.stack(channel_means))


def psnr_metric():
    """The PSNR as a Keras metric named "PSNR", so the history keys are PSNR / val_PSNR."""
    return keras.metrics.MeanMetricWrapper(psnr, name="PSNR")


class LossGamma(keras.metrics.Metric):
    """The gamma of a loss (the L0 loss', Neighbor2Neighbor's) as a metric's variable, which the callbacks set
    between epochs: Keras hands the metrics' variables to every compiled train step as state, so the step is
    compiled once per run on every backend (JAX would freeze a plain variable into its trace). Its result, the
    epoch's gamma, goes into the logs and the history under the metric's name."""

    def __init__(self, initial, name):
        super().__init__(name=name)
        self.gamma = self.add_variable(shape=(), initializer=keras.initializers.Constant(initial), dtype="float32",
                                       aggregation="only_first_replica", name="gamma")

    def update_state(self, *args, **kwargs):
        """Nothing: the callbacks set the value."""

    def reset_state(self):
        """Nothing: the value carries over from one epoch to the next."""

    def result(self):
        return ops.convert_to_tensor(self.gamma)


class L0Loss(keras.losses.Loss):
    """Annealed L0 loss (|y - y'| + 1e-8) ** gamma, mean over the pixels. gamma is `gamma_metric`'s variable
    (compile the model with that metric), which AnnealLossGamma lowers from 2 towards 0."""

    def __init__(self, gamma=2.0, name="l0"):
        super().__init__(name=name)
        self.gamma_metric = LossGamma(gamma, "l0_gamma")
        self.gamma = self.gamma_metric.gamma

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        return ops.mean(ops.power(ops.abs(y_true - y_pred) + 1e-8, self.gamma), axis=-1)


def get_loss(loss_name):
    """'mse' | 'mae' | 'l0' -> a Keras loss (for 'l0' a new `L0Loss`, whose gamma AnnealLossGamma lowers)."""
    if loss_name == "l0":
        return L0Loss()
    if loss_name in ("mse", "mae"):
        return loss_name
    raise ValueError(f"loss should be one of mse, mae, l0, got {loss_name!r}")


def l0_gamma(epoch, nb_epochs):
    """gamma at the start of 0-based `epoch`: 2 * (nb_epochs - epoch) / nb_epochs."""
    return 2.0 * (nb_epochs - epoch) / nb_epochs


def learning_rate_at(epoch, nb_epochs, initial_lr):
    """Step schedule of the original: x1, then x0.5 from 25 %, x0.25 from 50 %, x0.125 from 75 % of the epochs."""
    for fraction, factor in ((0.25, 1.0), (0.50, 0.5), (0.75, 0.25)):
        if epoch < nb_epochs * fraction:
            return initial_lr * factor
    return initial_lr * 0.125




class ImageScores(layers.Layer):
    """[PSNR, SSIM] of (clean, prediction), float32 0-255 (batch, H, W, C), with `loss` (what compile() got)
    [loss, PSNR, SSIM]: a (batch, 2 or 3) float32 array, one equal row per item, so that a data-parallel
    prediction can split it among devices. A prediction larger than `clean` (of a padded input) is cropped to
    it first. float32 under any policy: bfloat16 cannot hold 0-255 values finely enough for a PSNR."""

    def __init__(self, loss=None, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.loss = keras.losses.get(loss) if isinstance(loss, str) else loss
        if isinstance(getattr(loss, "gamma", None), keras.Variable):
            # Tracked as this layer's weight, so a compiled model reads the gamma AnnealLossGamma set this epoch
            # (JAX would freeze a variable outside the model's weights at its value of the first call).
            self.loss_gamma = loss.gamma

    def call(self, clean, prediction):
        prediction = prediction[:, :ops.shape(clean)[1], :ops.shape(clean)[2]]
        scores = [psnr(clean, prediction), ssim(clean, prediction)]
        if self.loss is not None:
            scores.insert(0, ops.mean(self.loss(clean, prediction)))
        return ops.tile(ops.expand_dims(ops.stack(scores), 0), [ops.shape(clean)[0], 1])


def image_scorer(channels):
    """A weightless Keras model [clean, prediction] -> ImageScores: through predict_on_batch its 80-odd
    operations run as one compiled program per image size, not one dispatch (or JAX compilation) each."""
    clean, prediction = keras.Input((None, None, channels)), keras.Input((None, None, channels))
    return keras.Model([clean, prediction], ImageScores()(clean, prediction), name="image_scores")


def score_image(scorer, clean, prediction):
    """(PSNR in dB, SSIM) of a (1, H, W, C) float32 0-255 prediction against its clean image, by `scorer`
    (an image_scorer)."""
    image_psnr, image_ssim = np.asarray(scorer.predict_on_batch([clean, prediction]), dtype=np.float64)[0]
    return float(image_psnr), float(image_ssim)


def stored_weight_shapes(path):
    """Shapes of the model weight arrays in a .weights.h5 or Keras 2 .hdf5 file (optimizer state excluded)."""
    try:
        with h5py.File(path, "r") as handle:
            group = handle.get("model_weights") or handle.get("layers") or handle
            shapes = []
            group.visititems(lambda name, item: shapes.append(item.shape) if isinstance(item, h5py.Dataset) else None)
            return shapes
    except OSError:
        raise ValueError("not a Keras weight file (HDF5 expected)") from None


def channels_of_weights(path):
    """The image channels (3 colour, 1 gray) of the network whose weights the file holds, without building one:
    the smallest input depth of its convolution kernels (height, width, in, out), which only the first
    convolution of either network takes from the image; 3 where that is neither (load_weights then says why)."""
    inputs = [shape[2] for shape in stored_weight_shapes(path) if len(shape) == 4]
    return min(inputs) if inputs and min(inputs) in (1, 3) else 3


class WeightsMismatch(ValueError):
    """A weight file of another network than the one built: `fits` names the network it fits (or None), and
    `channels` its image channels, so that a script can say which of its flags to pass."""

    def __init__(self, message, fits=None, channels=3):
        super().__init__(message)
        self.fits, self.channels = fits, channels


def weights_mismatch(model, path):
    """None where the file at `path` holds as many weights as `model`; else a WeightsMismatch saying how many
    each has and which network (of MODEL_NAMES, and channels) the file fits."""
    stored = sum(math.prod(shape) for shape in stored_weight_shapes(path))
    expected = model.count_params()
    if stored == expected:
        return None
    channels = channels_of_weights(path)
    fits = next((name for name in MODEL_NAMES if get_model(name, channels).count_params() == stored), None)
    kind = {1: "gray", 3: "colour"}
    hint = f"; it fits a {fits} ({kind[channels]})" if fits else ""
    return WeightsMismatch(f"holds {stored:,} weights, a {model.name} ({kind[model.input_shape[-1]]}) has "
                           f"{expected:,}{hint}", fits, channels)


def load_weights(model, path):
    """Load Keras 3 `.weights.h5` or an original Keras 2 `.hdf5`/`.h5` checkpoint (full model or weights only)
    into `model`. Keras matches Keras 2 files layer by layer in build order, the order the original built them
    in. A file of another network is refused with a one-line WeightsMismatch (a ValueError)."""
    path = str(path)
    if not path.endswith((".weights.h5", ".h5", ".hdf5")):
        raise ValueError(f"weight file should end in .weights.h5, .h5 or .hdf5: {path}")
    mismatch = weights_mismatch(model, path)
    if mismatch:
        raise mismatch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns per layer before raising on a mismatch
        try:
            model.load_weights(path)
        except (ValueError, KeyError) as error:
            raise ValueError(f"does not fit a {model.name} model ({str(error).splitlines()[0][:200]})") from None


