#!/usr/bin/env bash
# Download the wheels bench/gpu.sh installs on a GPU machine that cannot reach a package index: the packages its
# image lacks (grain, ml-collections, tensorboardX, soundfile and their dependencies, for CPython 3.12 on x86-64
# Linux) and the reference, spidr (pure Python; its dependencies, numpy and torch, are in the image).
# Usage: bash bench/fetch_wheels.sh [DIR]   (default bench/wheels, ignored by git)
set -euo pipefail
dest=${1:-"$(dirname "$0")/wheels"}
mkdir -p "$dest"
platform=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux2014_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64)
python3 -m pip download --quiet --dest "$dest" "${platform[@]}" \
  grain==0.2.18 ml-collections==1.1.0 tensorboardX==2.6.5 soundfile==0.14.0
python3 -m pip download --quiet --dest "$dest" --no-deps "${platform[@]}" spidr==0.2.0
ls "$dest"
du -sh "$dest"
