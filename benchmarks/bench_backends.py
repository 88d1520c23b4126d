"""Training step time of each Keras backend on this machine: bench_train.py (its lines passed on) once per backend
with the same flags, then each backend's step time relative to the first's per model and feed, to pick a backend.
Backends whose package is missing are reported and skipped."""
import importlib.util
import json
import sys
from pathlib import Path

import common

BENCH_TRAIN = Path(__file__).resolve().parent / "bench_train.py"


def get_args():
    parser = common.get_parser(__doc__)
    parser.add_argument("--backends", nargs="+", choices=common.BACKENDS, default=list(common.BACKENDS),
                        help="Keras backends to time; ratios are relative to the first")
    common.add_data_flags(parser, test=None)
    common.add_models_flag(parser, ["srresnet"])
    common.add_steps_flag(parser, 10, "batches of the timed epoch")
    common.add_patch_flags(parser)
    return parser.parse_args()


def run_bench_train(backend, args):
    """bench_train.py's JSON lines under `backend`, as dicts."""
    command = [sys.executable, str(BENCH_TRAIN), "--backend", backend, "--image_dir", args.image_dir,
               "--models", *args.models, "--steps", str(args.steps), "--batch_size", str(args.batch_size),
               "--image_size", str(args.image_size)]
    stdout, _ = common.run(command)
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def main():
    args = get_args()
    seconds = {}  # (model, feed) -> {backend: seconds per step}
    for backend in args.backends:
        if importlib.util.find_spec(backend) is None:
            common.emit("backend_step", backend=backend, skipped=f"{backend} not installed")
            continue
        for record in run_bench_train(backend, args):
            common.emit(**record)
            seconds.setdefault((record["model"], record["feed"]), {})[backend] = record["seconds"]
    for (model, feed), times in seconds.items():
        first = times.get(args.backends[0])
        ratios = {backend: round(value / first, 3) for backend, value in times.items()} if first else {}
        common.emit("backend_step_ratio", model=model, feed=feed, relative_to=args.backends[0], ratios=ratios,
                    seconds=times)
    return 0


if __name__ == "__main__":
    sys.exit(main())
