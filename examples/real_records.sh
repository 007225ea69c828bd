#!/usr/bin/env bash
# The README's evaluation example on real records (../shared/data, CC-BY 4.0), start to finish on a CPU:
#   1. train the Lima et al. ResNet1d (published recipe, full size) on the 349 aged PTB-XL records (500 Hz → 400 Hz),
#      patient-level 80/20 split;
#   2. predict the 50 PhysioNet/CinC 2021 records (an external test set: Georgia, Chapman-Shaoxing/Ningbo, PTB-XL
#      records outside the training copy) — two with all-zero chest leads are left out (--on_bad skip);
#   3. report: metrics, per-decade errors, Bland–Altman, learning curves, bias correction both ways;
#   4. test-time augmentation, measured on a MAIC-recipe model (500 Hz records are 5000 samples long; the seed
#      uses only the first 4096).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-docs/example}
EPOCHS=${EPOCHS:-15}
SHARED=../shared/data

$PY train_interface.py --arch ResNet1d --input $SHARED/ptbxl --ptbxl_rate 500 --valid_ratio 0.2 --on_bad skip \
    --env ptbxl --nepoch "$EPOCHS" --quiet
$PY test_interface.py --input $SHARED/cinc2021 --weights log/ResNet1d_ptbxl --on_bad skip \
    --output "$OUT/cinc_resnet1d.csv" --quiet
$PY report_interface.py --predictions "$OUT/cinc_resnet1d.csv" --labels $SHARED/cinc2021 \
    --out "$OUT/report_cinc_resnet1d" --run log/ResNet1d_ptbxl

# test-time augmentation on a MAIC-recipe model (ResUDenseNet, seed preprocessing) trained on the same split
$PY train_interface.py --arch ResUDenseNet --mode adult --input $SHARED/ptbxl --ptbxl_rate 500 --valid_ratio 0.2 \
    --on_bad skip --env ptbxl --nepoch "$EPOCHS" --quiet
for TTA in 1 5; do
    $PY test_interface.py --input $SHARED/cinc2021 --weights log/ResUDenseNet_ptbxl/best.pt --mode adult \
        --on_bad skip --tta $TTA --output "$OUT/cinc_maic_tta$TTA.csv" --quiet
done
$PY report_interface.py --predictions "$OUT/cinc_maic_tta1.csv" --labels $SHARED/cinc2021 \
    --out "$OUT/report_cinc_maic" --run log/ResUDenseNet_ptbxl
$PY report_interface.py --predictions "$OUT/cinc_maic_tta5.csv" --labels $SHARED/cinc2021 \
    --out "$OUT/report_cinc_maic_tta5"
