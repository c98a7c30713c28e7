#!/usr/bin/env bash
# The prepared GPU check: the Diff-ICE "GPU quick" preset end to end, then a few epochs of the CAE
# paper preset, and one results file (gpu_check.md / .json) with the card's name and every step's time.
# Planned to finish inside a 10-minute slot on one H100-class GPU (docs/diffice.md#gpu).
#
# Usage: bash .ci/gpu_check.sh [RESULTS_DIR]     (default: $OUT if set, else runs/gpu_check)
#        GPU_CHECK_TINY=1 bash .ci/gpu_check.sh DIR   tiny settings, so the script itself runs on a CPU
#                                                     in about a minute (tests/test_diffice_parts.py)
# Run from the repository root with the bundle installed (pip install -e .).
set -euo pipefail
cd "$(dirname "$0")/.."
results=${1:-${OUT:-runs/gpu_check}}
work=${GPU_CHECK_WORK:-$results/work}
mkdir -p "$results" "$work"
timings="$results/timings.txt"
: >"$timings"

diffice_args=()
cae_args=(--phase1_epochs 3 --phase2_epochs 2)
if [ "${GPU_CHECK_TINY:-0}" = "1" ]; then
    diffice_args=(--synthetic#per_site 40 --synthetic#size "[64,64]" --synthetic#workers 1 --image_size "[32,32]"
        --validation_fraction 0.3 --test_fraction 0.25 --batch_size 16 --cache_workers 0
        --segmentation#epochs 1 --guide#epochs 1 --oracle#epochs 1 --features#epochs 1 --evaluator#epochs 1
        --ddpm#epochs 1 --counterfactual#num_inference_steps 10 --counterfactual#tau 3
        --counterfactual#iterations 2 --counterfactual#max_inputs 4 --ddpm#channels "[16,16,32,32]"
        --ddpm#num_head_channels 8 --ddpm#norm_num_groups 8 --segmentation#channels "[8,16,16,32]")
    cae_args=(--phase1_epochs 1 --phase2_epochs 1 --synthetic#per_site 8 --synthetic#workers 1 --synthetic#size "[160,120]"
        --canvas_size 64 --roi_canvas_size 32 --batch_size 4 --cache_workers 0 --calibration_batches 1
        --scoring#check_data#per_site 2 --scoring#check_data#size "[64,64]" --localizer_epochs 1 --localizer_refine_epochs 1)
fi

timed() {  # timed NAME COMMAND...: run it and append "NAME seconds" to the timings file
    local name=$1 start=$EPOCHREALTIME
    shift
    "$@"
    awk -v name="$name" -v start="$start" -v end="$EPOCHREALTIME" 'BEGIN { printf "%s %.1f\n", name, end - start }' >>"$timings"
}

timed "diffice gpu_quick (all steps)" python -m monai.bundle run diffice \
    --config_file "['configs/diffice/diffice.json','configs/diffice/gpu_quick.json']" \
    --bundle_root "$work" "${diffice_args[@]}"
timed "cae paper preset (few epochs)" python -m monai.bundle run training \
    --config_file "['configs/train.json','configs/paper.json']" \
    --bundle_root "$work" "${cae_args[@]}"
python -m bundle.benchmarks.gpu_check --diffice "$work/runs/diffice_gpu_quick" --cae "$work/runs/paper" \
    --timings "$timings" --output "$results"
