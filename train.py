"""Train a Noise2Noise denoiser (SRResNet or UNet) from pairs of independently noisy patches.

    python3 train.py                       # bundled photos, original defaults (60 x 1000 steps)
    python3 train.py --nb_epochs 4 --steps 50 --batch_size 8 --image_size 48 --lr 0.005 --seed 0 \\
        --output_path demo                                         # the README demo: minutes on a CPU
    python3 train.py --image_dir dataset/291 --test_dir dataset/Set14 --image_size 128 \\
        --batch_size 8 --lr 0.001 --output_path gaussian             # the original README recipe

Writes into --output_path: the best checkpoint by val_PSNR
(weights.{epoch}-{val_loss}-{val_PSNR}.weights.h5), history.npz after every
epoch, and at the end sample.png (original | noisy | denoised validation
image, denoised by the best checkpoint).
"""
import argparse
import sys
from pathlib import Path

import numpy as np

import cli
import images
from inference import denoise
from noise_model import SPEC_HELP as NOISE_HELP, noise_spec, zero_mean_conflict

# --method: Noise2Noise's noisy pairs, or Neighbor2Neighbor's neighbouring pixels of single noisy patches.
METHODS = ("noise2noise", "neighbor2neighbor")
# Initial learning rate where --lr is not given: the original's 0.01 for the SRResNet; the UNet (no batch
# normalisation) turns to NaN within a few steps at 0.01 and trains at 0.001, the original README's recipes' rate.
DEFAULT_LR = {"srresnet": 0.01, "unet": 0.001}

# Keras and the modules that use it (callbacks, distribute, generator, model) are imported by the functions that
# use them, after the flags have parsed: --help and flag errors answer at once, not after seconds of imports.


def add_data_flags(parser):
    """Where the images come from and what a batch holds (a section of --help)."""
    group = parser.add_argument_group("data: images and patches")
    group.add_argument("--image_dir", type=cli.existing_dir, default=None,
                       help="training image folder, searched recursively; "
                            "if not given, photos bundled with scikit-image")
    group.add_argument("--test_dir", type=cli.existing_dir, default=None,
                       help="validation image folder; if not given, photos bundled with scikit-image")
    group.add_argument("--image_size", type=cli.positive_int, default=64, help="training patch size in pixels")
    group.add_argument("--batch_size", type=cli.positive_int, default=16, help="patches per batch")
    group.add_argument("--channels", type=int, choices=(1, 3), default=3,
                       help="3: colour (BGR) model; 1: grayscale model, trained on the images' luma")
    group.add_argument("--cache_mb", type=cli.positive_float, default=None,
                       help="keep at most this many MiB of decoded training images in memory; the images past it "
                            "are decoded again from their files for every patch (slower). Default: all in memory")
    add_own_shots_flags(group)


def add_own_shots_flags(group):
    """Your own noisy shots instead of synthetic noise on clean photos: pairs, bursts, noisy/clean pairs."""
    group.add_argument("--target_dir", type=cli.existing_dir, default=None,
                       help="your own pairs (docs/own-pairs.md): the second shot of each --image_dir image is the "
                            "file of the same relative path and name (any image suffix) in this folder. Every patch "
                            "takes the same window of both, source and target swapped at random; the images are used "
                            "as they are (--source_noise_model and --target_noise_model apply only where given, "
                            "added on top)")
    group.add_argument("--clean_targets", action="store_true",
                       help="with --target_dir: its images are clean versions of --image_dir's, so train noisy -> "
                            "clean (supervised, on real data), never swapped")
    group.add_argument("--bursts", action="store_true",
                       help="your own bursts: --image_dir holds one folder per scene with two or more shots of it "
                            "of one size; every patch takes two different shots of one scene (any ordered pair)")
    group.add_argument("--val_clean_dir", type=cli.existing_dir, default=None,
                       help="--test_dir holds noisy photos and this folder their clean versions (same names): "
                            "validate by PSNR and SSIM against them (--val_noise_model only where given, on top)")
    group.add_argument("--val_target_dir", type=cli.existing_dir, default=None,
                       help="--test_dir holds noisy photos and this folder a second shot of each (same names): "
                            "validate by the error of predicting the second shot; the lowest is the best checkpoint")


