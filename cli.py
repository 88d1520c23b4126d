"""Command-line plumbing shared by the four scripts: one-line errors, argument types, display check.

Bad user input ends a script with one line on stderr naming the flag or file
and what is accepted, and exit status 2 (argparse's convention), never a
traceback. Imports nothing heavy, so `noise_model.py` stays Keras-free, and
train.py and test_model.py build their parsers before Keras is imported.
"""
import argparse
import contextlib
import errno
import json
import logging
import multiprocessing
import os
import sys
import warnings
from pathlib import Path

# Choices of train.py's and test_model.py's flags, here so that their parsers need no Keras (seconds to import):
# model.MODEL_NAMES and distribute.setup's modes, which tests/test_scripts.py checks these against.
MODEL_NAMES = ("srresnet", "unet")
DISTRIBUTE_MODES = ("none", "mirrored", "multiworker")


def default_workers():
    """Worker threads that make batches while the model trains: one per core, 2 to 4 (Keras runs a PyDataset
    in background threads only where workers > 1)."""
    return min(4, max(2, os.cpu_count() or 2))


def can_fork():
    """Whether this system has os.fork, which batch-making processes need (Linux; not Windows)."""
    return "fork" in multiprocessing.get_all_start_methods()


class UserError(Exception):
    """A problem with what the user asked for; its message is shown as is."""


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's default in --help, except where it has none to show: a required flag ('default: None')."""

    def _get_help_string(self, action):
        return action.help if action.required else super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with defaults in --help and errors on one line (no usage block)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def one_line_warning(message, category, filename, lineno, line=None):
    """Warnings as users read them: one line, no source location."""
    return f"warning: {message}\n"


def run_main(main):
    """Call `main()`; turn a `UserError` into a one-line message and exit status 2."""
    warnings.formatwarning = one_line_warning
    try:
        return main()
    except UserError as error:
        prog = os.path.basename(sys.argv[0])
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # Every file is written to a temporary name and renamed: what was written before is whole.
        print(f"{os.path.basename(sys.argv[0])}: error: {error.strerror}: free some space and run again "
              f"(train.py: add --resume); the files written before this one are intact", file=sys.stderr)
        return 1


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def finite_float(text, accepts, bound):
    """`text` as a finite float for which accepts(value) holds, else an ArgumentTypeError naming `bound`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}") from None
    if not (accepts(value) and value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}")
    return value


def positive_float(text):
    """argparse type: a number > 0."""
    return finite_float(text, lambda value: value > 0, "> 0")


def non_negative_float(text):
    """argparse type: a finite number >= 0."""
    return finite_float(text, lambda value: value >= 0, ">= 0")


class RememberGiven(argparse.Action):
    """Stores the value like the default action, and sets `<dest>_given` True: whether the flag was on the command
    line, even with its default value (a flag that another flag makes meaningless is then an error)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


def bounded_int(low, high):
    """argparse type: a whole number from `low` to `high` (a seed, a size that must fit in memory)."""
    def whole_number_in_range(text):
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected a whole number from {low} to {high}, got {text!r}")
        return value
    return whole_number_in_range


seed = bounded_int(0, 2**32 - 1)  # argparse type: NumPy's and Keras' seeds are unsigned 32-bit integers


def existing_dir(text):
    """argparse type: a folder that exists."""
    if not Path(text).is_dir():
        reason = "is a file, not a folder" if Path(text).exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text!r} {reason}")
    return text


def same_folder(first, second):
    """True where two folder paths name the same folder (links resolved); False where either is None."""
    return first is not None and second is not None and Path(first).resolve() == Path(second).resolve()


def existing_file(text):
    """argparse type: a file that exists."""
    if not Path(text).is_file():
        reason = "is a folder, not a file" if Path(text).exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text!r} {reason}")
    return text


# Trained weights shipped with the suite, taken by short name, and their manifest: for each name its file, network,
# training noise, recipe and scores (the one home of those figures; the docs and the tests read it).
SHIPPED_WEIGHTS_DIR = Path(__file__).resolve().parent / "result" / "weights"
WEIGHTS_MANIFEST = SHIPPED_WEIGHTS_DIR / "weights.json"


def weights_manifest():
    """{short name: its entry} of result/weights/weights.json ({} where it cannot be read)."""
    try:
        return json.loads(WEIGHTS_MANIFEST.read_text())
    except (OSError, ValueError):
        return {}


def shipped_weights():
    """{short name: path} of the shipped weights the manifest lists and whose file is there, by name."""
    files = {name: SHIPPED_WEIGHTS_DIR / entry["file"] for name, entry in sorted(weights_manifest().items())}
    return {name: path for name, path in files.items() if path.is_file()}


