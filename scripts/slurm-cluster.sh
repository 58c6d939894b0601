#!/usr/bin/env bash
# A real Slurm 22.05 cluster on this one host: its own slurmctld, N slurmd "nodes", ports, state and spool.
#
#   slurm-cluster.sh start BASE NAME NODES CTLD_PORT NODE_PORT_BASE [GPU_TYPE]
#   slurm-cluster.sh stop  BASE
#
# Nodes are named after the cluster (NAME "oci-hpc" -> ocihpc[01-08]); node i listens on NODE_PORT_BASE+i-1.
# Each node has 8 GPUs (GPUS_PER_NODE) of GPU_TYPE (default h100) as GRES on fake character devices: Slurm
# 22.05 drops GPUs without a device File. Needs root (mknod, slurmd). Several clusters can run side by side;
# they share one munged, which the last cluster to stop shuts down if one of them started it.
# `start` is idempotent: daemons whose pid file points at a live process are left alone, so it also
# brings back a cluster whose slurmctld was killed. Prints `export SLURM_CONF=...` when every node is idle.
set -euo pipefail

CMD=${1:?usage: slurm-cluster.sh start|stop BASE [NAME NODES CTLD_PORT NODE_PORT_BASE [GPU_TYPE]]}
BASE=${2:?BASE directory missing}
BASE=$(realpath -m "$BASE")
SLURM_CONF=$BASE/etc/slurm.conf
export SLURM_CONF
MUNGE_DIR=${OVERCAST_MUNGE_DIR:-/tmp/overcast-munge}   # shared munged: pid file + list of clusters using it
WAIT_S=${SLURM_START_TIMEOUT:-30}

q() { "$@" </dev/null >/dev/null 2>&1; }   # daemons must not inherit the caller's stdout (it would hang)
# A dead daemon stays a zombie until PID 1 reaps it, which on some machines is never: that is dead.
running() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
alive() {  # the pid file's process runs
  local p
  p=$(cat "$1" 2>/dev/null) && [ -n "$p" ] && running "$p"
}

stop_pids() {  # TERM, wait up to 5 s, then KILL: a slurmd whose munged is gone ignores TERM
  local pids="$*" left i p
  [ -n "$pids" ] || return 0
  kill $pids 2>/dev/null || true
  for i in $(seq 50); do
    left=""
    for p in $pids; do running "$p" && left="$left $p"; done
    [ -z "$left" ] && return 0
    sleep 0.1
  done
  kill -9 $left 2>/dev/null || true
}

