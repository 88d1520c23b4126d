"""Host-side cost of a training step: train.py's own loop at the recipe's settings with the device's work taken
out (hollow steps) or simulated (--device_ms), since on a GPU a step costs about max(device work, host work)
and the host's share (loop, batches, dispatch, callbacks) must stay below the device's or the GPU waits."""
import contextlib
import os
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path
from unittest import mock

import common

if common.early_value("--device_ms", type=float, default=0.0):
    # The simulated device is one XLA CPU thread; XLA reads its flags when JAX starts its CPU client, which the
    # imports below do, before the flags are parsed.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()

common.import_keras()
import keras  # noqa: E402

import callbacks  # noqa: E402
import cli  # noqa: E402
import model as models  # noqa: E402
import train  # noqa: E402
from epoch_timing import timed_epochs  # noqa: E402

warnings.formatwarning = cli.one_line_warning  # train.py's skipped-image warnings, one line each as there
POOL = 8  # the stand-in's convolutions see the patches pooled 8 x 8
PREMADE = "premade"  # in a configuration: feed batches made beforehand instead of the generator
SYNCED = "synced"  # in a configuration: add a callback that reads the loss after every step (the control)
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

    def close(self):
        """Nothing runs in the background (train.py closes its dataset after training)."""


def premade_batches():
    """Within: train.py trains on its generator's batches made before fit() (the same batches every epoch)."""
    make_datasets = train.make_datasets

    def premade(*args, **kwargs):
        training, validation = make_datasets(*args, **kwargs)
        return PremadeBatches(training), validation

    return mock.patch.object(train, "make_datasets", premade)


class ReadLossEveryStep(keras.callbacks.Callback):
    """Reads every step's loss back in the training loop (not async_safe), so that the loop waits for the device
    after each step: the control of --device_ms."""

    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])


def loss_read_every_step():
    """Within: train.py's callbacks end with a ReadLossEveryStep."""
    training_callbacks = callbacks.training_callbacks
    return mock.patch.object(callbacks, "training_callbacks",
                             lambda *args, **kwargs: [*training_callbacks(*args, **kwargs), ReadLossEveryStep()])


def stand_in_network(filters):
    """Within: train.py builds the stand-in network (an SRResNet of `filters` filters inside)."""

    def thin_srresnet(model_name="srresnet", channels=3, synchronized_bn=False):
        # Pooled by 8 before and enlarged by 8 after: the batches and their transfer are the recipe's
        # (8 x 128 x 128 x channels float32), the convolutions work on 16 x 16 x `filters`.
        inner = models.get_srresnet_model(channels, filters=filters, synchronized_bn=synchronized_bn)
        inputs = keras.Input((None, None, channels))
        outputs = keras.layers.UpSampling2D(POOL)(inner(keras.layers.AveragePooling2D(POOL)(inputs)))
        return keras.Model(inputs, outputs, name="stand_in")

    return mock.patch.object(models, "get_model", thin_srresnet)


def busy_device(size):
    """A compiled JAX function (token, state, batch, logs) -> (token, state's last array, logs): four products of
    size x size matrices after the previous call's token, as a step waits for the last weights; the array and logs
    come back unchanged but waiting for the products, so reading them waits for the device as after a real step."""
    import jax
    import jax.numpy as jnp

    def busy(token, state, batch, logs):
        product = jnp.full((size, size), 1.0 / size, jnp.float32) + token
        for _ in range(4):
            product = product @ product
        token = product[0, 0] * 0.0  # 0: every call computes the same products
        last = state[0][-1]
        return token, last + token.astype(last.dtype), {key: value + token for key, value in logs.items()}

    return jax.jit(busy)


def device_ms_per_call(busy, calls=50):
    """Milliseconds a call of `busy` (a busy_device) takes, called back to back with nothing else to do."""
    import jax.numpy as jnp

    token, state, logs = jnp.zeros(()), ([jnp.zeros(3)],), {"loss": jnp.zeros(())}
    busy(token, state, (), logs)[0].block_until_ready()  # compiles
    start = time.perf_counter()
    for _ in range(calls):
        token, _, logs = busy(token, state, (), logs)
    token.block_until_ready()
    return 1000 * (time.perf_counter() - start) / calls


