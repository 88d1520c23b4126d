"""Validation cost per epoch against one warm forward pass over the validation images, in one run.

    python3 benchmarks/bench_validation.py [--test_dir ../shared/datasets/Set14] [--epochs 4]
    KERAS_BACKEND=jax python3 benchmarks/bench_validation.py

Builds train.py's validation set (cropped to multiples of 16, gaussian,25,25
noise) and the SRResNet, then times, per epoch, train.py's validation
(model.ImageValidation: every image padded to a multiple of 64) and, for
comparison, the previous way (model.evaluate per image at its own size). The
yardstick is one warm forward pass: predict_on_batch on every image at its
own size, timed after each size was seen once. Prints one JSON line per
measurement; the ratio uses the median of epochs 2 and later (epoch 1 traces).
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
from noise_model import get_noise_model  # noqa: E402


def get_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--test_dir", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/Set14"),
                        help="validation images")
    parser.add_argument("--epochs", type=int, default=4, help="validation epochs to time")
    return parser.parse_args()


def seconds(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def evaluate_per_image(model, pairs):
    """The previous validation: Keras' evaluate on each image at its own size."""
    for noisy, clean in pairs:
        model.evaluate(noisy, clean, batch_size=1, verbose=0)


def forward_pass(model, pairs):
    for noisy, _ in pairs:
        model.predict_on_batch(noisy)


def main():
    args = get_args()
    pairs = generator.load_validation_data(generator.load_images(images.list_images(args.test_dir)),
                                           get_noise_model("gaussian,25,25"))
    model = models.get_model("srresnet")
    model.compile(optimizer="adam", loss="mse", metrics=[models.psnr_metric()])
    validation = models.ImageValidation(pairs, "mse")
    validation.set_model(model)
    common = dict(images=len(pairs), backend=keras.backend.backend(), sizes=len({p[0].shape for p in pairs}),
                  padded_sizes=len({(models.padded_size(p[0].shape[1]), models.padded_size(p[0].shape[2]))
                                    for p in pairs}))
    forward_pass(model, pairs)  # every own size seen once
    forward = min(seconds(lambda: forward_pass(model, pairs)) for _ in range(2))
    print(json.dumps(dict(bench="warm_forward_pass", seconds=round(forward, 3), **common)), flush=True)
    for name, run in (("ImageValidation", lambda: validation.on_epoch_end(0, {})),
                      ("evaluate_per_image", lambda: evaluate_per_image(model, pairs))):
        epochs = [seconds(run) for _ in range(args.epochs)]
        later = statistics.median(epochs[1:])
        print(json.dumps(dict(bench="validation_epoch", method=name, epoch_seconds=[round(s, 3) for s in epochs],
                              ratio_to_forward_pass=round(later / forward, 3), **common)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
