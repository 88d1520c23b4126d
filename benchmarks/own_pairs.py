"""Noise2Noise on your own shots, measured: pairs written to disk with a noise this suite has no model for (camera
noise, then row banding, then JPEG at quality 90), the shipped weights fine-tuned at an equal budget and seed on
them as pairs (train.py --target_dir), as bursts of 2, 3 and 4 shots (--bursts, the same scenes), against the
same fine-tune with clean targets (--clean_targets) and with the suite's closest noise model drawn on the fly;
each scored by test_model.py on held-out photos with that noise. One JSON line a run."""
import json
import re
import sys
from pathlib import Path

import cv2
import numpy as np

import common

import cli
import images
from noise_model import get_noise_model

CAMERA = "camera,30,80+chroma,2,4"  # the known part of the noise
CLOSEST_SPEC = "camera,30,80+chroma,2,4+jpeg,85,95"  # the suite's closest model of it, for the on-the-fly run
BANDING = 2.0  # grey levels: the standard deviation of each row's offset, the same in every channel
QUALITY = 90


def unknown_noise(image, rng):
    """One shot of a clean HxWx3 uint8 photo with a noise no spec of the suite makes: `camera` noise, then every
    row offset by N(0, BANDING) grey levels (a sensor's row banding), then JPEG at QUALITY: HxWx3 uint8."""
    noisy = get_noise_model(CAMERA)(image, rng).astype(np.float32)
    noisy += rng.normal(0.0, BANDING, (image.shape[0], 1, 1)).astype(np.float32)
    encoded = cv2.imencode(".jpg", np.clip(np.rint(noisy), 0, 255).astype(np.uint8),
                           [cv2.IMWRITE_JPEG_QUALITY, QUALITY])[1]
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)


def get_args():
    parser = common.get_parser(__doc__)
    common.add_data_flags(parser, test="Set14", test_help="held-out clean photos, scored with the noise drawn on them")
    parser.add_argument("--val_dir", type=cli.existing_dir, default=str(common.DATASETS / "Set5"),
                        help="validation photos (two noisy shots each: --val_target_dir; or clean versions)")
    parser.add_argument("--data", default="runs/own_pairs/data", help="where the noisy shots are written (once)")
    parser.add_argument("--output_path", default="runs/own_pairs", help="where the training runs go")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS), help="which runs to make")
    parser.add_argument("--nb_epochs", type=cli.positive_int, default=4, help="epochs of every run")
    parser.add_argument("--steps", type=cli.positive_int, default=50, help="batches of 16 64x64 patches an epoch")
    parser.add_argument("--lr", type=cli.positive_float, default=0.0003, help="initial learning rate")
    parser.add_argument("--weight", default="gaussian", help="the shipped weights every run starts from")
    return parser.parse_args()


def write_shots(folder, clean_dir, draws, seed):
    """`draws` noisy shots of every photo of clean_dir as folder/shot{k}/NAME.png (the JPEG decoded: lossless from
    here on), drawn from `seed`; skipped where folder already holds them."""
    rng = np.random.default_rng(seed)
    for path in images.list_images(clean_dir):
        clean = images.read_image(path)
        for k in range(draws):
            target = Path(folder) / f"shot{k}" / f"{path.stem}.png"
            shot = unknown_noise(clean, rng)  # drawn even where written, so the stream does not depend on it
            if not target.is_file():
                images.write_image(target, shot)


def burst_folders(data, shots):
    """data/bursts{shots}/NAME/shot{k}.png for k < shots: each scene's first `shots` shots, as links."""
    folder = Path(data) / f"bursts{shots}"
    for shot in sorted((Path(data) / "train" / "shot0").iterdir()):
        scene = folder / shot.stem
        scene.mkdir(parents=True, exist_ok=True)
        for k in range(shots):
            link = scene / f"shot{k}.png"
            if not link.exists():
                link.symlink_to((Path(data) / "train" / f"shot{k}" / shot.name).resolve())
    return folder


