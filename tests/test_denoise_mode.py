"""test_model.py --output_mode denoised: full-size results in the input's own format, and report.csv."""
import csv
import re

import cv2
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from conftest import run_main, synthetic_photo


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """A 16-bit PNG, a 1000x700 JPEG, an odd-sized grayscale PNG and an RGBA PNG, one in a subfolder."""
    folder = tmp_path_factory.mktemp("photos")
    (folder / "sub").mkdir()
    rng = np.random.default_rng(11)
    cv2.imwrite(str(folder / "deep.png"), synthetic_photo(rng, 90, 120).astype(np.uint16) * 257 + 100)
    cv2.imwrite(str(folder / "sub" / "big.jpg"), synthetic_photo(rng, 700, 1000), [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(str(folder / "odd.png"), cv2.cvtColor(synthetic_photo(rng, 77, 101), cv2.COLOR_BGR2GRAY))
    rgba = np.dstack([synthetic_photo(rng, 50, 66), np.full((50, 66), 200, np.uint8)])
    cv2.imwrite(str(folder / "alpha.png"), rgba)
    return folder


def test_denoised_mode_keeps_the_format_and_report_csv_matches_an_independent_psnr_and_ssim(photo_folder, tmp_path):
    """One run (gaussian,25,25 test noise): every output has its input's name, size, dtype and channels (the
    odd 77x101 not cropped, alpha kept, 16-bit values not 8-bit ones scaled up), and report.csv's scores equal
    scikit-image's on the written lossless files."""
    result = run_main("test_model", "--image_dir", photo_folder, "--output_mode", "denoised",
                        "--output_dir", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("deep.png", "sub/big.jpg", "odd.png", "alpha.png"):
        source = cv2.imread(str(photo_folder / name), cv2.IMREAD_UNCHANGED)
        output = cv2.imread(str(tmp_path / "out" / name), cv2.IMREAD_UNCHANGED)
        assert output is not None, name
        assert (output.shape, output.dtype) == (source.shape, source.dtype), name
    assert (cv2.imread(str(tmp_path / "out" / "alpha.png"), cv2.IMREAD_UNCHANGED)[..., 3] == 200).all()
    assert (cv2.imread(str(tmp_path / "out" / "deep.png"), cv2.IMREAD_UNCHANGED) % 257).any()
    with open(tmp_path / "out" / "report.csv") as handle:
        rows = {row["image"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"deep.png", "sub/big.jpg", "odd.png", "alpha.png", "mean"}
    for name, scale in (("deep.png", 257.0), ("alpha.png", 1.0)):  # lossless files: score the files themselves
        source = cv2.imread(str(photo_folder / name), cv2.IMREAD_UNCHANGED)[..., :3].astype(np.float64) / scale
        output = cv2.imread(str(tmp_path / "out" / name), cv2.IMREAD_UNCHANGED)[..., :3].astype(np.float64) / scale
        psnr = peak_signal_noise_ratio(source, output, data_range=255)
        ssim = structural_similarity(source, output, channel_axis=2, data_range=255, gaussian_weights=True,
                                     sigma=1.5, use_sample_covariance=False)
        assert abs(float(rows[name]["denoised_psnr"]) - psnr) < 1e-3, name
        assert abs(float(rows[name]["denoised_ssim"]) - ssim) < 1e-3, name
    names = [name for name in rows if name != "mean"]
    assert abs(float(rows["mean"]["denoised_psnr"]) - np.mean([float(rows[n]["denoised_psnr"]) for n in names])) < 1e-5
    for name in names:  # every image gains, not only their mean
        assert float(rows[name]["denoised_psnr"]) > float(rows[name]["noisy_psnr"]) + 2, rows[name]


def test_a_16_bit_photo_goes_through_the_network_without_rounding_to_8_bits(photo_folder, tmp_path):
    """--test_noise_model clean on a 16-bit PNG whose values lie between 8-bit steps (x 257 + 100): the network
    sees them, so the result is not on steps of 257 and differs from the result of the same photo rounded to
    8 bits by about the 100/257 of a grey level the rounding drops."""
    deep = cv2.imread(str(photo_folder / "deep.png"), cv2.IMREAD_UNCHANGED)
    for name, pixels in (("deep16", deep), ("deep8", np.rint(deep / 257).astype(np.uint8))):
        (tmp_path / name).mkdir()
        cv2.imwrite(str(tmp_path / name / "deep.png"), pixels)
        result = run_main("test_model", "--image_dir", tmp_path / name, "--test_noise_model", "clean",
                          "--output_mode", "denoised", "--output_dir", tmp_path / (name + "_out"))
        assert result.returncode == 0, result.stderr[-2000:]
    from_16 = cv2.imread(str(tmp_path / "deep16_out" / "deep.png"), cv2.IMREAD_UNCHANGED).astype(float)
    from_8 = cv2.imread(str(tmp_path / "deep8_out" / "deep.png"), cv2.IMREAD_UNCHANGED).astype(float) * 257
    assert np.mean(from_16 % 257 != 0) > 0.9
    assert 50 < np.mean(from_16 - from_8) < 150, np.mean(from_16 - from_8)


def test_synthetic_test_noise_keeps_a_16_bit_photo_16_bit(photo_folder, tmp_path):
    """Test noise on a 16-bit PNG whose values lie between 8-bit steps is added at full depth: with zero noise
    (gaussian,0,0) the noisy input is the photo itself (PSNR inf in report.csv), not the photo cut to 8 bits."""
    (tmp_path / "deep").mkdir()
    cv2.imwrite(str(tmp_path / "deep" / "deep.png"), cv2.imread(str(photo_folder / "deep.png"), cv2.IMREAD_UNCHANGED))
    result = run_main("test_model", "--image_dir", tmp_path / "deep", "--test_noise_model", "gaussian,0,0",
                      "--output_mode", "denoised", "--output_dir", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "out" / "report.csv") as handle:
        row = next(row for row in csv.DictReader(handle) if row["image"] == "deep.png")
    assert float(row["noisy_psnr"]) == float("inf"), row


def test_clean_input_writes_no_report(photo_folder, tmp_path):
    """With --test_noise_model clean there is no reference: results are written, report.csv is not."""
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "odd.png").write_bytes((photo_folder / "odd.png").read_bytes())
    result = run_main("test_model", "--image_dir", folder, "--test_noise_model", "clean",
                        "--output_mode", "denoised", "--output_dir", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "odd.png").is_file() and not (tmp_path / "out" / "report.csv").exists()


def report_rows(folder):
    with open(folder / "report.csv") as handle:
        return {row["image"]: row for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def small_photos(tmp_path_factory):
    """Two 200x300 lossless photos."""
    folder = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(5)
    for name in ("one.png", "two.png"):
        cv2.imwrite(str(folder / name), synthetic_photo(rng, 200, 300))
    return folder


def denoised_report(folder, output, *flags):
    """test_model.py --output_mode denoised of `folder` into `output` with `flags`: (report.csv rows, stdout)."""
    result = run_main("test_model", "--image_dir", folder, "--output_mode", "denoised", "--output_dir", output, *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    return report_rows(output), result.stdout


@pytest.fixture(scope="module")
def single_pass(small_photos, tmp_path_factory):
    """The plain float32 run on small_photos that the flag tests compare with: (its folder, its report rows)."""
    output = tmp_path_factory.mktemp("single_pass")
    return output, denoised_report(small_photos, output)[0]


def test_mixed_precision_denoises_as_float32_does_within_a_tenth_of_a_db(small_photos, single_pass, tmp_path):
    """--mixed_precision (bfloat16 on a CPU) against float32, same noise: every image's PSNR within 0.1 dB, and the
    written pixels not bit-identical (the flag does change the arithmetic)."""
    float32_folder, float32_rows = single_pass
    mixed_rows, stdout = denoised_report(small_photos, tmp_path / "mixed", "--mixed_precision")
    assert "mixed precision: mixed_" in stdout
    assert set(float32_rows) == {"one.png", "two.png", "mean"}
    for image, row in float32_rows.items():
        assert abs(float(row["denoised_psnr"]) - float(mixed_rows[image]["denoised_psnr"])) < 0.1, image
    float32, mixed = (cv2.imread(str(folder / "one.png")) for folder in (float32_folder, tmp_path / "mixed"))
    assert float32.shape == mixed.shape and (float32 != mixed).any()


def test_tiled_denoising_reports_progress_with_the_time_left(small_photos, tmp_path, monkeypatch):
    """A photo in 9 tiles (300x200, padded to 320x256, in tiles of 128 sharing 32, the last row 64 high;
    PROGRESS_AFTER_S set to 0 here): lines that count the tiles up and say the time left, then the photo's
    pixels a second."""
    import test_model

    monkeypatch.setattr(test_model, "PROGRESS_AFTER_S", 0.0)
    result = run_main("test_model", "--image_dir", small_photos, "--output_mode", "denoised",
                      "--tile", 128, "--output_dir", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = [int(done) for done in re.findall(r"one\.png: tile (\d+)/9, about \d+ s left", result.stdout)]
    assert counts == list(range(1, 9)), result.stdout[-2000:]
    assert re.search(r"one\.png: 300x200 in [\d.]+ s, [\d,]+ pixels a second", result.stdout), result.stdout[-2000:]


def test_self_ensemble_scores_higher_on_every_image(small_photos, single_pass, tmp_path):
    """--self_ensemble (the mean over 8 flips and transposes) against one pass, same noise: every image's PSNR
    rises, in report.csv and in the file written."""
    single_folder, single_rows = single_pass
    ensemble_rows, _ = denoised_report(small_photos, tmp_path / "ensemble", "--self_ensemble")
    for image in ("one.png", "two.png", "mean"):
        assert float(ensemble_rows[image]["denoised_psnr"]) > float(single_rows[image]["denoised_psnr"]) + 0.03
    single, ensemble = (cv2.imread(str(folder / "one.png")) for folder in (single_folder, tmp_path / "ensemble"))
    assert single.shape == ensemble.shape and (single != ensemble).any()
