#!/usr/bin/env bash
# Start a throw-away single-node SLURM (Debian's Slurm 22.05) on localhost, for tests and by hand.
#
#   sudo tests/slurm/start_slurm.sh [STATE_DIR]      # prints the STATE_DIR it used (last line)
#   source STATE_DIR/env.sh                          # SLURM_CONF (+ POISONCERT_SLURM_PARTITION) for clients
#   snakemake --profile profiles/slurm ...            # env.sh sets POISONCERT_SLURM_STATUS_COMMAND=squeue
#   sudo tests/slurm/stop_slurm.sh STATE_DIR         # kills the daemons by PID, removes STATE_DIR
#
# Everything lives in STATE_DIR (default: a new /tmp/poisoncert-slurm.XXXXXX): slurm.conf, its own
# munge key and socket, spool and state directories, PID files and daemon logs. The one thing outside
# it is the link /etc/slurm/slurm.conf -> STATE_DIR/slurm.conf (srun inside jobs reads only the
# default path), so it refuses to run (exit 3) where /etc/slurm/slurm.conf already exists; the TCP
# ports are POISONCERT_SLURMCTLD_PORT / POISONCERT_SLURMD_PORT (default 6817 / 6818).
# There is no slurmdbd: `sacct` does not work, so job states must come from squeue (env.sh sets
# POISONCERT_SLURM_STATUS_COMMAND=squeue for profiles/slurm; MinJobAge=300 keeps finished jobs
# visible to squeue for 5 minutes, >= 3 x the plugin's first status-check delay, 40 s by default).
#
# Needs root (the daemons run as root, munged as user munge) and Debian's packages
# munge slurmctld slurmd slurm-client, which it installs with apt-get when missing.
# Exit status: 0 started; 3 cannot run here (not root, no apt-get, install failed, another SLURM
# configured in /etc/slurm); other: failed (and whatever it had started is stopped again).
set -euo pipefail

die() { echo "start_slurm: $*" >&2; exit "${2:-1}"; }
cannot() { echo "start_slurm: cannot run here: $*" >&2; exit 3; }

[ "$(uname -s)" = Linux ] || cannot "not Linux"
[ "$(id -u)" = 0 ] || cannot "needs root (runs slurmctld/slurmd as root and munged as user munge)"

# --- packages -----------------------------------------------------------------------------------
need_install=0
for exe in munged mungekey slurmctld slurmd sbatch squeue; do
    command -v "$exe" >/dev/null 2>&1 || [ -x "/usr/sbin/$exe" ] || need_install=1
done
if [ "$need_install" = 1 ]; then
    command -v apt-get >/dev/null 2>&1 || cannot "SLURM is not installed and apt-get is not available"
    echo "start_slurm: installing munge slurmctld slurmd slurm-client with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
        munge slurmctld slurmd slurm-client; } >/tmp/poisoncert-slurm-apt.log 2>&1; then
        tail -5 /tmp/poisoncert-slurm-apt.log >&2
        cannot "apt-get install munge slurmctld slurmd slurm-client failed (log: /tmp/poisoncert-slurm-apt.log)"
    fi
    rm -f /tmp/poisoncert-slurm-apt.log
fi
export PATH="$PATH:/usr/sbin:/sbin"
id munge >/dev/null 2>&1 || die "user munge missing (the munge package creates it)"

# srun inside a job does not see SLURM_CONF (snakemake's slurm-jobstep plugin drops every SLURM_*
# variable before its nested srun), so the file must also be at the default path: link it there,
# unless a real SLURM already owns that path.
if [ -L /etc/slurm/slurm.conf ] && [ ! -e /etc/slurm/slurm.conf ] &&
    [[ "$(readlink /etc/slurm/slurm.conf)" == */poisoncert-slurm.*/slurm.conf ]]; then
    rm -f /etc/slurm/slurm.conf # dangling link left by an earlier run that was killed
fi
if [ -e /etc/slurm/slurm.conf ] || [ -L /etc/slurm/slurm.conf ]; then
    cannot "/etc/slurm/slurm.conf exists (-> $(readlink -f /etc/slurm/slurm.conf)): another SLURM is set up here (one of start_slurm.sh? stop it with stop_slurm.sh)"
fi

# --- state directory ----------------------------------------------------------------------------
STATE="${1:-}"
if [ -z "$STATE" ]; then
    STATE="$(mktemp -d /tmp/poisoncert-slurm.XXXXXX)"
else
    mkdir -p "$STATE"
