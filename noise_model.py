"""Noise models of the Noise2Noise suite, and a script that previews them.

A noise model is built from a spec string such as "gaussian,0,50" by
`get_noise_model`. Every noise function is pure: it takes an HxWxC uint8
image (0-255) and a `numpy.random.Generator`, never modifies the image, and
returns a new HxWxC uint8 image (float32 for additive noise asked for with
zero_mean=True). Pure numpy/OpenCV: no Keras import, so
previews start fast and data-loader workers stay light.

    python3 noise_model.py --noise_model text,0,95
"""
import argparse
import functools
import math
import string
import sys
from statistics import NormalDist
from typing import NamedTuple

import cv2
import numpy as np

import images
from camera_noise import camera_noise

TEXT_ALPHABET = np.array(list(string.ascii_letters + string.digits))
# Text noise stops after this many strings even if the occupancy is not reached
# (100 % occupancy, for example, is rarely reachable exactly), or earlier once
# this many strings in a row added no new pixel.
TEXT_MAX_STRINGS = 10_000
TEXT_MAX_STALLED = 200
PREVIEW_FILE = "noise_preview.png"


@functools.cache
def normal_quantiles():
    """Standard-normal quantiles at the midpoints of 65,536 equal-probability bins, float32: indexed by uniform
    16-bit integers they sample N(0, 1) by inverse transform, exact to 1/65,536 in probability (the tails beyond
    4.3 sigma fold into the last bins), far below the rounding to 8 bits that follows. Made at the first use."""
    return np.array([NormalDist().inv_cdf((k + 0.5) / 65536) for k in range(65536)], np.float32)


# Bit generators whose every raw word is 64 uniform bits (not MT19937: 32), which standard_normal cuts in four.
BIT_GENERATORS_OF_64_BITS = (np.random.PCG64, np.random.PCG64DXSM, np.random.SFC64, np.random.Philox)


