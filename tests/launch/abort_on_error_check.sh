#!/usr/bin/env bash
# Checks that a job whose rank throws ends (no hang), exits non-zero, and names
# the rank and the error.  abort_on_error_check.sh MPIRUN_SH NP HELPER FAILING_RANK
set -u
mpirun_sh=$1 np=$2 helper=$3 failing=$4
out=$(timeout 60 "$mpirun_sh" "$np" "$helper" "$failing" 2>&1)
rc=$?
echo "$out"
if [ "$rc" = 124 ]; then echo "FAIL: the job hung (killed after 60 s)"; exit 1; fi
if [ "$rc" = 0 ]; then echo "FAIL: the job exited 0 although rank $failing threw"; exit 1; fi
if ! grep -q "switchyard: error on rank $failing of $np: injected failure in expert dispatch" <<<"$out"; then
  echo "FAIL: the error message with the rank is missing"; exit 1
fi
echo "OK: exit code $rc, message names rank $failing"
