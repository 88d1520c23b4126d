"""Networks, PSNR, SSIM, L0 loss and its annealing, learning-rate schedule, callbacks and padded prediction."""
import cli

cli.import_keras_quietly()
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import callbacks  # noqa: E402
import inference  # noqa: E402
import inference_graph  # noqa: E402
import mixed_precision  # noqa: E402
import model as models  # noqa: E402
import neighbor2neighbor  # noqa: E402
from plot_history import load_history  # noqa: E402


def original_schedule(epoch_idx, epochs, initial_lr):
    """The original train.py's Schedule.__call__, written out as its if/elif chain."""
    if epoch_idx < epochs * 0.25:
        return initial_lr
    elif epoch_idx < epochs * 0.50:
        return initial_lr * 0.5
    elif epoch_idx < epochs * 0.75:
        return initial_lr * 0.25
    return initial_lr * 0.125


@pytest.mark.parametrize("name, params", [("srresnet", 1_231_683), ("unet", 31_031_875)])
def test_parameter_counts_match_the_original(name, params):
    assert models.get_model(name).count_params() == params


def small_network(name, channels=3):
    """The network `name` at its full depth, with few filters where the test needs no trained size (the UNet's
    31 M weights take JAX 20 s to initialise)."""
    return models.get_unet_model(channels, start_filters=4) if name == "unet" else models.get_model(name, channels)


@pytest.mark.parametrize("name, shape", [("srresnet", (1, 24, 40, 3)), ("unet", (1, 32, 48, 3))])
def test_models_are_fully_convolutional(name, shape):
    output = small_network(name).predict(np.zeros(shape, np.float32), verbose=0)
    assert output.shape == shape


def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="srresnet, unet"):
        models.get_model("resnet")


def test_psnr_matches_numpy_and_clips_the_prediction():
    rng = np.random.default_rng(0)
    y_true = rng.uniform(0, 255, (4, 16, 16, 3)).astype(np.float32)
    y_pred = (y_true + rng.normal(0, 20, y_true.shape)).astype(np.float32)  # some values outside 0-255
    clipped = np.clip(y_pred, 0, 255).astype(np.float64)
    expected = 10 * np.log10(255.0**2 / np.mean((clipped - y_true) ** 2))
    assert float(models.psnr(y_true, y_pred)) == pytest.approx(expected, abs=1e-3)
    assert models.psnr_metric().name == "PSNR"


def test_ssim_matches_skimage_and_is_one_for_equal_images():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    clean = rng.uniform(0, 255, (40, 56, 3)).astype(np.float32)
    clean = (clean + np.roll(clean, 1, axis=0) + np.roll(clean, 1, axis=1)) / 3  # some structure
    noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.float32)
    expected = structural_similarity(clean, noisy, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False)
    assert abs(float(models.ssim(clean[None], noisy[None])) - expected) < 1e-4
    assert abs(float(models.ssim(clean[None], clean[None])) - 1) < 1e-5


def test_l0_loss_matches_formula_for_any_gamma():
    rng = np.random.default_rng(1)
    y_true = rng.uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    y_pred = rng.uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    loss = models.L0Loss()
    for gamma in (2.0, 1.0, 0.5):
        loss.gamma.assign(gamma)
        expected = np.mean((np.abs(y_true - y_pred) + 1e-8) ** gamma)
        assert float(loss(y_true, y_pred)) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("nb_epochs", [60, 4, 7])
def test_learning_rate_schedule_is_the_originals(nb_epochs):
    for epoch in range(nb_epochs):
        expected = original_schedule(epoch, nb_epochs, 0.01)
        assert models.learning_rate_at(epoch, nb_epochs, 0.01) == pytest.approx(expected)
    assert [models.learning_rate_at(e, 4, 1.0) for e in range(4)] == [1.0, 0.5, 0.25, 0.125]


def test_l0_gamma_anneals_from_2_towards_0():
    assert [models.l0_gamma(e, 4) for e in range(4)] == [2.0, 1.5, 1.0, 0.5]


def tiny_model():
    """One 1x1 conv with a zero kernel: predicts 0, so losses have closed forms."""
    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.Conv2D(3, 1, kernel_initializer="zeros", bias_initializer="zeros")(inputs)
    return keras.Model(inputs, outputs)