def add_noise_flags(parser):
    """The noise of the inputs, the targets and the validation images (a section of --help)."""
    group = parser.add_argument_group("noise")
    group.add_argument("--source_noise_model", type=noise_spec, default="gaussian,0,50", action=cli.RememberGiven,
                       help=f"noise of the network inputs: {NOISE_HELP}")
    group.add_argument("--target_noise_model", type=noise_spec, default="gaussian,0,50", action=cli.RememberGiven,
                       help=f"noise of the training targets ('clean' for standard training; not with --method "
                            f"neighbor2neighbor, whose targets come from the inputs): {NOISE_HELP}")
    group.add_argument("--val_noise_model", type=noise_spec, default="gaussian,25,25", action=cli.RememberGiven,
                       help=f"noise of the validation inputs: {NOISE_HELP}")
    group.add_argument("--zero_mean_targets", action="store_true",
                       help="add the target noise in float, without clipping to 0-255 or rounding, so the targets' "
                            "mean is the clean image (the original clips and truncates, which biases dark and bright "
                            "pixels); affects gaussian and poisson noise only, which must then come last in a + spec "
                            "(a later camera, jpeg, ... stage needs 0-255 pixels); the source noise stays as given")


def add_training_flags(parser):
    """The network, the schedule, the loss and where the run is written (a section of --help)."""
    group = parser.add_argument_group("training")
    group.add_argument("--model", choices=cli.MODEL_NAMES, default="srresnet", help="network architecture")
    group.add_argument("--method", choices=METHODS, default="noise2noise",
                       help="noise2noise: learn from (source, target) pairs of independently noisy patches; "
                            "neighbor2neighbor (Huang et al., CVPR 2021): from single noisy patches, no pairs or "
                            "clean images: the network learns to predict one pixel of every 2x2 cell from an adjacent "
                            "one, the patches being --source_noise_model noise on --image_dir ('clean': the photos "
                            "as they are, e.g. your own noisy ones)")
    group.add_argument("--pixel_shuffle", type=cli.bounded_int(1, 8), default=1, metavar="STRIDE",
                       help="train on pixel-shuffled patches: every STRIDE-th pixel of --image_size x STRIDE crops, "
                            "so that neighbouring pixels are STRIDE apart in the photo, where the spatial correlation "
                            "of real camera noise has faded (for neighbor2neighbor on your own photos; validated on "
                            "the sub-images too); denoise with test_model.py --pixel_shuffle STRIDE. 1: off")
    group.add_argument("--neighbor_gamma", type=cli.non_negative_float, default=2.0,
                       help="neighbor2neighbor: the weight of its consistency term rises linearly over the epochs, "
                            "to this in the last (the authors' choice for synthetic noise)")
    group.add_argument("--nb_epochs", type=cli.positive_int, default=60, help="number of epochs")
    group.add_argument("--steps", type=cli.positive_int, default=1000, help="batches per epoch")
    group.add_argument("--lr", type=cli.positive_float, default=argparse.SUPPRESS,
                       help="initial Adam learning rate; halved at 25 %%, 50 %% and 75 %% of the epochs (default: "
                            + ", ".join(f"{lr:g} for {name}" for name, lr in DEFAULT_LR.items())
                            + "; the UNet diverges at the SRResNet's 0.01)")
    group.add_argument("--loss", choices=("mse", "mae", "l0"), default="mse",
                       help="loss: mse, mae, or l0 (annealed from L2 towards L0, for impulse noise)")
    group.add_argument("--weight", type=cli.weight_file, default=None,
                       help="start from these weights, e.g. to continue training or fine-tune: a .weights.h5, an "
                            "original Keras 2 .hdf5, or the name of weights shipped in result/weights "
                            f"({cli.shipped_weights_help()}); they are validated first, and an epoch's checkpoint is "
                            "written only where it beats them")
    group.add_argument("--output_path", default="checkpoints",
                       help="folder for checkpoints, history and plots (relative to the current directory)")
    group.add_argument("--seed", type=cli.seed, default=None,
                       help="random seed of the training patches, their noise and the initial weights (the same seed "
                            "and flags train the same model, up to the backend's floating-point order); "
                            "if not given, a random one")
    group.add_argument("--resume", action="store_true",
                       help="continue the interrupted run in --output_path from its last completed epoch "
                            "(weights, optimizer, schedule, history); pass the flags it was started with")


