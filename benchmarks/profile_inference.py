"""Where test_model.py's time goes on a large photo: its parts timed one by one in one process, as seconds and as
shares of the whole command's wall time (measured in a child process first): start-up (imports, the network built,
loaded and rewritten), reading the photo, the network on its tiles (the convolutions alone, the elementwise passes,
PReLU, residual additions and casts, and each new tile shape's first call), tiling and blending, and writing the
result. One JSON line a precision."""
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

import common

import cli

SHIPPED = "gaussian"


def get_args():
    parser = common.get_parser(__doc__)
    parser.add_argument("--photo", type=cli.existing_file, default=str(common.DATASETS / "Set14" / "barbara.png"),
                        help="photo to enlarge (bicubic) and denoise as it is (--test_noise_model clean)")
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of the large photo")
    parser.add_argument("--tile", type=int, default=512, help="test_model.py --tile")
    parser.add_argument("--precisions", nargs="+", choices=("float32", "bfloat16"), default=["float32", "bfloat16"],
                        help="float32, and bfloat16 (--mixed_precision)")
    return parser.parse_args()


def seconds(function, repeats=3):
    """Median wall seconds of `repeats` calls of function() after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def whole_command(folder, tile, mixed):
    """Wall seconds of test_model.py --tile on the photo in `folder`, start to exit, in a child process."""
    command = [sys.executable, str(common.REPO / "test_model.py"), "--image_dir", folder, "--tile", str(tile),
               "--weight_file", SHIPPED, "--test_noise_model", "clean", "--output_mode", "denoised",
               "--output_dir", f"{folder}_out", *(["--mixed_precision"] if mixed else [])]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def conv_only_network(network):
    """The convolutions of `network` in a chain, nothing between them (no PReLU, addition or cast): what they
    alone cost on the same tiles."""
    import keras

    inputs = keras.Input((None, None, network.input_shape[-1]))
    x = inputs
    for layer in network.layers:
        if isinstance(layer, keras.layers.Conv2D):
            x = keras.layers.Conv2D(layer.filters, layer.kernel_size, padding="same")(x)
    return keras.Model(inputs, x)


class Identity:
    """A stand-in network whose output is its input: what tiling and blending cost without the network."""

    def predict_on_batch(self, batch):
        return batch


def import_seconds():
    """Wall seconds of a fresh Python process that imports Keras and starts TensorFlow, as test_model.py does."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import cli; cli.import_keras_quietly()"], check=True, cwd=common.REPO,
                   capture_output=True)
    return time.perf_counter() - start


def startup():
    """(seconds to import Keras and start TensorFlow in a new process, seconds to build, load and rewrite the
    network here, the network)."""
    import_s = import_seconds()
    common.import_keras()
    start = time.perf_counter()
    import inference_graph
    import model as models

    network = models.get_model("srresnet")
    models.load_weights(network, cli.shipped_weights()[SHIPPED])
    network = inference_graph.inference_network(network)
    return import_s, time.perf_counter() - start, network


def network_parts(network, padded, tile):
    """{seconds of the network on every tile, of the convolutions alone on them, of each tile shape's first call}."""
    import inference

    spans = [(rows, columns) for rows in inference.tile_spans(padded.shape[1], tile, inference.TILE_OVERLAP)
             for columns in inference.tile_spans(padded.shape[2], tile, inference.TILE_OVERLAP)]
    shapes = {}
    for (_, rows), (_, columns) in spans:
        shapes[(rows, columns)] = shapes.get((rows, columns), 0) + 1
    convs, parts = conv_only_network(network), {"network_s": 0.0, "convolutions_s": 0.0, "first_calls_s": 0.0}
    for (rows, columns), count in shapes.items():
        piece = np.ascontiguousarray(padded[:, :rows, :columns])
        start = time.perf_counter()
        network.predict_on_batch(piece)
        parts["first_calls_s"] += time.perf_counter() - start
        parts["network_s"] += count * seconds(lambda: network.predict_on_batch(piece), 2)
        parts["convolutions_s"] += count * seconds(lambda: convs.predict_on_batch(piece), 2)
    parts["first_calls_s"] -= parts["network_s"] / len(spans) * len(shapes)  # beyond a steady call
    return parts, len(spans), len(shapes)


def profile(folder, args, whole):
    """The parts of one precision's run (the policy set), in seconds, against `whole`, the command's seconds."""
    import_s, model_s, network = startup()
    import images
    import inference

    path = f"{folder}/large.png"
    read_s = seconds(lambda: images.read_image_file(path).pixels.astype(np.float32), 1)
    photo = images.read_image(path).astype(np.float32)[np.newaxis]
    padded = inference.reflect_padded(photo)
    parts, tiles, shapes = network_parts(network, padded, args.tile)
    tiling_s = seconds(lambda: inference.predict_tiled(Identity(), photo, args.tile), 1)
    result = np.clip(np.rint(photo[0]), 0, 255).astype(np.uint8)
    write_s = seconds(lambda: images.write_bytes(f"{folder}/out.png", images.encode_image(result, ".png")), 1)
    measured = dict(import_s=import_s, model_s=model_s, read_s=read_s, **parts, tiling_and_blending_s=tiling_s,
                    write_s=write_s)
    measured["elementwise_and_casts_s"] = parts["network_s"] - parts["convolutions_s"]
    measured["other_s"] = whole - (import_s + model_s + read_s + parts["network_s"] + parts["first_calls_s"]
                                   + tiling_s + write_s)
    return tiles, shapes, {name: round(value, 2) for name, value in measured.items()}


def main():
    args = get_args()
    width, height = (int(side) for side in args.size.split("x"))
    photo = cv2.imread(args.photo, cv2.IMREAD_COLOR)
    with tempfile.TemporaryDirectory() as folder:
        cv2.imwrite(f"{folder}/large.png", cv2.resize(photo, (width, height), interpolation=cv2.INTER_CUBIC))
        # Every whole command first, before this process starts TensorFlow: measured after the float32 profile
        # here, the bfloat16 command took 86 s against 54 s measured alone (2-core AMX CPU, 2026-12-07).
        wholes = {precision: whole_command(folder, args.tile, precision == "bfloat16")
                  for precision in args.precisions}
        for precision in args.precisions:
            if precision == "bfloat16":
                import mixed_precision

                common.import_keras()
                mixed_precision.use_mixed_precision()
            whole = wholes[precision]
            tiles, shapes, parts = profile(folder, args, whole)
            shares = {name.removesuffix("_s"): round(value / whole, 3) for name, value in parts.items()
                      if name not in ("network_s",)}
            common.emit("inference_profile", precision=precision, size=args.size, tile=args.tile, tiles=tiles,
                        tile_shapes=shapes, whole_command_s=round(whole, 1), seconds=parts, shares=shares)
    return 0


if __name__ == "__main__":
    sys.exit(main())
