"""The README's quick start, its commands read from README.md as a user would copy them: the training run cut to
one epoch of two steps (flags given later win), then the plot command exactly as written."""
import re
import shlex

import cv2

from conftest import REPO, run_script
from plot_history import METRICS, load_history


def quick_start_commands():
    """[(script, [arguments])] of the README's quick-start code block, past its pip line."""
    section = re.search(r"## Quick start\s+```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert section, "README.md has no quick-start code block"
    words = [shlex.split(line) for line in section.group(1).splitlines() if line.startswith("python3 ")]
    return [(command[1], command[2:]) for command in words]


def test_the_readme_quick_start_runs_as_written_and_leaves_plots(tmp_path):
    (train, train_args), (plot, plot_args) = quick_start_commands()
    assert (train, plot) == ("train.py", "plot_history.py")
    result = run_script(train, *train_args, "--nb_epochs", 1, "--steps", 2, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    seed = train_args[train_args.index("--seed") + 1]  # the README names the seed its figure comes from
    assert f"scikit-image's bundled photos; seed {seed}" in result.stdout, result.stdout[-2000:]
    output = tmp_path / train_args[train_args.index("--output_path") + 1]
    assert len(load_history(output)["val_PSNR"]) == 1
    assert cv2.imread(str(output / "sample.png")).shape[2] == 3
    result = run_script(plot, *plot_args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for metric in METRICS:
        assert cv2.imread(str(output / f"{metric}.png")) is not None, metric
