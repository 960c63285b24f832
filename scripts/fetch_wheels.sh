#!/usr/bin/env bash
# Fill wheels/ (gitignored) with the Python packages the device machine lacks, for
# scripts/device_check.sh to install there without a registry. Run here, where pip can reach
# the index; the run tool carries wheels/ (pass "carry": ["wheels"]).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p wheels
# Versions as in our environment; the device image already holds their other dependencies
# (numpy, regex, requests, safetensors, huggingface-hub, Pillow, filelock, pyyaml, zipp).
"$PY" -m pip download --no-deps --dest wheels \
    diffusers==0.42.1 hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 importlib_metadata==10.2.0
# The media stack magihuman.media imports (pipeline.generate, so the speed table, needs it): binary
# wheels for the device's CPython 3.12 on x86-64, and the pure-Python ones librosa and soundfile need.
"$PY" -m pip download --no-deps --only-binary=:all: --dest wheels --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    av==18.1.0 soundfile==0.14.0 soxr==1.1.0 cffi==2.1.1 pycparser==3.12 librosa==0.11.0 audioread==3.1.0 \
    decorator==5.3.1 pooch==1.9.0 platformdirs==4.14.9
du -sh wheels
