"""Seconds a validation epoch takes against one warm forward pass over the same images: train.py's validation
(callbacks.ImageValidation: each image padded, predicted and scored in one compiled program per size) and two
simpler ways, and the PSNR/SSIM scoring compiled against op by op, to show what validation costs an epoch."""
import statistics
import sys

import numpy as np

import common

common.import_keras()
import keras  # noqa: E402
from keras import ops  # noqa: E402

import callbacks  # noqa: E402
import generator  # noqa: E402
import images  # noqa: E402
import inference  # noqa: E402
import model as models  # noqa: E402
from noise_model import get_noise_model  # noqa: E402


def get_args():
    parser = common.get_parser(__doc__)
    common.add_backend_flag(parser)
    common.add_data_flags(parser, train=None)
    parser.add_argument("--epochs", type=common.timed_epoch_count, default=4,
                        help="validation epochs to time (the first compiles; ratios use the median of the others)")
    parser.add_argument("--ssim_only", action="store_true",
                        help="time the scoring and the SSIM only (no network)")
    return parser.parse_args()


COMPILES = []  # seconds of each XLA compilation (JAX only), from JAX's monitoring events


def count_compiles():
    """On JAX: from now on, every backend compilation appends its seconds to COMPILES."""
    if keras.backend.backend() == "jax":
        import jax

        jax.monitoring.register_event_duration_secs_listener(
            lambda event, secs, **_: COMPILES.append(secs) if event.endswith("backend_compile_duration") else None)


def evaluate_per_image(model, pairs):
    """Keras' evaluate on each image at its own size (no SSIM): one compiled program per size, none shared."""
    for noisy, clean in pairs:
        model.evaluate(noisy, clean, batch_size=1, verbose=0)


def predict_then_score(model, pairs, scorer):
    """Two programs per image: predict_padded (the prediction back in host memory), the loss op by op, then
    model.score_image on the prediction (sent back to the device) for the PSNR and the SSIM."""
    mse = keras.losses.get("mse")
    for noisy, clean in pairs:
        prediction = inference.predict_padded(model, noisy)
        float(ops.mean(mse(clean, prediction)))
        models.score_image(scorer, clean, prediction)


def forward_pass(model, pairs):
    """The yardstick: the network alone on every image at its own size."""
    for noisy, _ in pairs:
        model.predict_on_batch(noisy)


def ssim_with_2d_window(y_true, y_pred):
    """model.ssim's SSIM the direct way (same result to float32 rounding): the 2-D 11x11 window, the outer product
    of its 1-D kernel, one convolution per statistic and channel."""
    line = ops.convert_to_numpy(models._ssim_kernels()[0])[:, 0, 0, 0]  # (11,) float32, sums to 1
    window = ops.convert_to_tensor(np.outer(line, line)[..., np.newaxis, np.newaxis])  # (11, 11, 1, 1)
    blur = lambda images: ops.conv(images, window, padding="valid")  # noqa: E731
    x, y = ops.cast(y_true, "float32") / 255.0, ops.clip(ops.cast(y_pred, "float32"), 0.0, 255.0) / 255.0
    c1, c2 = 0.01**2, 0.03**2
    means = []
    for channel in range(y_true.shape[-1]):
        a, b = x[..., channel:channel + 1], y[..., channel:channel + 1]
        mean_a, mean_b = blur(a), blur(b)
        covariance, variances = blur(a * b) - mean_a * mean_b, blur(a * a) + blur(b * b) - mean_a**2 - mean_b**2
        numerator = (2 * mean_a * mean_b + c1) * (2 * covariance + c2)
        means.append(ops.mean(numerator / ((mean_a**2 + mean_b**2 + c1) * (variances + c2))))
    return ops.mean(ops.stack(means))


def time_ssim(pairs, repeats=3):
    """One JSON line: seconds for the SSIM of every (noisy, clean) pair, model.ssim (a separable window, the five
    statistics in one depthwise pass) against the 2-D window, best of `repeats`, and their largest difference."""
    times, values = {}, {}
    for name, ssim in (("separable_depthwise", models.ssim), ("2d_window", ssim_with_2d_window)):
        values[name] = np.array([float(ssim(clean, noisy)) for noisy, clean in pairs])  # every size seen once
        times[name] = min(common.seconds(lambda: [float(ssim(clean, noisy)) for noisy, clean in pairs])
                          for _ in range(repeats))
    worst = float(np.abs(values["separable_depthwise"] - values["2d_window"]).max())
    common.emit("ssim_epoch", seconds={k: round(v, 3) for k, v in times.items()},
                speedup=round(times["2d_window"] / times["separable_depthwise"], 2), max_abs_difference=worst,
                images=len(pairs), backend=keras.backend.backend())


def time_scores(pairs, epochs):
    """One JSON line: seconds per epoch (the first compiles) of the PSNR and SSIM of every pair, through
    model.image_scorer (compiled, as validation scores) and op by op. Must run before anything else has
    compiled an operation for these image sizes."""
    scorer = models.image_scorer(pairs[0][1].shape[-1])

    def compiled():
        for noisy, clean in pairs:
            np.asarray(scorer.predict_on_batch([clean, noisy]))

    def op_by_op():
        for noisy, clean in pairs:
            float(models.psnr(clean, noisy)), float(models.ssim(clean, noisy))

    times = {name: [common.seconds(run) for _ in range(epochs)]
             for name, run in (("compiled", compiled), ("op_by_op", op_by_op))}
    common.emit("scores_epoch", epoch_seconds={name: [round(t, 3) for t in values] for name, values in times.items()},
                later_speedup=round(statistics.median(times["op_by_op"][1:])
                                    / statistics.median(times["compiled"][1:]), 2),
                images=len(pairs), backend=keras.backend.backend())


def main():
    args = get_args()
    count_compiles()
    pairs = generator.load_validation_data(generator.load_images(images.list_images(args.test_dir)),
                                           get_noise_model("gaussian,25,25"))
    time_scores(pairs, args.epochs)
    time_ssim(pairs)
    if args.ssim_only:
        return 0
    model = models.get_model("srresnet")
    model.compile(optimizer="adam", loss="mse", metrics=[models.psnr_metric()])
    validation = callbacks.ImageValidation(pairs, "mse")
    validation.set_model(model)
    shared = dict(images=len(pairs), backend=keras.backend.backend(), sizes=len({p[0].shape for p in pairs}),
                  padded_sizes=len({tuple(map(inference.padded_size, p[0].shape[1:3])) for p in pairs}))
    forward_pass(model, pairs)  # every own size seen once
    forward = min(common.seconds(lambda: forward_pass(model, pairs)) for _ in range(2))
    common.emit("warm_forward_pass", seconds=round(forward, 3), **shared)
    scorer = models.image_scorer(pairs[0][1].shape[-1])
    for name, run in (("ImageValidation", lambda: validation.on_epoch_end(0, {})),
                      ("predict_then_score", lambda: predict_then_score(model, pairs, scorer)),
                      ("evaluate_per_image", lambda: evaluate_per_image(model, pairs))):
        compiled_before = len(COMPILES)
        epochs = [common.seconds(run) for _ in range(args.epochs)]
        compiles = dict(xla_compiles=len(COMPILES) - compiled_before,
                        xla_compile_s=round(sum(COMPILES[compiled_before:]), 2)) if COMPILES else {}
        common.emit("validation_epoch", method=name, epoch_seconds=[round(s, 3) for s in epochs],
                    ratio_to_forward_pass=round(statistics.median(epochs[1:]) / forward, 3), **compiles, **shared)
    return 0


if __name__ == "__main__":
    sys.exit(main())