def add_speed_flags(parser):
    """Flags that change how fast a run goes, not what it learns (a section of --help)."""
    group = parser.add_argument_group("speed and scale-out")
    group.add_argument("--workers", type=cli.positive_int, default=cli.default_workers(),
                       help="threads making training batches while the model trains (processes with "
                            "--use_multiprocessing)")
    group.add_argument("--use_multiprocessing", action="store_true",
                       help="make the training batches in --workers processes, forked once at the start, instead of "
                            "threads (the same batches): for a fast GPU, which threads sharing Python's GIL with "
                            "Keras' loop cannot keep fed (docs/speed.md); costs the start-up of the processes. "
                            "Needs os.fork: for Linux (macOS has it, but its system libraries are not fork-safe)")
    group.add_argument("--steps_per_execution", type=cli.positive_int, default=1,
                       help="training steps per call of Keras' train function, for a fast GPU: TensorFlow "
                            "compiles the N steps into one loop (one round trip to the device); TensorFlow and JAX "
                            "run the per-batch callbacks and the progress bar once per N steps (epochs, "
                            "validation and checkpoints are unchanged). Keras' PyTorch backend takes only 1")
    group.add_argument("--mixed_precision", action="store_true",
                       help="compute in bfloat16 (float16 with loss scaling on GPUs older than Ampere); weights, "
                            "outputs, loss and PSNR stay float32. About 2x faster on recent GPUs and on CPUs with "
                            "AVX-512; several times slower on CPUs without it")
    group.add_argument("--distribute", choices=cli.DISTRIBUTE_MODES, default="none",
                       help="data-parallel training: none (one device); mirrored (every GPU of this machine, "
                            "TensorFlow or JAX); multiworker (several machines, TensorFlow, cluster from TF_CONFIG). "
                            "--batch_size stays per replica: one step trains batch_size x replicas patches")


def get_args(argv=None):
    parser = cli.ArgumentParser(description="Train a Noise2Noise denoiser from (noisy, noisy) patch pairs.")
    for add_flags in (add_data_flags, add_noise_flags, add_training_flags, add_speed_flags):
        add_flags(parser)
    args = parser.parse_args(argv)
    args.lr = getattr(args, "lr", DEFAULT_LR[args.model])
    check_method(parser, args)
    check_own_shots(parser, args)
    conflict = args.zero_mean_targets and zero_mean_conflict(args.target_noise_model)
    if conflict:
        parser.error(f"argument --zero_mean_targets: {conflict}, or leave out --zero_mean_targets")
    if args.model == "unet" and args.image_size % images.SIZE_MULTIPLE:
        parser.error(f"argument --image_size: unet needs a multiple of {images.SIZE_MULTIPLE}, "
                     f"got {args.image_size}")
    if args.use_multiprocessing and not cli.can_fork():
        parser.error("argument --use_multiprocessing: needs os.fork (Linux), which this system lacks; "
                     "leave it out to make the batches in threads")
    cli.import_keras_quietly(start=False)  # once the flags are known good; the devices start in start_devices
    import keras

    if args.steps_per_execution > 1 and keras.backend.backend() == "torch":
        parser.error("argument --steps_per_execution: Keras' PyTorch backend runs one step per call; leave it out "
                     "or use KERAS_BACKEND=tensorflow or jax")
    return args


