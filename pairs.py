"""Noise2Noise on your own shots (train.py --target_dir, --bursts): two or more independently noisy images of
each scene, or noisy images with clean versions. Finds the files that belong together, checks them, and decodes
them at their depth: a group is a tuple of HxWxC arrays of one size, uint8, or uint16 (0-65535) where any shot
of the group is 16-bit. Errors are PairErrors saying which file and why; train.py names the flag.
"""
import warnings
from pathlib import Path

import numpy as np

import images
from generator import ImageOnDisk


class PairError(ValueError):
    """Files that do not make pairs or bursts: a source without its target, shots of different sizes, ..."""


def by_stem(folder):
    """{relative path without its suffix: path} of the images below `folder` (any image suffix)."""
    return {path.relative_to(folder).with_suffix(""): path for path in images.list_images(folder)}


def matching_files(sources, source_dir, target_dir):
    """[(source, target)]: the target of each of `sources` (below source_dir) is the file with the same relative
    path and stem below target_dir, whatever its image suffix. A source without one is a PairError naming the
    first such source and how many there are."""
    targets = by_stem(target_dir)
    pairs = [(source, targets.get(Path(source).relative_to(source_dir).with_suffix(""))) for source in sources]
    missing = [source for source, target in pairs if target is None]
    if missing:
        stem = Path(missing[0]).relative_to(source_dir).with_suffix("")
        raise PairError(f"{len(missing)} of the {len(sources)} images have no file of the same name in it, the "
                        f"first {missing[0]} (expected {Path(target_dir) / stem}.*)")
    return pairs


def burst_folders(image_dir):
    """[[shots]]: the images of each folder directly below `image_dir` (searched recursively), one folder a scene.
    A folder with fewer than two shots is left out with a warning; a PairError where no burst is left."""
    bursts, skipped = [], []
    for folder in sorted(path for path in Path(image_dir).iterdir() if path.is_dir()):
        shots = images.list_images(folder)
        (bursts if len(shots) >= 2 else skipped).append(shots if len(shots) >= 2 else folder)
    for folder in skipped:
        warnings.warn(f"skipping {folder}: a burst needs two or more shots", stacklevel=2)
    loose = [path for path in Path(image_dir).iterdir() if path.is_file() and path.suffix.lower() in
             images.IMAGE_SUFFIXES]
    if loose:
        warnings.warn(f"ignoring {len(loose)} images directly in {image_dir} (such as {loose[0].name}): each "
                      f"burst is a folder of shots", stacklevel=2)
    if not bursts:
        raise PairError("no folder with two or more shots in it (one folder of shots a scene)")
    return bursts


def _decoded(path, channels):
    """(HxWxC pixels at the file's depth, the file's colour channels: 1 or 3), channels as asked."""
    image = images.read_image_file(path)
    if image is None:
        raise PairError(f"{path}: not a readable image")
    return images.to_channels(image.pixels, channels), 1 if image.channels == 1 else 3


def _checked(group, paths):
    """The decoded shots of one group, [(pixels, file channels)], as uint16 where any is 16-bit; shots of
    another size or channel count than the first are a PairError."""
    (first, first_channels), first_path = group[0], paths[0]
    for (pixels, file_channels), path in zip(group[1:], paths[1:]):
        if pixels.shape[:2] != first.shape[:2]:
            raise PairError(f"{path} is {pixels.shape[1]}x{pixels.shape[0]} and {first_path} "
                            f"{first.shape[1]}x{first.shape[0]}: the shots of a scene must be the same size")
        if file_channels != first_channels:
            raise PairError(f"{path} has {file_channels} colour channel{'s' * (file_channels > 1)} and "
                            f"{first_path} {first_channels}: the shots of a scene must match")
    deep = any(pixels.dtype == np.uint16 for pixels, _ in group)
    return [pixels.astype(np.uint16) * 257 if deep and pixels.dtype == np.uint8 else pixels for pixels, _ in group]


def load_groups(path_groups, channels=3, min_size=1, cache_bytes=None):
    """Decode each group of paths (a pair or a burst) into a tuple of HxWxC arrays (C = `channels`), checked
    (same size and channels), groups smaller than min_size pixels left out with a warning (a PairError where
    none is left). With `cache_bytes`, the shots past that many bytes, counting every shot of every group,
    become generator.ImageOnDisk (decoded again at their depth for every patch)."""
    groups, cached, small = [], 0, []
    for paths in path_groups:
        shots = _checked([_decoded(path, channels) for path in paths], paths)
        if min(shots[0].shape[:2]) < min_size:
            small.append(paths[0])
            continue
        kept = []
        for path, pixels in zip(paths, shots):
            if cache_bytes is not None and cached + pixels.nbytes > cache_bytes:
                pixels = ImageOnDisk(path, pixels.shape, channels, pixels.dtype)
            else:
                cached += pixels.nbytes
            kept.append(pixels)
        groups.append(tuple(kept))
    for path in small:
        warnings.warn(f"skipping {path} and its other shots: smaller than {min_size}x{min_size}", stacklevel=2)
    if not groups:
        raise PairError(f"no pair or burst of at least {min_size}x{min_size} pixels")
    return groups


def validation_pairs(groups):
    """[(first, second)] of each (first shot, second shot) group as (1, H, W, C) float32 0-255 arrays, cropped to
    a multiple of 16: held-out noisy pairs, or noisy validation photos with their clean versions."""
    pairs = []
    for first, second in groups:
        scale = 257.0 if first.dtype == np.uint16 else 1.0
        first, second = (images.crop_to_multiple(shot)[np.newaxis].astype(np.float32) / scale
                         for shot in (first, second))
        pairs.append((first, second))
    return pairs
