"""Denoise a folder of images with trained weights and show or save original | noisy | denoised.

    python3 test_model.py --weight_file checkpoints/weights.056-66.803-30.57923.weights.h5 \\
        --image_dir dataset/Set14 --output_dir result
    python3 test_model.py --image_dir photos --test_noise_model clean --tile 512 --output_dir denoised
        # the shipped camera SRResNet on already-noisy photos, in 512x512 tiles
    python3 test_model.py --image_dir pairs/noisy --clean_dir pairs/clean --test_noise_model clean \
        --output_dir scored   # real noisy photos scored against their clean versions

Adds --test_noise_model noise to each image (use `clean` for photos that are
already noisy), denoises it, and prints the PSNR of the noisy and the
denoised image against the original (or, for already-noisy photos, against
the same-named file in --clean_dir), then their means.
"""
import argparse
import collections
import contextlib
import csv
import functools
import sys
import time
from pathlib import Path

import cv2
import numpy as np

import cli
import images
from inference import TILE_OVERLAP, denoise, predict_images
from noise_model import SPEC_HELP, adds_noise, get_noise_model, noise_at_full_depth, noise_spec

DEFAULT_SHIPPED = "gaussian"  # the weights test_model.py denoises with where --weight_file is not given
REAL_PHOTO_SHIPPED = "camera"  # ... and with --test_noise_model clean: real photos carry camera noise
# What --mixed_precision costs in quality, as measured (docs/speed.md): stated in --help.
MIXED_PRECISION_COST = "costs under 0.03 dB (shipped weights: Set14 at sigma 25, real photos)"
# A photo that takes longer than this many seconds shows its progress, tile by tile (with --tile).
PROGRESS_AFTER_S = 5.0

# model.py (Keras) is imported by the functions that use it, after the flags have parsed: --help and flag errors
# answer at once, not after seconds of imports.


