"""Image files: finding, reading and writing them (OpenCV, no Keras).

Images in memory are HxWx3 uint8 arrays in OpenCV's BGR order, values 0-255,
as the original suite used them, so its trained weights work unchanged.
"""
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder):
    """Image files below `folder` (recursive; any suffix of IMAGE_SUFFIXES in any letter case), sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def is_truncated_jpeg(data):
    """True for JPEG bytes without their end-of-image marker: OpenCV would decode the part that is there
    and fill the rest with grey, printing only a libjpeg warning."""
    return data[:2].tobytes() == b"\xff\xd8" and not data.tobytes().rstrip(b"\0\r\n ").endswith(b"\xff\xd9")


def read_image(path):
    """Read an image file as HxWx3 uint8 BGR, or None where it cannot be read or decoded, or is truncated.

    OpenCV's IMREAD_COLOR turns grayscale and palette images into 3 channels,
    drops alpha, scales 16-bit to 8-bit (keeps the high byte) and applies the EXIF
    orientation. A zero-byte file, a PNG cut short (libpng refuses it) and a
    JPEG cut short (caught by is_truncated_jpeg) all give None.
    """
    try:
        data = np.fromfile(str(path), np.uint8)
    except OSError:
        return None
    if data.size == 0 or is_truncated_jpeg(data):
        return None
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def can_write(path):
    """True where OpenCV has an encoder for the suffix of `path` (.png, .jpg, ...)."""
    return cv2.haveImageWriter(str(path))


def write_image(path, image):
    """Write a uint8 image, creating parent folders; False where OpenCV could not write it."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return cv2.imwrite(str(path), image)
