"""Score denoisers on real noisy photos with ground truth: a folder holding noisy/ and clean/ (the same file
names), e.g. PolyU-Canon5D2. Prints one JSON line per method: the noisy input, OpenCV's non-local means at
each --nlm_h and at its best, and each of --weights, all scored by scikit-image's PSNR and SSIM. With --panel,
also writes one crop side by side: noisy | each of --weights | clean."""
import argparse
import json
from pathlib import Path

import numpy as np

import common

import cli
import images


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


def read_pairs(folder):
    """[(name, noisy, clean)] HxWx3 uint8 BGR, for every photo of noisy/ that clean/ has too."""
    pairs = []
    for noisy_path in images.list_images(f"{folder}/noisy"):
        clean = images.read_image(f"{folder}/clean/{noisy_path.name}")
        if clean is not None:
            pairs.append((noisy_path.name, images.read_image(noisy_path), clean))
    if not pairs:
        raise SystemExit(f"real_photos.py: no noisy/clean pairs of the same name in {folder}")
    return pairs


def scores(results, pairs):
    """{"psnr", "ssim", "per_image_psnr"} of denoised `results` against the pairs' clean photos."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    psnr = [peak_signal_noise_ratio(clean, result, data_range=255) for (_, _, clean), result in zip(pairs, results)]
    ssim = [structural_similarity(clean, result, channel_axis=2, data_range=255)
            for (_, _, clean), result in zip(pairs, results)]
    return {"psnr": round(sum(psnr) / len(psnr), 3), "ssim": round(sum(ssim) / len(ssim), 4),
            "per_image_psnr": [round(value, 2) for value in psnr]}


def network_results(path, pairs, tile, mixed_precision, stride=1, self_ensemble=False):
    """The network of the weight file `path` run on every noisy photo (uint8, as test_model.py writes it)."""
    common.import_keras()
    import inference
    import model as models

    if mixed_precision:
        models.use_mixed_precision()
    network = models.get_model("srresnet", channels=3)
    if models.weights_mismatch(network, path):
        network = models.get_model("unet", channels=3)
    models.load_weights(network, path)
    network = models.inference_network(network)  # as test_model.py denoises
    return [inference.denoise(network, noisy, tile, stride=stride, self_ensemble=self_ensemble)
            for _, noisy, _ in pairs]


def main():
    import cv2

    args = get_args()
    pairs = read_pairs(args.pairs)
    print(json.dumps({"bench": "real_photos", "method": "noisy", "photos": len(pairs),
                      **scores([noisy for _, noisy, _ in pairs], pairs)}), flush=True)
    best = None
    for h in args.nlm_h:
        result = scores([cv2.fastNlMeansDenoisingColored(noisy, None, h, h, 7, 21) for _, noisy, _ in pairs], pairs)
        print(json.dumps({"bench": "real_photos", "method": f"nlm h={h:g}", **result}), flush=True)
        best = max(best or (result, h), (result, h), key=lambda pair: pair[0]["psnr"])
    if best:
        print(json.dumps({"bench": "real_photos", "method": f"nlm best (h={best[1]:g})", **best[0]}), flush=True)
    denoised = []
    for path in args.weights:
        denoised.append(network_results(path, pairs, args.tile, args.mixed_precision, args.pixel_shuffle,
                                        args.self_ensemble))
        shipped = Path(path).resolve().parent == cli.SHIPPED_WEIGHTS_DIR
        method = Path(path).name if shipped else str(path)  # shipped ones by name: camera.weights.h5
        method += f" --pixel_shuffle {args.pixel_shuffle}" if args.pixel_shuffle > 1 else ""
        method += " --self_ensemble" if args.self_ensemble else ""
        print(json.dumps({"bench": "real_photos", "method": method, **scores(denoised[-1], pairs)}), flush=True)
    if args.panel:
        write_panel(args.panel, pairs, denoised, args.panel_crop)


if __name__ == "__main__":
    main()
