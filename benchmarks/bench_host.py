"""Host-side cost of a training step: train.py's own training loop with the device's work taken out, so what is
left is the work a GPU cannot do for us.

    KERAS_BACKEND=jax python3 benchmarks/bench_host.py [--config premade "--workers 8" ...]

On a GPU, where the host queues steps ahead of the device, a step costs about max(GPU work, host work); the host
work (Keras' Python loop, making and handing over a batch, dispatching the step, the per-batch callbacks) must
stay well below the GPU's step time (a floor of 8.6 ms for the recipe's SRResNet in bfloat16 on an H200) or the
GPU waits.
Each configuration runs train.py's train() (the recipe's data: 128x128 patches, batch 8, zero-mean gaussian
targets, Set14 validation every epoch) for --nb_epochs epochs of --steps batches and prints one JSON line:
milliseconds a training step and seconds of end-of-epoch work (validation, checkpoint, history, backup: in all
and per callback, under its class name), averaged
over the epochs after the first (which compiles).

Hollow steps (the default; JAX): after the first real step, each training step takes its batches from the feed
and dispatches the model's whole state (its weight and optimizer arrays) and the batch to a compiled function
that does nothing with them, so the milliseconds a step are the host's share alone, on any machine, the
2-core CPU included. With --real_steps the steps run for real (any backend), arithmetic included.
Simulated device (--device_ms D, JAX on a CPU): each hollow step also keeps one XLA CPU thread busy for about
D ms (a chain of matrix products sized to D ms at start-up, each step's waiting on the previous one's, as a
GPU's steps do), so the CPU stands in for a GPU: XLA runs the products while the Python loop goes on, exactly as
JAX dispatches to a GPU. A loop that never waits for the device then takes max(D, host share) a step, one that
waits after every step D + host share. The JSON line gives the device's share of the steps' wall time
(device_busy = D x steps / wall time of the steps, D timed alone just before and after the configuration; this
machine's noise can put it above 1) and the epoch's edges: loop_head_ms from the epoch's start to its first
dispatch, loop_tail_ms from its last dispatch to the end-of-epoch callbacks, device_tail_ms from there until the
device had finished: the steps the loop had queued ahead of it (one step's D or less if the loop waits for every
step). XLA's CPU client is limited to one thread for this, so the other core is the host's.
The network is a stand-in with the SRResNet's layers and 219 weight arrays but next to no arithmetic (each
patch pooled 8 x 8, 1 filter per convolution instead of 64, enlarged back), so that validation and the real
steps stay cheap. With --real_network (and --real_steps) it is train.py's own network, so that "premade" times
the device's floor for train.py's step (on a GPU: the step time to compare the recipe's steps with). The
configuration "premade" feeds batches made beforehand: the loop without the generator;
"synced" adds a callback that reads the loss after every step (the control: a loop that waits for the device);
"inline_writes" writes each epoch's checkpoint, history and backup in the training loop (the control of
train.py's background writes).
"""
import argparse
import contextlib
import json
import os
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path
from unittest import mock

if any(arg.startswith("--device_ms") for arg in sys.argv):
    # The simulated device is one XLA CPU thread; XLA reads its flags when JAX starts its CPU client, before
    # any argument parsing could happen (the imports below start it).
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cli  # noqa: E402

cli.import_keras_quietly()
warnings.formatwarning = cli.one_line_warning  # train.py's skipped-image warnings, one line each as there
import keras  # noqa: E402

import model as models  # noqa: E402
import train  # noqa: E402
from bench_train import timed_epochs  # noqa: E402  (this script's folder is on sys.path)

SHARED = Path(__file__).resolve().parents[2] / "shared/datasets"
POOL = 8  # the stand-in's convolutions see the patches pooled 8 x 8
PREMADE = "premade"  # in a configuration: feed batches made beforehand instead of the generator
SYNCED = "synced"  # in a configuration: add a callback that reads the loss after every step (the control)
INLINE = "inline_writes"  # in a configuration: the epoch's files written in the training loop, not in the background
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
    """Reads every step's loss back in the training loop (not async_safe): the loop waits for the device after
    each step, as it did with train.py's callbacks before they were all async-safe. The control of --device_ms."""

    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])


def loss_read_every_step():
    """Within: train.py's callbacks end with a ReadLossEveryStep."""
    training_callbacks = models.training_callbacks
    return mock.patch.object(models, "training_callbacks",
                             lambda *args, **kwargs: [*training_callbacks(*args, **kwargs), ReadLossEveryStep()])


def writes_inline():
    """Within: train.py's EpochWriter writes each epoch's checkpoint, history and backup in the training loop, as
    train.py did before 2026-11-27 (the control of the background writes)."""
    writer_init = models.EpochWriter.__init__
    return mock.patch.object(models.EpochWriter, "__init__",
                             lambda writer, background=True: writer_init(writer, background=False))


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
    """A compiled JAX function (token, state, batch, logs) -> (token, the state's last trainable array, logs):
    four products of `size` x `size` float32 matrices, a fixed amount of device work that waits for the previous
    call's token (as a training step waits for the previous step's weights) and ignores the state and the batch
    it is handed, but for the last trainable array and the logs it gives back: the same values, now waiting for
    the products, so that reading a weight or a step's loss back waits for the device as after a real step."""
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
    """A JAX train_function (state, batch iterator) -> (logs, state): the first call runs `real_step` (which
    compiles, and gives the logs); later calls take `steps_per_execution` batches and dispatch the state with
    each batch to a compiled function, returning the state unchanged with the first call's logs: the function
    does nothing, or with `device` (a busy_device) a fixed amount of device work each time (and the logs and the
    state's last array then wait for it)."""
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
    from keras.src.backend.jax.trainer import JAXTrainer

    make_train_function = JAXTrainer.make_train_function

    def make_hollow(trainer, force=False):
        make_train_function(trainer, force)
        if not getattr(trainer.train_function, "hollow", False):
            trainer.train_function = hollow_step(trainer.train_function, trainer.steps_per_execution, device)

    return mock.patch.object(JAXTrainer, "make_train_function", make_hollow)


