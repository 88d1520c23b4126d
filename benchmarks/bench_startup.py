"""Start-up of training: the seconds to the end of the first training step of the SRResNet (batch 2 of 32x32,
Adam, train.py's loss and PSNR metric), with the optimizer's state built before fit (as train.py does) and left
to fit's first trace, each in a fresh process."""
import argparse
import subprocess
import sys
import time

import common


def get_args():
    parser = common.get_parser(__doc__)
    parser.add_argument("--repeats", type=common.cli.positive_int, default=2, help="fresh processes per variant")
    parser.add_argument("--child", choices=("prebuilt", "in_fit"), help=argparse.SUPPRESS)  # what a child times
    return parser.parse_args()


def first_step_seconds(prebuilt):
    """Seconds from compile to the end of the first fit step, in this process."""
    common.import_keras()
    import keras
    import numpy as np

    import model as models

    network = models.get_model("srresnet")
    start = time.perf_counter()
    network.compile(optimizer=keras.optimizers.Adam(learning_rate=0.001), loss=models.get_loss("mse"),
                    metrics=[models.psnr_metric()])
    if prebuilt:
        network.optimizer.build(network.trainable_variables)
    patches = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    network.fit(patches, patches, batch_size=2, epochs=1, verbose=0)
    return time.perf_counter() - start


def main():
    args = get_args()
    if args.child:
        print(first_step_seconds(args.child == "prebuilt"))
        return 0
    for variant in ("prebuilt", "in_fit") * args.repeats:
        child = subprocess.run([sys.executable, __file__, "--child", variant], capture_output=True, text=True,
                               check=True)
        common.emit("startup", optimizer_state=variant, first_step_s=round(float(child.stdout.split()[-1]), 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
