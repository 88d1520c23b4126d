"""Training step time of each Keras backend on this machine, in one run: bench_train.py under every backend.

    python3 benchmarks/bench_backends.py [--backends tensorflow jax torch] [--models srresnet] [--steps 10]

Runs benchmarks/bench_train.py once per backend (KERAS_BACKEND set, same flags, one after the other) and
prints its JSON lines, then one line per (model, feed) with each backend's step time relative to the first
backend's. Backends whose package is missing are reported and skipped.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

BENCH_TRAIN = Path(__file__).resolve().parent / "bench_train.py"
BACKENDS = ("tensorflow", "jax", "torch")  # each imports as its backend name


def get_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS),
                        help="Keras backends to time; ratios are relative to the first")
    parser.add_argument("--models", nargs="+", default=["srresnet"], help="models to time (bench_train.py)")
    parser.add_argument("--steps", type=int, default=10, help="batches of the timed epoch (bench_train.py)")
    return parser.parse_args()


def run_bench_train(backend, args):
    """bench_train.py's JSON lines under `backend`, as dicts."""
    command = [sys.executable, str(BENCH_TRAIN), "--models", *args.models, "--steps", str(args.steps)]
    result = subprocess.run(command, env={**os.environ, "KERAS_BACKEND": backend}, capture_output=True, text=True,
                            check=True)
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def main():
    args = get_args()
    seconds = {}  # (model, feed) -> {backend: seconds per step}
    for backend in args.backends:
        if importlib.util.find_spec(backend) is None:
            print(json.dumps(dict(bench="backend_step", backend=backend, skipped=f"{backend} not installed")))
            continue
        for record in run_bench_train(backend, args):
            print(json.dumps(record), flush=True)
            seconds.setdefault((record["model"], record["feed"]), {})[backend] = record["seconds"]
    for (model, feed), times in seconds.items():
        first = times.get(args.backends[0])
        ratios = {backend: round(value / first, 3) for backend, value in times.items()} if first else {}
        print(json.dumps(dict(bench="backend_step_ratio", model=model, feed=feed, relative_to=args.backends[0],
                              ratios=ratios, seconds=times)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
