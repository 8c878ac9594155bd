#!/usr/bin/env bash
# Runs a command under mpirun with N ranks on this machine:
#   tests/support/mpirun.sh N COMMAND [ARGS...]
# Handles root (CI containers) and more ranks than cores; binds nothing so
# oversubscribed ranks share the cores fairly.
set -euo pipefail
np=$1; shift
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# Shared-memory transport only; single-copy (CMA) needs ptrace rights containers often lack.
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMPI_MCA_rmaps_base_oversubscribe=1
exec mpirun --oversubscribe --bind-to none -np "$np" "$@"
