"""The benchmarks' optional comparisons: a missing optional package is one line, before any work."""
import subprocess
import sys

from conftest import REPO, assert_one_line_error

# real_photos.py as `python3 benchmarks/real_photos.py ...` runs it, with `bm3d` unimportable however the machine is
WITHOUT_BM3D = ("import runpy, sys; sys.modules['bm3d'] = None; sys.argv = sys.argv[1:]; "
                "sys.path.insert(0, sys.argv[0].rsplit('/', 1)[0]); runpy.run_path(sys.argv[0], run_name='__main__')")


def test_bm3d_missing_is_one_line_naming_the_package_and_its_licence(tmp_path):
    (tmp_path / "noisy").mkdir()
    (tmp_path / "clean").mkdir()
    result = subprocess.run([sys.executable, "-c", WITHOUT_BM3D, str(REPO / "benchmarks" / "real_photos.py"),
                             "--pairs", str(tmp_path), "--bm3d", "12", "--weights"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert_one_line_error(result, "--bm3d", "pip install bm3d", "non-commercial")