def standard_normal(rng, shape):
    """float32 N(0, 1) samples of `shape` by inverse transform through normal_quantiles(), indexed by 16-bit
    numbers cut from the bit generator's raw 64-bit words (cheaper than rng.integers, which bounds each value)."""
    if not isinstance(rng.bit_generator, BIT_GENERATORS_OF_64_BITS):
        return rng.standard_normal(shape, dtype=np.float32)  # MT19937's raw words hold only 32 random bits
    size = math.prod(shape)
    indices = rng.bit_generator.random_raw(-(-size // 4)).view(np.uint16)[:size]
    return np.take(normal_quantiles(), indices).reshape(shape)


def gaussian_noise(image, rng, min_stddev, max_stddev, zero_mean=False):
    """Add N(0, s^2) noise with s ~ U[min_stddev, max_stddev] (0-255 scale); clip and truncate to uint8.

    With zero_mean the float32 sum is returned as it is (values below 0 and
    above 255 kept, no rounding), so its expectation is exactly the image.
    """
    stddev = rng.uniform(min_stddev, max_stddev)
    noisy = standard_normal(rng, image.shape)
    noisy *= np.float32(stddev)
    noisy += image
    if zero_mean:
        return noisy
    # Truncation toward zero after clipping, as the original's astype(np.uint8).
    return np.clip(noisy, 0, 255, out=noisy).astype(np.uint8)


def clean(image, rng):
    """No noise: a copy of the image (for clean targets)."""
    return image.copy()


def _random_text_stamp(rng, height, width):
    """Draw one random string that fits an HxW image: its text, origin, scale, thickness, colour,
    and the (rows, columns) slices of the box its strokes can touch."""
    text = "".join(rng.choice(TEXT_ALPHABET, size=rng.integers(5, 11)))
    font_scale = rng.uniform(0.5, 1.0)
    thickness = int(rng.integers(1, 4))
    (text_width, text_height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
    x = int(rng.integers(0, max(0, width - 1 - text_width) + 1))
    y = int(rng.integers(text_height, max(text_height, height - 1 - baseline) + 1))
    color = tuple(float(c) for c in rng.uniform(0, 255, size=3))
    margin = thickness + 2  # strokes reach a little beyond the nominal text box
    box = (slice(max(0, y - text_height - margin), y + baseline + margin),
           slice(max(0, x - margin), x + text_width + margin))
    return text, (x, y), font_scale, thickness, color, box


def text_noise(image, rng, min_occupancy, max_occupancy):
    """Stamp random strings until their pixels cover a fraction drawn in [min, max] % of the image. As in the
    original, the first string is drawn before the coverage is checked, so even text,0,0 draws one."""
    noisy = image.copy()
    height, width = image.shape[:2]
    target = height * width * rng.uniform(min_occupancy, max_occupancy) / 100.0
    covered = np.zeros((height, width), np.uint8)  # 255 where any string was drawn
    count, stalled = 0, 0
    for strings in range(TEXT_MAX_STRINGS):
        if strings and (count >= target or stalled >= TEXT_MAX_STALLED):
            break
        text, origin, scale, thickness, color, box_slices = _random_text_stamp(rng, height, width)
        cv2.putText(noisy, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, color[: image.shape[2]], thickness)
        box = covered[box_slices]  # count only inside the new string's box, not the whole image
        before = cv2.countNonZero(box)
        cv2.putText(covered, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness)
        added = cv2.countNonZero(box) - before
        count, stalled = count + added, 0 if added else stalled + 1
    return noisy


def poisson_noise(image, rng, min_lambda, max_lambda, zero_mean=False):
    """Photon-count noise x <- Poisson(lam * x / 255) * 255 / lam with lam ~ U[min_lambda, max_lambda]
    (lam: photons at full scale; more photons, less noise; the variance is 255 * x / lam). Rounded and
    clipped to uint8; with zero_mean the float32 draw, whose mean is the image."""
    lam = rng.uniform(min_lambda, max_lambda)
    # A count's rate is >= 0: after a zero-mean gaussian part ("gaussian,0,25+poisson,5,50") pixels may be below 0.
    noisy = rng.poisson(np.maximum(image, 0) * (lam / 255.0)).astype(np.float32)
    noisy *= np.float32(255.0 / lam)
    if zero_mean:
        return noisy
    return np.clip(np.rint(noisy, out=noisy), 0, 255, out=noisy).astype(np.uint8)


def bernoulli_noise(image, rng, min_drop, max_drop):
    """Multiplicative pixel dropout: every pixel (all its channels) becomes 0 with probability p ~ U[min, max] %."""
    drop = rng.uniform(min_drop, max_drop) / 100.0
    keep = rng.random(image.shape[:2]) >= drop
    return image * keep[:, :, np.newaxis].astype(image.dtype)


def impulse_noise(image, rng, min_occupancy, max_occupancy):
    """Replace a fraction p ~ U[min, max] % of the values (each channel separately) by uniform 0-255 values."""
    rate = rng.uniform(min_occupancy, max_occupancy) / 100.0
    hit = rng.random(image.shape) < rate
    values = rng.integers(0, 256, size=image.shape, dtype=np.uint8)
    return np.where(hit, values, image)


def chroma_smoothing(image, rng, min_sigma, max_sigma):
    """A camera's chroma noise reduction: the colour (Cr, Cb of YCrCb) blurred by a Gaussian of sigma ~ U[min, max]
    pixels, the luma kept; after `camera` it leaves mostly luma noise, correlated across channels as in photos."""
    sigma = rng.uniform(min_sigma, max_sigma)
    if image.shape[2] != 3 or sigma <= 0:
        return image.copy()
    ycrcb = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_BGR2YCrCb)  # float: the 0-1 scale
    ycrcb[:, :, 1:] = cv2.GaussianBlur(ycrcb[:, :, 1:], (0, 0), sigma)
    return np.clip(np.rint(cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR) * 255.0), 0, 255).astype(np.uint8)


GRAIN_SIGMA = 3.0  # pixels: the spatial scale of coarse grain (a Gaussian blur of white noise)


def coarse_grain(image, rng, min_stddev, max_stddev):
    """Low-frequency luma noise of std ~ U[min, max] (0-255 scale): white noise blurred by a Gaussian of
    GRAIN_SIGMA pixels and rescaled, the same in every channel; the blotchy grain a camera's noise reduction leaves
    of its noise, which white or demosaicked noise lacks (real photos stay correlated 3-4 pixels apart)."""
    stddev = rng.uniform(min_stddev, max_stddev)
    white = standard_normal(rng, image.shape[:2]).astype(np.float32)
    blurred = cv2.GaussianBlur(white, (0, 0), GRAIN_SIGMA, borderType=cv2.BORDER_REFLECT)
    grain = blurred * (stddev / max(float(blurred.std()), 1e-8))
    return np.clip(np.rint(image + grain[:, :, np.newaxis]), 0, 255).astype(np.uint8)


def jpeg_noise(image, rng, min_quality, max_quality):
    """JPEG compression at a quality ~ U[min, max] (1..100): the 8x8-block artefacts of a camera's or a
    website's encoder."""
    quality = int(round(rng.uniform(min_quality, max_quality)))
    encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1]
    decoded = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    return decoded.reshape(image.shape)


