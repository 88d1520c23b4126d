"""A photo's metadata (EXIF, ICC colour profile, XMP), read from its file and written with the denoised result, in
JPEG, PNG, WebP and TIFF: camera, lens, exposure, date and place, and the colours the pixels mean.

Read with Pillow (JPEG, PNG, WebP) and tifffile (TIFF, which it writes too, at 8 or 16 bits); the other formats'
pixels are encoded by OpenCV as before and the metadata goes into the file's own containers (JPEG APP segments,
PNG chunks, WebP's extended RIFF chunks). The pixels were turned upright by the EXIF orientation when they were
read, so the written orientation is 1; nothing else changes. What cannot be kept is said in one line each and
left out: the photo is always written.
"""
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

EXIF_HEADER = b"Exif\x00\x00"
XMP_NAMESPACE = b"http://ns.adobe.com/xap/1.0/\x00"
ICC_HEADER = b"ICC_PROFILE\x00"
ORIENTATION, TIFF_XMP, TIFF_ICC = 0x0112, 700, 34675
# TIFF's own text tags that hold what EXIF holds in other formats: ImageDescription, Make, Model, Software,
# DateTime, Artist, Copyright.
TIFF_TEXT_TAGS = (270, 271, 272, 305, 306, 315, 33432)


class MetadataError(ValueError):
    """Metadata that cannot be read or written; the message says what and is one line."""


class Metadata(NamedTuple):
    exif: object = None  # the EXIF block as TIFF bytes (no "Exif" header), orientation already 1
    icc: object = None  # the ICC profile, bytes
    xmp: object = None  # the XMP packet, bytes
    tiff_tags: tuple = ()  # a TIFF's (tag, text) of TIFF_TEXT_TAGS

    def __bool__(self):
        return any((self.exif, self.icc, self.xmp, self.tiff_tags))


def upright_exif(exif):
    """EXIF TIFF bytes with their orientation (IFD0 tag 0x0112) set to 1, all else byte for byte; a MetadataError
    where the bytes are no EXIF block that can be walked."""
    data = bytearray(exif[len(EXIF_HEADER):] if exif.startswith(EXIF_HEADER) else exif)
    order = {b"II": "<", b"MM": ">"}.get(bytes(data[:2]))
    try:
        if order is None or struct.unpack(order + "H", data[2:4])[0] != 42:
            raise MetadataError("not a TIFF header")
        start = struct.unpack(order + "I", data[4:8])[0]
        for entry in range(struct.unpack(order + "H", data[start:start + 2])[0]):
            offset = start + 2 + 12 * entry
            tag, kind = struct.unpack(order + "HH", data[offset:offset + 4])
            if tag == ORIENTATION and kind == 3:
                data[offset + 8:offset + 10] = struct.pack(order + "H", 1)
    except (struct.error, IndexError):
        raise MetadataError("its IFD runs past the end") from None
    return bytes(data)


def read_metadata(path):
    """(the Metadata of an image file, [what was left out and why]): empty for formats that hold none or a file
    without; broken EXIF or metadata that cannot be read is left out, never the photo."""
    if Path(path).suffix.lower() in (".tif", ".tiff"):
        return _read_tiff(path)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            info = dict(image.info)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        return Metadata(), [f"its metadata cannot be read ({error})"]
    xmp, exif, problems = info.get("xmp") or info.get("XML:com.adobe.xmp"), info.get("exif"), []
    if exif:
        try:
            exif = upright_exif(exif)
        except MetadataError as error:
            exif, problems = None, [f"its EXIF is broken ({error}): left out"]
    metadata = Metadata(exif=exif or None, icc=info.get("icc_profile") or None,
                        xmp=xmp.encode() if isinstance(xmp, str) else xmp or None)
    return metadata, problems


