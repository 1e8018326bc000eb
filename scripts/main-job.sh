#!/usr/bin/env bash
# The main job: set up (idempotent), then run a small real study end to end — the SGD sharpness gap
# of the reduced self-stabilization model over 9 batch sizes x 3 step sizes, on an embedded local
# Dask cluster — writing out/sharpness_gap_small/{sharpness_gap_small.nc, *.png, *.pdf, *_summary.json}.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
sdeeos study studies/sharpness_gap_small.toml --out out/sharpness_gap_small "$@"
