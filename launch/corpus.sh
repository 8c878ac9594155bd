#!/usr/bin/env bash
# Builds the multi-domain demo corpus from text that Debian packages install,
# and turns it into an HDF5 token dataset with `switchyard prepare`:
#   launch/corpus.sh OUT.h5 [--max-bytes-per-domain N] [--tokenizer byte|bpe] [--vocab-size N]
# See usage() below. Deterministic: the files of each domain come from the
# package's own file list (dpkg -L), in byte-wise sorted path order, so the same
# package versions give the same dataset whatever else is installed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  cat <<'EOF'
usage: launch/corpus.sh OUT.h5 [options]

Builds a 5-domain demo corpus from text that Debian packages put on the machine
(installing the packages when missing), stages it under a work folder, one
folder per domain, and writes OUT.h5 with `switchyard prepare` (building
build/switchyard first when it is missing).

domains (files in sorted path order, each domain cut at --max-bytes-per-domain):
  en  English fortune cookies    fortunes, fortunes-min  /usr/share/games/fortunes/*
  de  German fortune cookies     fortunes-de             /usr/share/games/fortunes/de/*
  fr  French Debian Reference    debian-reference-fr     debian-reference.fr.txt.gz (decompressed)
  c   C library headers          libc6-dev               /usr/include/**.h
  py  Python standard library    libpython3.X-stdlib     /usr/lib/python3.X/**.py

options:
  --max-bytes-per-domain N   bytes of text per domain (default 1000000; fr has ~1.03 MB)
  --tokenizer byte|bpe       passed to switchyard prepare (default byte)
  --vocab-size N             BPE vocabulary, passed to switchyard prepare
  --stage DIR                stage the text in DIR and keep it (default: a temporary
                             folder, removed at the end); DIR must be empty or absent
  -h, --help                 this text

environment:
  SWITCHYARD_BIN             the switchyard binary (default build/switchyard, built when missing)

example:
  launch/corpus.sh data/demo.h5                      # the dataset configs/demo.ini reads
  launch/corpus.sh data/demo-bpe.h5 --tokenizer bpe --vocab-size 1024
EOF
}

die() { echo "corpus: $*" >&2; exit 1; }
need_value() { [ "$2" -ge 2 ] || die "$1 needs a value (see --help)"; }

out=""
max_bytes=1000000
stage=""
prepare_args=()
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --max-bytes-per-domain) need_value "$1" $#; max_bytes=$2; shift 2 ;;
    --max-bytes-per-domain=*) max_bytes=${1#*=}; shift ;;
    --tokenizer | --vocab-size) need_value "$1" $#; prepare_args+=("$1" "$2"); shift 2 ;;
    --tokenizer=* | --vocab-size=*) prepare_args+=("$1"); shift ;;
    --stage) need_value "$1" $#; stage=$2; shift 2 ;;
    --stage=*) stage=${1#*=}; shift ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) [ -z "$out" ] || die "one OUT.h5 only (got '$out' and '$1')"; out=$1; shift ;;
  esac
done
[ -n "$out" ] || { usage >&2; exit 2; }
[[ $max_bytes =~ ^[1-9][0-9]*$ ]] || die "--max-bytes-per-domain must be a positive integer, got '$max_bytes'"

# --- the packages and the binary -------------------------------------------------
bash "$root/launch/ensure_packages.sh" --why "demo corpus text" \
  fortunes fortunes-min fortunes-de debian-reference-fr libc6-dev libpython3-stdlib
py_pkg=$(dpkg-query -W -f='${Depends}' libpython3-stdlib | grep -oE 'libpython3\.[0-9]+-stdlib' | head -n 1) ||
  die "cannot tell which libpython3.X-stdlib libpython3-stdlib depends on"

bin=${SWITCHYARD_BIN:-$root/build/switchyard}
if [ ! -x "$bin" ]; then
  [ -z "${SWITCHYARD_BIN:-}" ] || die "SWITCHYARD_BIN=$bin is not an executable file"
  echo "corpus: $bin missing, building it (launch/build.sh)" >&2
  bash "$root/launch/build.sh"
  [ -x "$bin" ] || die "launch/build.sh did not produce $bin"
fi

# --- staging ------------------------------------------------------------------------
if [ -n "$stage" ]; then
  if [ -e "$stage" ] && [ -n "$(ls -A "$stage")" ]; then die "--stage $stage is not empty"; fi
  mkdir -p "$stage"
else
  stage=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-corpus.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
fi

# package_files REGEX PACKAGE...: the packages' regular files (no links) whose
# path matches REGEX, in byte-wise sorted order.
package_files() {
  local regex=$1 f
  shift
  dpkg -L "$@" | LC_ALL=C sort -u | grep -E "$regex" | while IFS= read -r f; do
    if [ -f "$f" ] && [ ! -L "$f" ]; then printf '%s\n' "$f"; fi
  done
}

# stage_domain NAME DESCRIPTION < FILES: copies the files, in the order given,
# under $stage/NAME (keeping their full paths, so the staged copies sort like
# the originals; .gz files are decompressed, losing the suffix) until NAME holds
# at least max_bytes. switchyard prepare cuts the last file to the exact cap.
summary=()
stage_domain() {
  local name=$1 what=$2 dir="$stage/$1" n=0 bytes=0 total=0 size f
  local -a list=() plain=() gz=()
  mapfile -t list
  total=${#list[@]}
  [ "$total" -gt 0 ] || die "domain $name ($what): no files found"
  while IFS=$'\t' read -r size f; do
    [ "$bytes" -lt "$max_bytes" ] || break
    case $f in
      *.gz) size=$(gzip -dc -- "$f" | wc -c); gz+=("$f") ;;
      *) plain+=("$f") ;;
    esac
    n=$((n + 1))
    bytes=$((bytes + size))
  done < <(printf '%s\n' "${list[@]}" | xargs -d '\n' stat --printf '%s\t%n\n' --)
  mkdir -p "$dir"
  if [ ${#plain[@]} -gt 0 ]; then
    printf '%s\n' "${plain[@]}" | xargs -d '\n' cp --parents -t "$dir" -- || die "domain $name: cannot copy its files"
  fi
  for f in "${gz[@]}"; do
    mkdir -p "$dir${f%/*}"
    gzip -dc -- "$f" >"$dir${f%.gz}" || die "domain $name: cannot decompress $f"
  done
  [ "$bytes" -gt 0 ] || die "domain $name ($what): no text found"
  summary+=("$(printf '  %-3s %-24s %4d of %4d files  %9d bytes' "$name" "$what" "$n" "$total" \
    $((bytes < max_bytes ? bytes : max_bytes)))")
}

stage_domain en "English fortunes" < <(package_files '^/usr/share/games/fortunes/[^/]+$' fortunes fortunes-min | grep -v '\.dat$')
stage_domain de "German fortunes" < <(package_files '^/usr/share/games/fortunes/de/[^/]+$' fortunes-de | grep -v '\.dat$')
stage_domain fr "French Debian Reference" < <(package_files '/debian-reference\.fr\.txt\.gz$' debian-reference-fr)
stage_domain c "C library headers" < <(package_files '^/usr/include/.*\.h$' libc6-dev)
stage_domain py "Python standard library" < <(package_files '^/usr/lib/python3\.[0-9]+/.*\.py$' "$py_pkg")

echo "corpus: staged in $stage (at most $max_bytes bytes per domain):"
printf '%s\n' "${summary[@]}"

# --- the dataset -------------------------------------------------------------------
mkdir -p "$(dirname "$out")"
inputs=()
for d in en de fr c py; do inputs+=(--input "$stage/$d:$d"); done
echo "corpus: switchyard prepare --out $out${prepare_args[*]:+ ${prepare_args[*]}} (5 domains)"
"$bin" prepare --out "$out" --max-bytes-per-domain "$max_bytes" "${prepare_args[@]}" "${inputs[@]}" ||
  die "switchyard prepare failed (message above)"
