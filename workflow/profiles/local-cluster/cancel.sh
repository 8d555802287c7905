#!/usr/bin/env bash
# Cancel command of the local-cluster profile: end each job's whole process group (submit.sh started
# each job as the leader of its own session).
spool=.snakemake/local-cluster
for id in "$@"; do
    [[ -f "$spool/$id.pid" ]] && kill -TERM -- "-$(cat "$spool/$id.pid")" 2> /dev/null
done
exit 0