class TraceCounter(keras.callbacks.Callback):
    """How many times `model.train_step` has run as Python at the end of every epoch (`per_epoch`): once per trace
    where the step is compiled (TensorFlow, JAX), so a count that stays the same compiled the step once."""

    def __init__(self, model):
        super().__init__()
        self.calls, self.per_epoch = 0, []
        train_step = model.train_step

        def counted(*args, **kwargs):
            self.calls += 1
            return train_step(*args, **kwargs)

        model.train_step = counted

    def on_epoch_end(self, epoch, logs=None):
        self.per_epoch.append(self.calls)

    def traced_once(self):
        """True where the count did not grow after the first epoch (always on PyTorch, which compiles nothing)."""
        return keras.backend.backend() == "torch" or self.per_epoch == [self.per_epoch[0]] * len(self.per_epoch)


def test_training_applies_annealed_gamma_schedule_and_writes_history(tmp_path):
    """fit() with the suite's callbacks: the loss of epoch e is 2 ** gamma(e) (prediction 0, target 2),
    the learning rate follows the schedule, history.npz holds every epoch, the best checkpoint exists."""
    nb_epochs, lr = 4, 1e-30  # a negligible step keeps the prediction at 0
    model, l0_loss = tiny_model(), models.L0Loss()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss=l0_loss,
                  metrics=[models.psnr_metric(), l0_loss.gamma_metric])
    x, y = np.ones((4, 8, 8, 3), np.float32), np.full((4, 8, 8, 3), 2.0, np.float32)
    # Validation images of two sizes, as a real folder has.
    validation = [(np.ones((1, 16, 32, 3), np.float32), np.full((1, 16, 32, 3), 2.0, np.float32)),
                  (np.ones((1, 48, 16, 3), np.float32), np.full((1, 48, 16, 3), 2.0, np.float32))]
    traces = TraceCounter(model)
    run_callbacks = callbacks.training_callbacks(tmp_path, callbacks.ImageValidation(validation, l0_loss), l0_loss,
                                                 nb_epochs=nb_epochs, lr=lr, seed=0)  # l0 -> annealing
    model.fit(x, y, batch_size=4, epochs=nb_epochs, verbose=0, callbacks=[*run_callbacks, traces])
    assert traces.traced_once(), traces.per_epoch  # the compiled step read each epoch's gamma
    history = load_history(tmp_path)
    np.testing.assert_allclose(history["l0_gamma"], [models.l0_gamma(e, nb_epochs) for e in range(nb_epochs)])
    expected_loss = [2.0 ** models.l0_gamma(e, nb_epochs) for e in range(nb_epochs)]
    np.testing.assert_allclose(history["loss"], expected_loss, rtol=1e-4)
    np.testing.assert_allclose(history["val_loss"], expected_loss, rtol=1e-4)
    np.testing.assert_allclose(history["val_PSNR"], 10 * np.log10(255.0**2 / 4), rtol=1e-5)
    np.testing.assert_allclose(history["learning_rate"],
                               [original_schedule(e, nb_epochs, lr) for e in range(nb_epochs)], rtol=1e-5)
    assert all(len(history[key]) == nb_epochs for key in ("loss", "val_loss", "PSNR", "val_PSNR", "val_SSIM"))
    checkpoints = sorted(tmp_path.glob("weights.*.weights.h5"))
    assert checkpoints and checkpoints[0].name.startswith("weights.001-")
    restored = tiny_model()
    restored.set_weights([np.ones_like(w) for w in restored.get_weights()])  # so that a load that did nothing shows
    models.load_weights(restored, checkpoints[-1])
    for saved, trained in zip(restored.get_weights(), model.get_weights()):  # lr 1e-30: unchanged since epoch 1
        np.testing.assert_allclose(saved, trained, rtol=1e-6, atol=1e-20)


def test_no_callback_makes_the_training_loop_wait_for_every_step(tmp_path):
    """Keras runs batch hooks on a helper thread (JAX, torch) only if every callback is async-safe or has none;
    otherwise it reads the loss back after every step and the accelerator idles while the host works."""
    loss = models.L0Loss()
    run_callbacks = callbacks.training_callbacks(tmp_path, callbacks.ImageValidation([], loss), loss, nb_epochs=4,
                                                 lr=0.001, seed=0, progress_lines=10)
    assert isinstance(run_callbacks[-1], callbacks.ProgressLines)
    hooks = ("on_batch_end", "on_train_batch_end")
    blocking = [type(c).__name__ for c in run_callbacks if not getattr(c, "async_safe", False)
                and any(getattr(type(c), hook) is not getattr(keras.callbacks.Callback, hook) for hook in hooks)]
    assert not blocking, blocking