def multiple_of_16(text):
    """argparse type: 0 or a positive multiple of 16 (the UNet's pooling grid)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0 or value % images.SIZE_MULTIPLE:
        raise argparse.ArgumentTypeError(f"expected 0 or a positive multiple of {images.SIZE_MULTIPLE}, "
                                         f"got {text!r}")
    return value


def strengths_help():
    """'1, 2, 3': the strengths the shipped camera weights come at, for --help."""
    family = cli.shipped_family(cli.shipped_weights().get(REAL_PHOTO_SHIPPED, ""))
    return ", ".join(f"{strength:g}" for strength in sorted(family)) or "one"


def get_args(argv=None):
    parser = cli.ArgumentParser(description="Denoise test images with a trained model and show or save "
                                            "original | noisy | denoised side by side.")
    parser.add_argument("--image_dir", type=cli.existing_dir, required=True,
                        help="test image folder (searched recursively)")
    parser.add_argument("--model", choices=cli.MODEL_NAMES, default="srresnet",
                        help="model architecture of the weights")
    parser.add_argument("--weight_file", type=cli.weight_file, default=None,
                        help="trained weights: a train.py .weights.h5 checkpoint, an original Keras 2 .hdf5, or the "
                             f"name of weights shipped in result/weights "
                             f"({cli.shipped_weights_help()}); "
                             f"if not given, the shipped {REAL_PHOTO_SHIPPED!r} SRResNet for --test_noise_model clean "
                             f"(real photos) and the shipped {DEFAULT_SHIPPED!r} one otherwise")
    parser.add_argument("--test_noise_model", type=noise_spec, default="gaussian,25,25",
                        help=f"noise added to each test image, a {SPEC_HELP}; 'clean' denoises already-noisy "
                             f"photos as they are")
    parser.add_argument("--clean_dir", type=cli.existing_dir, default=None,
                        help="with --test_noise_model clean: clean versions of the noisy photos of --image_dir "
                             "(same relative paths and names), to score the results against; the triptych "
                             "shows clean | noisy | denoised")
    parser.add_argument("--output_dir", default=None,
                        help="save the results here (triptychs as PNGs; --output_mode denoised: in each input's "
                             "format), and report.csv; otherwise show them in a window "
                             "(any key: next image, q: quit)")
    parser.add_argument("--seed", type=cli.seed, default=0, help="random seed of the test noise")
    parser.add_argument("--tile", type=multiple_of_16, default=0,
                        help="denoise in tiles of this many pixels square (a multiple of 16, e.g. 512) to bound the "
                             "memory of large photos; 0: the whole image at once")
    parser.add_argument("--tile_overlap", type=multiple_of_16, default=TILE_OVERLAP,
                        help="pixels shared by neighbouring tiles, blended so that no seam shows (with 32 the "
                             "SRResNet's PSNR equals whole-image inference's, pixels within 2 levels; 64: within "
                             "rounding, more pixels to compute)")
    parser.add_argument("--pixel_shuffle", type=cli.bounded_int(1, 8), default=1, metavar="STRIDE",
                        help="denoise each of the STRIDE x STRIDE sub-images of every STRIDE-th pixel and reassemble "
                             "them: for weights trained with train.py --pixel_shuffle STRIDE, where neighbouring "
                             "pixels of the sub-images are STRIDE apart in the photo, past the reach of camera noise's "
                             "spatial correlation; 1: the photo as it is")
    parser.add_argument("--strength", type=cli.positive_float, default=None,
                        help="how much noise to remove, for shipped weights that come at several strengths (the "
                             "camera weights: " + strengths_help() + "): the member of --weight_file's family trained "
                             "at that strength; higher removes more, lower keeps more texture (camera: 1 for ISO "
                             "3200-6400 photos, 1.5 for noisier ones or heavier JPEG, 0.5 for fine grain and texture). "
                             "Default: the weights as given (camera: 1)")
    parser.add_argument("--self_ensemble", action="store_true",
                        help="denoise each image in its 8 flips and transposes and average the results, turned "
                             "back: 8x the time for a small gain (result/README.md measures it)")
    parser.add_argument("--mixed_precision", action="store_true",
                        help="compute in bfloat16 (float16 on GPUs before Ampere), input and output layer in float32: "
                             "faster where the CPU has AVX-512 bfloat16 or on a recent GPU; "
                             f"{MIXED_PRECISION_COST}")
    parser.add_argument("--output_mode", choices=("triptych", "denoised"), default="triptych",
                        help="triptych: original | noisy | denoised side by side as PNG, cropped to a multiple of "
                             "16 (the original's output); denoised: only the denoised image, full size, with the "
                             "input's name, format, bit depth, channels and metadata (EXIF, ICC profile, XMP; "
                             "needs --output_dir)")
    parser.add_argument("--jpeg_quality", type=cli.bounded_int(1, 100), default=95,
                        help="--output_mode denoised: the JPEG quality of results of JPEG inputs (1-100; OpenCV's and "
                             "this suite's default 95: the denoised photo is cleaner than the camera's JPEG, whose own "
                             "quality would throw away more of it)")
    parser.add_argument("--allow_output_in_image_dir", action="store_true",
                        help="allow --output_dir to be --image_dir or a folder inside it (results named like the "
                             "test images would replace them)")
    args = parser.parse_args(argv)
    if args.output_mode == "denoised" and args.output_dir is None:
        parser.error("argument --output_mode: 'denoised' writes image files: pass --output_dir FOLDER")
    if args.clean_dir and adds_noise(args.test_noise_model):
        parser.error("argument --clean_dir: scores already-noisy photos: use it with --test_noise_model clean")
    if args.tile and args.tile <= args.tile_overlap:
        parser.error(f"argument --tile: must be larger than --tile_overlap ({args.tile_overlap}), got {args.tile}")
    cli.import_keras_quietly()
    return args


@functools.cache
def image_scorer(channels):
    """One model.image_scorer per channel count for the whole run (it compiles once per image size)."""
    import model as models

    return models.image_scorer(channels)


def image_scores(reference, image):
    """(PSNR in dB, SSIM) of an HxWxC image against its reference, both on the 0-255 scale, through the one
    PSNR and SSIM of model.py (PSNR inf where they are equal)."""
    import model as models

    return models.score_image(image_scorer(reference.shape[-1]), reference[np.newaxis].astype(np.float32),
                              image[np.newaxis].astype(np.float32))


def clean_version(path, args, shape, full_depth):
    """The --clean_dir version of the noisy photo `path` (HxWxC as `shape`, cropped like the photo; uint8, or with
    full_depth on the 0-255 scale as float32 for 16-bit files), or None with a warning where there is none of the
    photo's size."""
    clean_path = Path(args.clean_dir) / path.relative_to(args.image_dir)
    clean_file = images.read_image_file(clean_path) if full_depth else None
    pixels = (None if clean_file is None else as_0_255(clean_file)) if full_depth else images.read_image(clean_path)
    clean = None if pixels is None else images.to_channels(pixels, shape[2])[: shape[0], : shape[1]]
    if clean is None or clean.shape != shape:
        print(f"warning: not scoring {path}: no clean version of its size at {clean_path}", file=sys.stderr)
        return None
    return clean


