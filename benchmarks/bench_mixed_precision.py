"""train.py in float32 against train.py --mixed_precision at an equal budget (same seed, data and flags, gaussian
noisy targets): milliseconds a step (training and validation, the first epoch left out) and validation PSNR,
to show what 16-bit compute gains and costs."""
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

import common


def get_args():
    parser = common.get_parser(__doc__)
    common.add_data_flags(parser, test="Set5")
    common.add_train_py_flags(parser, nb_epochs=3, steps=50,
                              epochs_help="epochs per run (the first compiles and is not timed)", timed=True)
    return parser.parse_args()


def train(args, output, *flags):
    """Run train.py; returns (per-epoch ms per step, val_PSNR history, wall seconds, dtype policy)."""
    stdout, wall = common.run_train_py(args, args.test_dir, output, *flags)
    # Epoch lines read "50/50 - 203s - 4s/step - ...": whole seconds per epoch are precise to 1 %, per step not.
    epochs = [1000.0 * float(seconds) / args.steps for seconds in re.findall(r" - (\d+)s - [\d.]+\w*/step - ", stdout)]
    history = np.load(Path(output) / "history.npz", allow_pickle=True)["history"].item()
    policy = re.search(r"^mixed precision: (\S+)", stdout, re.MULTILINE)
    return epochs, history["val_PSNR"], wall, policy.group(1) if policy else "float32"


def main():
    args = get_args()
    runs = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, flags in (("float32", ()), ("mixed", ("--mixed_precision",))):
            epochs, val_psnr, wall, policy = train(args, Path(folder) / name, *flags)
            runs[name] = dict(run=name, policy=policy, ms_per_step=round(float(np.mean(epochs[1:])), 1),
                              epoch_ms_per_step=epochs, val_PSNR=[round(v, 3) for v in val_psnr],
                              wall_s=round(wall, 1), steps=args.nb_epochs * args.steps)
            common.emit("mixed_precision_run", **runs[name])
    float32, mixed = runs["float32"], runs["mixed"]
    common.emit("mixed_precision_ratio", speed_up=round(float32["ms_per_step"] / mixed["ms_per_step"], 2),
                val_PSNR_difference_db=round(mixed["val_PSNR"][-1] - float32["val_PSNR"][-1], 3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
