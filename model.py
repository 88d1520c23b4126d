"""Networks, loss, metric and callbacks of the Noise2Noise suite.

Everything here is written with `keras.ops` / `keras.layers` only, so the
TensorFlow (default), JAX and PyTorch backends all work. This module knows
nothing about images on disk or noise: it sees float tensors of pixel values
in the 0-255 range, shaped (batch, height, width, channels).
"""
import functools
import hashlib
import json
import math
import os
import shutil
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import keras
import numpy as np
from keras import layers, ops

from cli import MODEL_NAMES, TILE_OVERLAP


# One set of conv arguments shared by every 3x3 convolution of the SRResNet.
SRRESNET_CONV = dict(kernel_size=3, padding="same", kernel_initializer="he_normal")


# ----------------------------------------------------------------- networks
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


def get_model(model_name="srresnet", channels=3, synchronized_bn=False):
    """Build an untrained denoiser by name ('srresnet' or 'unet'); synchronized_bn as get_srresnet_model
    (the UNet has no batch normalisation)."""
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


def use_mixed_precision():
    """Make the models built from now on compute in 16 bits (variables stay float32); returns the policy name.

    bfloat16 on CPUs and on GPUs from compute capability 8.0 (Ampere) on; float16
    on older GPUs, where Keras' compile() then adds dynamic loss scaling.
    """
    capability = gpu_compute_capability()
    policy = "mixed_float16" if capability is not None and capability < (8, 0) else "mixed_bfloat16"
    keras.config.set_dtype_policy(policy)
    return policy


# ------------------------------------------------------------ loss, metric
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
    """Mean SSIM of 0-255 images (batch, H, W, C), H and W at least 11 (the window size); the prediction
    is clipped to [0, 255].

    Wang et al. 2004 as tf.image.ssim and skimage's structural_similarity(gaussian_weights=True,
    use_sample_covariance=False) compute it: an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
    each channel separately (one at a time, to bound memory on large photos), averaged over the windows
    that fit inside the image and over the channels. The window is applied as a column pass then a row pass
    (22 multiply-adds a pixel instead of 121) to the five local statistics at once, by depthwise
    convolutions: 2-3x faster than five 2-D convolutions on TensorFlow and PyTorch CPUs, equal to float32
    rounding (benchmarks/bench_validation.py).
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

    gamma lives in a variable that `AnnealL0Gamma` lowers from 2 towards 0.
    """

    def __init__(self, gamma=2.0, name="l0"):
        super().__init__(name=name)
        self.gamma = keras.Variable(gamma, trainable=False, name="l0_gamma", dtype="float32")

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        return ops.mean(ops.power(ops.abs(y_true - y_pred) + 1e-8, self.gamma), axis=-1)


def get_loss(loss_name):
    """'mse' | 'mae' | 'l0' -> a Keras loss (for 'l0' a new `L0Loss`, whose gamma AnnealL0Gamma lowers)."""
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


# ---------------------------------------------------------------- callbacks
class AnnealL0Gamma(keras.callbacks.Callback):
    """Sets the L0 loss' gamma at the start of every epoch."""

    def __init__(self, l0_loss, nb_epochs):
        super().__init__()
        self.l0_loss = l0_loss
        self.nb_epochs = nb_epochs

    def on_epoch_begin(self, epoch, logs=None):
        self.l0_loss.gamma.assign(l0_gamma(epoch, self.nb_epochs))
        if keras.backend.backend() != "tensorflow":
            # JAX and torch trace the variable's value as a constant: retrace once per epoch.
            self.model.make_train_function(force=True)
            self.model.make_test_function(force=True)


