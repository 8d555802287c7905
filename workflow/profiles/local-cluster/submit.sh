#!/usr/bin/env bash
# Submit command of the local-cluster profile: start the jobscript ($1) as its own detached process
# in a session of its own (so cancel.sh can end its whole process group), record its pid, and print the
# job id Snakemake polls.
set -euo pipefail
jobscript=$1
spool=.snakemake/local-cluster
mkdir -p "$spool"
id=$(date +%s%N)-$$
# The exit code goes to a temporary name first: status.sh must never read a half-written file.
setsid bash -c 'bash "$1" > "$2.log" 2>&1; echo $? > "$2.exit.tmp"; mv "$2.exit.tmp" "$2.exit"' \
    local-cluster-job "$jobscript" "$spool/$id" < /dev/null > /dev/null 2>&1 &
echo $! > "$spool/$id.pid"
echo "$id"