def check_own_shots(parser, args):
    """--target_dir, --bursts and the validation folders: the combinations that cannot work, before anything loads."""
    if args.target_dir and args.bursts:
        parser.error("argument --bursts: not with --target_dir (a burst folder holds every shot of a scene); "
                     "leave one out")
    for flag, given in (("--target_dir", args.target_dir), ("--bursts", args.bursts)):
        if given and args.method == "neighbor2neighbor":
            parser.error(f"argument {flag}: not with --method neighbor2neighbor, which trains on single noisy "
                         f"photos; leave one out")
        if given and args.image_dir is None:
            parser.error(f"argument {flag}: needs --image_dir, the folder of your shots")
    if args.clean_targets and not args.target_dir:
        parser.error("argument --clean_targets: says that --target_dir holds clean versions: pass --target_dir")
    if args.target_dir and cli.same_folder(args.target_dir, args.image_dir):
        parser.error("argument --target_dir: the same folder as --image_dir; pass the folder of the second shots")
    if args.val_clean_dir and args.val_target_dir:
        parser.error("argument --val_target_dir: not with --val_clean_dir; validate against one of them")
    for flag, folder in (("--val_clean_dir", args.val_clean_dir), ("--val_target_dir", args.val_target_dir)):
        if folder and args.test_dir is None:
            parser.error(f"argument {flag}: needs --test_dir, the folder of the noisy validation photos")
        if folder and cli.same_folder(folder, args.test_dir):
            parser.error(f"argument {flag}: the same folder as --test_dir; pass the folder of their other versions")


def check_method(parser, args):
    """--method neighbor2neighbor: the flags that have no meaning there, and patches that split into 2x2 cells
    whose sub-images the network takes (for the UNet a multiple of 16 on each side)."""
    if args.method != "neighbor2neighbor":
        return
    if getattr(args, "target_noise_model_given", False):
        parser.error("argument --target_noise_model: --method neighbor2neighbor takes its targets from the noisy "
                     "inputs themselves; leave it out")
    if args.loss != "mse":
        parser.error(f"argument --loss: --method neighbor2neighbor trains with its own squared-error loss, "
                     f"got {args.loss}; leave it out")
    if args.distribute != "none":
        parser.error("argument --distribute: --method neighbor2neighbor trains on one device; leave it out")
    multiple = 2 * (images.SIZE_MULTIPLE if args.model == "unet" else 1)
    if args.image_size % multiple:
        parser.error(f"argument --image_size: --method neighbor2neighbor halves the patches"
                     f"{' for the unet' if args.model == 'unet' else ''}, so it needs a multiple of {multiple}, "
                     f"got {args.image_size}")


def build_model(args, replicas=1):
    """(the compiled model that fit trains, its loss, the denoiser inside it). The loss is an L0Loss for --loss
    l0 and a NeighborLoss for --method neighbor2neighbor, whose gamma the callbacks anneal; for that method the
    fitted model is a training wrapper around the denoiser (neighbor2neighbor.training_model), else the denoiser.
    With replicas > 1 on TensorFlow the batch normalisation is synchronised, so the replicas normalise over the
    global batch as one device would (on JAX the step is one global computation anyway)."""
    import keras
    import mixed_precision
    import model as models
    import neighbor2neighbor

    if args.mixed_precision:
        mixed_precision.start_mixed_precision("training")
    synchronized = replicas > 1 and keras.backend.backend() == "tensorflow"
    network = models.get_model(args.model, channels=args.channels, synchronized_bn=synchronized)
    if args.weight:
        try:
            models.load_weights(network, args.weight)
        except (ValueError, OSError) as error:
            raise cli.UserError(f"--weight {args.weight}: {cli.weights_error_text(error, network)}") from None
        print(f"loaded weights from {args.weight}")
    if args.method == "neighbor2neighbor":
        model, loss, metrics = neighbor2neighbor.training_model(network), neighbor2neighbor.NeighborLoss(), []
    else:
        model, loss, metrics = network, models.get_loss(args.loss), [models.psnr_metric()]
    if hasattr(loss, "gamma_metric"):
        metrics.append(loss.gamma_metric)  # the gamma the compiled step reads (model.LossGamma)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=args.lr), loss=loss, metrics=metrics,
                  steps_per_execution=args.steps_per_execution)
    # The Adam state built now, eagerly: left to fit, it is built inside the first step's trace, 12-16 s later
    # on TensorFlow (benchmarks/bench_startup.py).
    model.optimizer.build(model.trainable_variables)
    return model, loss, network