def triptych_result(model, path, noise, rng, args):
    """(reference or None, noisy, denoised, picture to save) of the triptych mode, HxWxC uint8; None if
    unusable. The reference is the original the noise was added to, or the photo's --clean_dir version."""
    image = images.read_image(path)
    if image is None or min(image.shape[:2]) < images.SIZE_MULTIPLE:
        return None
    original = images.crop_to_multiple(images.to_channels(image, model.input_shape[-1]))
    noisy = noise(original, rng)
    denoised = denoise(model, noisy, tile=args.tile, overlap=args.tile_overlap, stride=args.pixel_shuffle,
                       self_ensemble=args.self_ensemble, progress=TileProgress(path.name))
    reference = original
    if args.clean_dir is not None:
        reference = clean_version(path, args, original.shape, full_depth=False)
    shown = original if reference is None else reference
    return reference, noisy, denoised, np.concatenate([shown, noisy, denoised], axis=1)


def full_size_result(model, path, noise, rng, args):
    """(reference or None, noisy, denoised, picture to save) of the denoised mode: the first three HxWxC float32 on the
    0-255 scale (C: the model's channels), the picture in the file's own depth and channels, full size (padded
    for the network, not cropped); None if unusable. 16-bit files go through the network without rounding. A gray
    model denoises a colour photo's luma, and the picture keeps the photo's colour (images.with_luma)."""
    source = images.read_image_file(path)
    if source is None or min(source.pixels.shape[:2]) < images.SIZE_MULTIPLE:
        return None
    channels = model.input_shape[-1]
    original = images.to_channels(as_0_255(source), channels)
    noisy = noise_at_full_depth(noise, original, rng)
    output = predict_images(model, noisy[np.newaxis], tile=args.tile, overlap=args.tile_overlap,
                            stride=args.pixel_shuffle, self_ensemble=args.self_ensemble,
                            progress=TileProgress(path.name))[0]
    if channels == 1 and source.channels != 1:  # a gray model denoised a colour photo's luma: keep its colour
        output = images.with_luma(source.pixels.astype(np.float32) / source.scale, output)
    picture = images.encode_like(np.repeat(output, 3 // output.shape[2], axis=2), source)
    # Score what is written, in the model's channels: a gray file on 3 equal channels, without alpha, 0-255.
    shown = picture if picture.ndim == 3 else np.repeat(picture[:, :, np.newaxis], 3, axis=2)
    written = images.to_channels(shown[:, :, :3], channels).astype(np.float32) / source.scale
    reference = original.astype(np.float32)
    if args.clean_dir is not None:
        reference = clean_version(path, args, original.shape, full_depth=True)
    return reference, noisy, written, picture


class TileProgress:
    """Progress of one photo's tiles (inference.predict_tiled's progress(done, total)): silent for the first
    PROGRESS_AFTER_S seconds, then a line every PROGRESS_AFTER_S seconds with the tiles done and the time left.
    With --pixel_shuffle or --self_ensemble the count (and the time left) is that of the sub-image or pass
    being denoised."""

    def __init__(self, name):
        self.name = name
        self.start = self.previous = self.printed = time.monotonic()

    def __call__(self, done, total):
        now = time.monotonic()
        if done == 1:  # a new pass over the tiles (next sub-image or symmetry) began as the last ended
            self.start = self.previous
        self.previous = now
        if now - self.printed < PROGRESS_AFTER_S or done == total:
            return
        self.printed = now
        left = (now - self.start) / done * (total - done)
        print(f"  {self.name}: tile {done}/{total}, about {left:.0f} s left", flush=True)


def as_0_255(image_file):
    """The HxWx3 pixels of an `ImageFile` on the 0-255 scale (uint8 as they are, 16 bits as float32)."""
    pixels = image_file.pixels
    return pixels if image_file.scale == 1 else pixels.astype(np.float32) / image_file.scale


def show_window(triptych, title):
    """Show one result; returns False when the user pressed q."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(12, 4.5))
    axes.imshow(cv2.cvtColor(triptych, cv2.COLOR_BGR2RGB))
    axes.set_axis_off()
    axes.set_title(f"{title}   (original | noisy | denoised; any key: next, q: quit)")
    pressed = []
    figure.canvas.mpl_connect("key_press_event", lambda event: (pressed.append(event.key), plt.close(figure)))
    plt.show()
    return "q" not in pressed


def output_names(paths, image_dir, keep_suffix=False):
    """{input path: its result's path relative to the output folder}: the input's own relative path, with .png
    (or, with keep_suffix, its own suffix). Where inputs would share a name (a.jpg and a.png), each one not
    already named so keeps its suffix in the name (a.jpg -> a_jpg.png): a result named like an input is always
    that input's."""
    relative = {path: path.relative_to(image_dir) for path in paths}
    plain = {path: name if keep_suffix else name.with_suffix(".png") for path, name in relative.items()}
    clashes = collections.Counter(plain.values())
    names, used = {}, set()
    for path, name in plain.items():
        if clashes[name] > 1 and relative[path] != name:
            name = relative[path].with_name(f"{relative[path].stem}_{relative[path].suffix[1:]}.png")
        unique, number = name, 1
        while unique in used or (unique != plain[path] and unique in clashes):  # a_jpg.png an input's name too
            number += 1
            unique = name.with_name(f"{name.stem}_{number}{name.suffix}")
        names[path] = unique
        used.add(unique)
    return names


def write_report(path, rows):
    """report.csv: per image the PSNR (dB) and SSIM of the noisy and the denoised image, then their means."""
    means = np.mean([row[1:] for row in rows], axis=0)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "noisy_psnr", "noisy_ssim", "denoised_psnr", "denoised_ssim"])
        for name, *values in rows + [("mean", *means)]:
            writer.writerow([name] + [f"{value:.6f}" for value in values])


def is_inside(folder, parent):
    """True where `folder` is `parent` or below it (links resolved; `folder` need not exist yet)."""
    folder, parent = Path(folder).resolve(), Path(parent).resolve()
    return folder == parent or parent in folder.parents


def default_weights(test_noise_model):
    """The shipped weights' name for a test noise: `camera` for already-noisy photos (where shipped), else the
    default."""
    real_photos = not adds_noise(test_noise_model)
    return REAL_PHOTO_SHIPPED if real_photos and REAL_PHOTO_SHIPPED in cli.shipped_weights() else DEFAULT_SHIPPED


def weights_at_strength(weight_file, strength):
    """The member of the shipped family of `weight_file` trained at `strength`; a UserError where it has none."""
    family = cli.shipped_family(weight_file)
    if strength not in family:
        offer = ", ".join(f"{value:g}" for value in sorted(family))
        raise cli.UserError(f"--strength {strength:g}: " + (f"the weights {Path(weight_file).name} come at "
                            f"{offer}" if family else f"{Path(weight_file).name} comes at one strength; the shipped "
                            f"camera weights come at {strengths_help()}"))
    if family[strength] != Path(weight_file):
        print(f"--strength {strength:g}: using {family[strength]}")
    return family[strength]


def load_model(args):
    """The --model network with the --weight_file weights (the shipped default where none is given), rewritten
    by inference_graph.inference_network: the same output, sooner (batch norms folded, PReLUs as max(x, a*x))."""
    import inference_graph
    import mixed_precision
    import model as models

    if args.weight_file is None:
        name = default_weights(args.test_noise_model)
        if name not in cli.shipped_weights():
            raise cli.UserError(f"--weight_file: not given, and there are no shipped weights in "
                                f"{cli.SHIPPED_WEIGHTS_DIR}; pass a .weights.h5 file")
        args.weight_file = cli.shipped_weights()[name]
        print(f"using the shipped {name} weights: {args.weight_file}")
    if args.strength is not None:
        args.weight_file = weights_at_strength(args.weight_file, args.strength)
    if args.mixed_precision:
        mixed_precision.start_mixed_precision("denoising")
    model = None
    try:
        model = models.get_model(args.model, channels=models.channels_of_weights(args.weight_file))
        models.load_weights(model, args.weight_file)
    except (ValueError, OSError) as error:
        why = cli.weights_error_text(error, model) if model is not None else error
        raise cli.UserError(f"--weight_file {args.weight_file}: {why}") from None
    return inference_graph.inference_network(model)


def photo_file(picture, path, suffix, jpeg_quality):
    """The denoised photo's file bytes (or None where it cannot be encoded): in its input's format, with the
    input's EXIF (orientation 1), ICC profile and XMP where the format holds them (photo_metadata). Metadata that
    cannot be read or written is left out, with a one-line warning; the photo is written all the same."""
    import photo_metadata

    metadata, problems = photo_metadata.read_metadata(path)
    for problem in problems:
        print(f"warning: {path}: {problem}", file=sys.stderr)
    for kept in (metadata, photo_metadata.Metadata()):
        try:
            if suffix.lower() in (".tif", ".tiff"):
                return photo_metadata.tiff_bytes(picture, kept)
            encoded = images.encode_image(picture, suffix, jpeg_quality)
            return encoded and photo_metadata.with_metadata(encoded, suffix, kept, picture)
        except photo_metadata.MetadataError as error:
            print(f"warning: {path}: its metadata cannot be written to {suffix} ({error}): left out",
                  file=sys.stderr)
    return None


def save_or_show(picture, path, args, output_dir, name):
    """Write the result as output_dir/name (`name` from output_names), or show it; False when the user quits.
    The denoised mode keeps the input's metadata (photo_file); a triptych is a fresh PNG."""
    if output_dir is None:
        return show_window(picture, str(path.relative_to(args.image_dir)))
    target = output_dir / name
    if args.output_mode == "denoised":
        data = photo_file(picture, path, target.suffix, args.jpeg_quality)
        if data is None or not images.write_bytes(target, data):
            raise cli.UserError(f"--output_dir: cannot write {target}")
    elif not images.write_image(target, picture):
        raise cli.UserError(f"--output_dir: cannot write {target}")
    print(f"  saved {target}")
    return True


def denoise_folder(model, paths, args, output_dir):
    """Denoise every image, save or show it; returns [(name, noisy PSNR, noisy SSIM, denoised PSNR, denoised
    SSIM)] for every image that has a clean reference."""
    noise, rng = get_noise_model(args.test_noise_model), np.random.default_rng(args.seed)
    # With 'clean' the input is already noisy: only a --clean_dir version can be scored against.
    has_reference = args.clean_dir is not None or adds_noise(args.test_noise_model)
    result_of = full_size_result if args.output_mode == "denoised" else triptych_result
    rows, done = [], 0
    names = output_names(paths, args.image_dir, keep_suffix=args.output_mode == "denoised")
    for number, path in enumerate(paths, 1):
        name = path.relative_to(args.image_dir).as_posix()
        start = time.perf_counter()
        result = result_of(model, path, noise, rng, args)
        seconds = time.perf_counter() - start
        if result is None:
            print(f"warning: skipping {path}: not a readable image of at least 16x16 pixels", file=sys.stderr)
            continue
        reference, noisy, denoised, picture = result
        done += 1
        if seconds > PROGRESS_AFTER_S:  # a large photo: say how fast it went (read, noise and network)
            print(f"  {name}: {noisy.shape[1]}x{noisy.shape[0]} in {seconds:.1f} s, "
                  f"{noisy.shape[0] * noisy.shape[1] / seconds:,.0f} pixels a second")
        if has_reference and reference is not None:
            rows.append((name, *image_scores(reference, noisy), *image_scores(reference, denoised)))
            print(f"[{number}/{len(paths)}] {name}: noisy {rows[-1][1]:.2f} dB, denoised {rows[-1][3]:.2f} dB "
                  f"(SSIM {rows[-1][2]:.3f} -> {rows[-1][4]:.3f})")
        else:
            print(f"[{number}/{len(paths)}] {name}")
        if not save_or_show(picture, path, args, output_dir, names[path]):
            break
    if not done:
        raise cli.UserError(f"--image_dir {args.image_dir}: none of its {len(paths)} image files could be read")
    return rows


def main(argv=None):
    args = get_args(argv)
    if args.output_dir is None and not cli.has_display():
        raise cli.UserError("no display to show the results; pass --output_dir FOLDER to save them as files")
    paths = images.list_images(args.image_dir)
    if not paths:
        raise cli.UserError(f"--image_dir {args.image_dir}: no image files ({', '.join(images.IMAGE_SUFFIXES)})")
    if args.output_dir and not args.allow_output_in_image_dir and is_inside(args.output_dir, args.image_dir):
        raise cli.UserError(f"--output_dir {args.output_dir} is inside --image_dir {args.image_dir}: the results "
                            f"would replace or mix with the test images; choose another folder "
                            f"(or pass --allow_output_in_image_dir)")
    # (made before the model loads, so that an unwritable folder fails at once; removed if nothing is written)
    folder = cli.output_folder(args.output_dir, "--output_dir") if args.output_dir else contextlib.nullcontext()
    with folder as output_dir:
        rows = denoise_folder(load_model(args), paths, args, output_dir)
    if rows:
        noisy_psnr, noisy_ssim, denoised_psnr, denoised_ssim = np.mean([row[1:] for row in rows], axis=0)
        print(f"mean over {len(rows)} images: noisy {noisy_psnr:.2f} dB, denoised {denoised_psnr:.2f} dB "
              f"(SSIM {noisy_ssim:.3f} -> {denoised_ssim:.3f})")
        if output_dir is not None:
            write_report(output_dir / "report.csv", rows)
            print(f"per-image PSNR and SSIM: {output_dir / 'report.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
