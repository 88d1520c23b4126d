"""Score denoisers on real noisy photos with ground truth: a folder holding noisy/ and clean/ (the same file
names), e.g. PolyU-Canon5D2. Prints one JSON line per method: the noisy input, OpenCV's non-local means at
each --nlm_h and at its best, and each of --weights, all scored by scikit-image's PSNR and SSIM. With --panel,
also writes one crop side by side: noisy | each of --weights | clean."""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import common

import cli


def get_args():
    parser = common.get_parser(__doc__)
    parser.add_argument("--pairs", type=cli.existing_dir, default=str(common.DATASETS / "PolyU-Canon5D2"),
                        help="folder with noisy/ and clean/ photos of the same names")
    parser.add_argument("--weights", nargs="*", type=cli.weight_file,
                        default=[path for name, path in cli.shipped_weights().items()
                                 if name in ("gaussian", "camera")],
                        help="weight files or shipped names to score (SRResNet or UNet, read off the file)")
    parser.add_argument("--nlm_h", nargs="*", type=float, default=[2, 3, 4, 5, 6, 8],
                        help="filter strengths of cv2.fastNlMeansDenoisingColored to try (luma and colour alike; "
                             "none after the flag: networks only)")
    parser.add_argument("--bm3d", nargs="*", type=float, default=[], metavar="SIGMA",
                        help="also score CBM3D (Makinen, Azzari and Foi; pip package bm3d, an optional import: its "
                             "licence is non-commercial, so it is a comparison here and never a requirement) at "
                             "each of these noise strengths (0-255 scale, white-noise profile), and at its best")
    parser.add_argument("--tile", type=int, default=0, help="denoise in tiles of this size (0: whole photos)")
    parser.add_argument("--mixed_precision", action="store_true", help="run the networks in bfloat16")
    parser.add_argument("--pixel_shuffle", type=int, default=1,
                        help="denoise the pixel-shuffled sub-images, as test_model.py --pixel_shuffle does")
    parser.add_argument("--self_ensemble", action="store_true",
                        help="average each network over the photos' 8 flips and transposes, as test_model.py does")
    parser.add_argument("--panel", default=None, help="write noisy | each of --weights | clean of one crop here")
    parser.add_argument("--panel_crop", default=None, type=crop_box,
                        help="the panel's crop as NAME,X,Y,SIZE (a photo of noisy/, its left and top pixel, the "
                             "square's side); default: a 160-pixel square at the centre of the first photo")
    return parser.parse_args()


def crop_box(text):
    """argparse type: NAME,X,Y,SIZE -> (name, x, y, size)."""
    name, *numbers = text.rsplit(",", 3)
    try:
        x, y, size = (int(number) for number in numbers)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME,X,Y,SIZE with whole numbers, got {text!r}") from None
    return name, x, y, size