def test_progress_lines_say_step_loss_and_time_left_once_per_interval(capsys):
    """Where the output is no terminal: a line per interval within an epoch, with the step, the loss, the
    seconds a step and the time left in the epoch; none sooner, and the clock starts again with each epoch."""
    now = [100.0]
    progress = callbacks.ProgressLines(nb_epochs=3, steps=1000, interval_s=60, clock=lambda: now[0])
    progress.on_epoch_begin(1)
    for batch in range(40):  # 2 s a step: a line after the 30th step (60 s), none at the others
        now[0] += 2.0
        progress.on_train_batch_end(batch, {"loss": np.float32(812.25)})
    assert capsys.readouterr().out.splitlines() == [
        "epoch 2/3: step 30/1000, loss 812.2 (mean so far), 2.00 s a step, about 32 min left in this epoch"]
    progress.on_epoch_begin(2)
    now[0] += 59.0
    progress.on_train_batch_end(0, {})
    assert capsys.readouterr().out == ""  # 59 s into the new epoch
    now[0] += 1.0
    progress.on_train_batch_end(1, None)
    assert capsys.readouterr().out == "epoch 3/3: step 2/1000, 30.00 s a step, about 8.3 h left in this epoch\n"


def test_history_file_is_written_after_every_epoch(tmp_path):
    saver = callbacks.HistorySaver(tmp_path / "history.npz")
    saver.on_epoch_end(0, {"loss": 3.0, "val_PSNR": 20.0})
    first = load_history(tmp_path)
    saver.on_epoch_end(1, {"loss": 2.0, "val_PSNR": 21.0})
    second = load_history(tmp_path)
    assert first == {"loss": [3.0], "val_PSNR": [20.0]}
    assert second == {"loss": [3.0, 2.0], "val_PSNR": [20.0, 21.0]}
    assert [p.name for p in tmp_path.iterdir()] == ["history.npz"]  # no temporary file left behind


def test_weights_round_trip_in_keras3_format(tmp_path):
    original = models.get_model("srresnet")
    path = tmp_path / "w.weights.h5"
    original.save_weights(path)
    restored = models.get_model("srresnet")
    models.load_weights(restored, path)
    for a, b in zip(original.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name, channels", [("srresnet", 1), ("srresnet", 3), ("unet", 1)])
def test_channels_are_read_off_the_weight_file(tmp_path, name, channels):
    path = tmp_path / "w.weights.h5"
    small_network(name, channels).save_weights(path)
    assert models.channels_of_weights(path) == channels


def test_wrong_weight_file_suffix_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        models.load_weights(models.get_model("srresnet"), tmp_path / "w.bin")


def test_denoise_returns_uint8_of_same_size():
    image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    out = inference.denoise(models.get_model("srresnet"), image)
    assert out.dtype == np.uint8 and out.shape == image.shape


def test_denoise_rounds_and_clips_the_prediction_to_uint8():
    """A network that adds a per-channel offset: 0.6 rounds up, 0.4 down, -300 clips to 0 and +300 to 255."""
    inputs = keras.Input((None, None, 3))
    shift = keras.layers.Conv2D(3, 1)
    shifted = keras.Model(inputs, shift(inputs))
    identity = np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3)
    image = np.full((16, 16, 3), 100, np.uint8)
    shift.set_weights([identity, np.array([0.6, -300.0, 300.0], np.float32)])
    out = inference.denoise(shifted, image)
    assert out.dtype == np.uint8 and (out[..., 0] == 101).all() and (out[..., 1] == 0).all()
    assert (out[..., 2] == 255).all()
    shift.set_weights([identity, np.array([0.4, 0.0, -0.4], np.float32)])
    np.testing.assert_array_equal(inference.denoise(shifted, image), image)  # within half a level: unchanged


def test_the_inference_network_computes_what_the_network_does():
    """Random batch-normalisation statistics and PReLU slopes from -0.5 to 1.5: the 33 normalisations go into the
    convolutions, every PReLU but the first (whose output also feeds the residual additions) becomes max(x, s x)
    with channels of slope > 1 flipped, and the float32 output stays the same; the UNet comes back as it is."""
    network = models.get_model("srresnet")
    rng = np.random.default_rng(0)
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 2, 64), rng.normal(0, 1, 64), rng.normal(0, 1, 64),
                               rng.uniform(0.5, 2, 64)])
        if isinstance(layer, keras.layers.PReLU):
            layer.set_weights([rng.uniform(-0.5, 1.5, (1, 1, 64))])
    fast = inference_graph.inference_network(network)
    kinds = [layer.__class__.__name__ for layer in fast.layers]
    assert "BatchNormalization" not in kinds and kinds.count("PReLU") == 1 and kinds.count("_MaxPReLU") == 16
    image = rng.uniform(0, 255, (1, 40, 56, 3)).astype(np.float32)
    expected = np.asarray(network.predict_on_batch(image))
    np.testing.assert_allclose(fast.predict_on_batch(image), expected, atol=1e-4 * np.abs(expected).max())
    unet = small_network("unet")
    assert inference_graph.inference_network(unet) is unet


