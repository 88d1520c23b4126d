"""Shared fixtures: paths to ../shared data (skipped with a reason where absent), synthetic image folders,
and a helper that runs the project's scripts as a user would."""
import contextlib
import importlib
import importlib.util
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

import cli

# JAX's persistent compilation cache, shared by the suite's JAX processes (the scripts it starts on JAX, the JAX
# run of the unit tests): a program that one of them compiled (the same network, patch size and step) is read
# back by the next instead of compiled again (~7 s a training run). Keyed by the program and the JAX version.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(tempfile.gettempdir()) / "n2n-tests-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# Keras (and its backend) imported once, quietly, before any test captures output: TensorFlow's one-time native
# start-up lines would otherwise land in whichever test imports it first (tests that run only a few of the
# suite's modules, e.g. `pytest tests/test_scripts.py -k each_loss`, saw them in train.py's in-process output).
cli.import_keras_quietly()

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATASETS = SHARED / "datasets"
LEGACY_CHECKPOINT = SHARED / "reference" / "srresnet_keras2_checkpoint.hdf5"


def require(path):
    """Skip the test where an optional resource of ../shared is missing; fail instead under
    N2N_REQUIRE_SHARED=1 (set by .ci/run, where ../shared is always present)."""
    if not path.exists():
        if os.environ.get("N2N_REQUIRE_SHARED") == "1":
            pytest.fail(f"{path} is missing, and N2N_REQUIRE_SHARED=1 requires it")
        pytest.skip(f"{path} is not present (../shared is optional outside CI)")
    return path


def shipped_score(name, images):
    """The score the weights manifest (result/weights/weights.json) reports for shipped weights `name` on the
    folder `images` (Set5, PolyU-Canon5D2, ...): {"test_noise_model", "psnr", ...}, or None."""
    scores = cli.weights_manifest().get(name, {}).get("scores", [])
    return next((score for score in scores if score["images"] == images), None)


def synthetic_photo(rng, height, width):
    """A smooth uint8 BGR image with a few shapes: photo-like enough for noise and crops."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([128 + 100 * np.sin(x / 17 + c) * np.cos(y / 23 - c) for c in range(3)], axis=-1)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(4):
        center = (int(rng.integers(width)), int(rng.integers(height)))
        cv2.circle(image, center, int(rng.integers(4, 20)), tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
    return image


@pytest.fixture(scope="package")
def image_folder(tmp_path_factory):
    """A folder of 6 small photos: nested subfolder, upper-case suffixes, one grayscale, a non-image file."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    (folder / "sub").mkdir()
    names = ["a.png", "b.PNG", "sub/c.jpg", "sub/d.JPEG", "e.bmp", "f.tif"]
    for k, name in enumerate(names):
        cv2.imwrite(str(folder / name), synthetic_photo(rng, 48 + 8 * k, 64 + 4 * k))
    gray = cv2.cvtColor(synthetic_photo(rng, 40, 56), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(folder / "gray.png"), gray)
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="package")
def small_photos(tmp_path_factory):
    """Two 64x64 photos of one size: quick to validate and denoise on any backend, and one padded shape
    (one trace of a distributed predict function)."""
    folder = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(2)
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(folder / name), synthetic_photo(rng, 64, 64))
    return folder


@pytest.fixture(scope="package")
def own_shots(tmp_path_factory):
    """Your own noisy shots of 4 synthetic scenes (72-96 x 80 pixels), as train.py --target_dir and --bursts take
    them: first/ and second/ (two independent gaussian sigma-15 shots of each scene, second/ as lossless WebP),
    clean/ (the scenes), bursts/ (one folder per scene, with 2, 3, 4 and 2 shots)."""
    folder = tmp_path_factory.mktemp("own_shots")
    rng = np.random.default_rng(6)
    for name in ("first", "second", "clean", *(f"bursts/scene{k}" for k in range(4))):
        (folder / name).mkdir(parents=True)

    def shot(scene):
        return np.clip(scene + rng.normal(0, 15, scene.shape), 0, 255).astype(np.uint8)

    for k in range(4):
        scene = synthetic_photo(rng, 72 + 8 * k, 80).astype(np.float32)
        cv2.imwrite(str(folder / "clean" / f"s{k}.png"), scene.astype(np.uint8))
        cv2.imwrite(str(folder / "first" / f"s{k}.png"), shot(scene))
        cv2.imwrite(str(folder / "second" / f"s{k}.webp"), shot(scene), [cv2.IMWRITE_WEBP_QUALITY, 101])
        for j in range((2, 3, 4, 2)[k]):
            cv2.imwrite(str(folder / "bursts" / f"scene{k}" / f"shot{j}.png"), shot(scene))
    return folder


