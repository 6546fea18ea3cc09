#!/usr/bin/env bash
# A single-node Slurm on this machine, for trying and testing sweeps on a real controller:
# munge, slurmctld and slurmd, all on 127.0.0.1, no systemd, no cgroups, no accounting
# database (squeue and scontrol show the jobs; sacct needs slurmdbd). Debian's packages:
# apt-get install slurm-wlm munge
#
#   scripts/slurm_local.sh up   [DIR]   # start (prints the SLURM_CONF line to export)
#   scripts/slurm_local.sh down [DIR]   # stop every daemon it started, by its pid
#   scripts/slurm_local.sh status [DIR]
#
# DIR (default /tmp/dqn-slurm) holds the configs, state, logs and pid files. Ports come from
# SLURM_LOCAL_PORT_BASE (default 6817: slurmctld, +1 slurmd).
# The node has this machine's CPUs and 90% of its memory; partition "debug" is the default.
set -euo pipefail

action=${1:-status}
dir=$(realpath -m "${2:-${SLURM_LOCAL_DIR:-/tmp/dqn-slurm}}")
base=${SLURM_LOCAL_PORT_BASE:-6817}
cluster=dqnlocal
daemons=(slurmd slurmctld munged)

die() { echo "slurm_local: $*" >&2; exit 1; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2; shift 2
    for _ in $(seq $((seconds * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
    die "$what did not come up within ${seconds}s; see $dir/log"
}

write_configs() {
    local cpus mem
    cpus=$(nproc)
    mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    mkdir -p "$dir"/{log,ctld,spool,munge,run}
    chmod 700 "$dir/munge"
    cat > "$dir/slurm.conf" <<EOF
ClusterName=$cluster
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$base
SlurmdPort=$((base + 1))
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
CredType=cred/munge
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
KillWait=30
MinJobAge=600
JobRequeue=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    [ -f "$dir/munge/munge.key" ] || mungekey -c -k "$dir/munge/munge.key" 2>/dev/null \
        || dd if=/dev/urandom bs=1 count=1024 of="$dir/munge/munge.key" 2>/dev/null
    chmod 600 "$dir/munge/munge.key"
    munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munge/munged.seed"
    wait_for 10 munged test -S "$dir/munge/munge.socket"
}

up() {
    [ "$(id -u)" = 0 ] || die "run as root: slurmd starts each job as its user (SlurmUser=root)"
    for tool in munged slurmctld slurmd sbatch; do
        command -v "$tool" >/dev/null || die "$tool not found: apt-get install slurm-wlm munge"
    done
    if running slurmctld; then echo "slurm_local: already up in $dir"; exports; return; fi
    write_configs
    export SLURM_CONF="$dir/slurm.conf"
    start_munge
    slurmctld -f "$dir/slurm.conf"
    wait_for 30 slurmctld scontrol ping
    slurmd -f "$dir/slurm.conf" -N localhost
    wait_for 30 "the node" sh -c "sinfo -h -o %T | grep -qE '^(idle|mixed|allocated)'"
    echo "slurm_local: up in $dir ($(nproc) CPUs, partition debug)"
    exports
}

exports() { echo "export SLURM_CONF=$dir/slurm.conf"; }

running() {  # running DAEMON: its pid file names a live process
    local pidfile="$dir/run/$1.pid"
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

down() {
    # cancel this controller's jobs first, so that their job steps end with them
    export SLURM_CONF="$dir/slurm.conf"
    if running slurmctld; then
        local jobs; jobs=$(squeue -h -o %A 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            scancel $jobs 2>/dev/null || true
            for _ in $(seq 120); do
                [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
                sleep 0.25
            done
        fi
    fi
    for daemon in "${daemons[@]}"; do
        local pidfile="$dir/run/$daemon.pid"
        [ -f "$pidfile" ] || continue
        local pid; pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        fi
        rm -f "$pidfile"
    done
    echo "slurm_local: down ($dir)"
}

status() {
    for daemon in "${daemons[@]}"; do
        if running "$daemon"; then echo "$daemon: running (pid $(cat "$dir/run/$daemon.pid"))"
        else echo "$daemon: stopped"; fi
    done
}

case $action in
    up) up ;;
    down) down ;;
    status) status ;;
    *) die "unknown action '$action' (allowed: up, down, status)" ;;
esac
