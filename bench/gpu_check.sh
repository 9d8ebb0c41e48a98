#!/usr/bin/env bash
# The GPU checks in one short run, for a session lent a GPU machine for a few minutes:
# library versions, the GPU tests (4-bit training, unsloth), then one bench:
#   long     (default) bench_gpu_long.py: the paper's recipe at 80K, 160K and 320K tokens with
#            layer and MLP tiling against today's preset at 80K, and the longest length that
#            fits (issue 19); its steps get 400 s.
#   engines  bench_train_gpu.py at 80K with checkpoint offloading, transformers against unsloth.
# Logs go to $OUT (default ./gpu-out): tests.log and bench.log, plus the bench's own JSON.
# Nothing is fetched from the network.
#
#   bench/gpu_check.sh [SITE.tar.gz|-] [long|engines]   # SITE: site-packages to unpack first
#
# The time limits keep the whole run under 10 minutes.
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
if [ -n "${1:-}" ] && [ "$1" != "-" ]; then
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
timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tee "$OUT/tests.log" | tail -25
if [ "${2:-long}" = engines ]; then
  timeout 400 python3 bench/bench_train_gpu.py --engine both --lengths 81920 --offload --out "$OUT" 2>&1 \
    | grep -v "it/s\]" | tee "$OUT/bench.log" | tail -20
else
  # Model made and loaded in about a minute, then 400 s of steps at most.
  timeout 460 python3 bench/bench_gpu_long.py --budget-s 400 --out "$OUT" 2>&1 \
    | grep -v "it/s\]" | tee "$OUT/bench.log" | tail -20
fi