def run_flags(args, name):
    """train.py's data and validation flags of run `name` (RUNS)."""
    data, train = Path(args.data), ["--image_dir", str(Path(args.data) / "train" / "shot0")]
    noisy_val = ["--test_dir", str(data / "val" / "shot0")]
    by_pairs = [*noisy_val, "--val_target_dir", str(data / "val" / "shot1")]
    by_clean = [*noisy_val, "--val_clean_dir", args.val_dir]
    if name in ("pairs", "camera_pairs"):
        return [*train, "--target_dir", str(data / "train" / "shot1"), *by_pairs]
    if name == "clean_targets":
        return [*train, "--target_dir", args.image_dir, "--clean_targets", *by_clean]
    if name == "on_the_fly":
        return ["--image_dir", args.image_dir, "--source_noise_model", CLOSEST_SPEC, "--target_noise_model",
                CLOSEST_SPEC, *by_clean]
    shots = int(name.removeprefix("bursts"))
    return ["--image_dir", str(burst_folders(args.data, shots)), "--bursts", *by_pairs]


# (bursts of 2 shots are the pairs: every patch takes both, in either order)
RUNS = ("pairs", "clean_targets", "on_the_fly", "bursts3", "bursts4", "camera_pairs")


def best_checkpoint(stdout):
    """The checkpoint train.py names as the best at its end."""
    return re.search(r"^best checkpoint: (\S+)$", stdout, re.MULTILINE).group(1)


def score(weights, noisy_dir, clean_dir):
    """(noisy, denoised) mean PSNR that test_model.py prints for `weights` on noisy_dir against clean_dir."""
    stdout, _ = common.run([sys.executable, str(common.REPO / "test_model.py"), "--weight_file", str(weights),
                            "--image_dir", str(noisy_dir), "--clean_dir", str(clean_dir), "--test_noise_model",
                            "clean", "--output_dir", f"{noisy_dir}_out", "--output_mode", "denoised"])
    return tuple(map(float, re.search(r"mean over \d+ images: noisy ([\d.]+) dB, denoised ([\d.]+) dB",
                                      stdout).groups()))


def polyu_psnr(weights):
    """benchmarks/real_photos.py's PSNR of `weights` on the real photos of PolyU-Canon5D2, or None without them."""
    folder = common.DATASETS / "PolyU-Canon5D2"
    if not folder.is_dir():
        return None
    stdout, _ = common.run([sys.executable, str(Path(__file__).with_name("real_photos.py")), "--pairs", str(folder),
                            "--nlm_h", "--weights", str(weights)])
    return json.loads(stdout.splitlines()[-1])["psnr"]


def main():
    args = get_args()
    data = Path(args.data)
    write_shots(data / "train", args.image_dir, 4, seed=1)
    write_shots(data / "val", args.val_dir, 2, seed=2)
    write_shots(data / "test", args.test_dir, 1, seed=3)
    test = (data / "test" / "shot0", args.test_dir)
    budget = dict(steps=args.nb_epochs * args.steps, batch="16x64x64", lr=args.lr, test_dir=Path(args.test_dir).name)
    for shipped in ("gaussian", "camera"):
        noisy, denoised = score(shipped, *test)
        common.emit("own_pairs", run=f"shipped {shipped}", noisy_psnr=noisy, psnr=denoised)
    for name in args.runs:
        weight = "camera" if name == "camera_pairs" else args.weight
        stdout, seconds = common.run([sys.executable, str(common.REPO / "train.py"), *run_flags(args, name),
                                      "--weight", weight, "--nb_epochs", str(args.nb_epochs), "--steps",
                                      str(args.steps), "--batch_size", "16", "--image_size", "64", "--lr",
                                      str(args.lr), "--seed", "0", "--mixed_precision", "--output_path",
                                      str(Path(args.output_path) / name)])
        checkpoint = best_checkpoint(stdout)
        noisy, denoised = score(checkpoint, *test)
        real = {"polyu_psnr": polyu_psnr(checkpoint), "polyu_psnr_of_start": polyu_psnr(weight)} \
            if name == "camera_pairs" else {}
        common.emit("own_pairs", run=name, weight=weight, checkpoint=checkpoint, noisy_psnr=noisy, psnr=denoised,
                    train_s=round(seconds), **real, **budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