@pytest.fixture
def mixed_policy():
    """Mixed precision for the models built inside the test, float32 again afterwards."""
    policy = mixed_precision.use_mixed_precision()
    yield policy
    keras.config.set_dtype_policy("float32")


def test_mixed_precision_computes_in_bfloat16_with_float32_weights_and_output(mixed_policy):
    model = models.get_model("srresnet")
    assert mixed_policy == "mixed_bfloat16"  # no GPU older than Ampere here
    assert model.layers[1].compute_dtype == "bfloat16" and all(w.dtype == "float32" for w in model.weights)
    model.compile(optimizer="adam", loss="mse", metrics=[models.psnr_metric()])
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    logs = model.fit(x, x, epochs=1, verbose=0).history
    assert model.predict_on_batch(x).dtype == np.float32 and np.isfinite(logs["loss"][0])


@pytest.mark.parametrize("flags, emulated", [("fpu sse2 avx avx2 fma", True), ("avx2 avx512f avx512_bf16", False),
                                             ("avx2 avx512f", False), (None, False)])
def test_mixed_precision_warns_only_on_cpus_that_emulate_bfloat16(tmp_path, flags, emulated, monkeypatch, capsys):
    """An AVX2-only x86 CPU emulates bfloat16: --mixed_precision (start_mixed_precision, as train.py and
    test_model.py start it) says so on stderr; with AVX-512, or where /proc/cpuinfo has no flags (another
    platform), or with a GPU, no warning."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\n" + (f"flags\t\t: {flags}\n" if flags else "Features\t: neon\n"))
    monkeypatch.setattr(mixed_precision, "gpu_compute_capability", lambda: None)
    try:
        mixed_precision.start_mixed_precision("training", cpuinfo=cpuinfo)
        warned = capsys.readouterr().err
        monkeypatch.setattr(mixed_precision, "gpu_compute_capability", lambda: (9, 0))
        mixed_precision.start_mixed_precision("training", cpuinfo=cpuinfo)
        on_gpu = capsys.readouterr().err
    finally:
        keras.config.set_dtype_policy("float32")
    assert ("warning: --mixed_precision: this CPU has no AVX-512" in warned) is emulated, warned
    assert "training is several times slower" in warned if emulated else warned == "", warned
    assert on_gpu == "" and mixed_precision.cpu_emulates_bfloat16(tmp_path / "missing") is False


def noisy_pairs(sizes, seed=0):
    """[(noisy, clean)] validation pairs of random float32 0-255 images of the (height, width) `sizes`."""
    rng = np.random.default_rng(seed)
    pairs = []
    for height, width in sizes:
        clean = rng.uniform(0, 255, (1, height, width, 3)).astype(np.float32)
        pairs.append((np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.float32), clean))
    return pairs


def expected_validation(model, pairs, loss):
    """val_loss, val_PSNR and val_SSIM worked out op by op from predict_padded, for ImageValidation to match."""
    loss_function = keras.losses.get(loss) if isinstance(loss, str) else loss
    predictions = [inference.predict_padded(model, noisy) for noisy, _ in pairs]
    return {key: np.mean([float(keras.ops.mean(metric(clean, p))) for (_, clean), p in zip(pairs, predictions)])
            for key, metric in (("val_loss", loss_function), ("val_PSNR", models.psnr), ("val_SSIM", models.ssim))}


def test_image_validation_scores_each_image_as_loss_psnr_and_ssim_do(mixed_policy):
    """The compiled scorer (float32 even under mixed precision) gives each image's PSNR and SSIM, and
    ImageValidation (one compiled program per image: prediction, crop, loss, PSNR, SSIM) averages the loss,
    the PSNR and the SSIM over images of different sizes, for copies of a pair as for one."""
    pairs = noisy_pairs([(40, 56), (33, 70)])
    near = np.random.default_rng(1).uniform(0, 250, (1, 24, 24, 3)).astype(np.float32)  # off by 0.25: 60.17 dB,
    near_psnr = models.image_scorer(3).predict_on_batch([near, near + 0.25])[0][0]  # lost in bfloat16
    assert abs(near_psnr - 10 * np.log10(255**2 / 0.0625)) < 0.01
    model = models.get_model("srresnet")
    expected = expected_validation(model, pairs, "mse")
    for replicas in (1, 2):
        logs = {}
        validation = callbacks.ImageValidation(pairs, "mse", replicas=replicas)
        validation.set_model(model)
        validation.on_epoch_end(0, logs)
        for key, value in expected.items():
            assert abs(logs[key] - value) < 1e-4 * max(1, abs(value)), (key, replicas, logs[key], value)


def test_image_validation_follows_the_l0_gamma_of_each_epoch():
    """The L0 loss' gamma changes every epoch: the compiled validation must use the current one (on JAX a
    variable outside the compiled model's weights would be frozen at its value of the first validation)."""
    pairs = noisy_pairs([(32, 48), (40, 40)])
    network = models.get_model("srresnet", channels=3)
    loss = models.get_loss("l0")
    validation = callbacks.ImageValidation(pairs, loss)
    validation.set_model(network)
    for gamma in (2.0, 0.5):
        loss.gamma.assign(gamma)
        logs = {}
        validation.on_epoch_end(0, logs)
        expected = expected_validation(network, pairs, loss)["val_loss"]
        assert abs(logs["val_loss"] - expected) < 1e-4 * expected, (gamma, logs["val_loss"], expected)


