"""train.py, taking the same flags, that also appends one JSON line an epoch to OUTPUT_PATH/epoch_times.jsonl:
the seconds of its training steps, of its end-of-epoch work and of each callback (epoch_timing.py), to show
where a run's time goes (gpu_recipe.sh runs the recipe through it)."""
import sys
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path)
from epoch_timing import timed_epochs  # imports Keras but starts no devices: train.main configures them

import cli
import train

EPOCH_TIMES = "epoch_times.jsonl"


def main(argv=None):
    with timed_epochs(Path(train.get_args(argv).output_path) / EPOCH_TIMES):
        return train.main(argv)


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
