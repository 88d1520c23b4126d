"""test_model.py --output_mode denoised keeps what a photographer keeps: EXIF, the ICC profile and XMP, in JPEG,
PNG, WebP and 16-bit TIFF; --jpeg_quality; broken metadata costs the metadata, never the photo."""
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms

from conftest import run_main, synthetic_photo

MAKE, MODEL, ORIENTATION, EXIF_IFD, GPS_IFD, DATE_TAKEN = 0x010F, 0x0110, 0x0112, 0x8769, 0x8825, 0x9003
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:title="harbour"/></rdf:RDF></x:xmpmeta>')


def camera_exif():
    """Make, Model, DateTimeOriginal, GPS and orientation 6 (the camera held upright: rotate 90 degrees to show)."""
    exif = Image.Exif()
    exif[MAKE], exif[MODEL], exif[ORIENTATION] = "Canon", "EOS 5D Mark II", 6
    exif.get_ifd(EXIF_IFD)[DATE_TAKEN] = "2026:12:07 10:00:00"
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (52.0, 30.0, 12.5), 3: "E", 4: (4.0, 53.0, 1.0)})
    return exif


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """(folder, ICC profile bytes): a JPEG with camera EXIF, the profile and XMP; the same as WebP; a PNG and a
    16-bit TIFF with the profile; a JPEG whose EXIF is broken (its TIFF header overwritten)."""
    folder = tmp_path_factory.mktemp("photographer")
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rgb = synthetic_photo(np.random.default_rng(12), 64, 96)[:, :, ::-1]
    noisy = np.clip(rgb + np.random.default_rng(1).normal(0, 12, rgb.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(folder / "camera.jpg", quality=92, exif=camera_exif(), icc_profile=icc, xmp=XMP)
    Image.fromarray(noisy).save(folder / "camera.webp", quality=92, exif=camera_exif(), icc_profile=icc, xmp=XMP)
    Image.fromarray(noisy).save(folder / "profiled.png", icc_profile=icc)
    tifffile.imwrite(folder / "deep.tif", noisy.astype(np.uint16) * 257 + 60, photometric="rgb",
                     extratags=[(34675, 7, len(icc), icc, True)])
    data = bytearray((folder / "camera.jpg").read_bytes())
    start = data.index(b"Exif\x00\x00") + 6
    data[start:start + 8] = b"\x00garbage"
    (folder / "broken_exif.jpg").write_bytes(bytes(data))
    return folder, icc


@pytest.fixture(scope="module")
def denoised(photos, tmp_path_factory):
    """test_model.py --output_mode denoised on the folder (CompletedProcess, output folder)."""
    output = tmp_path_factory.mktemp("out") / "denoised"
    result = run_main("test_model", "--image_dir", photos[0], "--test_noise_model", "clean", "--output_mode",
                      "denoised", "--output_dir", output)
    assert result.returncode == 0, result.stderr[-2000:]
    return result, output


@pytest.mark.parametrize("name", ["camera.jpg", "camera.webp"])
def test_a_camera_photo_comes_out_denoised_upright_with_its_exif_profile_and_xmp(photos, denoised, name):
    """The result is rotated upright (96 high, 64 wide) and marked so (orientation 1); Make, Model,
    DateTimeOriginal and GPS are those of the camera; the ICC profile and the XMP byte for byte; the pixels changed."""
    folder, icc = photos
    with Image.open(folder / name) as source, Image.open(denoised[1] / name) as result:
        assert result.size == (64, 96) and result.format == source.format
        exif = result.getexif()
        assert (exif[MAKE], exif[MODEL], exif.get(ORIENTATION, 1)) == ("Canon", "EOS 5D Mark II", 1)
        assert exif.get_ifd(EXIF_IFD)[DATE_TAKEN] == "2026:12:07 10:00:00"
        assert dict(exif.get_ifd(GPS_IFD)) == dict(camera_exif().get_ifd(GPS_IFD))
        assert result.info["icc_profile"] == icc and result.info["xmp"] == XMP
        upright = np.asarray(source.transpose(Image.Transpose.ROTATE_270), np.float64)
        assert 0 < np.abs(np.asarray(result, np.float64) - upright).mean() < 12


def test_a_png_and_a_16_bit_tiff_keep_their_profile_and_the_tiff_its_depth(photos, denoised):
    folder, icc = photos
    with Image.open(denoised[1] / "profiled.png") as png:
        assert png.info["icc_profile"] == icc and png.size == (96, 64)
    with tifffile.TiffFile(denoised[1] / "deep.tif") as tiff:
        page = tiff.pages[0]
        assert page.tags[34675].value == icc and page.dtype == np.uint16 and page.shape == (64, 96, 3)
        assert (page.asarray() % 257 != 0).mean() > 0.5  # 16-bit values, not 8-bit ones scaled up


def test_broken_exif_costs_the_metadata_not_the_photo(photos, denoised):
    """A JPEG whose EXIF cannot be walked is denoised and written without it, with a one-line warning."""
    result, output = denoised
    warnings = [line for line in result.stderr.splitlines() if "broken_exif.jpg" in line]
    assert len(warnings) == 1 and "its EXIF is broken" in warnings[0] and "left out" in warnings[0], result.stderr
    with Image.open(output / "broken_exif.jpg") as written:
        assert not written.getexif() and written.info["icc_profile"] == photos[1]


def test_a_lower_jpeg_quality_makes_a_smaller_file(photos, denoised, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "camera.jpg").write_bytes((photos[0] / "camera.jpg").read_bytes())
    result = run_main("test_model", "--image_dir", tmp_path / "in", "--test_noise_model", "clean", "--output_mode",
                      "denoised", "--output_dir", tmp_path / "q60", "--jpeg_quality", 60)
    assert result.returncode == 0, result.stderr[-2000:]
    default = (denoised[1] / "camera.jpg").stat().st_size
    assert (tmp_path / "q60" / "camera.jpg").stat().st_size < 0.8 * default


def test_metadata_that_cannot_be_written_is_left_out_in_one_line(photos, monkeypatch, capsys):
    """An XMP packet too large for a JPEG segment (64 KB): the photo is encoded without the metadata, and the one
    line says so; the next photo of the folder is unaffected."""
    import photo_metadata
    import test_model

    huge = photo_metadata.Metadata(icc=photos[1], xmp=b"<x>" + b" " * 70_000 + b"</x>")
    monkeypatch.setattr(photo_metadata, "read_metadata", lambda path: (huge, []))
    picture = np.zeros((16, 16, 3), np.uint8)
    data = test_model.photo_file(picture, photos[0] / "camera.jpg", ".jpg", 95)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "its metadata cannot be written to .jpg" in lines[0] and "left out" in lines[0]
    assert data[:2] == b"\xff\xd8" and photo_metadata.ICC_HEADER not in data
    monkeypatch.undo()
    assert photo_metadata.ICC_HEADER in test_model.photo_file(picture, photos[0] / "camera.jpg", ".jpg", 95)
