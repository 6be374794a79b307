#!/bin/sh
# Applies buckets.weed with `weed shell` and fails when any of its commands failed. weed shell
# reading a script exits 0 after some errors (a misspelt flag prints its usage and goes on),
# so its output decides, as tests/cluster.py does. A bucket that already exists is no error:
# the job may run again. Usage: apply-buckets.sh MASTERS FILER SCRIPT
set -eu
masters=$1 filer=$2 script=$3
status=0
output=$(weed shell -master="$masters" -filer="$filer" < "$script" 2>&1) || status=$?
printf '%s\n' "$output"
failed=$(printf '%s\n' "$output" \
    | grep -iE 'error|unknown command|flag provided but not defined|usage of|panic' \
    | grep -vE '^error: bucket [^ ]+ already exists$' || true)
if [ -n "$failed" ]; then
    printf 'buckets.weed failed:\n%s\n' "$failed" >&2
    exit 1
fi
if [ "$status" -ne 0 ] && ! printf '%s\n' "$output" | grep -q ' already exists$'; then
    echo "weed shell exited with $status" >&2
    exit 1
fi
