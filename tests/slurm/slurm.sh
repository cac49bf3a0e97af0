#!/usr/bin/env bash
# A single-node SLURM on this machine for the tests (tests/test_slurm.py) and CI (.ci/run):
#   tests/slurm/slurm.sh start   install (apt-get, as root) and start munge, MariaDB, slurmdbd, slurmctld, slurmd
#   tests/slurm/slurm.sh stop    stop the daemons this script started, by the PIDs it recorded
#   tests/slurm/slurm.sh status  exit 0 when the cluster answers
# Idempotent: `start` on a running cluster does nothing. Accounting (slurmdbd on MariaDB at 127.0.0.1) is there
# because submitit polls job states with sacct. The daemons run as root with proctrack/linuxproc and task/none:
# no cgroups, so it runs in a container too. One partition, `debug`, with this machine's CPUs and memory.
set -euo pipefail

STATE=${CNNLAB_SLURM_STATE:-/var/lib/cnnlab-slurm}  # PID files, logs, spool
CLUSTER=cnnlab
PIDS=(slurmd slurmctld slurmdbd mariadb/mariadb munged)

say() { echo "slurm.sh: $*" >&2; }

answers() { timeout 10 scontrol ping 2>/dev/null | grep -q UP && timeout 10 sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; }

install() {
    local packages=(slurm-wlm slurmdbd slurm-client munge mariadb-server)
    if dpkg -s "${packages[@]}" >/dev/null 2>&1; then return; fi
    [ "$(id -u)" = 0 ] || { say "SLURM is not installed and installing it needs root (apt-get install ${packages[*]})"; exit 2; }
    say "installing ${packages[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null
}

write_configs() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # nproc obeys OMP_NUM_THREADS, which make test sets to 1
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
    mkdir -p /etc/slurm "$STATE"/{ctld,d,log}
    cat >/etc/slurm/slurm.conf <<EOF
# written by cnnlab's tests/slurm/slurm.sh: a single-node test cluster
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ReturnToService=2
MpiDefault=none
# requeued jobs start again at once (the default waits for 120 s)
MinJobAge=300
KillWait=10
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    cat >/etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdAddr=127.0.0.1
DbdHost=localhost
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 /etc/slurm/slurmdbd.conf
}

wait_for() {  # wait_for <what> <seconds> <command...>
    local what=$1 seconds=$2
    shift 2
    for _ in $(seq "$((seconds * 5))"); do
        if "$@" >/dev/null 2>&1; then return; fi
        sleep 0.2
    done
    say "$what did not come up within $seconds s (logs: $STATE/log, $STATE/mariadb)"
    exit 3
}

start() {
    if answers; then say "already running"; return; fi
    install
    write_configs
    local begin=$SECONDS
    if ! munge -n >/dev/null 2>&1; then
        mkdir -p /run/munge && chown munge:munge /run/munge
        runuser -u munge -- /usr/sbin/munged
        wait_for munge 10 munge -n
        cp /run/munge/munged.pid "$STATE/munged.pid"  # stopped by `stop`: this script started it
    fi
    wait_for munge 10 munge -n
    if ! mariadb -e 'select 1' >/dev/null 2>&1; then
        mkdir -p /run/mysqld "$STATE/mariadb" && chown mysql:mysql /run/mysqld "$STATE/mariadb"
        /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file="$STATE/mariadb/mariadb.pid" \
            --log-error="$STATE/mariadb/error.log" >/dev/null 2>&1 &
        wait_for MariaDB 30 mariadb -e 'select 1'
    fi
    mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
                GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
    pgrep -x slurmdbd >/dev/null || /usr/sbin/slurmdbd
    wait_for slurmdbd 30 sacctmgr -n list cluster
    sacctmgr -n list cluster format=cluster | grep -qw $CLUSTER || sacctmgr -i add cluster $CLUSTER >/dev/null
    pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
    pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
    wait_for SLURM 60 answers
    say "running ($((SECONDS - begin)) s to start): $(sinfo -h -o '%P %D node(s) %c CPUs %m MB %T')"
}

stop() {
    local name pid
    for name in "${PIDS[@]}"; do
        [ -f "$STATE/$name.pid" ] || continue
        pid=$(cat "$STATE/$name.pid")
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        fi
        rm -f "$STATE/$name.pid"
    done
    say "stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) answers ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 64 ;;
esac
