"""Validation cost per epoch against one warm forward pass over the validation images, in one run.

    python3 benchmarks/bench_validation.py [--test_dir ../shared/datasets/Set14] [--epochs 4]
    KERAS_BACKEND=jax python3 benchmarks/bench_validation.py

Builds train.py's validation set (cropped to multiples of 16, gaussian,25,25
noise) and the SRResNet, then times, per epoch, train.py's validation
(model.ImageValidation: every image padded to a multiple of 64, predicted,
cropped back and scored, loss, PSNR and SSIM, in one compiled program) and, for
comparison, the two ways before it: predict, then score the prediction in a
second program (until 2026-11-27) and model.evaluate per image at its own size. The
yardstick is one warm forward pass: predict_on_batch on every image at its
own size, timed after each size was seen once. Prints one JSON line per
measurement; the ratio uses the median of epochs 2 and later (epoch 1 traces;
on JAX the line also counts the XLA programs compiled and their seconds).
Also times the scoring of the predictions (PSNR and SSIM: compiled through
model.image_scorer against op by op, first epoch and later ones) and the SSIM
that ImageValidation reports (model.ssim: separable window, five statistics in
one depthwise pass) against the direct way it replaced (five 11x11 2-D
convolutions per channel), over the validation pairs. On JAX, first: the first validation's seconds in the
training loop with its programs compiled ahead on a helper thread from the start of training (train.py's way since
2026-11-27, model.AheadCompiledScores; that thread's seconds beside) and compiled in the loop at the first call.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cli  # noqa: E402

cli.import_keras_quietly()
import keras  # noqa: E402

import generator  # noqa: E402
import images  # noqa: E402
import model as models  # noqa: E402
from keras import ops  # noqa: E402
from noise_model import get_noise_model  # noqa: E402


def get_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--test_dir", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/Set14"),
                        help="validation images")
    parser.add_argument("--epochs", type=int, default=4, help="validation epochs to time")
    parser.add_argument("--ssim_only", action="store_true", help="time the scoring and the SSIM only (no model)")
    return parser.parse_args()


COMPILES = []  # seconds of each XLA compilation (JAX only), from JAX's monitoring events


def count_compiles():
    """On JAX: from now on, every backend compilation appends its seconds to COMPILES."""
    if keras.backend.backend() == "jax":
        import jax

        jax.monitoring.register_event_duration_secs_listener(
            lambda event, secs, **_: COMPILES.append(secs) if event.endswith("backend_compile_duration") else None)


def seconds(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def evaluate_per_image(model, pairs):
    """The previous validation: Keras' evaluate on each image at its own size."""
    for noisy, clean in pairs:
        model.evaluate(noisy, clean, batch_size=1, verbose=0)


def predict_then_score(model, pairs, scorer):
    """ImageValidation as it was until 2026-11-27: predict_padded (the prediction back in host memory), the loss
    op by op, then model.image_scorer on the prediction (sent back to the device) for the PSNR and the SSIM."""
    mse = keras.losses.get("mse")
    for noisy, clean in pairs:
        prediction = models.predict_padded(model, noisy)
        float(ops.mean(mse(clean, prediction)))
        models.score_image(scorer, clean, prediction)


def forward_pass(model, pairs):
    for noisy, _ in pairs:
        model.predict_on_batch(noisy)


def ssim_with_2d_window(y_true, y_pred):
    """The SSIM as model.ssim computed it before (same result to float32 rounding): the 2-D 11x11 window (the
    outer product of model.ssim's 1-D kernel), one convolution per statistic and channel."""
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
    """One JSON line: seconds for the SSIM of every (noisy, clean) pair, model.ssim against the 2-D window."""
    times, values = {}, {}
    for name, ssim in (("separable_depthwise", models.ssim), ("2d_window", ssim_with_2d_window)):
        values[name] = np.array([float(ssim(clean, noisy)) for noisy, clean in pairs])  # every size seen once
        times[name] = min(seconds(lambda: [float(ssim(clean, noisy)) for noisy, clean in pairs])
                          for _ in range(repeats))
    worst = float(np.abs(values["separable_depthwise"] - values["2d_window"]).max())
    print(json.dumps(dict(bench="ssim_epoch", seconds={k: round(v, 3) for k, v in times.items()},
                          speedup=round(times["2d_window"] / times["separable_depthwise"], 2),
                          max_abs_difference=worst, images=len(pairs), backend=keras.backend.backend())), flush=True)