def _read_tiff(path):
    """A TIFF's ICC profile, XMP and text tags (tifffile: 16-bit colour included)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            tags = tiff.pages[0].tags
            value = {tag.code: tag.value for tag in tags.values()}
    except (OSError, ValueError, tifffile.TiffFileError) as error:
        return Metadata(), [f"its metadata cannot be read ({error})"]
    text = tuple((code, value[code]) for code in TIFF_TEXT_TAGS if isinstance(value.get(code), str))
    icc, xmp = value.get(TIFF_ICC), value.get(TIFF_XMP)
    return Metadata(icc=bytes(icc) if icc is not None else None,
                    xmp=(xmp.encode() if isinstance(xmp, str) else bytes(xmp)) if xmp is not None else None,
                    tiff_tags=text), []


def _jpeg_segment(marker, payload):
    """One JPEG segment: 0xFF, the marker, the big-endian length (payload + 2, at most 65535), the payload."""
    if len(payload) + 2 > 0xFFFF:
        raise MetadataError(f"{len(payload):,} bytes do not fit a JPEG segment")
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _with_jpeg_metadata(encoded, metadata):
    """JPEG bytes with APP1 EXIF, APP2 ICC (in 65,519-byte parts, numbered) and APP1 XMP after the SOI and JFIF."""
    segments = b""
    if metadata.exif:
        segments += _jpeg_segment(0xE1, EXIF_HEADER + metadata.exif)
    if metadata.icc:
        parts = [metadata.icc[k:k + 65519] for k in range(0, len(metadata.icc), 65519)]
        segments += b"".join(_jpeg_segment(0xE2, ICC_HEADER + bytes([number, len(parts)]) + part)
                             for number, part in enumerate(parts, 1))
    if metadata.xmp:
        segments += _jpeg_segment(0xE1, XMP_NAMESPACE + metadata.xmp)
    after = 2  # past the SOI marker, and past a JFIF APP0 segment where OpenCV wrote one
    if encoded[2:4] == b"\xff\xe0":
        after += 2 + struct.unpack(">H", encoded[4:6])[0]
    return encoded[:after] + segments + encoded[after:]


def _png_chunk(kind, data):
    """One PNG chunk: its length, type, data and CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _with_png_metadata(encoded, metadata):
    """PNG bytes with iCCP (the profile compressed), eXIf and an iTXt XMP chunk right after IHDR."""
    chunks = b""
    if metadata.icc:
        chunks += _png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(metadata.icc))
    if metadata.exif:
        chunks += _png_chunk(b"eXIf", metadata.exif)
    if metadata.xmp:
        chunks += _png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + metadata.xmp)
    end_of_header = 8 + 8 + struct.unpack(">I", encoded[8:12])[0] + 4  # signature, IHDR's length/type, data, CRC
    return encoded[:end_of_header] + chunks + encoded[end_of_header:]


def _riff_chunk(kind, data):
    """One RIFF chunk: type, little-endian size, data, padded to an even length."""
    return kind + struct.pack("<I", len(data)) + data + b"\x00" * (len(data) % 2)


def _with_webp_metadata(encoded, metadata, size, alpha):
    """WebP bytes in the extended format: VP8X (flags, canvas `size` (width, height)), ICCP, the image's own
    chunks, EXIF, XMP."""
    body, chunks = encoded[12:], []
    while body:
        kind, length = body[:4], struct.unpack("<I", body[4:8])[0]
        chunks.append((kind, body[8:8 + length]))
        body = body[8 + length + length % 2:]
    image = [_riff_chunk(kind, data) for kind, data in chunks if kind not in (b"VP8X", b"ICCP", b"EXIF", b"XMP ")]
    flags = (0x20 * bool(metadata.icc) | 0x10 * alpha | 0x08 * bool(metadata.exif) | 0x04 * bool(metadata.xmp))
    width, height = size
    vp8x = bytes([flags, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    parts = [_riff_chunk(b"VP8X", vp8x), *([_riff_chunk(b"ICCP", metadata.icc)] if metadata.icc else []), *image,
             *([_riff_chunk(b"EXIF", metadata.exif)] if metadata.exif else []),
             *([_riff_chunk(b"XMP ", metadata.xmp)] if metadata.xmp else [])]
    payload = b"WEBP" + b"".join(parts)
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


def with_metadata(encoded, suffix, metadata, pixels):
    """The image file bytes `encoded` (JPEG, PNG or WebP, as OpenCV wrote them for `pixels`, HxW[xC]) with
    `metadata` added; other formats as they are."""
    if not metadata:
        return encoded
    kind = suffix.lower()
    if kind in (".jpg", ".jpeg"):
        return _with_jpeg_metadata(encoded, metadata)
    if kind == ".png":
        return _with_png_metadata(encoded, metadata)
    if kind == ".webp":
        alpha = pixels.ndim == 3 and pixels.shape[2] == 4
        return _with_webp_metadata(encoded, metadata, (pixels.shape[1], pixels.shape[0]), alpha)
    return encoded


def tiff_bytes(pixels, metadata):
    """A TIFF of HxW[xC] uint8 or uint16 pixels in OpenCV's order (BGR, BGRA or gray), deflate-compressed, with the
    ICC profile, the XMP and the text tags of `metadata` (tifffile)."""
    import io

    import tifffile

    if pixels.ndim == 3:
        pixels = pixels[:, :, [2, 1, 0, 3][:pixels.shape[2]]]  # BGR(A) -> RGB(A)
    tags = [(TIFF_ICC, 7, len(metadata.icc), metadata.icc, True)] if metadata.icc else []
    tags += [(TIFF_XMP, 1, len(metadata.xmp), metadata.xmp, True)] if metadata.xmp else []
    tags += [(code, 2, 0, text, True) for code, text in metadata.tiff_tags if code not in (270, 305)]
    buffer = io.BytesIO()
    options = dict(photometric="rgb", extrasamples=["unassalpha"] if pixels.shape[2] == 4 else None) \
        if pixels.ndim == 3 else dict(photometric="minisblack")
    description = dict(metadata.tiff_tags).get(270)
    tifffile.imwrite(buffer, np.ascontiguousarray(pixels), compression="zlib", extratags=tags,
                     description=description, software=dict(metadata.tiff_tags).get(305, False), metadata=None,
                     **options)
    return buffer.getvalue()
