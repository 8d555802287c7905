#!/usr/bin/env bash
# A SLURM cluster of one node, this machine, to try the SLURM profile without a cluster (and to test it):
#
#   sudo workflow/profiles/slurm/single-node-cluster.sh start   # installs slurm-wlm and munge with apt if missing
#   .venv/bin/snakemake --workflow-profile workflow/profiles/slurm --slurm-partition-config workflow/profiles/slurm/single-node.yaml \
#       --slurm-status-command squeue --configfile my_world.yaml
#   sudo workflow/profiles/slurm/single-node-cluster.sh stop
#
# Its configuration is SLURM's default file, /etc/slurm/slurm.conf (a job's own srun reads it from there:
# Snakemake's job step drops SLURM_CONF), marked as this script's: a configuration it did not write stops
# it. State and logs go to SLURM_DIR (default /var/tmp/single-node-slurm). The node is this host with all its CPUs and most of its memory, in one partition, `main`. There is no
# accounting database: Snakemake asks squeue for job states (--slurm-status-command squeue), and finished
# jobs stay visible there for an hour (MinJobAge). A job that outgrows its memory request is killed
# (OverMemoryKill, from the memory its processes use, sampled every few seconds), as is one that outlives
# its time request. Up to four jobs share a CPU (OverSubscribe), so that one job's start and Snakemake's
# polling overlap another's work. Needs root: the daemons and apt do.
set -euo pipefail

SLURM_DIR=${SLURM_DIR:-/var/tmp/single-node-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# Written by workflow/profiles/slurm/single-node-cluster.sh: a one-node cluster of this machine."
HOST=$(hostname -s)

fail() { echo "single-node-cluster: $*" >&2; exit 1; }

start() {
    [ "$(id -u)" = 0 ] || fail "needs root (the SLURM and munge daemons run as root here); run it with sudo."
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        command -v apt-get >/dev/null || fail "slurm-wlm and munge are not installed and there is no apt-get to install them."
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; }
    fi
    if [ -e "$CONF" ] && [ "$(head -1 "$CONF")" != "$MARK" ]; then
        fail "$CONF exists and was not written by this script; it would replace this machine's SLURM configuration, so it stops."
    fi
    mkdir -p "$SLURM_DIR"/{state,spool,log} /run/munge /etc/slurm
    [ -s /etc/munge/munge.key ] || mungekey --create --force
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
    pgrep -x munged >/dev/null || su munge -s /bin/sh -c munged
    local cpus memory_mb
    cpus=$(nproc)
    memory_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    cat >"$CONF" <<EOF
$MARK
ClusterName=single-node
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=2
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/none
MinJobAge=3600
KillWait=5
ReturnToService=2
SchedulerType=sched/backfill
NodeName=$HOST CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=main Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
    if pgrep -x slurmctld >/dev/null; then
        scontrol reconfigure  # running already: it reads the configuration again
    else
        slurmctld
    fi
    pgrep -x slurmd >/dev/null || slurmd
    for _ in $(seq 30); do
        if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
            echo "single-node-cluster: partition main on $HOST, $cpus CPUs, $memory_mb MB"
            return
        fi
        sleep 1
    done
    fail "the node did not come up; see $SLURM_DIR/log/."
}

stop() {
    pkill -x slurmd || true
    pkill -x slurmctld || true
    for _ in $(seq 30); do
        pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || break
        sleep 1
    done
    echo "single-node-cluster: stopped; $CONF and $SLURM_DIR (state, logs) stay for the next start."
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) fail "usage: $0 start|stop" ;;
esac
