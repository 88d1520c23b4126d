"""The `camera` noise model: the noise a camera records, after Brooks et al., "Unprocessing Images for Learned Raw
Denoising" (CVPR 2019; facts in ../shared/spec/camera-noise.md). A clean sRGB photo is unprocessed to the raw
mosaic, heteroscedastic noise is added per sample, and the mosaic is developed back; only the developed noise is
added to the photo. Pure NumPy/OpenCV, values on the 0-1 scale inside, uint8 0-255 in and out.
"""
import cv2
import numpy as np

# XYZ -> camera matrices of four cameras (from their DNG calibration), mixed at random for each image.
XYZ_TO_CAMERAS = np.array([
    [[1.0234, -0.2969, -0.2266], [-0.5625, 1.6328, -0.0469], [-0.0703, 0.2188, 0.6406]],
    [[0.4913, -0.0541, -0.0202], [-0.6130, 1.3513, 0.2906], [-0.1564, 0.2151, 0.7183]],
    [[0.8380, -0.2630, -0.0639], [-0.2887, 1.0725, 0.2496], [-0.0627, 0.1427, 0.5438]],
    [[0.6596, -0.2079, -0.0562], [-0.4782, 1.3016, 0.1933], [-0.0970, 0.1581, 0.5181]]])
SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
CAMERA_SHOT_RANGE = (1e-4, 0.012)  # shot-noise variance factor; camera level 0..100 maps log-uniformly onto it
HIGHLIGHT_START = 0.9  # above this grey level the inverse white balance fades out, so highlights stay saturated


def camera_shot_noise(level):
    """The shot-noise factor of camera level 0..100 (log-uniform over CAMERA_SHOT_RANGE)."""
    low, high = np.log(CAMERA_SHOT_RANGE)
    return float(np.exp(low + level / 100.0 * (high - low)))


def _camera_settings(rng, level):
    """One shot's settings: (sRGB -> camera matrix, white-balance gains [r, g, b], shot, read)."""
    mix = rng.uniform(1e-8, 1.0, len(XYZ_TO_CAMERAS))
    srgb_to_camera = np.tensordot(mix / mix.sum(), XYZ_TO_CAMERAS, axes=1) @ SRGB_TO_XYZ
    srgb_to_camera /= srgb_to_camera.sum(axis=1, keepdims=True)  # grey stays grey
    gains = np.array([rng.uniform(1.9, 2.4), 1.0, rng.uniform(1.5, 1.9)]) / rng.normal(0.8, 0.1)
    shot = camera_shot_noise(level)
    read = float(np.exp(2.18 * np.log(shot) + 1.20 + rng.normal(0.0, 0.26)))
    return srgb_to_camera, gains, shot, read


def _to_raw(rgb, srgb_to_camera, gains):
    """HxWx3 sRGB 0-1 -> linear camera RGB before white balance: inverse tone curve, gamma, colour, gains."""
    linear = np.maximum(0.5 - np.sin(np.arcsin(1.0 - 2.0 * rgb) / 3.0), 1e-8) ** 2.2
    camera = linear @ srgb_to_camera.T
    grey = camera.mean(axis=2, keepdims=True)
    fade = (np.maximum(grey - HIGHLIGHT_START, 0.0) / (1.0 - HIGHLIGHT_START)) ** 2
    return camera * np.maximum(fade + (1.0 - fade) / gains, 1.0 / gains)


def _from_raw(camera, srgb_to_camera, gains):
    """Linear camera RGB -> HxWx3 sRGB 0-1: white balance, colour, gamma 1/2.2, tone curve (smoothstep)."""
    linear = np.clip(np.clip(camera * gains, 0.0, 1.0) @ np.linalg.inv(srgb_to_camera).T, 1e-8, 1.0)
    gamma = linear ** (1.0 / 2.2)
    return 3.0 * gamma**2 - 2.0 * gamma**3


def _mosaic(camera):
    """HxWx3 linear camera RGB -> HxW RGGB Bayer mosaic: R top left, B bottom right, G on the other diagonal."""
    mosaic = np.empty(camera.shape[:2])
    for (row, column), channel in (((0, 0), 0), ((0, 1), 1), ((1, 0), 1), ((1, 1), 2)):
        mosaic[row::2, column::2] = camera[row::2, column::2, channel]
    return mosaic


def _developed(mosaic, srgb_to_camera, gains):
    """HxW raw mosaic (0-1) -> HxWx3 sRGB 0-1 as the camera develops it: 16-bit, demosaicked (bilinear), processed."""
    raw16 = np.rint(np.clip(mosaic, 0.0, 1.0) * 65535).astype(np.uint16)
    demosaicked = cv2.cvtColor(raw16, cv2.COLOR_BayerBG2RGB).astype(np.float64) / 65535  # OpenCV's name for RGGB
    return _from_raw(demosaicked, srgb_to_camera, gains)


def camera_noise(image, rng, min_level, max_level):
    """A clean sRGB photo (HxWx3 uint8 BGR, or HxWx1 grey) with the noise a camera records: unprocessed to raw,
    mosaicked (RGGB), heteroscedastic noise of variance shot * x + read added per sample (level ~ U[min, max],
    0..100, log-uniform in shot), demosaicked and processed back; only that noise (developed noisy minus
    developed clean) is added to the photo, whose detail stays as it was: a real photo's clean version went
    through the camera's demosaicking too, so a network must not learn to undo it."""
    srgb_to_camera, gains, shot, read = _camera_settings(rng, rng.uniform(min_level, max_level))
    height, width = image.shape[:2]
    bgr = image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
    even = np.pad(bgr, ((0, height % 2), (0, width % 2), (0, 0)), mode="symmetric")  # whole 2x2 Bayer cells
    mosaic = _mosaic(_to_raw(even[:, :, ::-1].astype(np.float64) / 255.0, srgb_to_camera, gains))
    noisy = mosaic + np.sqrt(shot * np.maximum(mosaic, 0.0) + read) * rng.standard_normal(mosaic.shape)
    noise = _developed(noisy, srgb_to_camera, gains) - _developed(mosaic, srgb_to_camera, gains)  # sRGB 0-1
    result = np.clip(np.rint(bgr + noise[:height, :width, ::-1] * 255.0), 0, 255).astype(np.uint8)
    return result if image.shape[2] == 3 else cv2.cvtColor(result, cv2.COLOR_BGR2GRAY)[:, :, np.newaxis]
