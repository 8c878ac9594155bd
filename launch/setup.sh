#!/usr/bin/env bash
# Installs what switchyard needs on Debian 12, and only what is missing.
# Idempotent; when everything is present it runs no apt-get and takes well
# under a second. Needs root (or sudo) only when something must be installed.
set -euo pipefail

packages=(
  build-essential cmake pkg-config     # compiler and build
  libopenmpi-dev openmpi-bin           # MPI: communication and mpirun
  libeigen3-dev                        # CPU linear algebra (Eigen 3.4)
  libhdf5-dev                          # datasets and checkpoints
  libboost-program-options-dev         # INI configs and command line
  libgtest-dev                         # tests
  gnuplot-nox jq                       # launch/plot.sh (and its test): PNG plots of metrics.jsonl
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "setup: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done" >&2