def calibrated_device(milliseconds):
    """A busy_device whose call takes about `milliseconds` on this machine."""
    size = 256
    for _ in range(3):  # the products' time grows about as size ** 3 (less where caches help small sizes)
        size = round(size * (milliseconds / device_ms_per_call(busy_device(size), calls=20)) ** (1 / 3))
    return busy_device(size)


DISPATCHED = []  # time.perf_counter() after each hollow step's dispatch (the steps of the current configuration)


def hollow_step(real_step, steps_per_execution, device=None):
    """A JAX train_function (state, batches) -> (logs, state): the first call runs `real_step` (compiling it); later
    ones dispatch the state and each of `steps_per_execution` batches to a compiled function that does nothing,
    or `device`'s fixed work (a busy_device), and return the state unchanged with the first call's logs."""
    import jax
    import jax.numpy as jnp

    if device is None:
        dispatch = jax.jit(lambda token, state, batch: token)
    first_logs = {}
    token = [jnp.zeros(())]

    def step(state, iterator):
        if not first_logs:
            logs, state = real_step(state, iterator)
            first_logs.update(logs)
            return logs, state
        logs = dict(first_logs)
        for _, batch in zip(range(steps_per_execution), iterator):
            if device is None:
                dispatch(token[0], state, batch)
                continue
            token[0], last, logs = device(token[0], state, batch, first_logs)
            state = ([*state[0][:-1], last], *state[1:])
            DISPATCHED.append(time.perf_counter())
        return logs, state

    step.hollow = True
    return step


def hollow_steps(device=None):
    """Within: Keras' JAX trainer trains with hollow_step (the host's work of a step without the device's, or
    with `device`'s simulated work)."""
    if keras.backend.backend() != "jax":
        raise SystemExit("bench_host.py: hollow steps need KERAS_BACKEND=jax (or pass --real_steps)")
    make_train_function = keras.Model.make_train_function  # the JAX trainer's, through keras.Model's bases

    def make_hollow(trainer, force=False):
        make_train_function(trainer, force)
        if not getattr(trainer.train_function, "hollow", False):
            trainer.train_function = hollow_step(trainer.train_function, trainer.steps_per_execution, device)

    return mock.patch.object(keras.Model, "make_train_function", make_hollow)


def epoch_edges_ms(timer):
    """Mean ms over the epochs after the first (timed_epochs' steps `timer`): loop_head_ms, epoch start to first
    dispatch; loop_tail_ms, last dispatch to the end-of-epoch callbacks; device_tail_ms, from there until the
    device had finished the steps queued ahead (one step's worth or less where the loop waits for every step)."""
    edges = {"loop_head_ms": [], "loop_tail_ms": [], "device_tail_ms": []}
    for start, reached, end in list(zip(timer.starts, timer.reached, timer.ends))[1:]:
        dispatched = [t for t in DISPATCHED if start <= t <= reached]
        edges["loop_head_ms"].append(dispatched[0] - start)
        edges["loop_tail_ms"].append(reached - dispatched[-1])
        edges["device_tail_ms"].append(end - reached)
    return {key: 1000 * sum(values) / len(values) for key, values in edges.items()}


def time_config(config, args, distribution, device=None):
    """({ms_per_step, end_of_epoch_s, each callback's end-of-epoch seconds and, with `device`, epoch_edges_ms},
    the parsed flags) of train.py's train() with the flags `config`, averaged over the epochs after the first."""
    DISPATCHED.clear()
    with tempfile.TemporaryDirectory() as output:
        argv = ["--image_dir", args.image_dir, "--test_dir", args.test_dir, *shlex.split(RECIPE),
                "--nb_epochs", str(args.nb_epochs), "--steps", str(args.steps), "--output_path", output,
                *shlex.split(config)]
        run_args = train.get_args([arg for arg in argv if arg not in (PREMADE, SYNCED)])
        feed = premade_batches() if PREMADE in argv else contextlib.nullcontext()
        steps = contextlib.nullcontext() if args.real_steps else hollow_steps(device)
        control = loss_read_every_step() if SYNCED in argv else contextlib.nullcontext()
        network = contextlib.nullcontext() if args.real_network else stand_in_network(args.filters)
        with network, control, feed, steps, \
                timed_epochs() as (training_timer, epoch_timer), \
                open(Path(output) / "train.log", "w") as log, contextlib.redirect_stdout(log):
            train.train(run_args, distribution)
    training, epochs = training_timer.seconds[1:], epoch_timer.seconds[1:]
    if not training:
        raise SystemExit(f"bench_host.py: configuration {config!r} timed no epoch after the first (it trained "
                         f"{len(training_timer.seconds)}); leave --nb_epochs out of the configurations")
    end_of_epoch = [whole - steps for whole, steps in zip(epochs, training)]
    parts = epoch_timer.parts[1:]
    times = dict(ms_per_step=1000 * sum(training) / len(training) / args.steps,
                 end_of_epoch_s=sum(end_of_epoch) / len(end_of_epoch),
                 **{f"{name}_s": sum(part[name] for part in parts) / len(parts) for name in parts[0]})
    if device is not None:
        times.update(epoch_edges_ms(training_timer))
    return times, run_args


