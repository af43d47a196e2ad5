#!/usr/bin/env bash
# GPU checks of the scale features, each independent (one failing does not stop the others), on one H100:
#   1. bf16 GRPO steps with a ~0.4B random Qwen2 (Qwen2.5-0.5B shape) on 1 GPU (Lightning, bf16-mixed)
#   2. the same through FSDP2 (ModelParallelStrategy + fully_shard) on 1 GPU
#   3. the same with the vLLM rollout engine, when vLLM is installed
#   4. GRPO's recipe (experiment=grpo_tiny) trained 2 steps on the GPU in fp32 and bf16 (scripts/gpu_check.py)
#   5. the same runner for the other 14 algorithms' recipes, each composed as src/train.py composes it
#   6. rollout.fast_decode=true against false (same tokens? speed? memory?) (scripts/gpu_fast_decode.py)
#   7. bench/vs_trl.py --device cuda: our GRPO step against TRL's on the GPU, when TRL is installed
# Checks 1-3 print rollout / update tokens/s, peak GPU memory and the update's MFU.
# Arguments name the checks to run, in that order (default: all): bash scripts/gpu_check.sh vs_trl single
# STEPRL_CHECK_CPU=1 runs every check on CPU with tiny shapes (checks the script, not the GPU).
# Needs only torch, transformers, lightning and steprl on PYTHONPATH, e.g.
#   PYTHONPATH=/tmp/site:$PWD/src bash scripts/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD/src"
export TOKENIZERS_PARALLELISM=false
"$PY" - <<'PYEOF' || { echo "FAIL setup: the python above cannot import torch/transformers/lightning/steprl"; exit 1; }
import torch, transformers, lightning, steprl
print(f"torch {torch.__version__} (cuda {torch.version.cuda}), transformers {transformers.__version__}, "
      f"lightning {lightning.__version__}, cuda available: {torch.cuda.is_available()}")
import os
assert torch.cuda.is_available() or os.environ.get("STEPRL_CHECK_CPU") == "1", "no CUDA device visible"
PYEOF
status=0
declare -A RESULT
check() {  # name, timeout (s), command...
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s) ==="
  local t0=$SECONDS
  if timeout --kill-after=10 "$limit" "$@"; then RESULT[$name]="ok ($((SECONDS - t0))s)"
  else
    local rc=$?; status=1
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then RESULT[$name]="FAIL: timed out after ${limit}s"
    else RESULT[$name]="FAIL: exit $rc ($((SECONDS - t0))s)"; fi
  fi
}
ALL=(single fsdp vllm smoke algos fast_decode vs_trl)
NAMES=("$@")
[ ${#NAMES[@]} -eq 0 ] && NAMES=("${ALL[@]}")
for name in "${NAMES[@]}"; do
  case $name in
    single|fsdp|vllm) check "$name" "$([ "$name" = vllm ] && echo 120 || echo 150)" "$PY" scripts/gpu_scale_check.py "$name" ;;
    smoke) check smoke 90 "$PY" scripts/gpu_check.py --algos grpo ;;
    algos) check algos 420 "$PY" scripts/gpu_check.py \
             --algos rloo,drgrpo,reinforce_pp,ppo,prime,ppr,tp_grpo,empg,salt,e_grpo,oreal,drm,propa,pc_grpo ;;
    fast_decode) check fast_decode 120 "$PY" scripts/gpu_fast_decode.py ;;
    vs_trl)
      if ! err=$("$PY" -c "import trl, datasets" 2>&1); then
        RESULT[vs_trl]="skipped: cannot import trl / datasets: $(echo "$err" | tail -1)"
      elif [ "${STEPRL_CHECK_CPU:-}" = 1 ]; then
        check vs_trl 300 "$PY" bench/vs_trl.py --configs small --rounds 1 --steps 2 --no-memory
      else check vs_trl 240 "$PY" bench/vs_trl.py --device cuda --rounds 3 --steps 3 --large-rounds 2; fi ;;
    *) echo "unknown check '$name' (known: ${ALL[*]})"; exit 2 ;;
  esac
done
echo "=== summary ==="
for name in "${NAMES[@]}"; do echo "$name: ${RESULT[$name]:-not run}"; done
exit $status
