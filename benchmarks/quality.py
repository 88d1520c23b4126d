"""Equal-budget quality protocol: train.py on noisy targets against clean targets (same seed, so the runs differ
only by their targets), next to the noisy input and OpenCV's non-local means, by PSNR and SSIM on a folder with
fixed-seed noise, for the original README's noise recipes, to show what Noise2Noise gives up to clean targets."""
import sys
from pathlib import Path

import numpy as np

import common

common.import_keras()
import cli  # noqa: E402
import generator  # noqa: E402
import images  # noqa: E402
import inference  # noqa: E402
import model as models  # noqa: E402
from noise_model import get_noise_model  # noqa: E402

# noise -> (training noise, loss, validation noise), as in the original README
RECIPES = {"gaussian": ("gaussian,0,50", "mse", "gaussian,25,25"),
           "text": ("text,0,50", "mae", "text,25,25"),
           "impulse": ("impulse,0,95", "l0", "impulse,70,70")}
NLM_STRENGTHS = (5, 10, 15, 20, 25, 30, 40)
METHODS = ("noisy_targets", "clean_targets", "noisy_targets_zero_mean", "neighbor2neighbor")


def get_args():
    parser = common.get_parser(__doc__)
    common.add_backend_flag(parser)
    parser.add_argument("--noise", nargs="+", choices=sorted(RECIPES), default=sorted(RECIPES),
                        help="noise recipes: " + "; ".join(f"{name}: {train} with {loss}, evaluated with {test}"
                                                           for name, (train, loss, test) in RECIPES.items()))
    common.add_data_flags(parser, test="Set14", test_help="evaluation images (noise seeded 0, as test_model.py)")
    parser.add_argument("--select_dir", type=cli.existing_dir, default=str(common.DATASETS / "Set5"),
                        help="train.py's --test_dir: the validation images that pick each run's best checkpoint, "
                             "so that the evaluation images play no part in training")
    common.add_train_py_flags(parser, nb_epochs=3, steps=100)
    parser.add_argument("--model", choices=cli.MODEL_NAMES, default="srresnet",
                        help="the network every run trains (train.py --model)")
    parser.add_argument("--zero_mean", action="store_true", help="also train gaussian with --zero_mean_targets")
    parser.add_argument("--neighbor2neighbor", action="store_true",
                        help="also train gaussian with train.py --method neighbor2neighbor (single noisy patches, "
                             "the same source noise, no targets)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS[:2]),
                        help="which runs to train and score (with --zero_mean and --neighbor2neighbor added)")
    parser.add_argument("--output_path", default="runs/quality", help="where the training runs go")
    parser.add_argument("--reuse", action="store_true",
                        help="score runs that already finished (history.npz in their folder) without training again")
    return parser.parse_args()


def method_flags(noise, name):
    """train.py's target and method flags for one method of `noise`'s recipe."""
    source, loss, _ = RECIPES[noise]
    if name == "neighbor2neighbor":  # its own loss, and its targets are sub-images of the sources
        return ("--method", "neighbor2neighbor")
    target = "clean" if name == "clean_targets" else source
    zero_mean = ("--zero_mean_targets",) if name == "noisy_targets_zero_mean" else ()
    return ("--loss", loss, "--target_noise_model", target, *zero_mean)


def chosen_methods(args, noise):
    """The methods to run for `noise`, in METHODS order; the gaussian-only ones only for gaussian."""
    chosen = set(args.methods) | {name for name, flag in (("noisy_targets_zero_mean", args.zero_mean),
                                                          ("neighbor2neighbor", args.neighbor2neighbor)) if flag}
    if noise != "gaussian":  # --zero_mean_targets changes additive noise only; N2N's loss is mse
        chosen -= {"noisy_targets_zero_mean", "neighbor2neighbor"}
    return [name for name in METHODS if name in chosen]


def train(args, noise, name):
    """Run train.py (with --mixed_precision) for one method; returns (its output folder, wall seconds: None where
    --reuse found the run finished)."""
    source, _, validation = RECIPES[noise]
    output = Path(args.output_path) / (noise if args.model == "srresnet" else f"{noise}_{args.model}") / name
    if args.reuse and (output / "history.npz").exists():
        return output, None
    _, wall = common.run_train_py(args, args.select_dir, output, "--mixed_precision", "--source_noise_model", source,
                                  "--val_noise_model", validation, "--model", args.model,
                                  *method_flags(noise, name))
    return output, wall


def scores(pairs, outputs):
    """Mean PSNR and SSIM of uint8 `outputs` against the clean images of `pairs`, by the suite's own PSNR and SSIM
    (model.py's, which test_model.py reports)."""
    scorer = models.image_scorer(pairs[0][1].shape[-1])
    psnr, ssim = np.mean([models.score_image(scorer, clean[np.newaxis].astype(np.float32),
                                             output[np.newaxis].astype(np.float32))
                          for (_, clean), output in zip(pairs, outputs)], axis=0)
    return round(float(psnr), 3), round(float(ssim), 4)


def best_nlm(pairs):
    """(h, PSNR, SSIM) of the best non-local-means strength of NLM_STRENGTHS on these pairs."""
    swept = common.nlm_sweep([noisy for noisy, _ in pairs], NLM_STRENGTHS)
    return max(((h, *scores(pairs, outputs)) for h, outputs in swept.items()), key=lambda result: result[1])


def evaluation_pairs(args, noise):
    """[(noisy uint8, clean uint8)] of the evaluation folder, cropped to 16, noise seeded 0 as test_model.py."""
    noise_model, rng = get_noise_model(RECIPES[noise][2]), np.random.default_rng(0)
    cleans = [images.crop_to_multiple(image) for image in generator.load_images(images.list_images(args.test_dir))]
    return [(noise_model(clean, rng), clean) for clean in cleans]


def model_scores(folder, pairs):
    """PSNR and SSIM of the best checkpoint in `folder` (float32 inference, as test_model.py runs it)."""
    checkpoint = max(folder.glob("weights.*.weights.h5"), key=lambda path: path.stat().st_mtime)
    network = common.load_network(checkpoint)
    return scores(pairs, [inference.denoise(network, noisy) for noisy, _ in pairs])


def main():
    args = get_args()
    shared = dict(model=args.model, steps=args.nb_epochs * args.steps, batch="16x64x64", lr=args.lr,
                  test_dir=Path(args.test_dir).name)
    for noise in args.noise:
        pairs = evaluation_pairs(args, noise)
        psnr, ssim = scores(pairs, [noisy for noisy, _ in pairs])
        common.emit("quality", noise=noise, method="noisy_input", psnr=psnr, ssim=ssim, **shared)
        h, psnr, ssim = best_nlm(pairs)
        common.emit("quality", noise=noise, method="opencv_nlm", h=h, psnr=psnr, ssim=ssim, **shared)
        for name in chosen_methods(args, noise):
            folder, seconds = train(args, noise, name)
            psnr, ssim = model_scores(folder, pairs)
            common.emit("quality", noise=noise, method=name, psnr=psnr, ssim=ssim,
                        train_s=seconds and round(seconds), **shared)
    return 0


if __name__ == "__main__":
    sys.exit(main())
