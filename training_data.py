"""The data of a train.py run, as its flags ask: the training batches (clean photos with synthetic noise, your own
pairs or bursts of noisy shots, noisy/clean pairs) and the validation that picks the best checkpoint. Knows
train.py's flag names; problems are DataErrors whose message names the flag, which train.py prints in one line.
"""
import numpy as np

import generator
import images
import neighbor2neighbor
import pairs
import pixel_shuffle
from noise_model import adds_noise, get_noise_model, noise_at_full_depth


class DataError(ValueError):
    """Data a flag names that cannot be used; the message says which flag, which file and why."""


def load_folder(folder, bundled_names, flag, min_size, what, channels, cache_bytes=None):
    """Decoded images of `folder` (or of scikit-image's bundled photos); problems are DataErrors naming `flag`."""
    try:
        paths = images.list_images(folder) if folder else generator.bundled_photo_paths(bundled_names)
        if not paths:
            raise generator.NoImagesError(f"no image files ({', '.join(images.IMAGE_SUFFIXES)}) in it")
        return generator.load_images(paths, min_size=min_size, what=what, channels=channels, cache_bytes=cache_bytes)
    except generator.NoImagesError as error:
        raise DataError(f"{flag} {folder or '(bundled photos)'}: {error}") from None


def own_shots(args, min_size, cache_bytes):
    """--target_dir or --bursts: the groups of shots (pairs, bursts) of --image_dir, decoded and checked."""
    flag = "--target_dir" if args.target_dir else "--bursts"
    try:
        if args.bursts:
            path_groups = pairs.burst_folders(args.image_dir)
        else:
            sources = images.list_images(args.image_dir)
            if not sources:
                raise DataError(f"--image_dir {args.image_dir}: no image files ({', '.join(images.IMAGE_SUFFIXES)})")
            path_groups = pairs.matching_files(sources, args.image_dir, args.target_dir)
        return pairs.load_groups(path_groups, args.channels, min_size, cache_bytes)
    except pairs.PairError as error:
        raise DataError(f"{flag} {args.target_dir or args.image_dir}: {error}") from None


def training_images(args, cache_bytes):
    """(photos or groups of shots, what they are in words) that the training patches come from."""
    crop = args.image_size * args.pixel_shuffle
    if args.target_dir or args.bursts:
        groups = own_shots(args, crop, cache_bytes)
        kind = "bursts" if args.bursts else "noisy/clean pairs" if args.clean_targets else "pairs of noisy shots"
        return groups, f"{len(groups)} {kind} from {args.image_dir}"
    what = "--image_size patch" if args.pixel_shuffle == 1 else "--image_size x --pixel_shuffle crop"
    photos = load_folder(args.image_dir, generator.BUNDLED_TRAIN_PHOTOS, "--image_dir", crop, what, args.channels,
                         cache_bytes)
    source = "scikit-image's bundled photos" if args.image_dir is None else args.image_dir
    return photos, f"{len(photos)} images from {source}"


def training_noise(args):
    """(source noise, target noise) models. On your own shots the images are used as they are: the default noise
    models do not apply, those given explicitly are added on top. Neighbor2Neighbor draws no target noise (its
    targets are sub-images of the sources)."""
    own = args.target_dir or args.bursts
    source = args.source_noise_model if not own or getattr(args, "source_noise_model_given", False) else "clean"
    target = args.target_noise_model if not own or getattr(args, "target_noise_model_given", False) else "clean"
    if args.method == "neighbor2neighbor":
        target = "clean"
    return get_noise_model(source), get_noise_model(target, zero_mean=args.zero_mean_targets)


