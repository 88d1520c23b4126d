"""Training-patch throughput: train.py's generator against the original's approach (a file read and a float64
noise draw per patch) for every noise model, the images' decoding on one thread and on several, and the GPU
recipe's batches made by worker threads against forked processes, to show where the feed's time goes."""
import collections
import os
import platform
import random
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

import common

common.import_keras()  # generator.py's PyDataset is Keras'
import cli  # noqa: E402
import generator  # noqa: E402
import images  # noqa: E402
from noise_model import get_noise_model  # noqa: E402

SPECS = ("gaussian,0,50", "impulse,0,95", "text,0,50", "clean")


def pairs_per_second(make_batch, batch_size, seconds):
    """Call make_batch(index) for `seconds` (after one warm-up call); patch pairs per second."""
    make_batch(0)
    start, batches = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        make_batch(batches)
        batches += 1
    return batches * batch_size / (time.perf_counter() - start)


def original_batch_maker(paths, noise, batch_size, image_size):
    """The original's NoisyImageGenerator.__getitem__: a file read and a float64 noise draw per patch."""
    def original_noise(patch):
        if noise is None:
            return patch
        return noise(patch, np.random.default_rng(random.getrandbits(64)))

    def make_batch(index):
        x = np.zeros((batch_size, image_size, image_size, 3), dtype=np.uint8)
        y = np.zeros_like(x)
        sample = 0
        while sample < batch_size:
            image = cv2.imread(str(random.choice(paths)))
            height, width = image.shape[:2]
            if height >= image_size and width >= image_size:
                i, j = np.random.randint(height - image_size + 1), np.random.randint(width - image_size + 1)
                patch = image[i:i + image_size, j:j + image_size]
                x[sample], y[sample] = original_noise(patch), original_noise(patch)
                sample += 1
        return x, y

    return make_batch


def original_gaussian(min_stddev, max_stddev):
    """The original's gaussian noise, float64 as it was written."""
    def noise(patch, rng):
        noisy = patch.astype(np.float64) + np.random.randn(*patch.shape) * np.random.uniform(min_stddev, max_stddev)
        return np.clip(noisy, 0, 255).astype(np.uint8)
    return noise


def get_args():
    parser = common.get_parser(__doc__)
    common.add_data_flags(parser, test=None)
    common.add_patch_flags(parser)
    parser.add_argument("--seconds", type=cli.positive_float, default=5.0, help="measuring time per case")
    parser.add_argument("--workers", type=cli.positive_int, nargs="*", default=sorted({1, os.cpu_count() or 1}),
                        help="worker counts for the threads-against-processes lines (the GPU recipe's batch)")
    return parser.parse_args()


def time_decoding(paths, rounds=3):
    """One JSON line: seconds to decode every image of `paths` (what train.py does once at its start), one
    thread against generator.decoded_images' default threads, the best of `rounds` alternating tries."""
    threads = {"one_thread": 1, "default_threads": None}
    seconds = {name: [] for name in threads}
    for _ in range(rounds):
        for name, count in threads.items():
            start = time.perf_counter()
            for _ in generator.decoded_images(paths, threads=count):
                pass
            seconds[name].append(time.perf_counter() - start)
    best = {name: min(values) for name, values in seconds.items()}
    common.emit("decode_images", images=len(paths), seconds={k: round(v, 3) for k, v in best.items()},
                speedup=round(best["one_thread"] / best["default_threads"], 2), cores=os.cpu_count())


def time_workers(cached, workers, seconds, queue_size=10):
    """JSON lines: the recipe's batches (8 of 128x128, zero-mean targets) made by `workers` threads or processes,
    asked for as Keras' PyDataset does (`queue_size` ahead); batches a second, and this process's CPU ms and page
    faults a batch (its GIL is the training loop's)."""
    kinds = {"threads": 0, "processes": workers} if cli.can_fork() else {"threads": 0}
    makers = {kind: generator.NoisyImageGenerator(cached, get_noise_model("gaussian,0,50"),
                                                  get_noise_model("gaussian,0,50", zero_mean=True), batch_size=8,
                                                  image_size=128, steps=10**9, seed=0, processes=processes)
              for kind, processes in kinds.items()}
    for kind, data in makers.items():
        with ThreadPoolExecutor(workers) as asking:
            requested = collections.deque(asking.submit(data.__getitem__, index) for index in range(queue_size))
            for _ in range(2 * queue_size):  # warm-up: the heap reaches its steady state
                requested.popleft().result()
                requested.append(asking.submit(data.__getitem__, len(requested)))
            start, cpu, faults = time.perf_counter(), time.process_time(), minor_faults()
            batches = 0
            while time.perf_counter() - start < seconds:
                requested.popleft().result()  # dropped at once, as Keras drops a batch once the step has it
                requested.append(asking.submit(data.__getitem__, batches))
                batches += 1
            wall, cpu, faults = time.perf_counter() - start, time.process_time() - cpu, minor_faults() - faults
            for request in requested:
                request.result()
        data.close()
        common.emit("recipe_batches", made_in=kind, workers=workers, batches_per_s=round(batches / wall),
                    parent_cpu_ms_per_batch=round(1e3 * cpu / batches, 2),
                    parent_minor_faults_per_batch=round(faults / batches), cores=os.cpu_count())


def minor_faults():
    """Minor page faults of this process so far (each a fresh page of memory touched: microseconds of CPU)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main():
    args = get_args()
    paths = images.list_images(args.image_dir)
    if not paths:
        sys.exit(f"bench_generator.py: error: --image_dir {args.image_dir}: no images")
    time_decoding(paths)
    cached = generator.load_images(paths, min_size=args.image_size)
    shared = dict(batch_size=args.batch_size, image_size=args.image_size, machine=platform.processor() or
                  platform.machine(), images=len(cached))
    suite = {}
    for spec in SPECS:
        noise = get_noise_model(spec)
        data = generator.NoisyImageGenerator(cached, noise, noise, batch_size=args.batch_size,
                                             image_size=args.image_size, steps=10**9, seed=0)
        suite[spec] = pairs_per_second(data.__getitem__, args.batch_size, args.seconds)
        common.emit("generator", approach="suite", noise=spec, pairs_per_s=round(suite[spec]), **shared)
    originals = {"gaussian,0,50": original_gaussian(0, 50), "impulse,0,95": get_noise_model("impulse,0,95"),
                 "text,0,50": get_noise_model("text,0,50"), "clean": None}
    for spec, noise in originals.items():
        rate = pairs_per_second(original_batch_maker(paths, noise, args.batch_size, args.image_size),
                                args.batch_size, args.seconds)
        common.emit("generator", approach="original", noise=spec, pairs_per_s=round(rate),
                    suite_speedup=round(suite[spec] / rate, 1), **shared)
    recipe_sized = [image for image in cached if min(image.shape[:2]) >= 128]
    for workers in args.workers:
        time_workers(recipe_sized, workers, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
