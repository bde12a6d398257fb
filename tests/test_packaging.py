"""The wheel is pure Python, ships the C++/CUDA sources and the Triton kernels inside the package."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contents(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w",
         str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("daenr_fast-*.whl")
    assert wheel.name.endswith("py3-none-any.whl"), "the wheel must be pure Python (no compiled code)"
    names = zipfile.ZipFile(wheel).namelist()
    for source in (ROOT / "csrc").rglob("*"):
        if source.suffix in {".cpp", ".h", ".cu", ".cuh"}:
            assert f"daenr_fast/csrc/{source.relative_to(ROOT / 'csrc')}" in names, source
    for kernel in (ROOT / "kernels").glob("*.py"):
        assert f"daenr_fast/kernels/{kernel.name}" in names, kernel
    assert not any(n.startswith("kernels/") or n.startswith("csrc/") for n in names), "no top-level kernels/csrc"
    assert "daenr_fast/cli.py" in names