def time_scores(pairs, epochs):
    """One JSON line: seconds a validation spends on the PSNR and SSIM of every (noisy, clean) pair, per epoch
    (the first compiles), through model.image_scorer (compiled, as ImageValidation does) and op by op (as it
    did before 2026-11-27). Runs before anything else has compiled an operation for these image sizes."""
    scorer = models.image_scorer(pairs[0][1].shape[-1])

    def compiled():
        for noisy, clean in pairs:
            np.asarray(scorer.predict_on_batch([clean, noisy]))

    def op_by_op():
        for noisy, clean in pairs:
            float(models.psnr(clean, noisy)), float(models.ssim(clean, noisy))

    times = {name: [seconds(run) for _ in range(epochs)] for name, run in (("compiled", compiled),
                                                                            ("op_by_op", op_by_op))}
    rounded = {name: [round(t, 3) for t in epoch_times] for name, epoch_times in times.items()}
    print(json.dumps(dict(bench="scores_epoch", epoch_seconds=rounded,
                          later_speedup=round(statistics.median(times["op_by_op"][1:])
                                              / statistics.median(times["compiled"][1:]), 2),
                          images=len(pairs), backend=keras.backend.backend())), flush=True)


def first_validation(model, pairs):
    """JAX: one JSON line, the seconds the first validation takes in the training loop, its programs compiled
    ahead (on_train_begin's helper thread, waited for first and timed apart) or at the first call in the loop."""
    ahead = models.ImageValidation(pairs, "mse")
    ahead.set_model(model)
    compile_ahead_s = seconds(lambda: (ahead.on_train_begin(), ahead.ahead.compiling.result()))
    ahead_s = seconds(lambda: ahead.on_epoch_end(0, {}))
    in_loop = models.ImageValidation(pairs, "mse")
    in_loop.set_model(model)
    in_loop_s = seconds(lambda: in_loop.on_epoch_end(0, {}))
    print(json.dumps(dict(bench="first_validation", in_loop_compiled_s=round(in_loop_s, 3),
                          ahead_compiled_s=round(ahead_s, 3), helper_thread_s=round(compile_ahead_s, 3),
                          images=len(pairs), backend=keras.backend.backend())), flush=True)


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
    if keras.backend.backend() == "jax":
        first_validation(model, pairs)
    validation = models.ImageValidation(pairs, "mse")
    validation.set_model(model)
    common = dict(images=len(pairs), backend=keras.backend.backend(), sizes=len({p[0].shape for p in pairs}),
                  padded_sizes=len({(models.padded_size(p[0].shape[1]), models.padded_size(p[0].shape[2]))
                                    for p in pairs}))
    forward_pass(model, pairs)  # every own size seen once
    forward = min(seconds(lambda: forward_pass(model, pairs)) for _ in range(2))
    print(json.dumps(dict(bench="warm_forward_pass", seconds=round(forward, 3), **common)), flush=True)
    scorer = models.image_scorer(pairs[0][1].shape[-1])
    for name, run in (("ImageValidation", lambda: validation.on_epoch_end(0, {})),
                      ("predict_then_score", lambda: predict_then_score(model, pairs, scorer)),
                      ("evaluate_per_image", lambda: evaluate_per_image(model, pairs))):
        compiled_before = len(COMPILES)
        epochs = [seconds(run) for _ in range(args.epochs)]
        later = statistics.median(epochs[1:])
        compiles = dict(xla_compiles=len(COMPILES) - compiled_before,
                        xla_compile_s=round(sum(COMPILES[compiled_before:]), 2)) if COMPILES else {}
        print(json.dumps(dict(bench="validation_epoch", method=name, epoch_seconds=[round(s, 3) for s in epochs],
                              ratio_to_forward_pass=round(later / forward, 3), **compiles, **common)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
