#!/usr/bin/env bash
# Set up .venv and run the main job on the built-in CT phantom; everything goes under ./demo_out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/nnunet-mtl demo --out "${OUT:-demo_out}" "$@"
