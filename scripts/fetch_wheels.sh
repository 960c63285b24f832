#!/usr/bin/env bash
# Fill wheels/ (gitignored) with the pure-Python packages the device machine lacks, for
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
du -sh wheels