@pytest.mark.parametrize("height, width", [(17, 45), (64, 64), (100, 30)])
def test_padded_prediction_keeps_the_size_and_matches_a_pointwise_model(height, width):
    """A 1x1 conv sees no neighbours, so the mirrored padding must not change a single output pixel."""
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs))
    batch = np.random.default_rng(1).uniform(0, 255, (2, height, width, 3)).astype(np.float32)
    output = inference.predict_padded(model, batch)
    assert output.shape == batch.shape and output.dtype == np.float32
    np.testing.assert_allclose(output, model.predict_on_batch(batch), rtol=1e-5, atol=1e-3)


def test_padded_prediction_compiles_one_graph_per_padded_shape():
    """Sizes that pad to the same multiple of PAD_MULTIPLE share a traced graph (no retrace per image size)."""
    shapes_traced = []

    class TraceCounter(keras.layers.Layer):
        def call(self, x):  # Python runs here only while a graph is traced (and once at model build)
            shapes_traced.append(tuple(x.shape))
            return x

    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(TraceCounter()(inputs)))
    built = len(shapes_traced)
    for height, width in [(40, 50), (64, 64), (33, 60), (100, 120), (70, 65), (128, 128), (50, 40)] * 2:
        inference.predict_padded(model, np.zeros((1, height, width, 3), np.float32))
    traced = shapes_traced[built:]
    # Two padded shapes, 64x64 and 128x128: at most one trace each (TensorFlow may relax the second to None x None),
    # and never a graph for an unpadded size.
    assert 1 <= len(traced) <= 2, traced
    assert all(size is None or size % inference.PAD_MULTIPLE == 0 for shape in traced for size in shape[1:3]), traced


def random_denoiser(seed):
    """A 3x3 conv of random weights: cheap, and its output depends on the weights where a gradient can tell."""
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(3, 3, padding="same", kernel_initializer=keras.initializers.RandomNormal(0, 0.2, seed))
    return keras.Model(inputs, conv(inputs))


def neighbor_batch(seed=0, size=16):
    """(noisy (2, size, size, 3) float32 0-255, pairs, g2): one Neighbor2Neighbor training batch."""
    rng = np.random.default_rng(seed)
    noisy = rng.uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    pairs = neighbor2neighbor.draw_pairs(rng, 2, size // 2, size // 2)
    return noisy, pairs, neighbor2neighbor.sub_images(noisy, pairs)[1]


def test_neighbor_subsample_layer_matches_the_numpy_sub_sampler():
    noisy, pairs, _ = neighbor_batch()
    for got, expected in zip(neighbor2neighbor.Subsample()(noisy, pairs), neighbor2neighbor.sub_images(noisy, pairs)):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), expected)


