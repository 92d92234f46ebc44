#!/usr/bin/env bash
# Stop the SLURM started by start_slurm.sh STATE_DIR: cancel its jobs, kill slurmd, slurmctld and
# munged by the PIDs in their PID files, then remove STATE_DIR (keep it with KEEP_SLURM_STATE=1).
#   sudo tests/slurm/stop_slurm.sh STATE_DIR
set -uo pipefail

STATE="${1:?usage: stop_slurm.sh STATE_DIR}"
[ -d "$STATE/munge" ] || { echo "stop_slurm: $STATE is not a start_slurm.sh state directory" >&2; exit 1; }
export SLURM_CONF="$STATE/slurm.conf" PATH="$PATH:/usr/sbin:/sbin"

# jobs first, so that no slurmstepd outlives the daemons
if [ -f "$STATE/slurmctld.pid" ] && [ -f "$STATE/slurm.conf" ]; then
    timeout 10 scancel -u "$(id -un)" >/dev/null 2>&1 || true
    for _ in $(seq 50); do
        [ -z "$(timeout 5 squeue -h -t running,completing,pending -o %i 2>/dev/null)" ] && break
        sleep 0.2
    done
fi

stop_pidfile() { # PIDFILE NAME: SIGTERM, then SIGKILL after 5 s; only if the PID is still NAME
    local pidfile=$1 name=$2 pid
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile" 2>/dev/null)"
    [ -n "$pid" ] || return 0
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$pidfile"
}
stop_pidfile "$STATE/slurmd.pid" slurmd
stop_pidfile "$STATE/slurmctld.pid" slurmctld
stop_pidfile "$STATE/munge/munged.pid" munged

# the link start_slurm.sh made at the default config path (only if it is ours)
if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$STATE/slurm.conf" ]; then
    rm -f /etc/slurm/slurm.conf
fi

if [ "${KEEP_SLURM_STATE:-0}" = 1 ]; then
    echo "stop_slurm: stopped; state kept in $STATE" >&2
else
    rm -rf "$STATE"
    echo "stop_slurm: stopped; removed $STATE" >&2
fi
