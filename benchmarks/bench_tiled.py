"""Tiled inference: peak memory of test_model.py --tile on a large photo, and agreement with whole-image inference.

    python3 benchmarks/bench_tiled.py [--tile 512] [--size 4000x3000]

1. Enlarges a Set14 photo to --size (bicubic), and runs test_model.py
   --tile on it in a subprocess with the shipped gaussian weights; reports the
   child's peak resident memory (getrusage) and its wall time.
2. On a 1000x700 photo, where whole-image inference fits, compares
   model.denoise whole and in tiles: mean and largest absolute difference of
   the uint8 outputs. One JSON line per measurement.
"""
import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import cli  # noqa: E402

PHOTO = REPO.parent / "shared" / "datasets" / "Set14" / "barbara.png"


def get_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--photo", default=str(PHOTO), help="photo to enlarge")
    parser.add_argument("--tile", type=int, default=512, help="tile size")
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of the large photo")
    return parser.parse_args()


def peak_memory_of_tiled_run(args, photo):
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as folder:
        cv2.imwrite(f"{folder}/large.png", cv2.resize(photo, (width, height), interpolation=cv2.INTER_CUBIC))
        start = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "test_model.py"), "--image_dir", folder, "--tile", str(args.tile),
                        "--output_dir", f"{folder}_out"], check=True, capture_output=True)
        wall = time.perf_counter() - start
        shutil.rmtree(f"{folder}_out")
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    print(json.dumps(dict(bench="tiled_peak_rss", size=args.size, tile=args.tile, peak_rss_gib=round(peak_gib, 2),
                          wall_s=round(wall, 1))), flush=True)


def tiled_against_whole(args, photo):
    cli.import_keras_quietly()
    import model as models
    from noise_model import get_noise_model

    model = models.get_model("srresnet")
    models.load_weights(model, REPO / "result" / "weights" / "gaussian.weights.h5")
    noisy = get_noise_model("gaussian,25,25")(cv2.resize(photo, (1000, 700), interpolation=cv2.INTER_CUBIC),
                                              np.random.default_rng(0))
    whole = models.denoise(model, noisy).astype(int)
    tiled = models.denoise(model, noisy, tile=args.tile).astype(int)
    difference = np.abs(whole - tiled)
    print(json.dumps(dict(bench="tiled_vs_whole", size="1000x700", tile=args.tile, overlap=models.TILE_OVERLAP,
                          mean_abs_difference=round(float(difference.mean()), 5),
                          max_abs_difference=int(difference.max()),
                          pixels_differing=int((difference > 0).sum()))), flush=True)


def main():
    args = get_args()
    photo = cv2.imread(args.photo, cv2.IMREAD_COLOR)
    peak_memory_of_tiled_run(args, photo)
    tiled_against_whole(args, photo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
