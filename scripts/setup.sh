#!/usr/bin/env bash
# Create ./.venv (once) and install sdeeos with its test, torch, dist and docs extras.
# PyTorch goes in first, pinned, so that the project's range (torch>=2.3,<3) installs nothing more:
# an unpinned resolve would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test,torch,dist,docs]"
