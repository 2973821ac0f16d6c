#!/usr/bin/env bash
# Every CUDA check of the project in one run, for a GPU machine that has torch but maybe not Ray
# (the device machine lent to some tasks): the gpu-marked tests that need no Ray, the renderers on
# CUDA (per sequence and with all frames in one call), one training step of both models with AMP,
# the input pipeline against the step with AMP and SyncBN, and the exported embedder (`ray-gait export`:
# TorchScript, and ONNX under onnxruntime's CUDAExecutionProvider when onnxruntime-gpu is installed)
# timed against the eager model.  Logs go to $OUT (or a temp folder).
#
#     bash benchmarks/gpu_checks.sh            # about 5 minutes on one H200
set -u -o pipefail
out=${OUT:-${TMPDIR:-/tmp}/ray_gait_gpu_checks}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
status=0

step() {
    local name=$1
    shift
    echo "== $name: $*" | tee -a "$out/gpu_checks.log"
    "$@" 2>&1 | tee -a "$out/gpu_checks.log" || { status=1; echo "== $name FAILED" | tee -a "$out/gpu_checks.log"; }
}

step machine nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step torch "$py" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(), 'bf16', torch.cuda.is_bf16_supported())"
step tests "$py" -m pytest -q -p no:cacheprovider -m gpu tests/test_heatmap_parity.py tests/test_gpu.py tests/test_heatmap_on_the_fly.py
step renderers "$py" benchmarks/heatmap_throughput.py --sequences 64 --skip-ray --stages
step model-step "$py" benchmarks/model_step.py --device cuda --amp --steps 10
step train-throughput "$py" benchmarks/train_throughput.py --widths seed --device cuda --amp --sync-bn --steps 10
step train-throughput-8-threads "$py" benchmarks/train_throughput.py --widths seed --device cuda --amp --steps 10 --input-threads 8
step train-throughput-fp32 "$py" benchmarks/train_throughput.py --widths seed --device cuda --steps 10
step train-throughput-fp32-8-ranks "$py" benchmarks/train_throughput.py --widths seed --device cuda --steps 10 --ranks 8 --input-threads 2
step rank-memory "$py" benchmarks/train_throughput.py --memory --widths seed --device cuda --ranks 4,8
step rank-memory-oumvlp "$py" benchmarks/train_throughput.py --memory --widths seed --device cuda --models skeletongait --batch 32x8 --ranks 4,8
step render-on-the-fly "$py" benchmarks/render_on_the_fly.py --device cuda
step export-speed "$py" benchmarks/export_speed.py --device cuda --widths seed
exit $status
