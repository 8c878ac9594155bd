#!/usr/bin/env bash
# Runs switchyard on several MPI ranks of this machine:
#   launch/mpirun.sh [-n RANKS] [--threads N] [--cmd NAME] CONFIG [--section.key=value ...]
# See usage() below.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  cat <<'EOF'
usage: launch/mpirun.sh [options] CONFIG [--section.key=value ...]
       launch/mpirun.sh [options] --cmd NAME [ARGS ...]

Runs `switchyard train --config CONFIG [overrides]` (or another subcommand) under
mpirun on this machine. Builds build/switchyard first when it is missing
(launch/build.sh). As root it sets OpenMPI's run-as-root variables; with more
ranks than cores it adds --oversubscribe; ranks are never bound to cores.

options:
  -n, --np RANKS   MPI ranks (default 2)
  --threads N      compute threads per rank: SWITCHYARD_THREADS=N, plus
                   --train.threads=N for train, --bench.threads=N for bench
  --cmd NAME       the subcommand (default train); several words in one
                   argument are split: --cmd "bench moe-layer"
  --dry-run        print the command and its environment, run nothing
  -h, --help       this text

CONFIG is passed as --config CONFIG; every later argument is passed through
unchanged. train needs a CONFIG; other subcommands take one when the first
argument after the options does not start with '-'.

environment:
  SWITCHYARD_BIN   the binary (default build/switchyard, built when missing)
  MPIRUN           the mpirun to use (default mpirun)
  MPIRUN_ARGS      extra mpirun arguments, split on spaces (e.g. "--hostfile hosts");
                   without --host/--hostfile, shared-memory transport only
                   (OMPI_MCA_btl=self,vader unless set)

examples:
  launch/mpirun.sh configs/demo.ini
  launch/mpirun.sh -n 4 --threads 1 configs/parallel/ep2_dp2.ini --train.steps=50
  launch/mpirun.sh -n 2 --cmd "bench moe-layer" configs/bench/moe-layer.ini --parallel.ep=2
EOF
}

die() { echo "mpirun.sh: $*" >&2; exit 1; }
need_value() { [ "$2" -ge 2 ] || die "$1 needs a value (see --help)"; }

ranks=2
threads=""
cmd="train"
dry_run=0
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    -n | --np | -np) need_value "$1" $#; ranks=$2; shift 2 ;;
    --np=*) ranks=${1#*=}; shift ;;
    --threads) need_value "$1" $#; threads=$2; shift 2 ;;
    --threads=*) threads=${1#*=}; shift ;;
    --cmd) need_value "$1" $#; cmd=$2; shift 2 ;;
    --cmd=*) cmd=${1#*=}; shift ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[[ $ranks =~ ^[1-9][0-9]*$ ]] || die "-n RANKS must be a positive integer, got '$ranks'"
[ -z "$threads" ] || [[ $threads =~ ^[1-9][0-9]*$ ]] || die "--threads must be a positive integer, got '$threads'"
read -r -a cmd_words <<<"$cmd"
[ ${#cmd_words[@]} -gt 0 ] || die "--cmd needs a subcommand name"

args=("${cmd_words[@]}")
if [ $# -gt 0 ] && [[ $1 != -* ]]; then
  [ -f "$1" ] || die "config $1 not found"
  args+=(--config "$1")
  shift
elif [ "${cmd_words[0]}" = train ]; then
  usage >&2
  die "train needs a CONFIG (e.g. configs/demo.ini)"
fi
if [ -n "$threads" ]; then
  export SWITCHYARD_THREADS=$threads
  case ${cmd_words[0]} in
    train) args+=("--train.threads=$threads") ;;
    bench) if [ ${#args[@]} -gt ${#cmd_words[@]} ]; then args+=("--bench.threads=$threads"); fi ;;
  esac
fi
args+=("$@")  # after ours, so the caller's overrides win

bin=${SWITCHYARD_BIN:-$root/build/switchyard}
if [ ! -x "$bin" ]; then
  [ -z "${SWITCHYARD_BIN:-}" ] || die "SWITCHYARD_BIN=$bin is not an executable file"
  if [ "$dry_run" = 1 ]; then
    echo "mpirun.sh: $bin missing (a real run builds it with launch/build.sh)" >&2
  else
    echo "mpirun.sh: $bin missing, building it (launch/build.sh)" >&2
    bash "$root/launch/build.sh"
    [ -x "$bin" ] || die "launch/build.sh did not produce $bin"
  fi
fi
mpirun=${MPIRUN:-mpirun}
command -v "$mpirun" >/dev/null || die "$mpirun not found (Debian: apt-get install openmpi-bin, or run launch/setup.sh)"

read -r -a extra <<<"${MPIRUN_ARGS:-}"
mpi=("$mpirun" -np "$ranks" --bind-to none)
env_shown=()
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  env_shown+=(OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1)
fi
remote=0
for a in "${extra[@]}"; do
  case $a in --host | --host=* | -H | --hostfile | --hostfile=* | --machinefile | --machinefile=* | -hostfile) remote=1 ;; esac
done
if [ "$remote" = 0 ]; then
  # One machine: shared memory only; single-copy (CMA) needs ptrace rights that containers often lack.
  export OMPI_MCA_btl=${OMPI_MCA_btl:-self,vader}
  export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
  env_shown+=("OMPI_MCA_btl=$OMPI_MCA_btl" "OMPI_MCA_btl_vader_single_copy_mechanism=$OMPI_MCA_btl_vader_single_copy_mechanism")
  # OpenMPI gives one slot per physical core; more ranks than that need --oversubscribe.
  cores=$(lscpu -p=CORE,SOCKET 2>/dev/null | grep -v '^#' | sort -u | wc -l || true)
  [ "${cores:-0}" -gt 0 ] || cores=$(nproc)
  if [ "$ranks" -gt "$cores" ]; then mpi+=(--oversubscribe); fi
fi
[ -z "$threads" ] || env_shown+=("SWITCHYARD_THREADS=$threads")
# A rank's stdout is a pty under mpirun whatever ours is: tell the trainer
# whether a person is watching, for its progress bar.
if [ -t 1 ]; then export SWITCHYARD_PROGRESS=1; else export SWITCHYARD_PROGRESS=0; fi
mpi+=(-x SWITCHYARD_PROGRESS)
mpi+=("${extra[@]}" "$bin" "${args[@]}")

echo "mpirun.sh: ${env_shown[*]:+${env_shown[*]} }${mpi[*]}" >&2
[ "$dry_run" = 1 ] && exit 0
exec "${mpi[@]}"