def test_neighbor_loss_is_the_papers_formula():
    """mean((f(g1 y) - g2 y)^2) + gamma * mean((f(g1 y) - g2 y - (g1 f(y) - g2 f(y)))^2), per the model's output
    [f(g1 y), g1 f(y) - g2 f(y)] and the target g2 y."""
    noisy, pairs, target = neighbor_batch()
    network = random_denoiser(1)
    output = keras.ops.convert_to_numpy(neighbor2neighbor.training_model(network)([noisy, pairs]))
    whole = neighbor2neighbor.sub_images(keras.ops.convert_to_numpy(network(noisy)), pairs)
    denoised_first = keras.ops.convert_to_numpy(network(neighbor2neighbor.sub_images(noisy, pairs)[0]))
    np.testing.assert_allclose(output, np.concatenate([denoised_first, whole[0] - whole[1]], -1), rtol=1e-4, atol=1e-3)
    loss = neighbor2neighbor.NeighborLoss(gamma=1.5)
    difference = denoised_first - target
    expected = np.mean(difference**2) + 1.5 * np.mean((difference - (whole[0] - whole[1])) ** 2)
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(loss(target, output))), expected, rtol=1e-4)


def test_neighbor2neighbor_gradient_flows_through_f_of_g1_only():
    """One SGD step on the Neighbor2Neighbor model equals one on a model whose consistency term g1 f(y) - g2 f(y)
    is a constant input of the same value: no gradient flows through the network on the whole patch. The step
    does move the weights: the gradient flows through f(g1 y)."""
    noisy, pairs, target = neighbor_batch()
    trained, reference = random_denoiser(2), random_denoiser(2)
    initial = [np.array(w) for w in trained.get_weights()]
    consistency = keras.ops.convert_to_numpy(neighbor2neighbor.training_model(trained)([noisy, pairs]))[..., 3:]

    wrapper = neighbor2neighbor.training_model(trained)
    constant = keras.Input((None, None, 3))
    noisy_in, pairs_in = keras.Input((None, None, 3)), keras.Input((None, None, 8))
    first, _ = neighbor2neighbor.Subsample()(noisy_in, pairs_in)
    fixed = keras.Model([noisy_in, pairs_in, constant], keras.layers.Concatenate()([reference(first), constant]))
    for model, inputs in ((wrapper, [noisy, pairs]), (fixed, [noisy, pairs, consistency])):
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-6),
                      loss=neighbor2neighbor.NeighborLoss(gamma=2.0))
        model.train_on_batch(inputs, target)
    for got, expected, before in zip(trained.get_weights(), reference.get_weights(), initial):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
        assert np.abs(got - before).max() > 1e-5


def test_neighbor_gamma_rises_to_its_maximum_and_a_resumed_run_continues_it(tmp_path):
    """gamma is gamma_max * (epoch + 1) / epochs (the authors' linear ramp); training_callbacks set it at every
    epoch's start from the epoch's real index, so a run resumed at epoch 3 of 4 carries on at 1.5, not 0.5. The
    denoiser inside the training model is what is validated and saved."""
    assert [neighbor2neighbor.gamma_at(e, 4, 2.0) for e in range(4)] == [0.5, 1.0, 1.5, 2.0]
    noisy, pairs, target = neighbor_batch()
    network = random_denoiser(3)
    model, loss = neighbor2neighbor.training_model(network), neighbor2neighbor.NeighborLoss()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-9), loss=loss, metrics=[loss.gamma_metric])
    traces = TraceCounter(model)
    seen = []
    probe = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(
        float(keras.ops.convert_to_numpy(loss.gamma))))
    validation = [(noisy[:1], noisy[:1])]
    run = callbacks.training_callbacks(tmp_path, callbacks.ImageValidation(validation, "mse", network=network), loss,
                                       nb_epochs=4, lr=1e-9, seed=0, network=network, neighbor_gamma_max=3.0)
    model.fit([noisy, pairs], target, batch_size=2, epochs=4, initial_epoch=2, verbose=0,
              callbacks=[*run, probe, traces])
    assert seen == [2.25, 3.0] and load_history(tmp_path)["neighbor_gamma"] == [2.25, 3.0]
    assert traces.traced_once(), traces.per_epoch  # one compiled step for both epochs
    (checkpoint,) = tmp_path.glob("weights.003-*.weights.h5")
    restored = random_denoiser(4)
    models.load_weights(restored, checkpoint)  # the denoiser's weights, loadable into the denoiser alone
    expected = float(models.psnr(noisy[:1], inference.predict_padded(network, noisy[:1])))
    np.testing.assert_allclose(load_history(tmp_path)["val_PSNR"], expected, rtol=1e-4)  # the denoiser's PSNR
