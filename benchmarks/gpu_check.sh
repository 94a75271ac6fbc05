#!/usr/bin/env bash
# The GPU check on a machine with a CUDA GPU: the GPU tests, then benchmarks.gpu.
# It expects python3 with a CUDA build of torch; ParlAI and a few of our dependencies
# come as wheels in .whl/ (made with benchmarks/gpu_wheels.sh where pip reaches the
# registry, then copied beside the checkout), so the GPU machine needs no network:
#   bash benchmarks/gpu_check.sh
# Output lands in $OUT/gpu_check.log when OUT is set (else /tmp), and on stdout.
set -o pipefail
LOG=${OUT:-/tmp}/gpu_check.log
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
  # -p: import the alias hook first, as the editable install's .pth does.
  timeout 180 python3 -m pytest -q -p parlai_hash._import_hook tests/test_low_precision.py tests/test_dispatch.py
  timeout 300 python3 -c "import parlai_hash._import_hook, runpy, sys; sys.argv = ['gpu'] + sys.argv[1:]; runpy.run_module('benchmarks.gpu', run_name='__main__')" "$@"
} 2>&1 | tee "$LOG"
