"""Image files: finding, reading and writing them (OpenCV, no Keras).

Images in memory are HxWx3 uint8 arrays in OpenCV's BGR order, values 0-255,
as the original suite used them, so its trained weights work unchanged.
"""
import errno
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from atomic_write import write_atomically

# Height and width of validation and test images are cropped or padded to a multiple of this (the UNet pools
# four times by 2); test_model.py's --tile and --tile_overlap are multiples of it.
SIZE_MULTIPLE = 16

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder):
    """Image files below `folder` (recursive; any suffix of IMAGE_SUFFIXES in any letter case), sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def is_truncated_jpeg(data):
    """True for JPEG bytes without their end-of-image marker: OpenCV would decode the part that is there
    and fill the rest with grey, printing only a libjpeg warning."""
    return data[:2].tobytes() == b"\xff\xd8" and not data.tobytes().rstrip(b"\0\r\n ").endswith(b"\xff\xd9")


def _file_bytes(path):
    """The bytes of an image file as a uint8 array, or None where it cannot be read, is empty or is a cut JPEG."""
    try:
        data = np.fromfile(str(path), np.uint8)
    except OSError:
        return None
    return None if data.size == 0 or is_truncated_jpeg(data) else data


def read_image(path):
    """An image file as HxWx3 uint8 BGR (gray and palette expanded, alpha dropped, 16 bits cut to 8, EXIF
    orientation applied), or None where it cannot be read or decoded, is empty or is cut short."""
    data = _file_bytes(path)
    return None if data is None else cv2.imdecode(data, cv2.IMREAD_COLOR)


def to_channels(image, channels):
    """An HxWx3 BGR image as HxWxC: itself for 3, its luma (OpenCV's BGR2GRAY weights) as HxWx1 for 1."""
    return image if channels == 3 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[:, :, np.newaxis]


def with_luma(colour, luma):
    """The HxWx3 BGR `colour` image (0-255, any dtype) with its luma replaced by `luma` (HxW or HxWx1, 0-255):
    float32 HxWx3, 0-255. The luma is Y of OpenCV's YCrCb, the same weights as to_channels(image, 1), so a gray
    model's result on a photo's luma gets the photo's colour back (its chroma, Cr and Cb, kept as they were)."""
    ycrcb = cv2.cvtColor(colour.astype(np.float32) / 255, cv2.COLOR_BGR2YCrCb)  # float: 0-1 scale
    ycrcb[:, :, 0] = np.reshape(luma, ycrcb.shape[:2]) / 255
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR) * 255


class ImageFile(NamedTuple):
    """An image as its file holds it, for writing a result back in the same form."""
    pixels: np.ndarray  # HxWx3 BGR at the file's depth (uint8 or uint16), EXIF orientation applied
    channels: int  # 1 (grayscale), 3, or 4 (alpha kept in `alpha`)
    alpha: object  # HxW alpha channel of a 4-channel file, else None

    @property
    def scale(self):
        """Divide the pixels by this for the 0-255 scale the networks use (65535 / 255 = 257 for 16 bits)."""
        return 257.0 if self.pixels.dtype == np.uint16 else 1.0


def read_image_file(path):
    """An `ImageFile`, or None where the file cannot be read or decoded (as read_image)."""
    data = _file_bytes(path)
    raw = None if data is None else cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    pixels = None if raw is None else cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if pixels is None or pixels.dtype not in (np.uint8, np.uint16):
        return None
    channels = 1 if raw.ndim == 2 else raw.shape[2]
    alpha = raw[..., 3] if channels == 4 and raw.shape[:2] == pixels.shape[:2] else None
    return ImageFile(pixels, channels if channels != 4 or alpha is not None else 3, alpha)


def encode_like(image_0_255, like):
    """A float HxWx3 BGR image on the 0-255 scale, rounded into the depth and channels of the `ImageFile` `like`."""
    top = np.iinfo(like.pixels.dtype).max
    pixels = np.clip(np.rint(image_0_255 * like.scale), 0, top).astype(like.pixels.dtype)
    if like.channels == 1:
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    return np.dstack([pixels, like.alpha]) if like.alpha is not None else pixels


def crop_to_multiple(image, multiple=SIZE_MULTIPLE):
    """An HxWxC image with its bottom and right edges cropped so that height and width are multiples of
    `multiple` (a view)."""
    height, width = image.shape[:2]
    return image[: height - height % multiple, : width - width % multiple]


def encode_image(image, suffix, jpeg_quality=95):
    """An image's file bytes in the format of `suffix` (OpenCV's encoders; JPEG at `jpeg_quality`, 1-100), or None
    where OpenCV has no encoder for it or cannot encode these pixels."""
    options = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if suffix.lower() in (".jpg", ".jpeg") else []
    try:
        ok, encoded = cv2.imencode(suffix, image, options)
    except cv2.error:
        return None
    return encoded.tobytes() if ok else None


def write_image(path, image):
    """Write a uint8 image, creating parent folders; False where it could not be written (no such encoder, a
    file where a folder should be, no permission): the caller names its flag."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return cv2.imwrite(str(path), image)


def write_bytes(path, data):
    """Write a file's bytes whole (atomic_write), creating parent folders; False where it could not be written."""
    try:
        write_atomically(path, lambda temporary: Path(temporary).write_bytes(data))
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):  # cli.run_main's one-line error says what to do
            raise
        return False
    return True
