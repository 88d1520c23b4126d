"""Tiled inference: the peak memory and wall time of test_model.py --tile on a large enlarged photo (in a child
process), and how far tiles differ from whole-image inference on a photo small enough for both, to show that
tiling bounds memory without visible seams."""
import argparse
import resource
import shutil
import sys
import tempfile

import cv2
import numpy as np

import common

import cli  # (common put the repository on sys.path)
import inference  # (NumPy only)

WEIGHTS = common.REPO / "result" / "weights" / "gaussian.weights.h5"


def size(text):
    """argparse type: WIDTHxHEIGHT in pixels."""
    try:
        width, height = (cli.positive_int(value) for value in text.split("x"))
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 4000x3000, got {text!r}") from None
    return width, height


def tile(text):
    """argparse type: a tile size test_model.py takes, a multiple of 16 above inference.TILE_OVERLAP."""
    value = cli.positive_int(text)
    if value % 16 or value <= inference.TILE_OVERLAP:
        raise argparse.ArgumentTypeError(f"expected a multiple of 16 above {inference.TILE_OVERLAP}, got {text!r}")
    return value


def get_args():
    parser = common.get_parser(__doc__)
    parser.add_argument("--photo", type=cli.existing_file, default=str(common.DATASETS / "Set14" / "barbara.png"),
                        help="photo to enlarge (bicubic)")
    parser.add_argument("--tile", type=tile, default=512, help="tile size in pixels")
    parser.add_argument("--size", type=size, default="4000x3000", help="WIDTHxHEIGHT of the large photo")
    parser.add_argument("--compare_size", type=size, default="1000x700",
                        help="WIDTHxHEIGHT of the photo denoised both whole and in tiles")
    return parser.parse_args()


def peak_memory_of_tiled_run(args, photo):
    """One JSON line: test_model.py --tile on the enlarged photo, with the shipped gaussian weights."""
    with tempfile.TemporaryDirectory() as folder:
        cv2.imwrite(f"{folder}/large.png", cv2.resize(photo, args.size, interpolation=cv2.INTER_CUBIC))
        command = [sys.executable, str(common.REPO / "test_model.py"), "--image_dir", folder, "--tile", str(args.tile),
                   "--weight_file", str(WEIGHTS), "--output_dir", f"{folder}_out"]
        _, wall = common.run(command)
        shutil.rmtree(f"{folder}_out")
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    common.emit("tiled_peak_rss", size="x".join(map(str, args.size)), tile=args.tile, peak_rss_gib=round(peak_gib, 2),
                wall_s=round(wall, 1))


def tiled_against_whole(args, photo):
    """One JSON line: how the uint8 outputs of inference.denoise, whole and in tiles, differ (gaussian,25,25)."""
    common.import_keras()
    import model as models
    from noise_model import get_noise_model

    model = models.get_model("srresnet")
    models.load_weights(model, WEIGHTS)
    noisy = get_noise_model("gaussian,25,25")(cv2.resize(photo, args.compare_size, interpolation=cv2.INTER_CUBIC),
                                              np.random.default_rng(0))
    difference = np.abs(inference.denoise(model, noisy).astype(int)
                        - inference.denoise(model, noisy, tile=args.tile).astype(int))
    common.emit("tiled_vs_whole", size="x".join(map(str, args.compare_size)), tile=args.tile,
                overlap=inference.TILE_OVERLAP, mean_abs_difference=round(float(difference.mean()), 5),
                max_abs_difference=int(difference.max()), pixels_differing=int((difference > 0).sum()))


def main():
    args = get_args()
    photo = cv2.imread(args.photo, cv2.IMREAD_COLOR)
    if photo is None:
        sys.exit(f"bench_tiled.py: error: --photo {args.photo}: not an image OpenCV can read")
    peak_memory_of_tiled_run(args, photo)
    tiled_against_whole(args, photo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
