"""Networks, losses, metrics, learning-rate schedule, mixed precision and weight loading.

Written with `keras.ops` and `keras.layers` only, so the TensorFlow (default), JAX and PyTorch backends all
work. Knows nothing of files of images or of noise: tensors are float pixel values on the 0-255 scale, shaped
(batch, height, width, channels).
"""
import functools
import math
import sys
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


def gpu_compute_capability():
    """(major, minor) CUDA compute capability of the first GPU the backend sees, or None without one."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return None
        return tuple(tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0)))
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        capability = getattr(device, "compute_capability", None) if device.platform == "gpu" else None
        return tuple(int(part) for part in capability.split(".")) if capability else None
    if backend == "torch":
        import torch

        return tuple(torch.cuda.get_device_capability()) if torch.cuda.is_available() else None
    return None


def cpu_emulates_bfloat16(cpuinfo="/proc/cpuinfo"):
    """True where a Linux x86 CPU has no AVX-512 (no avx512f flag): much of a bfloat16 training step is then
    emulated, several times slower than float32. False where the flags cannot be read (not Linux, not x86)."""
    try:
        with open(cpuinfo) as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), None)
    except OSError:
        return False
    return flags is not None and "avx512f" not in flags


def start_mixed_precision(work):
    """--mixed_precision of train.py and test_model.py: use_mixed_precision, the policy printed, and a warning on
    stderr where a CPU without AVX-512 (no GPU) emulates bfloat16, so that `work` is slower than in float32."""
    print(f"mixed precision: {use_mixed_precision()}")
    if gpu_compute_capability() is None and cpu_emulates_bfloat16():
        print(f"warning: --mixed_precision: this CPU has no AVX-512, so much of the bfloat16 arithmetic is emulated "
              f"and {work} is several times slower than without the flag (docs/speed.md)", file=sys.stderr)


def use_mixed_precision():
    """Make the models built from now on compute in 16 bits (variables stay float32); returns the policy name.

    bfloat16 on CPUs and on GPUs from compute capability 8.0 (Ampere) on; float16
    on older GPUs, where Keras' compile() then adds dynamic loss scaling.
    """
    capability = gpu_compute_capability()
    policy = "mixed_float16" if capability is not None and capability < (8, 0) else "mixed_bfloat16"
    keras.config.set_dtype_policy(policy)
    return policy


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


class L0Loss(keras.losses.Loss):
    """Annealed L0 loss (|y - y'| + 1e-8) ** gamma, mean over the pixels.

    gamma lives in a variable that `AnnealLossGamma` lowers from 2 towards 0.
    """

    def __init__(self, gamma=2.0, name="l0"):
        super().__init__(name=name)
        self.gamma = keras.Variable(gamma, trainable=False, name="l0_gamma", dtype="float32")

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


# Neighbor2Neighbor (Huang et al., CVPR 2021). A noisy patch is split into 2x2 cells; in each cell a pair of
# pixels that are horizontal or vertical neighbours (never diagonal) is drawn, its first pixel going to the
# sub-image g1, its second to g2. `pairs` says which: (batch, H/2, W/2, 8) float one-hot, [..., :4] the cell
# position (top-left, top-right, bottom-left, bottom-right) of g1's pixel, [..., 4:] that of g2's.
NEIGHBOR_CELL = 2


def cell_pixels(images):
    """(batch, H, W, C) -> (batch, H/2, W/2, 4, C): the 4 pixels of every 2x2 cell, in the order TL, TR, BL, BR."""
    shape = ops.shape(images)
    rows, columns, channels = shape[1] // NEIGHBOR_CELL, shape[2] // NEIGHBOR_CELL, shape[3]
    cells = ops.reshape(images, (-1, rows, NEIGHBOR_CELL, columns, NEIGHBOR_CELL, channels))
    return ops.reshape(ops.transpose(cells, (0, 1, 3, 2, 4, 5)), (-1, rows, columns, 4, channels))


class NeighborSubsample(layers.Layer):
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
        half = [None if size is None else size // NEIGHBOR_CELL for size in (height, width)]
        return (batch, *half, channels), (batch, *half, channels)


class StopGradient(layers.Layer):
    """The input, through which no gradient flows."""

    def call(self, inputs):
        return ops.stop_gradient(inputs)


def neighbor2neighbor_model(denoiser):
    """The model Neighbor2Neighbor trains: [noisy (batch, H, W, C), pairs] -> (batch, H/2, W/2, 2C), the
    concatenation of f(g1 y), through which the gradient flows, and g1 f(y) - g2 f(y) of the network on the
    whole patch, through which none does (NeighborLoss takes them apart). It shares `denoiser`'s weights."""
    channels = denoiser.input_shape[-1]
    noisy, pairs = keras.Input((None, None, channels)), keras.Input((None, None, 2 * 4))
    first, _ = NeighborSubsample(name="sub_images")(noisy, pairs)
    denoised_first = denoiser(first)
    whole_first, whole_second = NeighborSubsample(name="sub_images_of_whole")(StopGradient()(denoiser(noisy)), pairs)
    consistency = layers.Subtract(dtype="float32")([whole_first, whole_second])
    outputs = layers.Concatenate(dtype="float32")([layers.Activation("linear", dtype="float32")(denoised_first),
                                                   consistency])
    return keras.Model([noisy, pairs], outputs, name="neighbor2neighbor")


class NeighborLoss(keras.losses.Loss):
    """Neighbor2Neighbor's loss of (g2 y, the neighbor2neighbor_model's output): mean((f(g1 y) - g2 y)^2)
    + gamma * mean((f(g1 y) - g2 y - (g1 f(y) - g2 f(y)))^2). gamma lives in a variable that AnnealLossGamma
    raises over the training (neighbor_gamma)."""

    def __init__(self, gamma=0.0, name="neighbor2neighbor"):
        super().__init__(name=name)
        self.gamma = keras.Variable(gamma, trainable=False, name="neighbor_gamma", dtype="float32")

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        channels = ops.shape(y_true)[-1]
        difference = ops.cast(y_pred[..., :channels], "float32") - y_true
        consistency = ops.cast(y_pred[..., channels:], "float32")
        return ops.mean(ops.square(difference), axis=-1) + self.gamma * ops.mean(
            ops.square(difference - consistency), axis=-1)


def neighbor_gamma(epoch, nb_epochs, gamma_max):
    """gamma during 0-based `epoch`: rising linearly, gamma_max / nb_epochs in the first, gamma_max in the last."""
    return gamma_max * (epoch + 1) / nb_epochs


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


def weights_mismatch(model, path):
    """None where the file at `path` holds as many weights as `model`; else why not, in a phrase naming the
    flags of the network the file fits (--model, and --channels where its channels differ)."""
    stored = sum(math.prod(shape) for shape in stored_weight_shapes(path))
    expected = model.count_params()
    if stored == expected:
        return None
    channels = channels_of_weights(path)
    fits = [name for name in MODEL_NAMES if get_model(name, channels).count_params() == stored]
    kind = {1: "gray", 3: "colour"}
    hint = ""
    if fits:
        flags = f"--model {fits[0]}" + (f" --channels {channels}" if channels != model.input_shape[-1] else "")
        hint = f"; it fits a {fits[0]} ({kind[channels]}): pass {flags}"
    return f"holds {stored:,} weights, a {model.name} ({kind[model.input_shape[-1]]}) has {expected:,}{hint}"


def load_weights(model, path):
    """Load Keras 3 `.weights.h5` or an original Keras 2 `.hdf5`/`.h5` checkpoint (full model or weights only)
    into `model`. Keras matches Keras 2 files layer by layer in build order, the order the original built them
    in. A file of another network is refused with a one-line ValueError."""
    path = str(path)
    if not path.endswith((".weights.h5", ".h5", ".hdf5")):
        raise ValueError(f"weight file should end in .weights.h5, .h5 or .hdf5: {path}")
    mismatch = weights_mismatch(model, path)
    if mismatch:
        raise ValueError(mismatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns per layer before raising on a mismatch
        try:
            model.load_weights(path)
        except (ValueError, KeyError) as error:
            raise ValueError(f"does not fit a {model.name} model ({str(error).splitlines()[0][:200]})") from None


def _input_names(node):
    """Names of the layers whose outputs a serialised node (a functional layer config's inbound_nodes, or a part
    of one) takes in: every `keras_history` in it."""
    if isinstance(node, dict):
        if "keras_history" in node:
            return [node["keras_history"][0]]
        return [name for value in node.values() for name in _input_names(value)]
    if isinstance(node, (list, tuple)):
        return [name for item in node for name in _input_names(item)]
    return []


def _layer_graph(network):
    """({layer: [layers it takes in]}, {layer: [layers that take it in]}) by name, from the functional config."""
    configs = network.get_config()["layers"]
    parents = {config["name"]: _input_names(config["inbound_nodes"]) for config in configs}
    consumers = {name: [user for user, inputs in parents.items() if name in inputs] for name in parents}
    return parents, consumers


def _batch_norms_to_fold(network, consumers):
    """{Conv2D name: BatchNormalization name} for each convolution with a bias whose only consumer is a batch
    normalisation over its channels."""
    layer = network.get_layer
    return {name: users[0] for name, users in consumers.items()
            if isinstance(layer(name), layers.Conv2D) and layer(name).use_bias and len(users) == 1
            and isinstance(layer(users[0]), layers.BatchNormalization) and layer(users[0]).axis in (-1, 3)}


def _prelus_to_rewrite(network, parents, consumers, folded):
    """{PReLU name: the Conv2D that produces its input} for the PReLUs with one slope per channel that can become
    max(x, slope * x): all slopes at most 1, or else a convolution (its normalisation folded) feeding the PReLU
    alone and only convolutions taking its output in, so that the channels with slopes above 1 can be flipped."""
    layer, conv_of_norm = network.get_layer, {norm: conv for conv, norm in folded.items()}
    rewrite = {}
    for name, inputs in parents.items():
        if not isinstance(layer(name), layers.PReLU) or tuple(layer(name).alpha.shape[:-1]) != (1, 1):
            continue
        producer = conv_of_norm.get(inputs[0], inputs[0])
        alone = len(consumers[inputs[0]]) == 1 and isinstance(layer(producer), layers.Conv2D)
        if np.all(np.asarray(layer(name).alpha) <= 1) or (
                alone and all(isinstance(layer(user), layers.Conv2D) for user in consumers[name])):
            rewrite[name] = producer
    return rewrite


def _folded_conv_weights(conv, batch_norm):
    """The [kernel, bias] of `conv` followed by `batch_norm` in inference mode, as one convolution: the kernel's
    output channels scaled by gamma / sqrt(variance + epsilon), the bias shifted; float64."""
    kernel, bias = (np.asarray(weight, np.float64) for weight in (conv.kernel, conv.bias))
    mean, variance = (np.asarray(weight, np.float64) for weight in (batch_norm.moving_mean,
                                                                    batch_norm.moving_variance))
    gamma = np.asarray(batch_norm.gamma, np.float64) if batch_norm.scale else 1.0
    beta = np.asarray(batch_norm.beta, np.float64) if batch_norm.center else 0.0
    scale = gamma / np.sqrt(variance + batch_norm.epsilon)
    return [kernel * scale, (bias - mean) * scale + beta]


def _inference_weights(network, consumers, folded, rewritten):
    """{layer name: float64 weights} of inference_network's changed layers. A PReLU slope a > 1 becomes 1 / a on
    flipped signs: the producing convolution negates that channel (z = -x), max(z, z / a) is -x / a for x >= 0
    and -x below, and the consuming convolutions scale that input channel by -a: x and a * x, PReLU's values."""
    layer = network.get_layer
    weights = {conv: _folded_conv_weights(layer(conv), layer(norm)) for conv, norm in folded.items()}

    def conv_weights(name):  # the weights changed so far, else the network's own
        return weights.setdefault(name, [np.asarray(weight, np.float64) for weight in layer(name).weights])

    for name, producer in rewritten.items():
        alpha = np.asarray(layer(name).alpha, np.float64)  # (1, 1, channels)
        flipped = alpha > 1
        weights[name] = [np.where(flipped, 1 / np.where(flipped, alpha, 1.0), alpha)]  # no 1 / 0 for zero slopes
        if flipped.any():
            kernel, bias = conv_weights(producer)
            sign = np.where(flipped, -1.0, 1.0).reshape(-1)
            weights[producer] = [kernel * sign, bias * sign]
            for user in consumers[name]:
                kernel, bias = conv_weights(user)
                weights[user] = [kernel * np.where(flipped, -alpha, 1.0).reshape(1, 1, -1, 1), bias]
    return weights


class _FoldedBatchNorm(layers.Layer):
    """Where inference_network took a batch normalisation into its convolution: passes its input on (accepting
    the `mask` argument the normalisation's node was called with)."""

    def call(self, inputs, mask=None):
        return inputs


class _MaxPReLU(layers.Layer):
    """PReLU as max(x, slope * x), exact for slopes up to 1: two passes over the feature map where Keras' PReLU
    makes five (relu, negate, relu, multiply, add)."""

    def __init__(self, slope_shape, **kwargs):
        super().__init__(**kwargs)
        self.slope = self.add_weight(shape=slope_shape, initializer="zeros", trainable=False, name="slope")

    def call(self, inputs):
        return ops.maximum(inputs, ops.cast(self.slope, inputs.dtype) * inputs)


def inference_network(network):
    """A copy of `network` for inference, the same float32 output up to rounding, sooner: each convolution +
    batch normalisation is one convolution (Keras upcasts normalisation to float32 under mixed precision), and
    each PReLU computes max(x, slope * x) (see _inference_weights). A network with neither comes back as it is."""
    parents, consumers = _layer_graph(network)
    folded = _batch_norms_to_fold(network, consumers)
    rewritten = _prelus_to_rewrite(network, parents, consumers, folded)
    if not folded and not rewritten:
        return network

    def clone(layer):
        if layer.name in rewritten:
            return _MaxPReLU(layer.alpha.shape, name=layer.name)
        if layer.name in folded.values():
            return _FoldedBatchNorm(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(network, clone_function=clone)
    changed = _inference_weights(network, consumers, folded, rewritten)
    for layer in copy.layers:
        if layer.weights:
            layer.set_weights([np.asarray(weight, np.float32) for weight in changed[layer.name]]
                              if layer.name in changed else network.get_layer(layer.name).get_weights())
    return copy
