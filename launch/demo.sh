#!/usr/bin/env bash
# The main job, on a fresh Debian machine: installs what is missing, builds,
# builds the five-domain demo corpus from Debian text packages, trains the
# demo MoE transformer (configs/demo.ini) on 2 MPI ranks with expert
# parallelism, shows the loss falling and the validation loss per domain,
# samples text from the last checkpoint, and draws the run's plots.
# Everything lands in runs/ (the run directory is runs/demo).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash launch/build.sh
mkdir -p runs
if [ ! -f runs/demo.h5 ]; then
  echo "== building the demo corpus (launch/corpus.sh)"
  bash launch/corpus.sh runs/demo.h5
fi
echo
echo "== training configs/demo.ini on 2 MPI ranks (parallel.ep=2: each rank holds 2 of the 4 experts per layer)"
bash launch/mpirun.sh -n 2 configs/demo.ini "$@"
echo
echo "== the loss, from runs/demo/metrics.jsonl (train loss of the step, validation loss when evaluated)"
jq -r 'select(.step == 1 or .val_loss != null)
       | "  step \(.step | tostring | (" " * (4 - length)) + .)  train \(.loss * 1000 | round / 1000)"
         + (if .val_loss != null then "  val \(.val_loss * 1000 | round / 1000)" else "" end)' runs/demo/metrics.jsonl
echo
echo "== validation loss and expert use per domain (switchyard eval)"
build/switchyard eval --checkpoint runs/demo/checkpoints
echo
for prompt in "#include <std" "Der " "def "; do
  echo "== sample: switchyard generate --prompt '$prompt'"
  build/switchyard generate --checkpoint runs/demo/checkpoints --prompt "$prompt" --tokens 160 --temperature 0.7
  echo
done
echo "== plots (launch/plot.sh)"
bash launch/plot.sh runs/demo || echo "(plots skipped: gnuplot could not be installed)"