def epoch_edges_ms(timer):
    """How the simulated device's work met an epoch's edges, mean milliseconds over the epochs after the first,
    from the steps timer of timed_epochs and the dispatch times: {"loop_head_ms": from the epoch's start to its
    first step's dispatch (the feed's start and first batch), "loop_tail_ms": from its last step's dispatch to
    the end-of-epoch callbacks (the feed's stop), "device_tail_ms": from there until the device had finished the
    epoch's steps (the steps queued ahead; one step's device time or less where the loop waits for every step)}."""
    edges = {"loop_head_ms": [], "loop_tail_ms": [], "device_tail_ms": []}
    for start, reached, end in list(zip(timer.starts, timer.reached, timer.ends))[1:]:
        dispatched = [t for t in DISPATCHED if start <= t <= reached]
        edges["loop_head_ms"].append(dispatched[0] - start)
        edges["loop_tail_ms"].append(reached - dispatched[-1])
        edges["device_tail_ms"].append(end - reached)
    return {key: 1000 * sum(values) / len(values) for key, values in edges.items()}


def time_config(config, args, distribution, device=None):
    """{ms_per_step, end_of_epoch_s, and with `device` the epoch_edges_ms} of train.py's train() with the flags
    `config`, averaged over the epochs after the first, and the parsed flags."""
    DISPATCHED.clear()
    with tempfile.TemporaryDirectory() as output:
        argv = ["--image_dir", args.image_dir, "--test_dir", args.test_dir, *shlex.split(RECIPE),
                "--nb_epochs", str(args.nb_epochs), "--steps", str(args.steps), "--output_path", output,
                *shlex.split(config)]
        run_args = train.get_args([arg for arg in argv if arg not in (PREMADE, SYNCED, INLINE)])
        feed = premade_batches() if PREMADE in argv else contextlib.nullcontext()
        steps = contextlib.nullcontext() if args.real_steps else hollow_steps(device)
        control = loss_read_every_step() if SYNCED in argv else contextlib.nullcontext()
        writes = writes_inline() if INLINE in argv else contextlib.nullcontext()
        network = contextlib.nullcontext() if args.real_network else stand_in_network(args.filters)
        with network, control, writes, feed, steps, \
                timed_epochs() as (training_timer, epoch_timer), \
                open(Path(output) / "train.log", "w") as log, contextlib.redirect_stdout(log):
            train.train(run_args, distribution)
    training, epochs = training_timer.seconds[1:], epoch_timer.seconds[1:]
    if not training:
        raise SystemExit(f"bench_host.py: configuration {config!r} timed no epoch after the first (it trained "
                         f"{len(training_timer.seconds)}); --nb_epochs must be 2 or more, also within a configuration")
    end_of_epoch = [whole - steps for whole, steps in zip(epochs, training)]
    parts = epoch_timer.parts[1:]
    times = dict(ms_per_step=1000 * sum(training) / len(training) / args.steps,
                 end_of_epoch_s=sum(end_of_epoch) / len(end_of_epoch),
                 **{f"{name}_s": sum(part[name] for part in parts) / len(parts) for name in parts[0]})
    if device is not None:
        times.update(epoch_edges_ms(training_timer))
    return times, run_args


def get_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--image_dir", default=str(SHARED / "train291"), help="training images")
    parser.add_argument("--test_dir", default=str(SHARED / "Set14"), help="validation images")
    parser.add_argument("--config", nargs="+", default=[PREMADE, "--workers 2", "--workers 8",
                                                        "--workers 8 --steps_per_execution 10"],
                        help=f"train.py flags to time, one quoted string per configuration; with the word "
                             f"{PREMADE}: its batches made before training and fed from memory (the loop alone); "
                             f"with {SYNCED}: a callback reads the loss after every step (the loop waits for the "
                             f"device each step, the control of --device_ms); with {INLINE}: each epoch's files "
                             f"written in the training loop instead of on a helper thread from a copy")
    parser.add_argument("--filters", type=int, default=1, help="filters per convolution of the stand-in SRResNet")
    parser.add_argument("--real_steps", action="store_true",
                        help="run the stand-in's real training steps (any backend; their arithmetic included) "
                             "instead of hollow ones (JAX; the host's work alone)")
    parser.add_argument("--real_network", action="store_true",
                        help="train train.py's own network (the recipe's SRResNet) instead of the stand-in; with "
                             "--real_steps, on a GPU: the real step time, and with premade its floor")
    parser.add_argument("--device_ms", type=float, default=0.0,
                        help="simulate a device whose training step takes this many ms (JAX on a CPU: one XLA CPU "
                             "thread kept busy that long by each hollow step); 0: no device work")
    parser.add_argument("--nb_epochs", type=int, default=3, help="epochs per configuration (the first is not timed)")
    parser.add_argument("--steps", type=int, default=200, help="batches per epoch")
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
        print(json.dumps(dict(bench="host_step", config=config, **rounded,
                              real_steps=args.real_steps, steps=args.steps,
                              network="train.py's" if args.real_network else f"stand-in, {args.filters} filters",
                              epochs_timed=args.nb_epochs - 1, workers=run_args.workers,
                              backend=keras.backend.backend(), device=distribution.description)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
