"""Equal-budget quality protocol: noisy-target against clean-target training, next to the noisy input and an
OpenCV non-local-means baseline, by PSNR and SSIM on a validation folder with fixed-seed noise.

    python3 benchmarks/quality.py --noise gaussian text impulse [--nb_epochs 3 --steps 100] [--zero_mean]

For each noise model (the original README's recipes: gaussian,0,50 with mse; text,0,50 with mae;
impulse,0,95 with l0) trains the SRResNet with train.py (same seed, data, flags and budget) on noisy targets,
on clean targets and, with --zero_mean for gaussian, on noisy targets with --zero_mean_targets. The seed fixes
the initial weights, the patches, their order and their source noise alike in every run, so the runs differ
only by their targets (common random numbers: the comparison is not drowned by run-to-run spread). Then every
validation image gets the original's validation noise (gaussian,25,25 / text,25,25 / impulse,70,70; seed 0,
as test_model.py) and is scored as noisy input, denoised by cv2.fastNlMeansDenoisingColored (its strength h
picked per noise model as the best of a grid on this same folder, which favours the baseline), and denoised
by each trained model (its best checkpoint by validation PSNR on --select_dir, so the evaluation folder
plays no part in training). One JSON line per (noise, method); PSNR and SSIM are test_model.py's (model.py's one
PSNR and SSIM: Wang's 11x11 Gaussian window, as val_SSIM and report.csv). --reuse scores a finished run
(one with history.npz) again without training it.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import cli  # noqa: E402

cli.import_keras_quietly()

import generator  # noqa: E402
import images  # noqa: E402
import model as models  # noqa: E402
from noise_model import get_noise_model  # noqa: E402
from test_model import image_scores  # noqa: E402

DATASETS = REPO.parent / "shared" / "datasets"
# noise -> (training noise, loss, validation noise), as in the original README
RECIPES = {"gaussian": ("gaussian,0,50", "mse", "gaussian,25,25"),
           "text": ("text,0,50", "mae", "text,25,25"),
           "impulse": ("impulse,0,95", "l0", "impulse,70,70")}
NLM_STRENGTHS = (5, 10, 15, 20, 25, 30, 40)


def get_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--noise", nargs="+", choices=sorted(RECIPES), default=sorted(RECIPES), help="noise models")
    parser.add_argument("--image_dir", default=str(DATASETS / "train291"), help="training images")
    parser.add_argument("--select_dir", default=str(DATASETS / "Set5"),
                        help="train.py's --test_dir: validation images that pick the best checkpoint")
    parser.add_argument("--test_dir", default=str(DATASETS / "Set14"), help="evaluation images")
    parser.add_argument("--nb_epochs", type=int, default=3, help="epochs of every training run")
    parser.add_argument("--steps", type=int, default=100, help="batches per epoch (batch 16 of 64x64)")
    parser.add_argument("--lr", type=float, default=0.005, help="initial learning rate")
    parser.add_argument("--zero_mean", action="store_true", help="also train gaussian with --zero_mean_targets")
    parser.add_argument("--output_path", default="runs/quality", help="where the training runs go")
    parser.add_argument("--reuse", action="store_true",
                        help="score runs that already finished (history.npz in their folder) without training again")
    return parser.parse_args()


def train(args, noise, name, target, *extra):
    """Run train.py for one method; returns (its output folder, wall seconds)."""
    source, loss, validation = RECIPES[noise]
    output = Path(args.output_path) / noise / name
    if args.reuse and (output / "history.npz").exists():
        return output, None
    command = [sys.executable, str(REPO / "train.py"), "--image_dir", args.image_dir, "--test_dir", args.select_dir,
               "--nb_epochs", str(args.nb_epochs), "--steps", str(args.steps), "--batch_size", "16",
               "--image_size", "64", "--lr", str(args.lr), "--seed", "0", "--loss", loss, "--mixed_precision",
               "--source_noise_model", source, "--target_noise_model", target, "--val_noise_model", validation,
               "--output_path", str(output), *extra]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return output, time.perf_counter() - start


def scores(pairs, outputs):
    """Mean PSNR and SSIM of `outputs` against the clean images of `pairs`."""
    psnr, ssim = np.mean([image_scores(clean, output) for (_, clean), output in zip(pairs, outputs)], axis=0)
    return round(float(psnr), 3), round(float(ssim), 4)


def best_nlm(pairs):
    """(h, PSNR, SSIM) of the best non-local-means strength on these pairs."""
    results = []
    for h in NLM_STRENGTHS:
        outputs = [cv2.fastNlMeansDenoisingColored(noisy, None, h, h, 7, 21) for noisy, _ in pairs]
        results.append((h, *scores(pairs, outputs)))
    return max(results, key=lambda result: result[1])


def evaluation_pairs(args, noise):
    """[(noisy uint8, clean uint8)] of the evaluation folder, cropped to 16, noise seeded 0 as test_model.py."""
    noise_model, rng = get_noise_model(RECIPES[noise][2]), np.random.default_rng(0)
    cleans = [generator.crop_to_multiple(image) for image in generator.load_images(images.list_images(args.test_dir))]
    return [(noise_model(clean, rng), clean) for clean in cleans]


def model_scores(folder, pairs):
    """PSNR and SSIM of the best checkpoint in `folder` (float32 inference)."""
    checkpoint = max(folder.glob("weights.*.weights.h5"), key=lambda path: path.stat().st_mtime)
    network = models.get_model("srresnet")
    models.load_weights(network, checkpoint)
    return scores(pairs, [models.denoise(network, noisy) for noisy, _ in pairs])


def main():
    args = get_args()
    common = dict(steps=args.nb_epochs * args.steps, batch="16x64x64", lr=args.lr, test_dir=Path(args.test_dir).name)
    for noise in args.noise:
        pairs = evaluation_pairs(args, noise)
        psnr, ssim = scores(pairs, [noisy for noisy, _ in pairs])
        print(json.dumps(dict(noise=noise, method="noisy_input", psnr=psnr, ssim=ssim, **common)), flush=True)
        h, psnr, ssim = best_nlm(pairs)
        print(json.dumps(dict(noise=noise, method="opencv_nlm", h=h, psnr=psnr, ssim=ssim, **common)), flush=True)
        methods = [("noisy_targets", RECIPES[noise][0], ()), ("clean_targets", "clean", ())]
        if args.zero_mean and noise == "gaussian":
            methods.append(("noisy_targets_zero_mean", RECIPES[noise][0], ("--zero_mean_targets",)))
        for name, target, extra in methods:
            folder, seconds = train(args, noise, name, target, *extra)
            psnr, ssim = model_scores(folder, pairs)
            print(json.dumps(dict(noise=noise, method=name, psnr=psnr, ssim=ssim, train_s=seconds and round(seconds),
                                  **common)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