def require_backend(backend):
    """{"KERAS_BACKEND": backend} for a subprocess; skips the test where that backend's package is missing
    (optional: requirements-backends.txt), and fails instead under N2N_REQUIRE_BACKENDS=1 (set by .ci/run,
    which installs them)."""
    if importlib.util.find_spec(backend) is None:
        if os.environ.get("N2N_REQUIRE_BACKENDS") == "1":
            pytest.fail(f"{backend} is not installed, and N2N_REQUIRE_BACKENDS=1 requires it")
        pytest.skip(f"{backend} is not installed (pip install -r requirements-backends.txt)")
    return {"KERAS_BACKEND": backend}


def shared_or(path, fallback):
    """`path` of ../shared where present (required under N2N_REQUIRE_SHARED=1), else `fallback`."""
    if path.is_dir() or os.environ.get("N2N_REQUIRE_SHARED") == "1":
        return require(path)
    return fallback


@pytest.fixture(scope="package")
def train_dir(image_folder):
    """The original's training set where ../shared has it, else the synthetic folder."""
    return shared_or(DATASETS / "train291", image_folder)


@pytest.fixture(scope="package")
def val_dir(image_folder):
    """Set5 where ../shared has it, else the synthetic folder."""
    return shared_or(DATASETS / "Set5", image_folder)


def run_script(script, *args, cwd=REPO, env=None, timeout=600):
    """Run one of the suite's scripts headless (no DISPLAY) and return the CompletedProcess."""
    # Not TF_CPP_MIN_LOG_LEVEL either: importing JAX in this process sets it (to 1), which a user's shell lacks.
    left_out = ("DISPLAY", "WAYLAND_DISPLAY", "TF_CPP_MIN_LOG_LEVEL")
    environment = {k: v for k, v in os.environ.items() if k not in left_out}
    environment.update(env or {})
    environment["MPLBACKEND"] = "Agg"
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def reset_keras_globals():
    """Undo what a script's main() may set for the whole process (--mixed_precision's dtype policy)."""
    if "keras" in sys.modules:
        sys.modules["keras"].config.set_dtype_policy("float32")


def run_main(module_name, *args):
    """Run a script's main() in this process as its __main__ guard does (cli.run_main, argparse exits included),
    with stdout and stderr captured: the bad-input cases answer in milliseconds instead of paying a new
    interpreter and the TensorFlow import (~5 s) each. Returns a CompletedProcess like run_script.
    Tests that need the real process (its exit, stderr of native code, environment) use run_script."""
    module = importlib.import_module(module_name)
    argv = [str(arg) for arg in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.run_main(lambda: module.main(argv))
        except SystemExit as exit_:  # argparse's errors and --help
            code = exit_.code
        finally:
            reset_keras_globals()
    return subprocess.CompletedProcess([module_name, *argv], code, out.getvalue(), err.getvalue())


def assert_one_line_error(result, *needles):
    """Exit status 2, exactly one line on stderr naming the culprit, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Under pytest-xdist (pytest.ini), keep the tests of the costly module-scoped training run (trained_run,
    about a minute) in one worker, which trains it once, instead of once in every worker that gets one.
    tryfirst: xdist's own hook turns the mark into the group it schedules by, so the mark must come first
    (without it both workers trained the run)."""
    for item in items:
        if "trained_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("trained_run"))
