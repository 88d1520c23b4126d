"""Compare training runs: plot per-epoch metrics from each run folder's history.npz.

    python3 plot_history.py --input1 gaussian --input2 clean
    python3 plot_history.py --input1 gaussian --input2 clean --inputs text impulse --output_dir plots

writes val_loss.png, val_PSNR.png and val_SSIM.png (one line per run,
labelled by folder name; val_SSIM where a run has it) into --output_dir.
Needs only numpy and matplotlib.
"""
import pickle
import sys
from pathlib import Path

import numpy as np

import cli

METRICS = ("val_loss", "val_PSNR", "val_SSIM")  # val_SSIM: runs of this suite since it added SSIM


def load_history(run_dir):
    """The {metric: [per-epoch values]} dict that train.py saved in run_dir/history.npz."""
    path = Path(run_dir) / "history.npz"
    if not path.is_file():
        raise cli.UserError(f"{run_dir}: no history.npz in it (pass a train.py --output_path folder)")
    try:
        with np.load(path, allow_pickle=True) as data:
            history = data["history"].item()
    except (OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as error:
        raise cli.UserError(f"{path}: not a train.py history file ({error})") from None
    if not isinstance(history, dict):
        raise cli.UserError(f"{path}: not a train.py history file (its 'history' is a {type(history).__name__}, "
                            f"not a dict of per-epoch lists)")
    return history


def load_runs(run_dirs):
    """{run name: history} of the run folders (a folder's name, or its path where two names are the same)."""
    histories = {}
    for run_dir in run_dirs:
        name = Path(run_dir).resolve().name
        histories[name if name not in histories else str(run_dir)] = load_history(run_dir)
    return histories


def metric_figure(histories, metric):
    """A matplotlib Figure with one line per run ({name: history}) for `metric` against the epoch."""
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    for name, history in histories.items():
        if metric in history:
            values = history[metric]
            axes.plot(np.arange(1, len(values) + 1), values, marker="o" if len(values) < 20 else None, label=name)
    missing = [name for name, history in histories.items() if metric not in history]
    if missing:  # (runs from before val_SSIM was added, say): said, not drawn as a legend entry without a line
        axes.set_title(f"no {metric} in {', '.join(missing)}", fontsize=9)
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers: no 1.5 on a short run
    axes.set_ylabel(metric + (" (dB)" if "PSNR" in metric else ""))
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return figure


def plot_metric(histories, metric, path):
    """One PNG at `path` with one line per run for `metric`."""
    import matplotlib.pyplot as plt

    figure = metric_figure(histories, metric)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def metrics_to_plot(histories, run_dirs, metrics=METRICS):
    """The `metrics` that at least one run has; none is a UserError naming the runs' files."""
    present = [metric for metric in metrics if any(metric in history for history in histories.values())]
    if not present:
        files = ", ".join(str(Path(run_dir) / "history.npz") for run_dir in run_dirs)
        raise cli.UserError(f"{files}: no {', '.join(metrics)} in it (not a train.py history with validation)")
    return present


def plot_runs(run_dirs, output_dir, metrics=METRICS):
    """Plot each metric of the runs in `run_dirs` into output_dir/<metric>.png; returns the written paths.
    Every history is read and checked before the output folder is created or anything is written."""
    histories = load_runs(run_dirs)
    present = metrics_to_plot(histories, run_dirs, metrics)
    output_dir = cli.prepare_output_dir(output_dir, "--output_dir")
    written = []
    for metric in present:
        path = output_dir / f"{metric}.png"
        plot_metric(histories, metric, path)
        written.append(path)
    return written


def get_args(argv=None):
    parser = cli.ArgumentParser(description="Plot val_loss, val_PSNR and val_SSIM of train.py runs, one line per run.")
    parser.add_argument("--input1", type=cli.existing_dir, required=True,
                        help="first run folder (a train.py --output_path holding history.npz)")
    parser.add_argument("--input2", type=cli.existing_dir, default=None, help="second run folder to compare with")
    parser.add_argument("--inputs", type=cli.existing_dir, nargs="+", default=[],
                        help="more run folders to compare, any number")
    parser.add_argument("--output_dir", default=".", help="folder for val_loss.png, val_PSNR.png and val_SSIM.png")
    return parser.parse_args(argv)


def main(argv=None):
    args = get_args(argv)
    runs = [run for run in (args.input1, args.input2, *args.inputs) if run]
    for path in plot_runs(runs, args.output_dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
