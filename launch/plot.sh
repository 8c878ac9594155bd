#!/usr/bin/env bash
# Draws a training run's metrics (RUN_DIR/metrics.jsonl, one JSON object per
# optimizer step) as PNG files with gnuplot; jq reads the JSON.
#   launch/plot.sh RUN_DIR [OUT_DIR]
# See usage() below for the files written.
set -euo pipefail
shopt -s lastpipe  # `{ script } | plot_png NAME`: plot_png runs in this shell and records NAME
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  cat <<'EOF'
usage: launch/plot.sh RUN_DIR [OUT_DIR]

Reads RUN_DIR/metrics.jsonl (RUN_DIR may also be the .jsonl file itself) and
writes PNG plots into OUT_DIR (default RUN_DIR/plots). Installs gnuplot-nox and
jq with apt-get when gnuplot or jq is missing.

  loss.png                 loss, lm_loss and val_loss against step; validation loss per domain
  aux.png                  balance_loss, z_loss, grad_norm, lr
  perf.png                 tokens_per_s, mfu, step_s, a2a_share
  routing.png              expert_load_max_over_mean, dropped_fraction, experts_per_token
  expert_load_layerN.png   per MoE layer N (from 0): each expert's share of the routed
                           slots against step (heatmap; long runs are averaged into
                           at most 1000 columns)
  expert_by_domain.png     per-domain expert frequency at the last evaluation:
                           rows domain, columns layer x expert

Records are keyed by "step"; when a step appears more than once (a resumed run
redoes steps after its last checkpoint) the last record wins. Lines that are
not JSON objects with a numeric "step" (a line cut short by a crash) are
skipped with a warning. A run without evaluation records gets no validation
curves and no expert_by_domain.png (said on stderr). Missing fields draw as
gaps, a field missing from every record as an empty panel.
EOF
}

die() { echo "plot: $*" >&2; exit 1; }

case ${1:-} in
  -h | --help) usage; exit 0 ;;
  "") usage >&2; exit 2 ;;
  -*) die "unknown option '$1' (see --help)" ;;
