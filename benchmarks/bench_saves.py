"""Seconds a checkpoint save takes (the SRResNet's weights and Adam state, as train.py writes every epoch), with
and without model.cache_keras_save_skipsets, in one run.

    python3 benchmarks/bench_saves.py [--saves 10]

Keras 3.15's saving_lib stores its per-kind attribute sets under one name and looks them up under another, so
every save builds some hundred throw-away layers to work them out again. Each measurement runs in a new thread
(Keras keeps those sets per thread), where the "cached" one calls model.cache_keras_save_skipsets first (as
train.py does), and times --saves calls of Keras' model.save_weights (which train.py's backup, model.EpochBackup,
calls every epoch that writes no checkpoint, and BestCheckpoint on improving epochs, each through a temporary
file). The two alternate, so drift on a shared machine hits both.
Prints one JSON line per measurement and their ratio. Then what the training loop itself spends on an epoch's
save since train.py writes in the background (model.EpochWriter): the copy of the weights and optimizer state it
takes at the epoch's end (model.copy_state; median of --saves copies), against the cached save it no longer
waits for, and the one-time build of the copy (model.saveable_copy, at the first epoch's end).
"""
import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cli  # noqa: E402

cli.import_keras_quietly()
import keras  # noqa: E402

import model as models  # noqa: E402


def trained_srresnet():
    """The SRResNet after one training step, so that its optimizer holds its state as in a training run."""
    model = models.get_model("srresnet")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.001), loss="mse")
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    model.fit(x, x, epochs=1, verbose=0)
    return model


def save_seconds(model, path, saves, cached):
    """Seconds of each of `saves` saves to `path`, in a new thread; with `cached`, the sets cached first."""
    seconds = []

    def run():
        if cached:
            models.cache_keras_save_skipsets()
        model.save_weights(path)  # the thread's first save (not timed)
        for _ in range(saves):
            start = time.perf_counter()
            model.save_weights(path)
            seconds.append(time.perf_counter() - start)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return seconds


def background_write_times(model, copies):
    """{"copy_build_s": seconds to build the model's saveable_copy, "state_copy_s": median seconds of `copies`
    copies of its state into it} (the training loop's part of a background write)."""
    start = time.perf_counter()
    copy = models.saveable_copy(model)
    build = time.perf_counter() - start
    seconds = []
    for _ in range(copies + 1):  # the first copies compiles (JAX), not timed
        start = time.perf_counter()
        models.copy_state(model, copy)
        keras.ops.convert_to_numpy(copy.weights[-1].value)  # the copies are done (JAX dispatches them)
        seconds.append(time.perf_counter() - start)
    return dict(copy_build_s=round(build, 3), state_copy_s=round(statistics.median(seconds[1:]), 4))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--saves", type=int, default=10, help="timed saves per measurement and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two measurements")
    args = parser.parse_args()
    model = trained_srresnet()
    times = {"uncached": [], "cached": []}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "checkpoint.weights.h5"
        for _ in range(args.rounds):
            for name in times:
                times[name] += save_seconds(model, path, args.saves, cached=name == "cached")
        megabytes = path.stat().st_size / 2**20
    common = dict(model="srresnet", file_mib=round(megabytes, 1), saves=len(times["cached"]),
                  backend=keras.backend.backend())
    for name, seconds in times.items():
        print(json.dumps(dict(bench="checkpoint_save", skipsets=name, median_s=round(statistics.median(seconds), 4),
                              **common)), flush=True)
    print(json.dumps(dict(bench="checkpoint_save_speedup", ratio=round(statistics.median(times["uncached"])
                                                                       / statistics.median(times["cached"]), 2),
                          **common)), flush=True)
    loop = background_write_times(model, args.saves)
    print(json.dumps(dict(bench="background_write", **loop, save_s=round(statistics.median(times["cached"]), 4),
                          loop_share=round(loop["state_copy_s"] / statistics.median(times["cached"]), 3), **common)),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
