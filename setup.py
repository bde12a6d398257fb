"""Pure-Python install of daenr_fast.

No compiler is needed at install time: the C++/CUDA sources in ``csrc/`` are shipped inside the package
(as ``daenr_fast/csrc``) and compiled on first use; the Triton kernels in ``kernels/`` are installed as the
subpackage ``daenr_fast.kernels``.
"""
from setuptools import find_packages, setup

setup(
    name="daenr_fast",
    version="0.1.0",
    description="DAE-NR (autoencoders with a neural-response readout) with fused CPU/CUDA/Triton kernels",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["daenr_fast", "daenr_fast.*"]) + ["daenr_fast.kernels", "daenr_fast.csrc"],
    package_dir={"daenr_fast.kernels": "kernels", "daenr_fast.csrc": "csrc"},
    package_data={
        "daenr_fast.csrc": ["*.cpp", "*.h", "cpu/*.cpp", "cpu/*.h", "cuda/*.cu", "cuda/*.cuh"],
        "": ["*.json", "*.csv", "*.md"],
    },
    include_package_data=False,
    install_requires=[
        "torch>=2.13",
        "numpy",
        "scipy",
        "scikit-image",
        "matplotlib",
        "tqdm",
        "ninja",
    ],
    extras_require={
        "triton": ["triton"],
        "ray": ["ray>=2.60"],  # sweeps as Ray tasks (daenr reproduce --executor ray); tested with 2.60.0
        "test": ["pytest", "pytest-benchmark", "pytest-xdist", "hypothesis"],
    },
    entry_points={"console_scripts": ["daenr=daenr_fast.cli:main"]},
)
