#!/usr/bin/env bash
# Status command of the local-cluster profile: success or failed from the job's exit code once it
# has one, running while its process lives, failed if it died without writing one.
spool=.snakemake/local-cluster
id=$1
if [[ -f "$spool/$id.exit" ]]; then
    [[ "$(cat "$spool/$id.exit")" == 0 ]] && echo success || echo failed
elif [[ -f "$spool/$id.pid" ]] && kill -0 "$(cat "$spool/$id.pid")" 2> /dev/null; then
    echo running
elif [[ -f "$spool/$id.exit" ]]; then
    # It finished between the two checks.
    [[ "$(cat "$spool/$id.exit")" == 0 ]] && echo success || echo failed
else
    echo failed
fi