def training_batches(args, seed, replicas=1):
    """The training PyDataset as the flags say; a batch holds replicas x --batch_size patches (the global batch of
    a data-parallel step). Says what it trains on."""
    cache_bytes = None if args.cache_mb is None else int(args.cache_mb * 2**20)
    groups, described = training_images(args, cache_bytes)
    on_disk = sum(isinstance(shot, generator.ImageOnDisk) for group in groups
                  for shot in (group if isinstance(group, tuple) else (group,)))
    cache_note = f" ({on_disk} past --cache_mb {args.cache_mb:g} read from disk per patch)" if on_disk else ""
    print(f"training on {described}{cache_note}; seed {seed}"
          f"{'' if args.seed is not None else ' (drawn: --seed ' + str(seed) + ' repeats the run)'}")
    source, target = training_noise(args)
    return generator.NoisyImageGenerator(
        groups, source, target, batch_size=args.batch_size * replicas, image_size=args.image_size, steps=args.steps,
        seed=seed, workers=args.workers, processes=args.workers if args.use_multiprocessing else 0,
        neighbor2neighbor=args.method == "neighbor2neighbor", pixel_shuffle=args.pixel_shuffle,
        symmetric=not args.clean_targets)


def validation_pairs(args):
    """[(input, reference)] (1, H, W, C) float32 0-255 validation pairs: clean --test_dir photos with
    --val_noise_model noise drawn once, or noisy --test_dir photos with their --val_clean_dir versions or
    --val_target_dir second shots (a --val_noise_model given explicitly added to the noisy ones)."""
    other = args.val_clean_dir or args.val_target_dir
    if other is None:
        photos = load_folder(args.test_dir, generator.BUNDLED_VAL_PHOTOS, "--test_dir", images.SIZE_MULTIPLE,
                             "minimum validation size", args.channels)
        return generator.load_validation_data(photos, get_noise_model(args.val_noise_model)), len(photos)
    flag = "--val_clean_dir" if args.val_clean_dir else "--val_target_dir"
    try:
        groups = pairs.load_groups(pairs.matching_files(images.list_images(args.test_dir), args.test_dir, other),
                                   args.channels, images.SIZE_MULTIPLE)
    except pairs.PairError as error:
        raise DataError(f"{flag} {other}: {error}") from None
    validation = pairs.validation_pairs(groups)
    if getattr(args, "val_noise_model_given", False):  # drawn once, from seed 0, as on clean photos
        noise, rng = get_noise_model(args.val_noise_model), np.random.default_rng(0)
        validation = [(noise_at_full_depth(noise, first[0], rng)[np.newaxis], second) for first, second in validation]
    return validation, len(validation)


def validation(args, loss, network, replicas=1):
    """(the validation callback, its (input, reference) pairs, how many images): PSNR and SSIM against clean
    references (callbacks.ImageValidation), or, where the validation photos are noisy and have no clean versions,
    callbacks.PairValidation (val_loss, the lowest best; the run says so once): against their --val_target_dir
    second shots, or for --method neighbor2neighbor with --val_noise_model clean, between each photo's
    sub-images."""
    import callbacks

    val_data, count = validation_pairs(args)
    print(f"validating on {count} image{'s' * (count != 1)}" + (f" of {args.test_dir}" if args.test_dir else ""))
    if args.pixel_shuffle > 1:
        try:
            val_data = pixel_shuffle.validation_sub_images(val_data, args.pixel_shuffle)
        except ValueError as error:
            raise DataError(f"--test_dir {args.test_dir or '(bundled photos)'}: {error} (--pixel_shuffle)") from None
    neighbor = args.method == "neighbor2neighbor"
    if args.val_target_dir:
        print("validating on held-out noisy pairs (--val_target_dir): no PSNR without clean versions, so val_loss is "
              "the error of predicting each photo's second shot, and the best checkpoint is the epoch with the lowest")
        return callbacks.PairValidation(val_data, network), val_data, count
    if neighbor and not args.val_clean_dir and not adds_noise(args.val_noise_model):
        print("validating on noisy photos (--val_noise_model clean): no PSNR without clean versions, so val_loss is "
              "neighbor2neighbor's error of predicting each photo's pixels from their neighbours, and the best "
              "checkpoint is the epoch with the lowest")
        sub_images = neighbor2neighbor.validation_data([noisy for noisy, _ in val_data])
        return callbacks.PairValidation(sub_images, network), val_data, count
    return callbacks.ImageValidation(val_data, "mse" if neighbor else loss, replicas, network), val_data, count
