"""Host-side cost of a training step: train.py's own training loop with the device's work taken out, so what is
left is the work a GPU cannot do for us.

    KERAS_BACKEND=jax python3 benchmarks/bench_host.py [--config premade "--workers 8" ...]

On a GPU, where the host queues steps ahead of the device, a step costs about max(GPU work, host work); the host
work (Keras' Python loop, making and handing over a batch, dispatching the step, the per-batch callbacks) must
stay well below the GPU's step time (8.6 ms for the recipe's SRResNet in bfloat16 on an H200) or the GPU waits.
Each configuration runs train.py's train() (the recipe's data: 128x128 patches, batch 8, zero-mean gaussian
targets, Set14 validation every epoch) for --nb_epochs epochs of --steps batches and prints one JSON line:
milliseconds a training step and seconds of end-of-epoch work (validation, checkpoint, history, backup), averaged
over the epochs after the first (which compiles).

Hollow steps (the default; JAX): after the first real step, each training step takes its batches from the feed
and dispatches the model's whole state (its weight and optimizer arrays) and the batch to a compiled function
that does nothing with them, so the milliseconds a step are the host's share alone, on any machine, the
2-core CPU included. With --real_steps the steps run for real (any backend), arithmetic included.
The network is a stand-in with the SRResNet's layers and 219 weight arrays but next to no arithmetic (each
patch pooled 8 x 8, 1 filter per convolution instead of 64, enlarged back), so that validation and the real
steps stay cheap. The configuration "premade" feeds batches made beforehand: the loop without the generator.
"""
import argparse
import contextlib
import json
import shlex
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cli  # noqa: E402

cli.import_keras_quietly()
import keras  # noqa: E402

import model as models  # noqa: E402
import train  # noqa: E402
from bench_train import timed_epochs  # noqa: E402  (this script's folder is on sys.path)

SHARED = Path(__file__).resolve().parents[2] / "shared/datasets"
POOL = 8  # the stand-in's convolutions see the patches pooled 8 x 8
PREMADE = "premade"  # in a configuration: feed batches made beforehand instead of the generator
RECIPE = "--image_size 128 --batch_size 8 --lr 0.001 --seed 0 --zero_mean_targets"


class PremadeBatches(keras.utils.PyDataset):
    """The batches of a training PyDataset made beforehand and served from memory: a feed that costs nothing."""

    def __init__(self, source):
        super().__init__()
        self.batches = [source[index] for index in range(len(source))]

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return self.batches[index]


@contextlib.contextmanager
def premade_batches():
    """Within: train.py trains on its generator's batches made before fit() (the same batches every epoch)."""
    make_datasets = train.make_datasets

    def premade(*args, **kwargs):
        training, validation = make_datasets(*args, **kwargs)
        return PremadeBatches(training), validation

    train.make_datasets = premade
    try:
        yield
    finally:
        train.make_datasets = make_datasets


@contextlib.contextmanager
def stand_in_network(filters):
    """Within: train.py builds the stand-in network (an SRResNet of `filters` filters inside)."""
    get_model = models.get_model

    def thin_srresnet(model_name="srresnet", channels=3, synchronized_bn=False):
        # Pooled by 8 before and enlarged by 8 after: the batches and their transfer are the recipe's
        # (8 x 128 x 128 x channels float32), the convolutions work on 16 x 16 x `filters`.
        inner = models.get_srresnet_model(channels, filters=filters, synchronized_bn=synchronized_bn)
        inputs = keras.Input((None, None, channels))
        outputs = keras.layers.UpSampling2D(POOL)(inner(keras.layers.AveragePooling2D(POOL)(inputs)))
        return keras.Model(inputs, outputs, name="stand_in")

    models.get_model = thin_srresnet
    try:
        yield
    finally:
        models.get_model = get_model


