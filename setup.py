"""spidr-jax: SpidR and DinoSR self-supervised speech models in JAX/Flax."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="spidr-jax",
    version="0.1.0",
    description="SpidR and DinoSR in JAX/Flax: load the released checkpoints, extract units, pretrain on GPU/TPU.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["spidr_jax", "spidr_jax.*"]),
    include_package_data=True,
    package_data={"spidr_jax": ["demo/corpus/**/*", "aot/gpu_specs/*.txtpb"]},
    install_requires=[
        "jax>=0.10",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12",
        "grain>=0.2.18",
        "numpy>=1.26",
        "soundfile>=0.12",
        "tensorboardX>=2.6",
        "ml-collections>=1.1",
        "soxr>=0.5",
    ],
    extras_require={
        "torch": ["torch>=2.8"],
        "abx": ["fastabx; python_version >= '3.12'"],
        "plot": ["matplotlib"],
        "test": ["pytest>=8", "pytest-xdist>=3.5", "torch>=2.8", "matplotlib", "scikit-learn>=1.4"],
        # python -m spidr_jax.aot: the TPU compiler (libtpu) and JAX's CUDA compiler plugin, at the versions the
        # installed jax needs. They move together with jax: take libtpu's version from `jax[tpu]==X`'s requirements
        # and set the two CUDA packages to X, then check spidr_jax/aot/gpu_specs/ still parse (tests/test_aot.py).
        # nvidia-cudnn-cu13 lets the compiler build cuDNN's fused attention (run.attention=cudnn).
        "aot": [
            "libtpu==0.0.42.1",
            "jax-cuda13-pjrt==0.10.2",
            "jax-cuda13-plugin==0.10.2",
            "nvidia-cudnn-cu13>=9.12,<10",
        ],
    },
)