esac
[ $# -le 2 ] || die "too many arguments (see --help)"
if [ -d "$1" ]; then
  metrics="$1/metrics.jsonl"
  out_dir=${2:-$1/plots}
else
  metrics=$1
  out_dir=${2:-$(dirname "$1")/plots}
fi
[ -e "$metrics" ] || die "$metrics not found (give a run directory holding metrics.jsonl, or the file)"
if [ ! -f "$metrics" ] || [ ! -r "$metrics" ]; then die "$metrics is not a readable file"; fi
[ -s "$metrics" ] || die "$metrics is empty: no steps to plot"

need=()
command -v gnuplot >/dev/null || need+=(gnuplot-nox)
command -v jq >/dev/null || need+=(jq)
if [ ${#need[@]} -gt 0 ]; then
  bash "$root/launch/ensure_packages.sh" --why "plots" "${need[@]}"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-plot.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- the records -------------------------------------------------------------------
# All valid records, one per step (the last one wins), sorted by step.
jq -cR 'fromjson? | select(type == "object" and (.step | type) == "number")' "$metrics" >"$work/records.jsonl"
lines=$(grep -c '[^[:space:]]' "$metrics" || true)
valid=$(wc -l <"$work/records.jsonl")
[ "$valid" -gt 0 ] || die "$metrics holds no metrics records (JSON objects with a numeric \"step\")"
if [ "$valid" -lt "$lines" ]; then
  echo "plot: warning: skipped $((lines - valid)) of $lines lines of $metrics that are not metrics records" >&2
fi
jq -s 'group_by(.step) | map(.[-1])' "$work/records.jsonl" >"$work/all.json"
steps=$(jq 'length' "$work/all.json")

scalars=(step loss lm_loss balance_loss z_loss lr grad_norm tokens_per_s mfu step_s a2a_share
  expert_load_max_over_mean dropped_fraction experts_per_token)
keys_json=$(printf '%s\n' "${scalars[@]}" | jq -R . | jq -sc .)
jq -r --argjson keys "$keys_json" \
  '.[] | [$keys[] as $k | (.[$k] | if type == "number" then . else "?" end)] | @tsv' \
  "$work/all.json" >"$work/scalars.dat"
# column (1-based) of each scalar, and whether any record has it
declare -A col has
for i in "${!scalars[@]}"; do
  k=${scalars[$i]}
  col[$k]=$((i + 1))
  n=$(awk -F'\t' -v c=$((i + 1)) '$c != "?" { n++ } END { print n + 0 }' "$work/scalars.dat")
  has[$k]=$n
done

# Evaluations: step, val_loss, then val loss per domain (domains sorted).
mapfile -t domains < <(jq -r '[.[] | (.val_loss_by_domain // {}) | objects | keys[]] | unique[]' "$work/all.json")
doms_json=$(printf '%s\n' "${domains[@]}" | jq -R 'select(length > 0)' | jq -sc .)
jq -r --argjson doms "$doms_json" '
  .[] | select(has("val_loss") or has("val_loss_by_domain"))
  | . as $r
  | [.step, (.val_loss | numbers // "?")] + [$doms[] as $d | ($r.val_loss_by_domain[$d]? | numbers // "?")]
  | @tsv' "$work/all.json" >"$work/val.dat"
evals=$(wc -l <"$work/val.dat")

# --- gnuplot ----------------------------------------------------------------------
if gnuplot -e 'set terminal' 2>&1 | grep -qw pngcairo; then
  term='pngcairo noenhanced font ",10"'
else
  term='png noenhanced'
fi
written=()
# plot_png NAME WIDTH HEIGHT < SCRIPT: runs a gnuplot script writing NAME.
plot_png() {
  local name=$1 w=$2 h=$3
  {
    echo "set terminal $term size $w,$h"
    echo "set output '$work/$name'"
    echo 'set datafile separator tab'
    echo 'set datafile missing "?"'
    echo 'set grid lc rgb "#dddddd"'
    echo 'set colorsequence podo'
    echo "set palette defined (0 '#440154', 0.25 '#3b528b', 0.5 '#21918c', 0.75 '#5ec962', 1 '#fde725')"
    cat
    echo 'unset output'
  } >"$work/$name.gp"
  gnuplot "$work/$name.gp" 2>"$work/$name.log" || {
    { echo "plot: gnuplot script for $name:"; cat -n "$work/$name.gp"; cat "$work/$name.log"; } >&2
    die "gnuplot failed on $name (script and messages above)"
  }
  written+=("$name")
}
# panel KEY [TITLE]: one small plot of a scalar against step, or an empty panel.
panel() {
  local key=$1 title=${2:-$1}
  echo "set title \"$title\""
  if [ "${has[$key]}" -gt 0 ]; then
    echo "plot '$work/scalars.dat' using 1:${col[$key]} with lines lw 1.5 lc rgb '#1f77b4' notitle"
  else
    echo "set label 1 'not in metrics.jsonl' at graph 0.5, 0.5 center"
    echo "plot [0:1] [0:1] NaN notitle"
    echo "unset label 1"
  fi
}

# loss.png
{
  echo "set xlabel 'step'; set ylabel 'loss (nats/token)'; set key outside right top"
  echo "set title 'loss ($steps steps, $evals evaluations)'"
  series=()
  for k in loss:#1f77b4 lm_loss:#ff7f0e; do
    if [ "${has[${k%:*}]}" -gt 0 ]; then
      series+=("'$work/scalars.dat' using 1:${col[${k%:*}]} with lines lw 1.2 lc rgb '${k#*:}' title '${k%:*}'")
    fi
  done
  if [ "$evals" -gt 0 ]; then
    if [ "$(awk -F'\t' '$2 != "?"' "$work/val.dat" | wc -l)" -gt 0 ]; then
      series+=("'$work/val.dat' using 1:2 with linespoints lw 2.5 pt 7 ps 1.2 lc rgb 'black' title 'val_loss'")
    fi
    for i in "${!domains[@]}"; do
      series+=("'$work/val.dat' using 1:$((i + 3)) with linespoints dt 2 lw 1.5 pt $((i % 12 + 1)) title 'val ${domains[$i]}'")
    done
  fi
  [ ${#series[@]} -gt 0 ] || echo "set label 1 'no loss in metrics.jsonl' at graph 0.5, 0.5 center"
  if [ ${#series[@]} -gt 0 ]; then
    (IFS=','; echo "plot ${series[*]}")
  else
    echo "plot [0:1] [0:1] NaN notitle"
  fi
} | plot_png loss.png 1200 700
if [ "$evals" -eq 0 ]; then
  echo "plot: no evaluation records (val_loss) in $metrics: loss.png has no validation curves" >&2
fi

# aux.png, perf.png, routing.png
{
  echo "set multiplot layout 2,2 title 'auxiliary losses and optimizer'"
  echo "set xlabel 'step'"
  panel balance_loss
  panel z_loss
  panel grad_norm
  panel lr
  echo "unset multiplot"
} | plot_png aux.png 1200 800
{
  echo "set multiplot layout 2,2 title 'throughput'"
  echo "set xlabel 'step'"
  panel tokens_per_s "tokens_per_s (all ranks)"
  panel mfu
  panel step_s "step_s (seconds per step)"
  panel a2a_share "a2a_share (share of the step in all-to-all)"
  echo "unset multiplot"
} | plot_png perf.png 1200 800
{
  echo "set multiplot layout 1,3 title 'routing'"
  echo "set xlabel 'step'"
  panel expert_load_max_over_mean "expert load, max / mean"
  panel dropped_fraction
  panel experts_per_token
  echo "unset multiplot"
} | plot_png routing.png 1500 450

# expert_load_layerN.png: columns "layer x_lo x_hi expert share", one row per
# (column of steps, expert); runs longer than 1000 steps are averaged into 1000 columns.
jq -r --argjson max 1000 '
  def mean: if length == 0 then null else add / length end;
  [.[] | select(.expert_load | type == "array")] as $r
  | ($r | length) as $n
  | (if $n > $max then ($n / $max | ceil) else 1 end) as $c
  | [range(0; $n; $c) as $i | $r[$i:$i + $c]
     | . as $ch
     | {x: (map(.step) | mean),
        load: [range(0; map(.expert_load | length) | max) as $l
               | [range(0; map(.expert_load[$l] // [] | length) | max) as $e
                  | $ch | map(.expert_load[$l][$e]? | numbers) | mean]]}] as $pts
  | ($pts | length) as $m
  | range(0; $m) as $i
  | $pts[$i] as $p
  | (if $m == 1 then $p.x - 0.5 elif $i == 0 then $p.x - ($pts[1].x - $p.x) / 2
     else ($pts[$i - 1].x + $p.x) / 2 end) as $lo
  | (if $m == 1 then $p.x + 0.5 elif $i == $m - 1 then $p.x + ($p.x - $pts[$i - 1].x) / 2
     else ($pts[$i + 1].x + $p.x) / 2 end) as $hi0
  | ($hi0 + ($hi0 - $lo) * 0.05) as $hi  # a little overlap: no seams between columns
  | range(0; $p.load | length) as $l
  | range(0; $p.load[$l] | length) as $e
  | select($p.load[$l][$e] != null)
  | [$l, $lo, $hi, $e, $p.load[$l][$e]] | @tsv' "$work/all.json" >"$work/load.dat"
layers=$(awk -F'\t' 'NF { if ($1 + 1 > n) n = $1 + 1 } END { print n + 0 }' "$work/load.dat")
if [ "$layers" -eq 0 ]; then
  echo "plot: no expert_load in $metrics: no expert_load_layerN.png" >&2
fi
for ((l = 0; l < layers; l++)); do
  awk -F'\t' -v l="$l" '$1 == l' "$work/load.dat" >"$work/load_$l.dat"
  experts=$(awk -F'\t' '{ if ($4 + 1 > n) n = $4 + 1 } END { print n + 0 }' "$work/load_$l.dat")
  [ "$experts" -gt 0 ] || continue
  {
    echo "stats '$work/load_$l.dat' using 2:3 nooutput"
    echo "set xrange [STATS_min_x:STATS_max_y]"
    echo "set title sprintf('MoE layer $l: share of routed slots per expert (uniform 1/%d = %.3f)', $experts, 1.0 / $experts)"
    echo "set xlabel 'step'; set ylabel 'expert'; set cblabel 'share'"
    echo "set yrange [-0.5:$experts - 0.5]; set cbrange [0:*]; set grid noxtics noytics"
    [ "$experts" -le 32 ] && echo "set ytics 1"
    echo "plot '$work/load_$l.dat' using ((\$2 + \$3) / 2):4:2:3:(\$4 - 0.5):(\$4 + 0.5):5 with boxxyerror fs solid 1.0 noborder fc palette notitle"
  } | plot_png "expert_load_layer$l.png" 1200 $((300 + 12 * (experts < 48 ? experts : 48)))
done

# expert_by_domain.png: from the last record with expert_freq_by_domain.
jq -r '
  (map(select(.expert_freq_by_domain | type == "object")) | last) as $r
  | if $r == null then empty else
      ($r.expert_freq_by_domain | keys) as $doms
      | [range(0; [$r.expert_freq_by_domain[] | length] | max) as $l
         | [$r.expert_freq_by_domain[] | .[$l] // [] | length] | max] as $sizes
      | ["#meta", $r.step, ($doms | join(",")), ($sizes | map(tostring) | join(","))],
        ( range(0; $doms | length) as $d
          | range(0; $sizes | length) as $l
          | range(0; $sizes[$l]) as $e
          | ($r.expert_freq_by_domain[$doms[$d]][$l][$e]? | numbers) as $v
          | [($sizes[:$l] | add // 0) + $e, $d, $v] )
      | @tsv
    end' "$work/all.json" >"$work/bydom.dat"
if [ ! -s "$work/bydom.dat" ]; then
  echo "plot: no evaluation records with expert_freq_by_domain in $metrics: no expert_by_domain.png" >&2
else
  IFS=$'\t' read -r _ eval_step dom_list size_list <"$work/bydom.dat"
  IFS=, read -r -a bd_domains <<<"$dom_list"
  IFS=, read -r -a bd_sizes <<<"$size_list"
  sed -i 1d "$work/bydom.dat"
  ncols=0
  xtics=()
  x2tics=()
  separators=()
  for l in "${!bd_sizes[@]}"; do
    e_l=${bd_sizes[$l]}
    x2tics+=("\"layer $l\" $ncols + ($e_l - 1) / 2.0")
    [ "$l" -gt 0 ] && separators+=("set arrow from $ncols - 0.5, graph 0 to $ncols - 0.5, graph 1 nohead front lw 3 lc rgb 'white'")
    for ((e = 0; e < e_l; e++)); do xtics+=("\"e$e\" $((ncols + e))"); done
    ncols=$((ncols + e_l))
  done
  ytics=()
  for d in "${!bd_domains[@]}"; do ytics+=("\"${bd_domains[$d]}\" $d"); done
  ndoms=${#bd_domains[@]}
  {
    echo "stats '$work/bydom.dat' using 3 nooutput"
    echo "set title 'expert frequency by domain at step $eval_step (each layer row sums to 1)' offset 0, 1"
    echo "set xrange [-0.5:$ncols - 0.5]; set yrange [$ndoms - 0.5:-0.5]; set cbrange [0:*]"
    echo "set grid noxtics noytics; set cblabel 'share of the domain''s routed slots'"
    (IFS=','; echo "set ytics (${ytics[*]})")
    (IFS=','; echo "set x2tics (${x2tics[*]}) scale 0")
    if [ "$ncols" -le 64 ]; then (IFS=','; echo "set xtics (${xtics[*]}) scale 0"); else echo "unset xtics"; fi
    printf '%s\n' "${separators[@]}"
    plot="plot '$work/bydom.dat' using 1:2:(\$1 - 0.5):(\$1 + 0.5):(\$2 - 0.5):(\$2 + 0.5):3 with boxxyerror fs solid 1.0 noborder fc palette notitle"
    if [ $((ncols * ndoms)) -le 256 ]; then
      plot+=", '' using 1:2:(\$3 < 0.6 * STATS_max ? sprintf('%.2f', \$3) : '') with labels tc rgb 'white' notitle"
      plot+=", '' using 1:2:(\$3 >= 0.6 * STATS_max ? sprintf('%.2f', \$3) : '') with labels tc rgb 'black' notitle"
    fi
    echo "$plot"
  } | plot_png expert_by_domain.png $((640 + 40 * (ncols < 60 ? ncols : 60))) $((220 + 40 * (ndoms < 20 ? ndoms : 20)))
fi

# --- out ----------------------------------------------------------------------------
mkdir -p "$out_dir" || die "cannot create $out_dir"
for f in "${written[@]}"; do
  cp "$work/$f" "$out_dir/$f" || die "cannot write $out_dir/$f"
done
echo "plot: $steps steps, $evals evaluations, $layers MoE layers from $metrics; wrote:"
for f in "${written[@]}"; do echo "  $out_dir/$f"; done