def score_of_start(args, validation, distribution, state):
    """A fine-tune's (--weight's) validation score before training, which a checkpoint must beat; a resumed run's
    from its backup; None when training from scratch."""
    import callbacks

    if state is not None:
        return state.get("to_beat")
    if not args.weight:
        return None
    with distribution.scope():
        score = callbacks.start_score(validation)
    print(f"the starting weights ({args.weight}): {validation.monitor[0]} {score:.5f}; an epoch's checkpoint is "
          "written only where it beats them")
    return score


def report(model, args, val_data, best, to_beat=None):
    """After training: write original | noisy | denoised of the first validation image, denoised by the best
    checkpoint (by --weight's where no epoch beat them: `to_beat`), and say where everything is. A data-parallel
    model is replaced by a plain one first: the chief alone must not run the replicas."""
    import model as models

    output_path = Path(args.output_path)
    if args.distribute != "none":
        model = models.get_model(args.model, channels=args.channels)
    if best is not None:
        model.load_weights(str(best))
        print(f"best checkpoint: {best}")
    elif to_beat is not None:
        models.load_weights(model, args.weight)
        best = args.weight
        print(f"no epoch beat the starting weights ({args.weight}, {to_beat:.5f}): keep using them")
    noisy, clean = (array[0].astype(np.uint8) for array in val_data[0])
    images.write_image(output_path / "sample.png", np.concatenate([clean, noisy, denoise(model, noisy)], axis=1))
    print(f"history: {output_path / 'history.npz'}; sample (original | noisy | denoised): "
          f"{output_path / 'sample.png'}")
    print(f"plot the history with: python3 plot_history.py --input1 {output_path} --output_dir {output_path}")
    if best is not None:
        shuffle = f" --pixel_shuffle {args.pixel_shuffle}" if args.pixel_shuffle > 1 else ""
        print(f"denoise photos with: python3 test_model.py --model {args.model} --weight_file {best}{shuffle} "
              f"--image_dir YOUR_PHOTOS --output_dir denoised")


def interrupted_run(args):
    """With --resume: the backup state of the run to continue (resume.read_backup); else None."""
    import resume

    if not args.resume:
        return None
    try:
        state = resume.interrupted_run(args.output_path)
    except ValueError as error:
        raise cli.UserError(f"--resume: {error}") from None
    return state


def check_resumable(model, state, args):
    """The backup's weights must fit the network the flags build (the same --model, --channels)."""
    import model as models

    try:
        mismatch = models.weights_mismatch(model, state["weights"])
    except ValueError as error:
        raise cli.UserError(f"--resume: {state['weights']}: {error}") from None
    if mismatch:
        raise cli.UserError(f"--resume: the run in {args.output_path} trained another network (its backup "
                            f"{cli.weights_error_text(mismatch, model)}); pass the flags it was started with")


def nan_advice(args):
    """What StopOnNaN tells the user to change."""
    advice = f"Lower --lr (now {args.lr:g}{'; the README recipes use 0.001' if args.lr > 0.001 else ''})."
    if args.resume:
        advice += " If the resumed run was already diverging, start it again without --resume."
    return advice


def run_flags(args):
    """{flag: value} of resume.RUN_FLAGS, which every backup of the run records."""
    import resume

    return {name: getattr(args, name, None) for name in resume.RUN_FLAGS}


