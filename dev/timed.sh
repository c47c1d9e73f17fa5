#!/usr/bin/env bash
# Runs one phase of `make` and prints how long it took, so every CI log shows where time goes.
set -u
phase=$1
shift
started=$(date +%s)
"$@"
status=$?
echo "phase ${phase}: $(( $(date +%s) - started ))s"
exit $status