def hollow_step(real_step, steps_per_execution):
    """A JAX train_function (state, batch iterator) -> (logs, state): the first call runs `real_step` (which
    compiles, and gives the logs); later calls take `steps_per_execution` batches and dispatch the state with
    each batch to a compiled no-op, returning the state unchanged and the first call's logs."""
    import jax
    import jax.numpy as jnp

    dispatch = jax.jit(lambda state, batch: jnp.zeros(()))
    first_logs = {}

    def step(state, iterator):
        if not first_logs:
            logs, state = real_step(state, iterator)
            first_logs.update(logs)
            return logs, state
        for _, batch in zip(range(steps_per_execution), iterator):
            dispatch(state, batch)
        return dict(first_logs), state

    step.hollow = True
    return step


@contextlib.contextmanager
def hollow_steps():
    """Within: Keras' JAX trainer trains with hollow_step (the host's work of a step without the device's)."""
    if keras.backend.backend() != "jax":
        raise SystemExit("bench_host.py: hollow steps need KERAS_BACKEND=jax (or pass --real_steps)")
    from keras.src.backend.jax.trainer import JAXTrainer

    make_train_function = JAXTrainer.make_train_function

    def make_hollow(trainer, force=False):
        make_train_function(trainer, force)
        if not getattr(trainer.train_function, "hollow", False):
            trainer.train_function = hollow_step(trainer.train_function, trainer.steps_per_execution)

    JAXTrainer.make_train_function = make_hollow
    try:
        yield
    finally:
        JAXTrainer.make_train_function = make_train_function


def time_config(config, args, distribution):
    """(ms a training step, s of the end-of-epoch callbacks a epoch, the parsed flags) of train.py's train()
    with the extra flags `config`, over the epochs after the first."""
    with tempfile.TemporaryDirectory() as output:
        argv = ["--image_dir", args.image_dir, "--test_dir", args.test_dir, *shlex.split(RECIPE),
                "--nb_epochs", str(args.nb_epochs), "--steps", str(args.steps), "--output_path", output,
                *shlex.split(config)]
        run_args = train.get_args([arg for arg in argv if arg != PREMADE])
        feed = premade_batches() if PREMADE in argv else contextlib.nullcontext()
        steps = contextlib.nullcontext() if args.real_steps else hollow_steps()
        with stand_in_network(args.filters), timed_epochs() as (training_timer, epoch_timer), feed, steps, \
                open(Path(output) / "train.log", "w") as log, contextlib.redirect_stdout(log):
            train.train(run_args, distribution)
    training, epochs = training_timer.seconds[1:], epoch_timer.seconds[1:]
    end_of_epoch = [whole - steps for whole, steps in zip(epochs, training)]
    return 1000 * sum(training) / len(training) / args.steps, sum(end_of_epoch) / len(end_of_epoch), run_args


def get_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--image_dir", default=str(SHARED / "train291"), help="training images")
    parser.add_argument("--test_dir", default=str(SHARED / "Set14"), help="validation images")
    parser.add_argument("--config", nargs="+", default=[PREMADE, "--workers 2", "--workers 8",
                                                        "--workers 8 --steps_per_execution 10"],
                        help=f"train.py flags to time, one quoted string per configuration; with the word "
                             f"{PREMADE}: its batches made before training and fed from memory (the loop alone)")
    parser.add_argument("--filters", type=int, default=1, help="filters per convolution of the stand-in SRResNet")
    parser.add_argument("--real_steps", action="store_true",
                        help="run the stand-in's real training steps (any backend; their arithmetic included) "
                             "instead of hollow ones (JAX; the host's work alone)")
    parser.add_argument("--nb_epochs", type=int, default=3, help="epochs per configuration (the first is not timed)")
    parser.add_argument("--steps", type=int, default=200, help="batches per epoch")
    return parser.parse_args()


def main():
    args = get_args()
    distribution = train.start_devices(train.get_args([]))
    for config in args.config:
        ms_per_step, end_of_epoch, run_args = time_config(config, args, distribution)
        print(json.dumps(dict(bench="host_step", config=config, ms_per_step=round(ms_per_step, 2),
                              end_of_epoch_s=round(end_of_epoch, 3), real_steps=args.real_steps,
                              filters=args.filters, steps=args.steps, epochs_timed=args.nb_epochs - 1,
                              workers=run_args.workers, backend=keras.backend.backend(),
                              device=distribution.description)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
