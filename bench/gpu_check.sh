#!/usr/bin/env bash
# The GPU checks in one short run, for a session lent a GPU machine for a few minutes:
# library versions, the GPU tests (4-bit training, unsloth), then the GPU training bench at 80K
# tokens with checkpoint offloading, transformers against unsloth. Logs go to $OUT (default
# ./gpu-out): tests.log and bench.log, plus the bench's own JSON.
#
#   bench/gpu_check.sh                    # libraries already installed
#   bench/gpu_check.sh SITE.tar.gz        # or unpacked from a tarball of site-packages first
#
# The time limits keep the whole run under 10 minutes (the bench alone takes about 5 on an H200).
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
if [ -n "${1:-}" ]; then
  site=$(mktemp -d) && tar xzf "$1" -C "$site" || exit 1
  export PYTHONPATH="$site:$PWD"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
LONGCTX_HOME=${LONGCTX_HOME:-$(mktemp -d)}  # a fresh workspace: the run leaves nothing behind here
export LONGCTX_HOME

python3 - <<'EOF' 2>&1 | tail -4
import torch, transformers, peft
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU"
print("torch", torch.__version__, "cuda", torch.version.cuda, gpu)
print("transformers", transformers.__version__, "peft", peft.__version__)
for name in ("bitsandbytes", "unsloth"):
    try:
        print(name, __import__(name).__version__)
    except Exception as exc:  # noqa: BLE001 - say what is missing, go on
        print(name, "unavailable:", exc)
EOF
timeout 200 python3 -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tee "$OUT/tests.log" | tail -25
timeout 330 python3 bench/bench_train_gpu.py --engine both --lengths 81920 --offload --out "$OUT" 2>&1 \
  | grep -v "it/s\]" | tee "$OUT/bench.log" | tail -20