class NoiseModel(NamedTuple):
    function: object  # function(image, rng, *params) -> noisy image
    params: tuple  # names of its numeric parameters, in spec order
    value_range: tuple  # accepted (low, high) of every parameter, or None
    additive: bool  # takes zero_mean=True: noise added in float, returned unclipped and unrounded


NOISE_MODELS = {
    "gaussian": NoiseModel(gaussian_noise, ("min_stddev", "max_stddev"), (0.0, float("inf")), True),
    "clean": NoiseModel(clean, (), None, False),
    "text": NoiseModel(text_noise, ("min_occupancy", "max_occupancy"), (0.0, 100.0), False),
    "impulse": NoiseModel(impulse_noise, ("min_occupancy", "max_occupancy"), (0.0, 100.0), False),
    "poisson": NoiseModel(poisson_noise, ("min_lambda", "max_lambda"), (1.0, float("inf")), True),
    "bernoulli": NoiseModel(bernoulli_noise, ("min_drop", "max_drop"), (0.0, 100.0), False),
    "camera": NoiseModel(camera_noise, ("min_level", "max_level"), (0.0, 100.0), False),
    "chroma": NoiseModel(chroma_smoothing, ("min_sigma", "max_sigma"), (0.0, 20.0), False),
    "grain": NoiseModel(coarse_grain, ("min_stddev", "max_stddev"), (0.0, 255.0), False),
    "jpeg": NoiseModel(jpeg_noise, ("min_quality", "max_quality"), (1.0, 100.0), False),
}
ADDITIVE = tuple(name for name, model in NOISE_MODELS.items() if model.additive)
COMBINE = "+"  # "gaussian,0,25+impulse,0,20": the noises applied one after the other, left to right
SPEC_HELP = (f"noise spec NAME[,MIN,MAX] with NAME one of {', '.join(NOISE_MODELS)}; combine noises with "
             f"{COMBINE}, as in gaussian,0,25{COMBINE}impulse,0,20")


def parse_noise_spec(spec):
    """'gaussian,0,50' -> ('gaussian', (0.0, 50.0)); a ValueError says what is wrong and what is accepted."""
    name, *tokens = [token.strip() for token in str(spec).split(",")]
    if name not in NOISE_MODELS:
        raise ValueError(f"unknown noise model {name!r} in {spec!r}; valid: {', '.join(NOISE_MODELS)}")
    param_names, value_range = NOISE_MODELS[name].params, NOISE_MODELS[name].value_range
    usage = ",".join((name,) + param_names)
    if len(tokens) != len(param_names):
        raise ValueError(f"{spec!r}: expected {usage}")
    try:
        values = tuple(float(token) for token in tokens)
    except ValueError:
        raise ValueError(f"{spec!r}: parameters must be numbers, as in {usage}") from None
    if values:
        low, high = value_range
        if not (low <= values[0] <= values[1] <= high and np.isfinite(values[1])):
            upper = "" if high == float("inf") else f" <= {high:g}"
            raise ValueError(f"{spec!r}: expected {low:g} <= {param_names[0]} <= {param_names[1]}{upper}")
    return name, values


def parse_noise_specs(spec):
    """'gaussian,0,25+impulse,0,20' -> [('gaussian', (0.0, 25.0)), ('impulse', (0.0, 20.0))] (one part or more)."""
    parts = str(spec).split(COMBINE)
    if len(parts) > 1 and not all(part.strip() for part in parts):
        raise ValueError(f"{spec!r}: an empty part; combine specs as NAME,MIN,MAX{COMBINE}NAME,MIN,MAX")
    return [parse_noise_spec(part) for part in parts]