fi
STATE="$(cd "$STATE" && pwd)"
chmod 755 "$STATE"
# on any failure from here on: stop what was started and remove the state directory
trap 'rc=$?; if [ $rc != 0 ]; then KEEP_SLURM_STATE=${KEEP_SLURM_STATE:-0} bash "$(dirname "$0")/stop_slurm.sh" "$STATE" >/dev/null 2>&1 || true; fi' EXIT
mkdir -p "$STATE/munge" "$STATE/munge-run" "$STATE/ctld" "$STATE/spool" "$STATE/log"
chown munge:munge "$STATE/munge" "$STATE/munge-run"
chmod 700 "$STATE/munge"
chmod 755 "$STATE/munge-run"  # munged wants the socket's directory searchable by all

# --- munge: own key, own socket -----------------------------------------------------------------
MUNGE_SOCKET="$STATE/munge-run/munge.socket"
if [ ! -f "$STATE/munge/munge.key" ]; then
    mungekey --create --keyfile="$STATE/munge/munge.key" >/dev/null
    chown munge:munge "$STATE/munge/munge.key"
    chmod 600 "$STATE/munge/munge.key"
fi
runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$STATE/munge/munge.key" \
    --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log" \
    --seed-file="$STATE/munge/munged.seed" \
    || { tail -3 "$STATE/munge/munged.log" >&2 2>/dev/null || true; die "munged did not start"; }
for _ in $(seq 50); do [ -S "$MUNGE_SOCKET" ] && break; sleep 0.1; done
[ -S "$MUNGE_SOCKET" ] || die "munged socket $MUNGE_SOCKET did not appear"

# --- slurm.conf ---------------------------------------------------------------------------------
HOST="$(hostname -s)"
PARTITION="${POISONCERT_SLURM_PARTITION:-debug}"
NODE="$(slurmd -C | head -1)"  # NodeName=<host> CPUs=... RealMemory=...
CPUS="$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$NODE")"
MEM="$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$NODE")"
[ -n "$CPUS" ] && [ -n "$MEM" ] || die "cannot parse 'slurmd -C': $NODE"
# Memory is not a consumable resource here (CR_CPU) and not enforced (no cgroups); the node claims
# at least 64 GB (SlurmdParameters=config_overrides lets the config exceed the hardware) so that the
# profile's memory requests (a group of 8 train jobs asks for 8 x 8000 MB) fit a small machine too.
[ "$MEM" -ge "${POISONCERT_SLURM_NODE_MEM_MB:-65536}" ] || MEM="${POISONCERT_SLURM_NODE_MEM_MB:-65536}"
# Likewise at least 8 CPUs (oversubscribing a smaller machine), so that a group job of the profile
# (8 train jobs x 1 thread) can start.
[ "$CPUS" -ge "${POISONCERT_SLURM_NODE_CPUS:-8}" ] || CPUS="${POISONCERT_SLURM_NODE_CPUS:-8}"
cat >"$STATE/slurm.conf" <<EOF
# Written by tests/slurm/start_slurm.sh: single node, no accounting, no cgroups, no systemd.
ClusterName=poisoncert
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=${POISONCERT_SLURMCTLD_PORT:-6817}
SlurmdPort=${POISONCERT_SLURMD_PORT:-6818}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
ReturnToService=2
# finished jobs stay visible to squeue for 5 minutes (the status check needs >= 3 x its first delay)
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmdTimeout=300
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$STATE/slurm.conf"
mkdir -p /etc/slurm
ln -s "$STATE/slurm.conf" /etc/slurm/slurm.conf
cat >"$STATE/env.sh" <<EOF
export SLURM_CONF=$STATE/slurm.conf
export POISONCERT_SLURM_PARTITION=$PARTITION
export POISONCERT_SLURM_STATUS_COMMAND=squeue
EOF

# --- daemons ------------------------------------------------------------------------------------
slurmctld -i || die "slurmctld did not start (log: $STATE/log/slurmctld.log)"
slurmd -N "$HOST" || die "slurmd did not start (log: $STATE/log/slurmd.log)"
state=""
for _ in $(seq 150); do
    state="$(sinfo -h -N -o %t 2>/dev/null | head -1 || true)"
    case "$state" in idle | mix | alloc) break ;; esac
    sleep 0.2
done
case "$state" in
idle | mix | alloc) ;;
*)
    tail -5 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
    die "node $HOST is not up (state '$state'); logs in $STATE/log"
    ;;
esac
echo "start_slurm: SLURM up: partition $PARTITION, node $HOST ($CPUS CPUs, $MEM MB); source $STATE/env.sh" >&2
echo "$STATE"
