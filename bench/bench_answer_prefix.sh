#!/usr/bin/env bash
# Passkey and NIAH on the embedded model at 2K, 4K and 8K tokens, with and without the answer
# prefix, locally and through `longctx serve` (BENCHMARKS.md, "Answer prefixes").
#
#   bash bench/bench_answer_prefix.sh OUT [STAGE...]
#
# STAGE: passkey-local, passkey-local-old, passkey-serve, niah-local (default: all four). Each run is a plain
# `longctx` command writing an evaluation folder under OUT; a rerun resumes it, and a rerun with
# more lengths (LENGTHS=2000,4000,8000) adds only their cells. After each run the accuracy per
# length is printed from its cells.jsonl.
set -euo pipefail
OUT=${1:?give an output folder}
shift
STAGES=${*:-passkey-local passkey-local-old passkey-serve niah-local}
LONGCTX=${LONGCTX:-longctx}
LENGTHS=${LENGTHS:-2000,4000,8000}
SERVE_LENGTHS=${SERVE_LENGTHS:-2000,4000}
PASSKEY_GRID=(--depths ${DEPTHS:-0,25,50,75,100} --trials ${TRIALS:-2})  # 10 pass keys a length
NIAH_GRID=(--depths ${NIAH_DEPTHS:-0,25,50,75,100})
TOKENS=(--max-new-tokens ${MAX_NEW_TOKENS:-24})  # the passkey's default
# The wording of passkey evaluations before answer prefixes (core.evals.retrieval).
OLD_TEMPLATE=$'There is an important piece of information hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz you about it.\n\n{context}\n\n{question}'
OLD_QUESTION="What is the pass key?"
mkdir -p "$OUT"

summary() {
  python - "$1" <<'EOF'
import json, sys
from collections import defaultdict
by = defaultdict(list)
for line in open(sys.argv[1] + "/cells.jsonl"):
    cell = json.loads(line)
    by[cell["length"]].append(cell["score"])
print(sys.argv[1].rsplit("/", 1)[-1] + ": " + ", ".join(
    f"{n}: {100 * sum(s) / len(s):.0f}% of {len(s)}" for n, s in sorted(by.items())))
EOF
}

run() {  # run NAME longctx-args...
  local name=$1
  shift
  echo "\$ longctx $(printf '%q ' "$@")--out $OUT/$name" >>"$OUT/commands.txt"
  $LONGCTX "$@" --out "$OUT/$name" >"$OUT/$name.log" 2>&1
  summary "$OUT/$name" | tee -a "$OUT/summary.txt"
}

for stage in $STAGES; do
  case $stage in
  passkey-local)
    run passkey-local-prefix passkey --lengths $LENGTHS "${PASSKEY_GRID[@]}" "${TOKENS[@]}"
    run passkey-local-none passkey --lengths $LENGTHS "${PASSKEY_GRID[@]}" "${TOKENS[@]}" \
      --answer-prefix ''
    ;;
  passkey-local-old)
    run passkey-local-old passkey --lengths $LENGTHS "${PASSKEY_GRID[@]}" "${TOKENS[@]}" \
      --answer-prefix '' --template "$OLD_TEMPLATE" --question "$OLD_QUESTION"
    ;;
  passkey-serve)
    $LONGCTX serve --model embedded --port 0 >"$OUT/serve.log" 2>&1 &
    server=$!
    trap 'kill $server 2>/dev/null || true' EXIT
    for _ in $(seq 300); do grep -q "ready at" "$OUT/serve.log" && break; sleep 1; done
    url=$(sed -n 's/.*ready at //p' "$OUT/serve.log" | head -1)
    ep=(--model embedded --base-url "$url" --tokenizer embedded)
    run passkey-serve-prefix passkey "${ep[@]}" --lengths $SERVE_LENGTHS "${PASSKEY_GRID[@]}" \
      "${TOKENS[@]}"
    run passkey-serve-none passkey "${ep[@]}" --lengths $SERVE_LENGTHS "${PASSKEY_GRID[@]}" \
      "${TOKENS[@]}" --answer-prefix ''
    kill $server
    wait $server 2>/dev/null || true
    trap - EXIT
    ;;
  niah-local)
    run niah-local-prefix niah --lengths $LENGTHS "${NIAH_GRID[@]}"
    run niah-local-none niah --lengths $LENGTHS "${NIAH_GRID[@]}" --answer-prefix ''
    ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