munge_release() {  # drop this cluster from the munged users; stop munged if we started it and nobody is left
  mkdir -p "$MUNGE_DIR"
  (
    flock -w 10 9
    : >"$MUNGE_DIR/users.new"
    while read -r user; do  # keep the other clusters that still run (a crashed run leaves its line)
      [ "$user" != "$BASE" ] || continue
      for f in "$user"/run/*.pid; do alive "$f" && { echo "$user" >>"$MUNGE_DIR/users.new"; break; }; done
    done <"$MUNGE_DIR/users" 2>/dev/null || true
    mv "$MUNGE_DIR/users.new" "$MUNGE_DIR/users"
    if [ ! -s "$MUNGE_DIR/users" ] && [ -f "$MUNGE_DIR/munged.pid" ]; then
      stop_pids "$(cat "$MUNGE_DIR/munged.pid")"
      rm -f "$MUNGE_DIR/munged.pid"
    fi
  ) 9>"$MUNGE_DIR/lock"
}

munge_acquire() {  # reuse a working munged (ours or the system's), else start one
  mkdir -p "$MUNGE_DIR"
  (
    flock -w 10 9
    grep -qxF "$BASE" "$MUNGE_DIR/users" 2>/dev/null || echo "$BASE" >>"$MUNGE_DIR/users"
    if ! munge -n >/dev/null 2>&1; then
      [ -f /etc/munge/munge.key ] || { echo "no /etc/munge/munge.key: install the munge package" >&2; exit 1; }
      mkdir -p /run/munge && chown munge:munge /run/munge
      q runuser -u munge -- /usr/sbin/munged 9>&-   # must not hold our lock
      cp /run/munge/munged.pid "$MUNGE_DIR/munged.pid"
      for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
      munge -n >/dev/null 2>&1 || { echo "munged did not start" >&2; exit 1; }
    fi
  ) 9>"$MUNGE_DIR/lock"
}

leftovers() {  # processes of this cluster that outlive their slurmd: stepds (files under BASE) + children
  local p ps_out found="" more changed f line rest
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = $$ ] && continue
    if [[ "$(readlink "/proc/$p/cwd" 2>/dev/null)" == "$BASE"/* ]] ||
      find "/proc/$p/fd" -maxdepth 1 -lname "$BASE/*" 2>/dev/null | grep -q .; then
      found="$found $p"
    fi
  done
  [ -n "$found" ] || return 0
  ps_out=$(for f in /proc/[0-9]*/stat; do  # "pid ppid" from /proc (procps may not be installed)
    read -r line <"$f" 2>/dev/null || continue
    rest=${line##*) }  # after "(comm) ", which may hold spaces: state ppid ...
    set -- $rest
    echo "${f//[^0-9]/} $2"
  done)
  changed=1
  while [ -n "$changed" ]; do  # add descendants until nothing new (bounded by the process count)
    changed=""
    more=$(echo "$ps_out" | awk -v set=" $found " 'index(set, " " $2 " ") && !index(set, " " $1 " ") {print $1}')
    [ -n "$more" ] && { found="$found $(echo $more)"; changed=1; }
  done
  echo $found
}

if [ "$CMD" = stop ]; then
  # Jobs first, while slurmctld can still end them cleanly on their nodes (bounded wait).
  if alive "$BASE/run/slurmctld.pid"; then
    jobs=$(timeout 10 squeue -h -t PD,R,CG,CF,S -o %i 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      timeout 10 scancel $jobs >/dev/null 2>&1 || true
      for _ in $(seq 100); do
        [ -z "$(timeout 5 squeue -h -t R,CG,CF -o %i 2>/dev/null)" ] && break
        sleep 0.1
      done
    fi
  fi
  # Then slurmd, slurmctld and munged, in that order: a slurmd without munged hangs on the way down.
  nodes=""
  for f in "$BASE"/run/slurmd-*.pid; do alive "$f" && nodes="$nodes $(cat "$f")"; rm -f "$f"; done
  stop_pids $nodes
  if alive "$BASE/run/slurmctld.pid"; then stop_pids "$(cat "$BASE/run/slurmctld.pid")"; fi
  rm -f "$BASE/run/slurmctld.pid"
  left=$(leftovers)  # job steps of a cluster whose slurmctld was already gone: orphans, no grace
  [ -z "$left" ] || kill -9 $left 2>/dev/null || true
  munge_release
  exit 0
fi
[ "$CMD" = start ] || { echo "unknown command '$CMD': use start or stop" >&2; exit 2; }

NAME=${3:?NAME missing}
N=${4:?NODES missing}
CTLD_PORT=${5:?CTLD_PORT missing}
NODE_PORT_BASE=${6:?NODE_PORT_BASE missing}
GPU_TYPE=${7:-h100}
GPUS=${GPUS_PER_NODE:-8}
[[ "$N" =~ ^[0-9]+$ && "$N" -ge 1 && "$N" -le 99 ]] || { echo "NODES must be 1..99, got '$N'" >&2; exit 2; }
[[ "$CTLD_PORT" =~ ^[0-9]+$ && "$NODE_PORT_BASE" =~ ^[0-9]+$ ]] || { echo "ports must be numbers" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "slurm-cluster.sh needs root (mknod for fake GPUs, slurmd)" >&2; exit 1; }
command -v slurmctld >/dev/null || { echo "slurmctld not found: apt-get install slurm-wlm munge" >&2; exit 1; }

PREFIX=$(echo "$NAME" | tr -cd 'a-z0-9')
[ -n "$PREFIX" ] || { echo "NAME '$NAME' needs at least one lower-case letter or digit" >&2; exit 2; }
NN=$(printf '%02d' "$N")
LAST=$((GPUS - 1))

mkdir -p "$BASE"/{etc,state,log,run,dev}
for i in $(seq 0 "$LAST"); do [ -c "$BASE/dev/nvidia$i" ] || mknod "$BASE/dev/nvidia$i" c 195 "$i"; done
for i in $(seq 1 "$N"); do mkdir -p "$BASE/spool/$PREFIX$(printf '%02d' "$i")"; done

cat >"$SLURM_CONF" <<CONF
ClusterName=$PREFIX
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool/%n
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd-%n.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerParameters=batch_sched_delay=0
KillWait=5
MessageTimeout=5
MaxJobCount=100000
GresTypes=gpu
NodeName=$PREFIX[01-$NN] NodeHostname=localhost NodeAddr=127.0.0.1 Port=[$NODE_PORT_BASE-$((NODE_PORT_BASE + N - 1))] CPUs=64 RealMemory=512000 Gres=gpu:$GPU_TYPE:$GPUS State=UNKNOWN
PartitionName=gpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
cat >"$BASE/etc/gres.conf" <<CONF
AutoDetect=off
NodeName=$PREFIX[01-$NN] Name=gpu Type=$GPU_TYPE File=$BASE/dev/nvidia[0-$LAST]
CONF

start_ctld() {  # right after a slurmctld was killed its port can still be taken for a moment: retry
  local try i
  for try in 1 2 3 4 5; do
    q slurmctld -f "$SLURM_CONF"
    for i in $(seq 20); do alive "$BASE/run/slurmctld.pid" && return 0; sleep 0.1; done
    sleep 1
  done
  echo "slurmctld of $NAME did not start; last log lines:" >&2
  tail -5 "$BASE/log/slurmctld.log" >&2 || true
  exit 1
}

munge_acquire
alive "$BASE/run/slurmctld.pid" || start_ctld
for i in $(seq 1 "$N"); do
  node=$PREFIX$(printf '%02d' "$i")
  alive "$BASE/run/slurmd-$node.pid" || q slurmd -f "$SLURM_CONF" -N "$node"
done

deadline=$((SECONDS + WAIT_S))
until [ "$(timeout 5 sinfo -h -N -t idle,alloc,mix -o %N 2>/dev/null | wc -l)" -ge "$N" ]; do
  if ! alive "$BASE/run/slurmctld.pid"; then
    echo "slurmctld of $NAME is not running; last log lines:" >&2
    tail -5 "$BASE/log/slurmctld.log" >&2 || true
    exit 1
  fi
  if [ $SECONDS -ge "$deadline" ]; then
    echo "cluster $NAME: not every node is up after ${WAIT_S}s" >&2
    timeout 5 sinfo -N >&2 || true
    exit 1
  fi
  sleep 0.1
done
echo "export SLURM_CONF=$SLURM_CONF"