def write_panel(path, pairs, results, crop):
    """noisy | each network's result | clean, of one square crop, side by side as a PNG with 4-pixel gaps."""
    import cv2

    names = [name for name, _, _ in pairs]
    name, x, y, size = crop or (names[0], pairs[0][1].shape[1] // 2 - 80, pairs[0][1].shape[0] // 2 - 80, 160)
    if name not in names:
        raise SystemExit(f"real_photos.py: --panel_crop: no photo {name!r} in noisy/")
    index = names.index(name)
    _, noisy, clean = pairs[index]
    panels = [image[y:y + size, x:x + size] for image in [noisy, *(result[index] for result in results), clean]]
    gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
    cv2.imwrite(path, np.concatenate([part for panel in panels for part in (panel, gap)][:-1], axis=1))


def scene(name):
    """The scene of a PolyU photo from its file name: Canon5D2_5_160_3200_chair_11.JPG -> chair."""
    parts = Path(name).stem.split("_")
    return parts[-2] if len(parts) > 2 else Path(name).stem


def held_out(names):
    """The photos of every other scene, in sorted order of the scene names (of PolyU-Canon5D2's 8: chair, desk,
    plug and toy, 14 photos): settings are chosen on the others and reported on these too."""
    scenes = sorted({scene(name) for name in names})
    return {name for name in names if scenes.index(scene(name)) % 2 == 1}


def halves(names, values):
    """{"choose": mean over the photos settings are chosen on, "held_out": over the others} of per-photo values."""
    out = held_out(names)
    chosen = [value for name, value in zip(names, values) if name not in out]
    kept = [value for name, value in zip(names, values) if name in out]
    return {"choose": round(sum(chosen) / len(chosen), 3) if chosen else None,
            "held_out": round(sum(kept) / len(kept), 3) if kept else None}


def scores(results, pairs):
    """{"psnr", "ssim", "psnr_halves", "per_image_psnr", "per_image_ssim"} of denoised `results` against the
    pairs' clean photos (psnr_halves: halves())."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    psnr = [peak_signal_noise_ratio(clean, result, data_range=255) for (_, _, clean), result in zip(pairs, results)]
    ssim = [structural_similarity(clean, result, channel_axis=2, data_range=255)
            for (_, _, clean), result in zip(pairs, results)]
    return {"psnr": round(sum(psnr) / len(psnr), 3), "ssim": round(sum(ssim) / len(ssim), 4),
            "psnr_halves": halves([name for name, _, _ in pairs], psnr),
            "per_image_psnr": [round(value, 2) for value in psnr],
            "per_image_ssim": [round(value, 4) for value in ssim]}


def import_bm3d():
    """The optional bm3d module, or exit 2 with one line saying how to get it."""
    try:
        import bm3d
    except ImportError:
        print("real_photos.py: error: --bm3d needs the optional package bm3d (pip install bm3d; non-commercial "
              "licence: a comparison only, never a requirement of this suite)", file=sys.stderr)
        sys.exit(2)
    return bm3d


def bm3d_results(pairs, sigma):
    """CBM3D of every noisy photo at `sigma` (0-255 scale), rounded to uint8 BGR as test_model.py writes its
    results, and the mean CPU seconds a photo (all of bm3d's threads)."""
    bm3d = import_bm3d()
    results, start = [], time.process_time()
    for _, noisy, _ in pairs:
        rgb = noisy[:, :, ::-1].astype(np.float64) / 255.0
        denoised = bm3d.bm3d_rgb(rgb, sigma / 255.0)
        results.append(np.clip(np.rint(denoised[:, :, ::-1] * 255.0), 0, 255).astype(np.uint8))
    return results, round((time.process_time() - start) / len(pairs), 1)


def bm3d_scores(pairs, sigma):
    """scores() of CBM3D at `sigma`, with its CPU seconds a photo."""
    results, cpu_s = bm3d_results(pairs, sigma)
    return dict(scores(results, pairs), cpu_s_per_photo=cpu_s)


def network_results(path, pairs, tile, mixed_precision, stride=1, self_ensemble=False):
    """The network of the weight file `path` run on every noisy photo (uint8, as test_model.py writes it)."""
    import inference

    network = common.load_network(path, mixed_precision)
    return [inference.denoise(network, noisy, tile=tile, stride=stride, self_ensemble=self_ensemble)
            for _, noisy, _ in pairs]


def emit(method, result):
    """One JSON line of a method's scores, at once (a sweep takes long)."""
    print(json.dumps({"bench": "real_photos", "method": method, **result}), flush=True)


def sweep(strengths, results_at, name, unit):
    """Score results_at(strength) (a dict of scores) at each strength, one line each, then one for the best."""
    results = {}
    for strength in strengths:
        results[strength] = results_at(strength)
        emit(f"{name} {unit}={strength:g}", results[strength])
    if results:
        best = max(results, key=lambda strength: results[strength]["psnr"])
        emit(f"{name} best ({unit}={best:g})", results[best])


def main():
    args = get_args()
    if args.bm3d:
        import_bm3d()  # before any work: a missing package is one line at once
    pairs = common.read_pairs(args.pairs)
    emit("noisy", dict(photos=len(pairs), **scores([noisy for _, noisy, _ in pairs], pairs)))
    noisy_images = [noisy for _, noisy, _ in pairs]
    sweep(args.nlm_h, lambda h: scores(common.nlm_sweep(noisy_images, [h])[h], pairs), "nlm", "h")
    sweep(args.bm3d, lambda sigma: bm3d_scores(pairs, sigma), "cbm3d", "sigma")
    denoised = []
    for path in args.weights:
        denoised.append(network_results(path, pairs, args.tile, args.mixed_precision, args.pixel_shuffle,
                                        args.self_ensemble))
        shipped = Path(path).resolve().parent == cli.SHIPPED_WEIGHTS_DIR
        method = Path(path).name if shipped else str(path)  # shipped ones by name: camera.weights.h5
        method += f" --pixel_shuffle {args.pixel_shuffle}" if args.pixel_shuffle > 1 else ""
        method += " --self_ensemble" if args.self_ensemble else ""
        emit(method, scores(denoised[-1], pairs))
    if args.panel:
        write_panel(args.panel, pairs, denoised, args.panel_crop)


if __name__ == "__main__":
    main()