def shipped_family(path):
    """{strength: path} of the shipped weights of one family (the manifest's "family" and "strength": the same
    network trained at several noise strengths) that the weight file `path` belongs to; {} where it is not
    shipped or has no family."""
    manifest, files = weights_manifest(), shipped_weights()
    name = next((name for name, file in files.items() if Path(path).resolve() == file.resolve()), None)
    family = manifest.get(name, {}).get("family")
    return {float(entry["strength"]): files[other] for other, entry in manifest.items()
            if family and entry.get("family") == family and other in files}


def shipped_weights_help():
    """'gaussian (trained on gaussian,0,50), ...': the shipped names for --help."""
    manifest = weights_manifest()
    return ", ".join(f"{name} (trained on {manifest[name]['training_noise']})" for name in shipped_weights()) or "none"


def weight_file(text):
    """argparse type of --weight and --weight_file: an existing file, or the short name of shipped weights."""
    if Path(text).is_file():
        return Path(text)
    shipped = shipped_weights()
    if text in shipped:
        return shipped[text]
    names = ", ".join(shipped) or "none shipped"
    raise argparse.ArgumentTypeError(f"{text}: no such file, and not the name of shipped weights ({names})")


def weights_error_text(error, model):
    """A weight file's error in words for a one-line message: a model.WeightsMismatch (it has `fits`, the
    network the file fits, and its `channels`) gains the flags that build that network."""
    fits = getattr(error, "fits", None)
    if fits is None:
        return str(error)
    channels = getattr(error, "channels", 3)
    flags = f"--model {fits}" + (f" --channels {channels}" if channels != model.input_shape[-1] else "")
    return f"{error}: pass {flags}"


def image_output_file(text):
    """argparse type: a file name whose suffix OpenCV can encode (.png, .jpg, ...)."""
    import cv2

    if not cv2.haveImageWriter(text):
        raise argparse.ArgumentTypeError(f"{text!r}: give an image file name such as preview.png")
    return text


def prepare_output_dir(path, flag):
    """Create the output folder `path` if needed; a file in the way or no write access is a UserError."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path}: a file is in the way; pass a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{flag} {path}: cannot create it ({error.strerror})") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"{flag} {path}: not writable")
    return path


@contextlib.contextmanager
def output_folder(path, flag):
    """prepare_output_dir(path, flag) for the block; where the block fails (a bad input found later, Ctrl-C)
    and the folders this made are still empty, they are removed again: a failed start leaves nothing behind."""
    path = Path(path)
    made = [folder for folder in (path, *path.parents) if not folder.exists()]  # deepest first
    prepared = prepare_output_dir(path, flag)
    try:
        yield prepared
    except BaseException:
        for folder in made:
            with contextlib.suppress(OSError):  # not empty (results of finished epochs), or gone: leave it
                folder.rmdir()
        raise


def has_display():
    """True where a matplotlib window can open: a display (X11/Wayland on Linux) and an interactive backend."""
    if not sys.platform.startswith(("darwin", "win")) and not (os.environ.get("DISPLAY")
                                                             or os.environ.get("WAYLAND_DISPLAY")):
        return False
    import matplotlib

    backend = matplotlib.get_backend().lower()
    return backend not in ("agg", "pdf", "ps", "svg", "cairo", "template") and "inline" not in backend


@contextlib.contextmanager
def native_stderr_silenced():
    """Send file descriptor 2 to /dev/null for a moment (Python exceptions still reach the user)."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def hide_retracing_advice(record):
    """logging filter: False for TensorFlow's "tf.function retracing" advice."""
    return "tf.function retracing" not in record.getMessage()


def import_keras_quietly(start=True):
    """Import Keras and (with `start`) start its backend without TensorFlow's C++ start-up lines, which it
    writes before its logging is configured and which would bury one-line errors. start=False leaves the
    devices to `start_backend_quietly` (train.py configures a distribution first)."""
    # 3: not even TensorFlow's C++ "errors", which here are notices (UNet's first step logs "oneDNN supports
    # DT_INT32 only on platforms with AVX-512. Falling back ..."); real failures raise Python exceptions.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with native_stderr_silenced():
        import keras
    if keras.backend.backend() == "tensorflow":
        # Images of different sizes are padded to a few bucket shapes, one traced graph each, on purpose;
        # TensorFlow's multi-line "tf.function retracing" advice about that would only puzzle users.
        logging.getLogger("tensorflow").addFilter(hide_retracing_advice)  # (added once: the same function)
    if start:
        start_backend_quietly()


def start_backend_quietly(configure=None):
    """Call `configure()` (device or distribution set-up), then run a first operation, which initialises
    the devices (and logs about missing CUDA), with native stderr silenced; returns what `configure` returned."""
    import keras

    with native_stderr_silenced():
        configured = configure() if configure else None
        keras.ops.zeros(1)
    return configured
