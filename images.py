"""Image files: finding, reading and writing them (OpenCV, no Keras).

Images in memory are HxWx3 uint8 arrays in OpenCV's BGR order, values 0-255,
as the original suite used them, so its trained weights work unchanged.
"""
from pathlib import Path

import cv2

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder):
    """Image files below `folder` (recursive; any suffix of IMAGE_SUFFIXES in any letter case), sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path):
    """Read an image file as HxWx3 uint8 BGR, or None where it cannot be decoded.

    OpenCV's IMREAD_COLOR turns grayscale into 3 equal channels, drops alpha,
    scales 16-bit to 8-bit and applies the EXIF orientation.
    """
    return cv2.imread(str(path), cv2.IMREAD_COLOR)


def can_write(path):
    """True where OpenCV has an encoder for the suffix of `path` (.png, .jpg, ...)."""
    return cv2.haveImageWriter(str(path))


def write_image(path, image):
    """Write a uint8 image, creating parent folders; False where OpenCV could not write it."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return cv2.imwrite(str(path), image)