class ImageScores(keras.layers.Layer):
    """PSNR and SSIM of a batch of copies of one (clean, prediction) pair, float32 0-255 (batch, H, W, C)
    images: a (batch, 2) float32 array, [PSNR, SSIM] in every row (one row per copy, so a data-parallel
    prediction can split it among devices); with `loss` (what compile() got: 'mse', 'mae' or a Loss object)
    (batch, 3), [loss, PSNR, SSIM]. A prediction larger than its clean image (that of a padded image) is cropped
    to it at the top left first. Always float32, also under a mixed-precision policy: bfloat16 cannot hold a
    prediction's 0-255 values finely enough for a PSNR. An L0Loss' gamma is tracked as a weight of this layer, so
    a compiled model reads the value AnnealL0Gamma set for this epoch (on JAX a variable outside the model's own
    weights would be frozen at its value of the first call)."""

    def __init__(self, loss=None, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.loss = keras.losses.get(loss) if isinstance(loss, str) else loss
        if isinstance(getattr(loss, "gamma", None), keras.Variable):
            self.loss_gamma = loss.gamma

    def call(self, clean, prediction):
        prediction = prediction[:, :ops.shape(clean)[1], :ops.shape(clean)[2]]
        scores = [psnr(clean, prediction), ssim(clean, prediction)]
        if self.loss is not None:
            scores.insert(0, ops.mean(self.loss(clean, prediction)))
        return ops.tile(ops.expand_dims(ops.stack(scores), 0), [ops.shape(clean)[0], 1])


def image_scorer(channels):
    """A Keras model without weights that maps [clean, prediction] to ImageScores. Through predict_on_batch it
    runs compiled (JAX: one program per image size, TensorFlow: a few traces with relaxed shapes) instead of
    dispatching the 80-odd operations of PSNR and SSIM one by one for every image and epoch, which JAX also
    compiles anew, one by one, for every image size (benchmarks/bench_validation.py)."""
    clean, prediction = keras.Input((None, None, channels)), keras.Input((None, None, channels))
    return keras.Model([clean, prediction], ImageScores()(clean, prediction), name="image_scores")


def score_image(scorer, clean, prediction, replicas=1):
    """(PSNR in dB, SSIM) of a (1, H, W, C) float32 0-255 prediction against its clean image, through `scorer`
    (an image_scorer); the pair is copied `replicas` times for a data-parallel scorer."""
    pair = [fill_to_multiple(clean, replicas), fill_to_multiple(prediction, replicas)]
    image_psnr, image_ssim = np.asarray(scorer.predict_on_batch(pair), dtype=np.float64)[0]
    return float(image_psnr), float(image_ssim)


def validation_model(model, loss, channels):
    """A Keras model [padded noisy image, clean image] -> [loss, PSNR, SSIM] of `model`'s prediction (ImageScores
    with `loss`): through predict_on_batch, one compiled program per image size predicts and scores an image,
    and only its three numbers come back from the device."""
    noisy, clean = keras.Input((None, None, channels)), keras.Input((None, None, channels))
    return keras.Model([noisy, clean], ImageScores(loss)(clean, model(noisy)), name="validation")


class ImageValidation(keras.callbacks.Callback):
    """Validates on images of different sizes and adds val_loss, val_PSNR and val_SSIM to the epoch logs.

    Keras' TensorFlow data adapter fixes one tensor shape from the first two
    validation batches, so a folder of differently sized images cannot go
    through fit(validation_data=...). Each (noisy, clean) pair, float32 arrays
    of shape (1, H, W, C), goes through a `validation_model` of the training
    model: the noisy image mirrored up to a multiple of PAD_MULTIPLE (as
    `predict_padded` does), predicted, cropped back and scored with `loss`
    (what compile() got), PSNR and SSIM in one compiled program per image size;
    the three are averaged over the images. It must come before the callbacks
    that read val_* (checkpoint, history). On JAX (one device), the programs are
    compiled on a helper thread from the start of training (AheadCompiledScores),
    so the first validation does not hold the accelerator up while XLA compiles.
    """

    def __init__(self, pairs, loss, replicas=1):
        super().__init__()
        # Padded once: the same inputs every epoch. Copies of a pair fill a data-parallel batch evenly.
        self.inputs = [[fill_to_multiple(reflect_padded(noisy), replicas), fill_to_multiple(clean, replicas)]
                       for noisy, clean in pairs]
        self.loss = loss
        self.replicas = replicas
        self.scores = None  # the validation_model, built within fit (and its distribution) at the first use
        self.ahead = None  # AheadCompiledScores on JAX, from on_train_begin

    def on_train_begin(self, logs=None):
        self.build_scores()
        if keras.backend.backend() == "jax" and self.replicas == 1 and keras.distribution.distribution() is None:
            self.ahead = AheadCompiledScores(self.scores, self.inputs)

    def build_scores(self):
        if self.scores is None:
            self.scores = validation_model(self.model, self.loss, self.inputs[0][1].shape[-1])

    def on_epoch_end(self, epoch, logs=None):
        self.build_scores()
        if self.ahead is not None:
            outputs = self.ahead(self.inputs)
        else:
            outputs = [self.scores.predict_on_batch(inputs) for inputs in self.inputs]
        per_image = np.array([np.asarray(output, np.float64)[0] for output in outputs])
        logs.update(dict(zip(("val_loss", "val_PSNR", "val_SSIM"), (float(v) for v in per_image.mean(axis=0)))))


class AheadCompiledScores:
    """JAX only: a validation_model's function of its variables and [noisy, clean], jitted, with the program for
    every input shape of `inputs` compiled ahead on a helper thread (from ShapeDtypeStructs: nothing runs on the
    device, and the model's variables, which training frees during an epoch, are not read). Called with a list of
    inputs, it waits for those compilations, then gives what predict_on_batch would give for each ([loss, PSNR,
    SSIM] rows), as JAX arrays: all are dispatched before any is read, so the device runs them back to back. A
    shape that failed to compile ahead compiles at its call instead."""

    def __init__(self, scores, inputs):
        import jax

        self.scores = scores
        self.function = jax.jit(self.scores_of)
        shapes = {tuple(tuple(array.shape) for array in pair): pair for pair in inputs}
        self.compiling = ThreadPoolExecutor(max_workers=1, thread_name_prefix="validation-compile").submit(
            self.compile_all, [[jax.ShapeDtypeStruct(a.shape, a.dtype) for a in pair] for pair in shapes.values()])

    def scores_of(self, trainable, non_trainable, inputs):
        outputs, _ = self.scores.stateless_call(trainable, non_trainable, inputs, training=False)
        return outputs

    def variable_specs(self):
        import jax

        return [[jax.ShapeDtypeStruct(v.shape, v.dtype) for v in variables]
                for variables in (self.scores.trainable_variables, self.scores.non_trainable_variables)]

    def compile_all(self, input_specs):
        """Compiles the program of each input shape; returns how many (a failure leaves the rest to the calls)."""
        compiled = 0
        try:
            trainable, non_trainable = self.variable_specs()
            for pair in input_specs:
                self.function.lower(trainable, non_trainable, pair).compile()
                compiled += 1
        except Exception as error:  # noqa: BLE001 (any: the calls compile what is missing)
            warnings.warn(f"validation: compiling ahead stopped ({type(error).__name__}: {error}); "
                          f"the first validation compiles the rest")
        return compiled

    def __call__(self, inputs_list):
        self.compiling.result()
        trainable = [v.value for v in self.scores.trainable_variables]
        non_trainable = [v.value for v in self.scores.non_trainable_variables]
        return [self.function(trainable, non_trainable, inputs) for inputs in inputs_list]


class EpochWriter:
    """Writes the files of an epoch's end (BestCheckpoint's checkpoint, HistorySaver's history, EpochBackup's
    --resume backup) on one helper thread, in the order given, while the next epoch trains: on an accelerator the
    device would otherwise wait for each save (0.17-0.2 s of mostly Python and HDF5 for the SRResNet on a CPU
    core; benchmarks/bench_saves.py).

    They are written from a copy of the model (`source`): same layers, weights and optimizer state, taken when
    the epoch ends (one copy per array, 0.04-0.06 s for the SRResNet on a CPU), because the next epoch changes
    the model's own variables (on JAX it even frees them until the epoch ends). A write that fails (a full disk)
    skips those queued after it and is raised in the training thread at the next epoch's end or when training
    ends (`wait`); a run that stops early still finishes its queued writes before Python exits.
    `background=False` writes at once, from the model itself: data-parallel runs, whose variables are spread
    over devices.
    """

    def __init__(self, background=True):
        self.background = background
        self.copy = None  # the model's copy the writes read from, built at the first epoch's end
        self.copied_epoch = None
        self.failed = False
        self.pending = []
        self.executor = None

    def source(self, model, epoch):
        """What to save `epoch`'s state from: `model` itself, or its copy taken at this epoch's end."""
        if not self.background:
            return model
        if self.copied_epoch != epoch:
            self.wait()  # the copy is free again: the last epoch's writes are done
            if self.copy is None:
                self.copy = saveable_copy(model)
            copy_state(model, self.copy)
            self.copied_epoch = epoch
        return self.copy

    def submit(self, write, *args):
        """Calls write(*args) now or, in the background, after the writes submitted before it."""
        if not self.background:
            write(*args)
            return
        if self.executor is None:
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="epoch-writer")
        self.pending.append(self.executor.submit(self._unless_failed, write, *args))

    def _unless_failed(self, write, *args):
        if self.failed:
            return
        try:
            write(*args)
        except BaseException:
            self.failed = True
            raise

    def wait(self):
        """Blocks until the submitted writes are done; raises the first one's error, if one failed."""
        pending, self.pending = self.pending, []
        for write in pending:
            write.result()


