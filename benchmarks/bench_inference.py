"""CPU (or GPU) inference speed against the machine's convolution peak, in one run: the SRResNet's 64->64 3x3
convolution alone (CHAIN in a row) on a 512x512 map in float32 and in bfloat16 (the peak), then test_model.py
--tile on a large photo in float32 and with --mixed_precision (in child processes, as users run it), as a fraction
of that peak counting the photo's pixels over the whole command (start-up included) and over the photo's own
time (the pixels a second test_model.py prints), with the child's peak resident memory."""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

import common

import cli  # (common put the repository on sys.path)
import inference  # (NumPy only)

CONV_SIZE, FEATURES = 512, 64  # the peak's map: 512x512, 64 features in and out (the SRResNet's body)
CHAIN = 16  # convolutions per timed call: the copy of the map in and out of one call is then a small part


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
                        help="photo to enlarge (bicubic) and denoise as it is (--test_noise_model clean)")
    parser.add_argument("--size", type=size, default="4000x3000", help="WIDTHxHEIGHT of the large photo")
    parser.add_argument("--tile", type=tile, default=512, help="test_model.py --tile")
    parser.add_argument("--repeats", type=cli.positive_int, default=10, help="timed convolutions per precision")
    parser.add_argument("--skip_mixed", action="store_true", help="float32 only (where bfloat16 is emulated)")
    return parser.parse_args()


def conv_peak_gflops(policy, repeats):
    """GFLOP/s of Keras 64->64 3x3 'same' convolutions on a 1x512x512x64 map under a dtype policy, CHAIN of them
    in a row per call (median of `repeats` timed calls after two warm-up calls)."""
    import keras

    inputs = keras.Input((CONV_SIZE, CONV_SIZE, FEATURES))
    x = inputs
    for _ in range(CHAIN):
        x = keras.layers.Conv2D(FEATURES, 3, padding="same", dtype=policy)(x)
    conv = keras.Model(inputs, x)
    feature_map = np.random.default_rng(0).standard_normal((1, CONV_SIZE, CONV_SIZE, FEATURES)).astype(np.float32)
    times = []
    for _ in range(repeats + 2):
        start = time.perf_counter()
        conv.predict_on_batch(feature_map)
        times.append(time.perf_counter() - start)
    flops = CHAIN * 2 * 9 * FEATURES * FEATURES * CONV_SIZE * CONV_SIZE
    return flops / float(np.median(times[2:])) / 1e9


def srresnet_flops_per_pixel():
    """Multiply-adds x 2 of every convolution of the SRResNet, per output pixel (about 2.4 million)."""
    common.import_keras()
    import model as models

    network = models.get_model("srresnet")
    convs = [layer for layer in network.layers if layer.__class__.__name__ == "Conv2D"]
    return sum(2 * np.prod(layer.kernel.shape) for layer in convs)


def tiled_run(folder, args, flags):
    """test_model.py --tile on `folder` in a child process: (pixels a second it printed, the child's wall seconds
    from start to exit, its peak RSS in GiB)."""
    command = [sys.executable, str(common.REPO / "test_model.py"), "--image_dir", folder, "--tile", str(args.tile),
               "--weight_file", "gaussian", "--test_noise_model", "clean", "--output_mode", "denoised",
               "--output_dir", f"{folder}_out", *flags]
    with tempfile.TemporaryFile("w+") as output:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage (ru_maxrss in KiB on Linux)
        wall = time.perf_counter() - start
        output.seek(0)
        printed = output.read()
    shutil.rmtree(f"{folder}_out", ignore_errors=True)
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"test_model.py failed (exit status {os.waitstatus_to_exitcode(status)}):\n{printed[-3000:]}")
    rate = re.search(r"in [\d.]+ s, ([\d,]+) pixels a second", printed)
    return float(rate.group(1).replace(",", "")), wall, round(usage.ru_maxrss / 2**20, 2)


def main():
    args = get_args()
    common.import_keras()
    photo = cv2.imread(args.photo, cv2.IMREAD_COLOR)
    if photo is None:
        sys.exit(f"bench_inference.py: error: --photo {args.photo}: not an image OpenCV can read")
    flops_per_pixel = srresnet_flops_per_pixel()
    width, height = args.size
    padded = [inference.padded_size(side) for side in (height, width)]
    computed = [sum(length for _, length in inference.tile_spans(side, args.tile, inference.TILE_OVERLAP))
                for side in padded]
    computed_per_photo_pixel = computed[0] * computed[1] / (width * height)
    precisions = [("float32", "float32", [])] + ([] if args.skip_mixed else
                                                  [("bfloat16", "mixed_bfloat16", ["--mixed_precision"])])
    with tempfile.TemporaryDirectory() as folder:
        cv2.imwrite(f"{folder}/large.png", cv2.resize(photo, args.size, interpolation=cv2.INTER_CUBIC))
        for name, policy, flags in precisions:
            peak = conv_peak_gflops(policy, args.repeats)
            rate, wall, peak_rss_gib = tiled_run(folder, args, flags)
            gflops = rate * flops_per_pixel / 1e9
            whole = width * height * flops_per_pixel / wall / 1e9  # the whole command, start-up included
            common.emit("inference", precision=name, conv_peak_gflops=round(peak, 1), size=f"{width}x{height}",
                        tile=args.tile, whole_command_s=round(wall, 1),
                        fraction_of_peak_whole_command=round(whole / peak, 3), pixels_per_s=round(rate),
                        gflops_photo_pixels=round(gflops, 1), fraction_of_peak=round(gflops / peak, 3),
                        fraction_of_peak_tile_pixels=round(gflops * computed_per_photo_pixel / peak, 3),
                        tile_pixels_per_photo_pixel=round(computed_per_photo_pixel, 3),
                        peak_rss_gib=peak_rss_gib, mflop_per_pixel=round(flops_per_pixel / 1e6, 3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