def get_args():
    parser = common.get_parser(__doc__)
    common.add_backend_flag(parser)
    common.add_data_flags(parser)
    common.add_epochs_flag(parser, 3, "epochs per configuration (the first compiles and is not timed)")
    common.add_steps_flag(parser, 200)
    parser.add_argument("--config", nargs="+", default=[PREMADE, "--workers 2", "--workers 8",
                                                        "--workers 8 --steps_per_execution 10"],
                        help=f"train.py flags to time (besides the recipe's: {RECIPE}), one quoted string per "
                             f"configuration; with the word {PREMADE}: its batches made before training and fed "
                             f"from memory (the loop alone); with {SYNCED}: a callback reads the loss after every "
                             f"step (the loop waits for the device each step, the control of --device_ms)")
    parser.add_argument("--filters", type=cli.positive_int, default=1,
                        help="filters per convolution of the stand-in: train.py's SRResNet with the patches pooled "
                             f"{POOL}x{POOL} before it and enlarged back after, so that its steps and validation "
                             "are cheap but its weight arrays and the batches the recipe's")
    parser.add_argument("--real_steps", action="store_true",
                        help="run real training steps (any backend; their arithmetic included) instead of hollow "
                             "ones (JAX: after the first, each step dispatches the state and its batch to a "
                             "compiled function that does nothing, so a step's time is the host's share alone)")
    parser.add_argument("--real_network", action="store_true",
                        help="train train.py's own network instead of the stand-in; with --real_steps, on a GPU: "
                             f"the real step time, and with {PREMADE} its floor")
    parser.add_argument("--device_ms", type=float, default=0.0,
                        help="simulate a device whose step takes this many ms (JAX on a CPU: each hollow step "
                             "keeps one XLA CPU thread busy that long, queued as on a GPU, the other cores the "
                             "host's); adds device_busy (its share of the steps' wall time) and the epoch's edges "
                             "(loop_head_ms, loop_tail_ms, device_tail_ms); 0: no device work")
    return parser.parse_args()


def main():
    args = get_args()
    if args.device_ms and args.real_steps:
        raise SystemExit("bench_host.py: --device_ms simulates the device of hollow steps; leave out --real_steps")
    if args.real_network and not args.real_steps:
        raise SystemExit("bench_host.py: --real_network times the network's real steps; add --real_steps")
    distribution = train.start_devices(train.get_args([]))
    device = calibrated_device(args.device_ms) if args.device_ms else None
    for config in args.config:
        before = device_ms_per_call(device) if device else 0.0
        times, run_args = time_config(config, args, distribution, device)
        if device is not None:  # the device's share of the steps' wall time, its step timed around the run
            device_ms = (before + device_ms_per_call(device)) / 2
            times.update(device_ms=device_ms, device_busy=device_ms / times["ms_per_step"])
        rounded = {key: round(value, 3) for key, value in times.items()}
        common.emit("host_step", config=config, **rounded, real_steps=args.real_steps, steps=args.steps,
                    network="train.py's" if args.real_network else f"stand-in, {args.filters} filters",
                    epochs_timed=args.nb_epochs - 1, workers=run_args.workers, backend=keras.backend.backend(),
                    device=distribution.description)
    return 0


if __name__ == "__main__":
    sys.exit(main())