def saveable_copy(model):
    """A new model with `model`'s layers (from its config, fresh variables) and a built copy of its optimizer:
    its save_weights writes the same HDF5 groups and datasets as `model`'s."""
    copy = type(model).from_config(model.get_config())
    optimizer = keras.optimizers.deserialize(keras.optimizers.serialize(model.optimizer))
    copy.compile(optimizer=optimizer)  # save_weights writes the optimizer's variables of a compiled model
    optimizer.build(copy.trainable_variables)
    return copy


def copy_state(model, copy):
    """Sets the weights and optimizer state of `copy` (a saveable_copy) to copies of `model`'s. Copies: on JAX
    assigning an array keeps a reference, and the next training step frees (donates) the model's arrays."""
    targets, sources = copy.weights + copy.optimizer.variables, model.weights + model.optimizer.variables
    if [(v.shape, v.dtype) for v in targets] != [(v.shape, v.dtype) for v in sources]:
        raise ValueError("the model's copy for saving does not match the model")
    for target, source in zip(targets, sources):
        target.assign(ops.copy(source.value))


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the weights each time `monitor` beats its best value (mode max), like Keras' ModelCheckpoint
    with save_best_only, but atomically (`save_weights_atomically`): a failed or killed write leaves the
    earlier checkpoints whole and no partial file under a checkpoint's name. The write goes through `writer`
    (an EpochWriter: in the background, from a copy of this epoch's state).

    `path_template` is formatted with epoch (1-based) and the epoch logs; `best` carries the best value of
    an interrupted run over to its continuation.
    """

    def __init__(self, path_template, writer, monitor="val_PSNR", best=None):
        super().__init__()
        self.path_template = str(path_template)
        self.writer = writer
        self.monitor = monitor
        self.best = best
        self.written = None  # (0-based epoch, path) of the last checkpoint submitted to the writer

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value):
            print(f"\nEpoch {epoch + 1}: {self.monitor} is {value}: no checkpoint")
            return
        if self.best is not None and value <= self.best:
            print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")
            return
        path = self.path_template.format(epoch=epoch + 1, **logs)
        previous = "None" if self.best is None else f"{self.best:.5f}"
        print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {previous} to {value:.5f}, saving weights to {path}")
        self.writer.submit(save_weights_atomically, self.writer.source(self.model, epoch), path)
        self.best = value
        self.written = (epoch, path)

    def on_train_end(self, logs=None):
        self.writer.wait()


SAVED_OBJECT_KINDS = ("Operation", "Layer", "Functional", "Sequential", "Metric", "Optimizer", "Loss")


def cache_keras_save_skipsets():
    """Works around a Keras 3 (up to 3.15 at least) slip that makes every save_weights build some hundred
    throw-away layers: saving_lib.get_attr_skipset caches its per-kind attribute set under
    "saving_attr_skipset_<kind>" but looks it up under "saving_attr_skiplist_<kind>", so it never finds it.
    Storing the sets under the looked-up name too takes a fifth to a quarter off each save of the SRResNet
    (weights and optimizer state: BestCheckpoint, the --resume backup; benchmarks/bench_saves.py). Keras keeps
    them per thread, until clear_session(); call this in the thread that saves, before it saves. Does nothing
    where Keras' internals differ."""
    try:
        from keras.src.backend.common import global_state
        from keras.src.saving import saving_lib

        for kind in SAVED_OBJECT_KINDS:
            if global_state.get_global_attribute(f"saving_attr_skiplist_{kind}") is None:
                global_state.set_global_attribute(f"saving_attr_skiplist_{kind}", saving_lib.get_attr_skipset(kind))
    except (ImportError, AttributeError, ValueError):
        return


def write_atomically(path, write):
    """write(temporary) into a file beside `path` ('.partial.' + its name, which no 'weights.*' pattern matches),
    then rename it over `path`: a failure or a kill at any moment leaves the old file or the new one, never a
    partial one under the name."""
    folder, name = os.path.split(str(path))
    os.makedirs(folder or ".", exist_ok=True)
    temporary = os.path.join(folder, ".partial." + name)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_json_atomically(path, data):
    """`data` (JSON-able) as JSON text at `path`, atomically (write_atomically)."""
    write_atomically(path, lambda temporary: Path(temporary).write_text(json.dumps(data)))


def file_sha256(path):
    """Hex SHA-256 of the file's bytes, read 1 MiB at a time (a backup's weights and Adam state: 15 MB for the
    SRResNet, about 10 ms)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_weights_atomically(model, path):
    """model.save_weights(path), atomically (write_atomically)."""
    cache_keras_save_skipsets()
    write_atomically(path, model.save_weights)


class HistorySaver(keras.callbacks.Callback):
    """Writes {"history": {metric: [per-epoch values]}} to an .npz after every epoch, through `writer` (an
    EpochWriter; by default at once): after the epoch's checkpoint and before its backup, as in a run without
    the writer, and not at all once one of them failed.

    The file is replaced atomically, so a run killed at any moment keeps the
    history of its completed epochs.
    """

    def __init__(self, path, history=None, writer=None):
        super().__init__()
        self.path = str(path)
        self.history = {k: list(v) for k, v in (history or {}).items()}
        self.writer = writer or EpochWriter(background=False)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.writer.submit(save_history, self.path, {key: list(values) for key, values in self.history.items()})

    def on_train_end(self, logs=None):
        self.writer.wait()


class StopOnNaN(keras.callbacks.Callback):
    """Stops training at the first NaN/inf loss and says what to change (`advice`).

    async_safe: on JAX and torch, Keras then runs the batch hooks on a helper thread, so reading the loss
    here does not make the training loop wait for the accelerator after every step. The price: the loop
    may have queued the rest of the epoch by the time a NaN is seen, so training stops at the end of that
    epoch at the latest (a non-finite loss stays non-finite, so it is never missed). TensorFlow calls the
    hooks in step and stops at once.
    """

    async_safe = True

    def __init__(self, advice):
        super().__init__()
        self.advice = advice
        self.stopped_at = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if self.stopped_at is None and loss is not None and not math.isfinite(float(loss)):
            self.stopped_at = batch
            self.model.stop_training = True
            print(f"\nthe loss became {loss} at batch {batch + 1}: training stopped. {self.advice}")


def rough_duration(seconds):
    """'40 s', '12 min' or '3.5 h': a time left, as precise as an estimate is."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class ProgressLines(keras.callbacks.Callback):
    """A line every `interval_s` seconds within an epoch, for output that is no terminal (a log file, a pipe),
    where Keras (verbose=2) says nothing until the epoch ends, and an epoch of the original's defaults takes
    about an hour on a 2-core CPU: step, mean loss so far, seconds a step, the time left in the epoch.

    async_safe: it reads the loss (a wait for the device) only when it prints, at most once per interval.
    """

    async_safe = True

    def __init__(self, nb_epochs, steps, interval_s=60.0, clock=time.monotonic):
        super().__init__()
        self.nb_epochs, self.steps, self.interval_s, self.clock = nb_epochs, steps, interval_s, clock
        self.on_epoch_begin(0)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.epoch_start = epoch, self.clock()
        self.last_line = self.epoch_start

    def on_train_batch_end(self, batch, logs=None):
        now = self.clock()
        if now - self.last_line < self.interval_s:
            return
        self.last_line, done = now, batch + 1
        per_step = (now - self.epoch_start) / done
        loss = (logs or {}).get("loss")
        loss_text = f", loss {float(loss):.4g} (mean so far)" if loss is not None else ""
        print(f"epoch {self.epoch + 1}/{self.nb_epochs}: step {done}/{self.steps}{loss_text}, {per_step:.2f} s a "
              f"step, about {rough_duration(per_step * (self.steps - done))} left in this epoch", flush=True)


class EpochBackup(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore into `backup_dir` (what --resume restores: weights, optimizer state, epoch), with
    the previous epoch's files kept beside (double_checkpoint) and never deleted by training's end. Its files are
    written as Keras writes them, through `writer` (the EpochWriter of `checkpoint`, a BestCheckpoint called
    before this). Where `checkpoint` has just written this epoch's weights and optimizer state, the backup's
    weights file is a copy of that file instead of a second serialisation of the same state (0.13-0.2 s for the
    SRResNet).

    async_safe: it saves once per epoch; its per-batch hook does nothing that needs the step's results.
    """

    async_safe = True

    def __init__(self, backup_dir, checkpoint, run_flags=None):
        super().__init__(backup_dir, delete_checkpoint=False, double_checkpoint=True)
        self.checkpoint = checkpoint
        self.writer = checkpoint.writer
        self.run_flags = run_flags  # a dict written beside every backup as RUN_FLAGS_FILE (what train.py was given)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        broken = [f"{name} is {logs[name]}" for name in ("loss", "val_loss")
                  if name in logs and not math.isfinite(logs[name])]
        if broken:
            # Weights whose loss or validation is NaN/inf are no state to resume from: the backup keeps the last
            # good epoch (where there is none, --resume says there is nothing to resume).
            print(f"\nEpoch {epoch + 1}: {', '.join(broken)}: not backed up (--resume continues after the last "
                  f"epoch whose loss and val_loss were finite)")
            return
        written = self.checkpoint.written
        checkpoint = written[1] if written is not None and written[0] == epoch else None
        source = None if checkpoint else self.writer.source(self.model, epoch)
        self.writer.submit(self.write_backup, epoch, source, checkpoint)

    def write_backup(self, epoch, source, checkpoint):
        """Keras' backup of `epoch` (0-based): the last backup's files copied to *.bkp, then the weights (a copy of
        the file `checkpoint`, or `source` saved) and the number of completed epochs with the weights file's
        digest. Each file is replaced atomically, so a kill leaves every file whole; one between the weights and
        the epoch count leaves the weights one epoch ahead, which the digest tells (on_train_begin)."""
        for current, previous in ((self._weights_path, self._prev_weights_path),
                                  (self._training_metadata_path, self._prev_training_metadata_path)):
            if os.path.exists(current):
                write_atomically(previous, functools.partial(shutil.copyfile, current))
        if checkpoint:
            write_atomically(self._weights_path, functools.partial(shutil.copyfile, checkpoint))
        else:
            save_weights_atomically(source, self._weights_path)  # (caches Keras' skipsets in the thread that saves)
        metadata = {"epoch": epoch + 1, "batch": 0, "weights_sha256": file_sha256(self._weights_path)}
        if self.run_flags is not None:  # (before the epoch count: a kill between them leaves the older count)
            write_json_atomically(os.path.join(self.backup_dir, RUN_FLAGS_FILE), self.run_flags)
        write_json_atomically(self._training_metadata_path, metadata)

    def on_train_begin(self, logs=None):
        self.match_weights_to_epoch_count()
        super().on_train_begin(logs)

    def match_weights_to_epoch_count(self):
        """Where a kill came between the weights and the epoch count, the weights are the next epoch's and the
        previous weights (*.bkp) are the ones the count's digest names: put those back before Keras restores."""
        try:
            expected = json.loads(Path(self._training_metadata_path).read_text()).get("weights_sha256")
        except (OSError, ValueError, AttributeError):
            return  # no backup, or one Keras itself wrote (no digest); a damaged file is train.py's to report
        if not expected or not os.path.exists(self._weights_path) or file_sha256(self._weights_path) == expected:
            return
        if os.path.exists(self._prev_weights_path) and file_sha256(self._prev_weights_path) == expected:
            print(f"{self.backup_dir}: the backup was interrupted while it saved; resuming from its last whole epoch")
            write_atomically(self._weights_path, functools.partial(shutil.copyfile, self._prev_weights_path))

    def on_train_end(self, logs=None):
        self.writer.wait()


def save_history(path, history):
    """Atomically write `history` (dict of lists) as np.savez(path, history=history).

    Written to a temporary file beside `path`, then renamed over it: a kill at
    any moment leaves either the old or the new file, never a partial one.
    """
    def write(temporary):
        with open(temporary, "wb") as handle:  # a handle: np.savez would add .npz to a name
            np.savez(handle, history=history)
    write_atomically(path, write)


BACKUP_FOLDER = "backup"  # inside the output folder: weights, optimizer state and epoch of the last epoch
RUN_FLAGS_FILE = "run_flags.json"  # in the backup folder: the flags the backed-up run was last given


def backup_epoch(output_path):
    """Number of completed epochs in the backup of `output_path`, or None where there is no backup; a
    ValueError where its epoch count cannot be read (a file damaged outside training, which writes atomically)."""
    metadata = os.path.join(str(output_path), BACKUP_FOLDER, "training_metadata.json")
    if not os.path.isfile(metadata):
        return None
    try:
        with open(metadata) as handle:
            return int(json.load(handle)["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{metadata} is damaged (no epoch count in it)") from None


def backup_run_flags(output_path):
    """The {flag: value} dict the backup of `output_path` recorded (EpochBackup's run_flags), or None where it
    has none or cannot be read (a backup from before the flags were recorded)."""
    try:
        return json.loads(Path(str(output_path), BACKUP_FOLDER, RUN_FLAGS_FILE).read_text())
    except (OSError, ValueError):
        return None


def backup_weights_path(output_path):
    """The weights file of the backup in `output_path` (Keras' BackupAndRestore names it)."""
    return os.path.join(str(output_path), BACKUP_FOLDER, "latest.weights.h5")


def training_callbacks(output_path, validation_pairs, nb_epochs, lr, loss, nan_advice="Lower the learning rate.",
                       history=None, replicas=1, run_flags=None, progress_lines=None):
    """The callbacks of a training run, in order: validation, LR schedule, best-val_PSNR checkpoint,
    history, backup for --resume, NaN stop, L0 annealing where `loss` (what compile() got) is an L0Loss, and
    with `progress_lines` (steps per epoch) a ProgressLines for output that is no terminal.

    `run_flags` (a JSON-able dict) is written with every backup. `history` (per-epoch lists of the completed
    epochs) continues an interrupted run; the backup is written after the history, so a kill between the two
    leaves the history ahead, never behind. The three
    files of an epoch are written in that order by one EpochWriter, on a helper thread from a copy of the
    epoch's state while the next epoch trains (at once in data-parallel runs, `replicas` > 1).
    """
    checkpoint = os.path.join(str(output_path), "weights.{epoch:03d}-{val_loss:.3f}-{val_PSNR:.5f}.weights.h5")
    best_so_far = max((history or {}).get("val_PSNR", []), default=None)
    writer = EpochWriter(background=replicas == 1)
    best = BestCheckpoint(checkpoint, writer, monitor="val_PSNR", best=best_so_far)
    callbacks = [
        ImageValidation(validation_pairs, loss, replicas),
        keras.callbacks.LearningRateScheduler(lambda epoch: learning_rate_at(epoch, nb_epochs, lr)),
        best,
        HistorySaver(os.path.join(str(output_path), "history.npz"), history, writer),
        EpochBackup(os.path.join(str(output_path), BACKUP_FOLDER), best, run_flags),
        StopOnNaN(nan_advice),
    ]
    if isinstance(loss, L0Loss):
        callbacks.append(AnnealL0Gamma(loss, nb_epochs))
    if progress_lines:
        callbacks.append(ProgressLines(nb_epochs, progress_lines))
    return callbacks


# ------------------------------------------------------------------ weights
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


def stored_weight_count(path):
    """Number of model weight values in a .weights.h5 or Keras 2 .hdf5 file (optimizer state excluded)."""
    return sum(math.prod(shape) for shape in stored_weight_shapes(path))


def channels_of_weights(path):
    """The image channels (3 colour, 1 gray) of the network whose weights the file holds, read from its
    convolution kernels (height, width, in, out) without building a network: both networks' first
    convolution takes the image's channels, and every other one takes more; 3 where that is neither 1 nor 3
    (load_weights then says what the file holds)."""
    inputs = [shape[2] for shape in stored_weight_shapes(path) if len(shape) == 4]
    return min(inputs) if inputs and min(inputs) in (1, 3) else 3


def weights_mismatch(model, path):
    """None where the weight file at `path` holds as many weights as `model`; else why not, in a phrase naming
    the flags of the network the file fits (--model, and --channels where its channels differ)."""
    stored, expected = stored_weight_count(path), model.count_params()
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
    """Load Keras 3 `.weights.h5` or an original Keras 2 `.hdf5`/`.h5` checkpoint into `model`.

    Keras 2 files (full model or weights only) are matched layer by layer in
    build order, which is the order the original code built them in. A file
    of another architecture is refused with a one-line ValueError.
    """
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


# --------------------------------------------------------------- inference
# Inputs are padded up to a multiple of this many pixels before prediction: a folder of many image sizes
# then compiles one graph per padded shape (JAX, XLA), not one per size. 64 keeps the extra pixels of a
# typical photo to a few per cent.
PAD_MULTIPLE = 64


def padded_size(size, multiple=PAD_MULTIPLE):
    """`size` rounded up to a multiple of `multiple`."""
    return -(-size // multiple) * multiple


def fill_to_multiple(batch, replicas):
    """`batch` with its last item repeated until its length is a multiple of `replicas` (so a data-parallel
    prediction splits it evenly among devices); itself, no copy, where it already is."""
    if len(batch) % replicas == 0:  # no extra copy of a large photo in the usual one-replica case
        return batch
    return np.concatenate([batch, np.repeat(batch[-1:], -len(batch) % replicas, axis=0)])


def reflect_padded(batch, multiple=PAD_MULTIPLE):
    """A (n, H, W, C) batch mirrored (numpy 'reflect') at the bottom and right up to multiples of `multiple`, so
    that edge pixels see image-like context and the padded shapes repeat across images."""
    height, width = batch.shape[1:3]
    padding = ((0, 0), (0, padded_size(height, multiple) - height), (0, padded_size(width, multiple) - width), (0, 0))
    return np.pad(batch, padding, mode="reflect")


def predict_padded(model, batch, multiple=PAD_MULTIPLE, replicas=1):
    """The model's float32 output for a (n, H, W, C) float32 0-255 batch, same shape.

    The batch is mirrored up to a multiple of `multiple` (`reflect_padded`) and
    the output is cropped back. A model trained data-parallel
    over `replicas` devices gets a batch whose length is a multiple of that (the last image repeated):
    its batch is split evenly among them.
    """
    count, height, width = batch.shape[:3]
    output = model.predict_on_batch(fill_to_multiple(reflect_padded(batch, multiple), replicas))
    return np.asarray(output, dtype=np.float32)[:count, :height, :width]


# Tiled prediction: neighbouring tiles share TILE_OVERLAP pixels. Each tile ignores the outer part of the
# shared band (its outputs there lack context: the SRResNet sees 35 pixels around a pixel) and the two
# tiles cross-fade linearly over TILE_BLEND pixels in its middle, so seams neither show nor shift values.
TILE_BLEND = 16


def tile_starts(size, tile, overlap):
    """Offsets of the tiles that cover 0..size, `overlap` pixels shared by neighbours; the last ends at `size`."""
    if size <= tile:
        return [0]
    return list(range(0, size - tile, tile - overlap)) + [size - tile]


def tile_weights(length, start, size, overlap):
    """1-D blending weights of the tile [start, start + length) of 0..size, float32 in [0, 1].

    Zero over the outer (overlap - blend) / 2 pixels of every edge that lies
    inside the image, then rising linearly over `blend` pixels: in a shared
    band the two tiles' weights add up to 1.
    """
    blend = min(TILE_BLEND, overlap)
    dead = (overlap - blend) // 2
    position = np.arange(length, dtype=np.float32)
    weights = np.ones(length, np.float32)
    if start > 0:
        weights = np.minimum(weights, np.clip((position - dead + 1) / (blend + 1), 0, 1))
    if start + length < size:
        weights = np.minimum(weights, np.clip((length - position - dead) / (blend + 1), 0, 1))
    return weights


def predict_tiled(model, batch, tile, overlap=TILE_OVERLAP):
    """`predict_padded` in tile x tile pieces (tile and overlap multiples of 16): memory bounded by the tile.

    The batch is padded as predict_padded pads it, then cut into tiles that
    share `overlap` pixels, which are blended by `tile_weights`; every tile
    has one shape, so one compiled graph serves any image size.
    """
    height, width = batch.shape[1:3]
    padding = ((0, 0), (0, padded_size(height) - height), (0, padded_size(width) - width), (0, 0))
    padded = np.pad(batch, padding, mode="reflect")
    total = np.zeros(padded.shape, np.float32)
    weight_sum = np.zeros(padded.shape[1:3], np.float32)
    for top in tile_starts(padded.shape[1], tile, overlap):
        for left in tile_starts(padded.shape[2], tile, overlap):
            piece = padded[:, top:top + tile, left:left + tile]
            rows, columns = piece.shape[1:3]
            weights = np.outer(tile_weights(rows, top, padded.shape[1], overlap),
                               tile_weights(columns, left, padded.shape[2], overlap))
            output = np.asarray(model.predict_on_batch(piece), dtype=np.float32)
            total[:, top:top + rows, left:left + columns] += output * weights[:, :, np.newaxis]
            weight_sum[top:top + rows, left:left + columns] += weights
    return (total / weight_sum[:, :, np.newaxis])[:, :height, :width]


def predict_images(model, batch, tile=0, overlap=TILE_OVERLAP):
    """float32 model output for a (n, H, W, C) 0-255 batch of any size: in tiles where tile > 0, else whole."""
    return predict_tiled(model, batch, tile, overlap) if tile else predict_padded(model, batch)


def denoise(model, image, tile=0, overlap=TILE_OVERLAP):
    """Denoise one HxWxC uint8 image (BGR 0-255) and return HxWxC uint8; tile > 0: in tiles of that size."""
    prediction = predict_images(model, image[np.newaxis].astype(np.float32), tile, overlap)[0]
    return np.clip(np.rint(prediction), 0, 255).astype(np.uint8)
