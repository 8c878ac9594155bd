#!/usr/bin/env bash
# Checks launch/plot.sh on a synthetic run: 20 steps, 2 MoE layers of 4
# experts, evaluations at steps 10 and 20 over 2 domains. Every PNG must be
# written and be a PNG; a run without evaluations must plot without the
# validation figures; a missing or empty metrics file must fail with a message.
#   tests/launch/plot_check.sh [PLOT_SH]     (default: launch/plot.sh next to this tree)
# Exits 77 (ctest: skipped) when gnuplot or jq is not installed: the test never
# installs packages itself (launch/setup.sh does).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
plot=${1:-$here/../../launch/plot.sh}
[ -f "$plot" ] || { echo "FAIL: $plot not found"; exit 1; }
for tool in gnuplot jq; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed (launch/setup.sh installs it)"; exit 77; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/plot_check.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# synthetic_run DIR WITH_EVALS: writes DIR/metrics.jsonl.
synthetic_run() {
  mkdir -p "$1"
  awk -v evals="$2" 'BEGIN {
    for (s = 1; s <= 20; s++) {
      loss = 5.5 * exp(-s / 8) + 1.5
      printf "{\"step\":%d,\"loss\":%.4f,\"lm_loss\":%.4f,\"balance_loss\":%.4f,\"z_loss\":%.5f,", s, loss, loss - 0.02, 0.01 + 0.002 * sin(s), 0.001 / s
      printf "\"lr\":%.6f,\"grad_norm\":%.3f,\"tokens_per_s\":%d,\"mfu\":%.3f,", 0.002 * (s < 5 ? s / 5 : 1), 1 + 0.5 * cos(s), 12000 + 100 * s, 0.3
      printf "\"expert_load_max_over_mean\":%.3f,\"dropped_fraction\":%.3f,\"experts_per_token\":2,", 1.6 - s / 40, 0.03 - s / 1000
      printf "\"a2a_share\":0.05,\"step_s\":%.3f,\"expert_load\":[", 0.2 + 0.01 * (s % 3)
      for (l = 0; l < 2; l++) {
        d = 0.15 * (20 - s) / 20 * (l ? -1 : 1)
        printf "%s[%.4f,%.4f,%.4f,%.4f]", (l ? "," : ""), 0.25 + d, 0.25 - d / 3, 0.25 - d / 3, 0.25 - d / 3
      }
      printf "]"
      if (evals && s % 10 == 0) {
        printf ",\"val_loss\":%.4f,\"val_loss_by_domain\":{\"en\":%.4f,\"c\":%.4f}", loss + 0.1, loss + 0.2, loss
        printf ",\"expert_freq_by_domain\":{\"en\":[[0.4,0.2,0.2,0.2],[0.1,0.3,0.3,0.3]],\"c\":[[0.1,0.3,0.3,0.3],[0.4,0.2,0.2,0.2]]}"
      }
      printf "}\n"
    }
  }' >"$1/metrics.jsonl"
}

# is_png FILE: non-empty and starts with the PNG signature.
is_png() {
  [ -s "$1" ] && [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ]
}

# 1. a full run: every figure.
synthetic_run "$tmp/run" 1
out=$(bash "$plot" "$tmp/run" "$tmp/out" 2>&1) || { echo "$out"; fail "plot.sh failed on a full run"; }
echo "$out"
for f in loss aux perf routing expert_load_layer0 expert_load_layer1 expert_by_domain; do
  is_png "$tmp/out/$f.png" || fail "$tmp/out/$f.png is missing or not a PNG"
  grep -qF "$tmp/out/$f.png" <<<"$out" || fail "plot.sh did not list $f.png among the files written"
done
[ ! -e "$tmp/out/expert_load_layer2.png" ] || fail "a third MoE layer was plotted, the run has two"

# 2. default OUT_DIR, a duplicated step (resume) and a truncated last line.
synthetic_run "$tmp/resumed" 1
step5=$(sed -n 5p "$tmp/resumed/metrics.jsonl")
printf '%s\n{"step":21,"loss":' "$step5" >>"$tmp/resumed/metrics.jsonl"
out=$(bash "$plot" "$tmp/resumed" 2>&1) || { echo "$out"; fail "plot.sh failed on a resumed run with a cut last line"; }
grep -q "warning: skipped 1 of 22 lines" <<<"$out" || { echo "$out"; fail "no warning for the cut line"; }
grep -q "20 steps, 2 evaluations, 2 MoE layers" <<<"$out" || { echo "$out"; fail "the repeated step was not merged"; }
is_png "$tmp/resumed/plots/loss.png" || fail "no loss.png under the default RUN_DIR/plots"

# 3. no evaluations: the training figures, no expert_by_domain.png, a message.
synthetic_run "$tmp/noeval" 0
out=$(bash "$plot" "$tmp/noeval" "$tmp/noeval-out" 2>&1) || { echo "$out"; fail "plot.sh failed on a run without evaluations"; }
for f in loss aux expert_load_layer0 expert_load_layer1; do
  is_png "$tmp/noeval-out/$f.png" || fail "$f.png missing for a run without evaluations"
done
[ ! -e "$tmp/noeval-out/expert_by_domain.png" ] || fail "expert_by_domain.png written without evaluation records"
grep -q "no evaluation records" <<<"$out" || { echo "$out"; fail "no message about the missing evaluations"; }

# 4. errors: a missing file, an empty file, a file without records.
expect_error() {  # expect_error WHAT PATTERN ARGS...
  local what=$1 pattern=$2 rc=0
  shift 2
  out=$(bash "$plot" "$@" 2>&1) || rc=$?
  [ "$rc" -ne 0 ] || { echo "$out"; fail "$what: plot.sh exited 0"; }
  grep -q "$pattern" <<<"$out" || { echo "$out"; fail "$what: the message does not say '$pattern'"; }
  echo "OK: $what -> exit $rc: $out"
}
mkdir -p "$tmp/missing" "$tmp/empty" "$tmp/garbage"
expect_error "missing metrics.jsonl" "metrics.jsonl not found" "$tmp/missing"
expect_error "missing run directory" "not found" "$tmp/no-such-run"
: >"$tmp/empty/metrics.jsonl"
expect_error "empty metrics.jsonl" "is empty" "$tmp/empty"
echo "not json" >"$tmp/garbage/metrics.jsonl"
expect_error "metrics.jsonl without records" "no metrics records" "$tmp/garbage"
echo "OK: plot.sh writes every figure and fails cleanly"
