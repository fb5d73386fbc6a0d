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
echo "training the multitask nnU-Net (tiny CPU preset; about 8 minutes on 2 cores; log in $OUT/train.log)"
$MTL train --dataset-id 501 --preset tiny > "$OUT/train.log" 2>&1 || { tail -20 "$OUT/train.log"; exit 1; }
grep -E "whole-volume validation|early stopping" "$OUT/train.log" | sed 's/^[0-9: .-]*//'
MODEL="$OUT/nnunet/nnUNet_results/Dataset501_PancreasMTL/nnUNetTrainerMultitaskTiny__nnUNetMTLTinyPlans__3d_fullres"
echo
echo "final whole-volume validation of checkpoint_best (phantom validation split):"
sed -n '/^| metric/,/^$/p' "$MODEL/fold_0/validation/metrics.md"
echo "model folder: $MODEL"
echo
echo "predicting the phantom's test split (masks, subtype_results.csv) and scoring it against the answer key:"
$MTL predict --dataset-id 501 --preset tiny -i "$OUT/phantom/test" -o "$OUT/test_pred"
$MTL evaluate --pred "$OUT/test_pred" --truth "$OUT/phantom/test_key"
