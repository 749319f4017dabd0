#!/usr/bin/env bash
# The body of `make test`: every check in order, each timed, then one summary table.
# Runs everything even after a failure so one run shows every broken suite; exits non-zero if any
# step failed. pytest's "no tests collected" (exit 5) counts as a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
declare -a names=() codes=() secs=()

step() {
  local name="$1"; shift
  printf '\n===== %s =====\n' "$name"
  local start=$SECONDS
  "$@"
  local rc=$?
  names+=("$name"); codes+=("$rc"); secs+=($((SECONDS - start)))
}

step "lint (ruff, mypy)" make --no-print-directory lint
step "unit" "$PY" -m pytest tests/unit -q -p no:cacheprovider
step "integration" "$PY" -m pytest tests/integration -q -p no:cacheprovider
step "e2e (worker processes, CLI)" "$PY" -m pytest tests/e2e -q -p no:cacheprovider
step "helm (chart, KEDA, images)" "$PY" -m pytest tests/helm -q -p no:cacheprovider
step "bench-smoke (every scenario completes)" "$PY" -m bench.run --smoke
step "bench-engine smoke (batched CosyVoice)" "$PY" -m bench.engine_bench --smoke
step "reliability (chaos short, fuzz, security)" "$PY" -m pytest tests/chaos tests/fuzz tests/security -m "not slow" -q -p no:cacheprovider

printf '\n===== summary =====\n'
failed=0
for i in "${!names[@]}"; do
  rc="${codes[$i]}"
  if [ "$rc" = 0 ]; then verdict=passed
  elif [ "$rc" = 5 ]; then verdict="FAILED (no tests collected)"; failed=1
  else verdict="FAILED (exit $rc)"; failed=1; fi
  printf '  %-28s %-28s %5ss\n' "${names[$i]}" "$verdict" "${secs[$i]}"
done
exit $failed