def start_devices(args):
    """Configure --distribute and start the backend (once per process); returns the Distribution."""
    import distribute

    try:
        distribution = cli.start_backend_quietly(lambda: distribute.setup(args.distribute))
    except ValueError as error:
        raise cli.UserError(f"--distribute {args.distribute}: {error}") from None
    if distribution.replicas > 1 or distribution.worker:
        print(f"data-parallel: {distribution.description}; worker {distribution.worker}, "
              f"{args.batch_size * distribution.replicas} patches a step ({args.batch_size} per replica)")
    elif args.distribute != "none":
        print(f"--distribute {args.distribute}: {distribution.description}, found one device: training as "
              f"without --distribute")
    return distribution


def gpu_feeding_tip(args):
    """A one-line tip where a GPU is fed by batch-making threads, which share Python's GIL with the training
    loop and leave a fast GPU waiting; else None."""
    import mixed_precision

    if args.use_multiprocessing or not cli.can_fork() or mixed_precision.gpu_compute_capability() is None:
        return None
    return ("tip: on a GPU, --use_multiprocessing --workers 8 makes the batches in processes, which keep up with it "
            "(threads share Python's GIL with the training loop; docs/speed.md)")


def main(argv=None):
    args = get_args(argv)
    distribution = start_devices(args)
    tip = gpu_feeding_tip(args)
    if tip:
        print(tip)
    output_path = args.output_path
    try:
        import distribute

        with (cli.output_folder(output_path, "--output_path"),
              distribute.output_folder(output_path, distribution.worker, args.resume) as args.output_path):
            return train(args, distribution)
    except KeyboardInterrupt:
        import resume

        print(resume.how_to_continue(output_path), file=sys.stderr)
        return 130


def train(args, distribution):
    import callbacks
    import distribute
    import keras
    import resume
    import training_data

    state = interrupted_run(args)
    seed = resume.run_seed(args.seed, state)  # --seed, the interrupted run's, or a new one: recorded in its backup
    keras.utils.set_random_seed(seed)  # the initial weights (Python's, NumPy's and the backend's seeds)
    with distribution.scope():
        model, loss, network = build_model(args, distribution.replicas)  # a bad --weight fails before decoding
    if state is not None:
        check_resumable(model, state, args)
        resume.announce(args.output_path, args.nb_epochs, run_flags(args), state)
    try:
        train_data = training_data.training_batches(args, seed, distribution.replicas)
        validation, val_data, _ = training_data.validation(args, loss, network, distribution.replicas)
    except training_data.DataError as error:
        raise cli.UserError(str(error)) from None
    to_beat = score_of_start(args, validation, distribution, state)
    completed = state["epoch"] if state else 0
    train_data.epoch = completed  # the patches of epoch e come from seed (seed, e, batch)
    run_callbacks = callbacks.training_callbacks(
        args.output_path, validation, loss,
        nb_epochs=args.nb_epochs, lr=args.lr, seed=seed, nan_advice=nan_advice(args), resume_from=state,
        run_flags=run_flags(args), progress_lines=None if sys.stdout.isatty() else args.steps, network=network,
        neighbor_gamma_max=args.neighbor_gamma, to_beat=to_beat)
    distribute.prepare_fit(model, distribution, train_data)
    if not args.resume:
        resume.replace_old_backup(args.output_path)
    # A progress bar in a terminal; where the output goes to a file or pipe, one line per epoch and one a minute
    # within it (ProgressLines). No shuffle: the batches are random patches already, and Keras would shuffle
    # their order with Python's unseeded `random`, so the same --seed would train on the same batches in a
    # different order (different weights) every run.
    try:
        model.fit(train_data, epochs=args.nb_epochs, initial_epoch=completed, callbacks=run_callbacks,
                  verbose=1 if sys.stdout.isatty() else 2, shuffle=False)
    finally:
        train_data.close()  # the batch-making processes of --use_multiprocessing
    distribute.finish(distribution)
    if any(isinstance(c, callbacks.StopOnNaN) and c.stopped_at is not None for c in run_callbacks):
        return 1  # StopOnNaN said why and what to change
    if distribution.worker == 0:
        history = next(c.history for c in run_callbacks if isinstance(c, callbacks.HistorySaver))
        report(network, args, val_data, callbacks.best_checkpoint(args.output_path, history), to_beat)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
