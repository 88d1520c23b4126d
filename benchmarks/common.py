"""What the benchmark scripts share: the repository root on sys.path (done on import), the default data folders,
the flags several scripts take, train.py runs and the one JSON line each measurement prints."""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"  # train291/, Set14/ and Set5/ by default; any folder by flag
BACKENDS = ("tensorflow", "jax", "torch")  # each imports under its backend name

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the scripts import train, model, generator, ... from the repository root

import cli  # noqa: E402  (imports nothing heavy)


def get_parser(doc):
    """An ArgumentParser described by a script's docstring, with every flag's default in --help."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def early_value(flag, **kwargs):
    """The value of `flag` (add_argument's `kwargs`) on the command line, or its default, before the script's
    parser runs: for what must be set before Keras or JAX starts."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument(flag, **kwargs)
    return vars(early.parse_known_args()[0])[flag.lstrip("-")]


def import_keras(start=True):
    """Import Keras without TensorFlow's start-up log lines (cli.import_keras_quietly), under the backend that
    --backend names where the command line has one: call it before importing modules that import Keras."""
    backend = early_value("--backend", choices=BACKENDS)
    if backend:
        os.environ["KERAS_BACKEND"] = backend
    cli.import_keras_quietly(start=start)


def add_backend_flag(parser):
    """--backend: the Keras backend, which import_keras has already set up from it (default: KERAS_BACKEND's)."""
    import keras

    parser.add_argument("--backend", choices=BACKENDS, default=keras.backend.backend(),
                        help="Keras backend (instead of the environment variable KERAS_BACKEND)")


def add_data_flags(parser, train="train291", test="Set14", test_help="validation images"):
    """--image_dir (training images) and --test_dir, by default folders of the shared datasets; None: left out."""
    if train:
        parser.add_argument("--image_dir", type=cli.existing_dir, default=str(DATASETS / train),
                            help="training images")
    if test:
        parser.add_argument("--test_dir", type=cli.existing_dir, default=str(DATASETS / test), help=test_help)


def add_steps_flag(parser, default, help="batches per epoch"):
    """--steps: batches per epoch."""
    parser.add_argument("--steps", type=cli.positive_int, default=default, help=help)


# argparse type of epoch counts whose first epoch (compiling) is left out of the timing: one more must follow it
timed_epoch_count = cli.bounded_int(2, 10**6)


def add_epochs_flag(parser, default, help="epochs per run (the first compiles and is not timed)", timed=True):
    """--nb_epochs: epochs per run; with `timed` at least 2, since the first is not timed."""
    parser.add_argument("--nb_epochs", type=timed_epoch_count if timed else cli.positive_int, default=default,
                        help=help)


def add_models_flag(parser, default):
    """--models: the networks to time."""
    parser.add_argument("--models", nargs="+", choices=cli.MODEL_NAMES, default=list(default), help="models to time")


def add_patch_flags(parser):
    """--batch_size and --image_size of the training batches, train.py's defaults."""
    parser.add_argument("--batch_size", type=cli.positive_int, default=16, help="patches per batch")
    parser.add_argument("--image_size", type=cli.positive_int, default=64, help="patch size in pixels")


def add_train_py_flags(parser, nb_epochs, steps, epochs_help="epochs of every training run", timed=False):
    """The flags of scripts that run train.py at a small CPU budget (run_train_py): --nb_epochs, --steps, --lr."""
    add_epochs_flag(parser, nb_epochs, epochs_help, timed)
    add_steps_flag(parser, steps, "batches per epoch (batch 16 of 64x64)")
    parser.add_argument("--lr", type=cli.positive_float, default=0.005, help="initial learning rate")


def run(command):
    """Run `command` (a list) to its end; returns (its stdout, wall seconds). A failure ends this script with the
    end of the command's stderr."""
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        name = Path(command[1]).name if len(command) > 1 else command[0]
        sys.exit(f"{name} failed (exit status {result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout, time.perf_counter() - start


def run_train_py(args, test_dir, output, *flags):
    """Run train.py on args.image_dir (validating on `test_dir`) for args.nb_epochs x args.steps batches of 16
    64x64 patches at args.lr, seed 0, into `output`, and more `flags`; returns (its stdout, wall seconds)."""
    return run([sys.executable, str(REPO / "train.py"), "--image_dir", args.image_dir, "--test_dir", test_dir,
                "--nb_epochs", str(args.nb_epochs), "--steps", str(args.steps), "--batch_size", "16",
                "--image_size", "64", "--lr", str(args.lr), "--seed", "0", "--output_path", str(output), *flags])


def seconds(function):
    """Wall seconds of one call of `function()`."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def emit(bench, **fields):
    """Print one measurement as a JSON line {"bench": bench, ...}, flushed so that a long run shows it at once."""
    print(json.dumps(dict(bench=bench, **fields)), flush=True)


def read_pairs(folder):
    """[(name, noisy, clean)] HxWx3 uint8 BGR, for every photo of FOLDER/noisy that FOLDER/clean has too (a folder
    of real noisy photos with ground truth, e.g. PolyU-Canon5D2); exits with one line where there are none."""
    import images

    pairs = []
    for noisy_path in images.list_images(f"{folder}/noisy"):
        clean = images.read_image(f"{folder}/clean/{noisy_path.name}")
        if clean is not None:
            pairs.append((noisy_path.name, images.read_image(noisy_path), clean))
    if not pairs:
        sys.exit(f"{Path(sys.argv[0]).name}: error: no noisy/clean pairs of the same name in {folder}")
    return pairs


def load_network(path, mixed_precision=False):
    """The network of a weight file (SRResNet or UNet, its channels read off the file) as test_model.py denoises
    with it (inference_graph.inference_network); with `mixed_precision`, in bfloat16."""
    import_keras()
    import inference_graph
    import mixed_precision as precision
    import model as models

    if mixed_precision:
        precision.use_mixed_precision()
    channels = models.channels_of_weights(path)
    network = models.get_model("srresnet", channels=channels)
    if models.weights_mismatch(network, path):
        network = models.get_model("unet", channels=channels)
    models.load_weights(network, path)
    return inference_graph.inference_network(network)


def nlm_sweep(noisy_images, strengths):
    """{h: [OpenCV's colour non-local means of each uint8 BGR image at strength h]} for each of `strengths` (luma
    and colour filtered alike, 7x7 patches, 21x21 search)."""
    import cv2

    return {h: [cv2.fastNlMeansDenoisingColored(noisy, None, h, h, 7, 21) for noisy in noisy_images]
            for h in strengths}