def zero_mean_conflict(spec):
    """Why `spec` cannot be drawn zero-mean (None where it can): a stage after gaussian or poisson that takes
    0-255 uint8 pixels (camera, jpeg, text, ...) would get their float, unclipped output (arcsin of values outside
    0-1, NaNs cast to uint8, or a re-clip that undoes the zero mean)."""
    names = [name for name, _ in parse_noise_specs(spec)]
    for index, name in enumerate(names):
        later = [other for other in names[index + 1:] if not NOISE_MODELS[other].additive and other != "clean"]
        if NOISE_MODELS[name].additive and later:
            return (f"in {spec!r} {later[0]} takes 0-255 pixels after {name}, whose zero-mean output is unclipped "
                    f"float; put the additive noises ({', '.join(ADDITIVE)}) last")
    return None


def get_noise_model(spec="gaussian,0,50", zero_mean=False):
    """Spec string -> `noise(image, rng=None)`, a combination applied left to right; unknown names list the valid
    ones (ValueError). zero_mean: gaussian and poisson noise come back as float32, unclipped and unrounded, so that
    their mean is the clean image (for targets); the other noises are the same either way, and must not follow
    them (zero_mean_conflict: a ValueError)."""
    conflict = zero_mean_conflict(spec) if zero_mean else None
    if conflict:
        raise ValueError(conflict)
    functions = []
    for name, values in parse_noise_specs(spec):
        model = NOISE_MODELS[name]
        extra = {"zero_mean": True} if zero_mean and model.additive else {}
        functions.append(functools.partial(model.function, **dict(zip(model.params, values)), **extra))

    def noise(image, rng=None):
        rng = rng if rng is not None else np.random.default_rng()
        for function in functions:
            image = function(image, rng)
        return image

    return noise


def noise_at_full_depth(noise, image, rng):
    """`noise` on an HxWxC image of more than 8 bits, as float32 0-255 (a 16-bit photo / 257), without cutting it
    to 8 bits (the noise functions take uint8): the noise is drawn on the image rounded to uint8, and the
    difference it made is added to the full-depth pixels, clipped to 0-255. A uint8 image is noised as it is."""
    if image.dtype == np.uint8:
        return noise(image, rng).astype(np.float32)
    rounded = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return np.clip(image + (noise(rounded, rng).astype(np.float32) - rounded), 0, 255).astype(np.float32)


def adds_noise(spec):
    """False for 'clean' (and clean+clean): images under this spec are taken as they are, noisy or not."""
    return any(name != "clean" for name, _ in parse_noise_specs(spec))


