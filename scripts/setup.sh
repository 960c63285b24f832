#!/usr/bin/env bash
# Create .venv (if missing) and install magihuman with its dev extra. Idempotent.
# torch is pinned to 2.14.1 / torchvision 0.29.1 in pyproject.toml; a looser pin would
# pull a multi-GB CUDA build from the registry.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install --quiet -e '.[dev,sweep]'
