#!/usr/bin/env bash
# Installs the Debian packages named on the command line that are not
# installed yet, quietly; does nothing (and needs no root) when all are there.
#   launch/ensure_packages.sh [--why TEXT] PACKAGE...
# Used by launch/corpus.sh and launch/plot.sh for their optional tools and data.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: launch/ensure_packages.sh [--why TEXT] PACKAGE...

Installs the named Debian packages that are missing, with apt-get (as root, or
through sudo). Idempotent: when every package is installed it runs nothing.
  --why TEXT   say what the packages are for in the progress line
EOF
}

why=""
packages=()
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --why) [ $# -ge 2 ] || { echo "ensure_packages: --why needs a value" >&2; exit 2; }; why=" ($2)"; shift 2 ;;
    --why=*) why=" (${1#--why=})"; shift ;;
    -*) echo "ensure_packages: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) packages+=("$1"); shift ;;
  esac
done
[ ${#packages[@]} -gt 0 ] || { usage >&2; exit 2; }

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

command -v apt-get >/dev/null || {
  echo "ensure_packages: apt-get not found; install by hand: ${missing[*]}" >&2; exit 1; }
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || {
    echo "ensure_packages: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "ensure_packages: installing ${missing[*]}$why" >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "ensure_packages: apt-get could not install ${missing[*]} (output above)" >&2
  exit 1
fi