def noise_spec(text):
    """argparse type for a noise spec: validated at parse time, before anything is loaded."""
    try:
        parse_noise_specs(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


# ------------------------------------------------------------------ preview
MAX_PREVIEW_SIZE = 8192  # a grey square of 8192 x 8192 x 3 is 200 MB; larger ones only run out of memory
MAX_PREVIEW_LEVELS = 64  # side by side, a row of more is wider than any screen or useful file


def get_args(argv=None):
    import cli  # (the preview script's alone: the noise functions, which generator workers load, need none)

    parser = cli.ArgumentParser(description="Preview a noise model on a flat grey image or on a photo. "
                                            "In a window: any key draws new noise, q quits.")
    parser.add_argument("--image_size", type=cli.bounded_int(1, MAX_PREVIEW_SIZE), default=256,
                        help="side of the flat grey (128) preview image, in pixels")
    parser.add_argument("--noise_model", type=noise_spec, default="gaussian,0,50",
                        help=SPEC_HELP)
    parser.add_argument("--image", type=cli.existing_file, default=None,
                        help="preview on this photo instead of a flat grey image")
    parser.add_argument("--output", type=cli.image_output_file, default=None,
                        help=f"save the preview to this image file instead of showing a window "
                             f"(without a display: {PREVIEW_FILE})")
    parser.add_argument("--seed", type=cli.seed, default=None,
                        help="random seed of the noise; if not given, a random one")
    parser.add_argument("--levels", type=cli.bounded_int(1, MAX_PREVIEW_LEVELS), default=1,
                        help="show this many noise levels side by side, evenly spaced from MIN to MAX of the spec, "
                             "each labelled with its spec; 1: one image drawn at a random level in [MIN, MAX]")
    return parser.parse_args(argv)


def level_specs(spec, count):
    """`count` fixed-level specs from MIN to MAX of every part:
    ('gaussian,0,50', 3) -> gaussian,0,0 ...,25,25 ...,50,50."""
    if count == 1:
        return [spec]
    specs = []
    for fraction in np.linspace(0.0, 1.0, count):
        specs.append(COMBINE.join(fixed_level(name, values, fraction) for name, values in parse_noise_specs(spec)))
    return specs


def fixed_level(name, values, fraction):
    """The spec of noise `name` at `fraction` (0-1) of the way from its MIN to its MAX, with 3 significant
    digits: ('gaussian', (0, 25), 1/3) -> 'gaussian,8.33,8.33'; ('clean', (), f) -> 'clean'."""
    if not values:
        return name
    level = f"{float(f'{values[0] + fraction * (values[1] - values[0]):.3g}'):g}"  # 1000.0 -> '1000', not 1e+03
    return f"{name},{level},{level}"


def draw_preview(image, specs, rng):
    """The image under each spec, side by side (uint8 BGR), each labelled with its spec where there are several."""
    tiles = []
    for spec in specs:
        tile = np.clip(get_noise_model(spec)(image, rng), 0, 255).astype(np.uint8)
        if len(specs) > 1:
            label_tile(tile, spec)
        tiles.append(tile)
    return np.concatenate(tiles, axis=1)


def label_tile(tile, spec):
    """Write `spec` on `tile` (uint8 BGR, in place): white on a black box, top left, one line per noise of a
    combination, the font shrunk (down to a third) so that the lines fit the tile's width."""
    lines = [("+" if index else "") + part for index, part in enumerate(spec.split(COMBINE))]
    widest = max(cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)[0][0] for line in lines)
    scale = 0.5 * max(1 / 3, min(1.0, (tile.shape[1] - 10) / widest))
    (_, height), baseline = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    line_height = height + baseline + 4
    box_width = max(cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for line in lines) + 10
    cv2.rectangle(tile, (0, 0), (box_width, line_height * len(lines) + 6), (0, 0, 0), cv2.FILLED)
    for row, line in enumerate(lines):
        cv2.putText(tile, line, (5, 5 + height + row * line_height), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)


def preview_source(args):
    """The uint8 BGR image the noise is previewed on."""
    import cli

    if args.image is None:
        return np.full((args.image_size, args.image_size, 3), 128, np.uint8)
    image = images.read_image(args.image)
    if image is None:
        raise cli.UserError(f"--image {args.image}: not a readable image file")
    return image


def show_in_window(draw):
    """Show `draw()` (a uint8 BGR image) in a matplotlib window: any key draws it anew, q quits."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots()
    axes.set_axis_off()
    shown = axes.imshow(cv2.cvtColor(draw(), cv2.COLOR_BGR2RGB))
    axes.set_title("any key: new noise, q: quit")

    def redraw(event):
        if event.key != "q":
            shown.set_data(cv2.cvtColor(draw(), cv2.COLOR_BGR2RGB))
            figure.canvas.draw_idle()

    figure.canvas.mpl_connect("key_press_event", redraw)
    plt.show()


def main(argv=None):
    import cli

    args = get_args(argv)
    specs, rng = level_specs(args.noise_model, args.levels), np.random.default_rng(args.seed)
    image = preview_source(args)
    if args.output is None and cli.has_display():
        show_in_window(lambda: draw_preview(image, specs, rng))
        return 0
    output = args.output or PREVIEW_FILE
    if args.output is None:
        print(f"no display to show a window: saving the preview to {output} (choose the file with --output)")
    if not images.write_image(output, draw_preview(image, specs, rng)):
        raise cli.UserError(f"--output {output}: cannot write it "
                            f"(a file where a folder should be, or a folder not writable)")
    print(f"saved {args.noise_model} preview to {output}")
    return 0


if __name__ == "__main__":
    import cli

    sys.exit(cli.run_main(main))
