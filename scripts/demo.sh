#!/usr/bin/env bash
# Set up .venv and run the main job on the built-in CT phantom; everything goes under ./demo_out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-demo_out}
# keep the demo away from any real nnU-Net folders of the user
unset nnUNet_raw nnUNet_preprocessed nnUNet_results
export NNUNET_MTL_HOME="$PWD/$OUT/nnunet"
MTL=.venv/bin/nnunet-mtl
rm -rf "$OUT"
$MTL phantom "$OUT/phantom"
$MTL prepare "$OUT/phantom" --dataset-id 501
.venv/bin/nnUNetv2_plan_and_preprocess -d 501 -c 3d_fullres --verify_dataset_integrity -np 2 > "$OUT/plan.log"
echo "nnU-Net planning and preprocessing done (log: $OUT/plan.log)"
# Until training exists: the evaluator checked on the test key against itself (every score must be 1).
$MTL evaluate --pred "$OUT/phantom/test_key" --truth "$OUT/phantom/test_key" --out "$OUT/evaluation"
