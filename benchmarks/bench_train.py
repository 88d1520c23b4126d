"""Steady-state training step time: train.py's generator (its default worker threads) against batches made
beforehand as in-memory arrays (the floor), per model and precision (float32, and bfloat16 as train.py
--mixed_precision sets it), in one run, to show what the feed and the precision cost a step."""
import sys
import time

import numpy as np

import common

common.import_keras()
import keras  # noqa: E402

import cli  # noqa: E402
import generator  # noqa: E402
import images  # noqa: E402
import model as models  # noqa: E402
from noise_model import get_noise_model  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    """Wall seconds of every epoch, the device's queued steps included (the last weight read back at its end)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        keras.ops.convert_to_numpy(self.model.trainable_weights[-1])
        self.seconds.append(time.perf_counter() - self.start)


def compiled(model_name):
    """The network compiled as train.py compiles it (Adam, mse, PSNR)."""
    model = models.get_model(model_name)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.001), loss="mse", metrics=[models.psnr_metric()])
    return model


def timed_step(model_name, fit_data, steps, **fit_kwargs):
    """Seconds per step of the second (traced, steady) epoch."""
    timer = EpochTimer()
    compiled(model_name).fit(fit_data, epochs=2, verbose=0, callbacks=[timer], **fit_kwargs)
    return timer.seconds[1] / steps


def get_args():
    parser = common.get_parser(__doc__)
    common.add_backend_flag(parser)
    common.add_data_flags(parser, test=None)
    common.add_models_flag(parser, models.MODEL_NAMES)
    common.add_steps_flag(parser, 10)
    common.add_patch_flags(parser)
    parser.add_argument("--precisions", nargs="+", choices=("float32", "bfloat16"), default=["float32"],
                        help="float32, and bfloat16 (train.py --mixed_precision: mixed_bfloat16)")
    return parser.parse_args()


def main():
    args = get_args()
    cached = generator.load_images(images.list_images(args.image_dir), min_size=args.image_size)
    noise = get_noise_model("gaussian,0,50")
    shared = dict(batch_size=args.batch_size, image_size=args.image_size, steps=args.steps,
                  backend=keras.backend.backend())
    for precision, model_name in ((precision, name) for precision in args.precisions for name in args.models):
        keras.config.set_dtype_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
        shared["precision"] = precision
        data = generator.NoisyImageGenerator(cached, noise, noise, batch_size=args.batch_size,
                                             image_size=args.image_size, steps=args.steps, seed=0,
                                             workers=cli.default_workers())
        batches = [data[index] for index in range(args.steps)]
        x, y = np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
        in_memory = timed_step(model_name, x, args.steps, y=y, batch_size=args.batch_size, shuffle=False)
        common.emit("train_step", model=model_name, feed="in_memory", seconds=round(in_memory, 4), **shared)
        fed = timed_step(model_name, data, args.steps, shuffle=False)  # as train.py feeds it
        common.emit("train_step", model=model_name, feed="generator", seconds=round(fed, 4), workers=data.workers,
                    ratio_to_in_memory=round(fed / in_memory, 3), **shared)
    return 0


if __name__ == "__main__":
    sys.exit(main())
