#!/usr/bin/env bash
# Stop the single-node SLURM cluster that launchers/slurm_up.sh started: cancel every job
# still queued or running on it, then stop slurmd, slurmctld, slurmdbd, munged and
# mariadbd, and wait until each has exited. A process is stopped only if it is one that
# slurm_up.sh started: the right name, alive, and an argument under our prefix or the
# marker OUTRO_SLURM_DAEMON=<prefix> in its environment (found through its pid file, or
# through /proc if the pid file was lost).
# Idempotent.
#
#   bash launchers/slurm_down.sh            # stop; keep the prefix (state, logs, db)
#   bash launchers/slurm_down.sh --purge    # stop, then delete the prefix folder
#
# Environment: OUTRO_SLURM_DIR (prefix, default /tmp/outro_slurm),
#              OUTRO_SLURM_STOP_TIMEOUT (seconds to wait for each daemon, default 30).
set -euo pipefail

PREFIX="${OUTRO_SLURM_DIR:-/tmp/outro_slurm}"
TIMEOUT="${OUTRO_SLURM_STOP_TIMEOUT:-30}"
purge=0
for a in "$@"; do
  case "$a" in
    --purge) purge=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "slurm_down: unknown argument '$a' (use --purge)" >&2; exit 2 ;;
  esac
done

say() { echo "slurm_down: $*"; }
die() { echo "slurm_down: ERROR: $1" >&2; exit "${2:-1}"; }

case "$PREFIX" in /?*) ;; *) die "OUTRO_SLURM_DIR must be an absolute path (got '$PREFIX')" 2 ;; esac
PREFIX="${PREFIX%/}"
if [ ! -d "$PREFIX" ]; then say "nothing to do: $PREFIX does not exist"; exit 0; fi
[ "$(id -u)" = 0 ] || die "must run as root to stop the daemons; current uid is $(id -u)" 2

RUN="$PREFIX/run"
export SLURM_CONF="$PREFIX/etc/slurm.conf"
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

# proc_is NAME PID (same test as slurm_up.sh): PID is a live, non-zombie process called
# NAME that slurm_up.sh started (an argument under our prefix, or OUTRO_SLURM_DAEMON=<prefix>
# in its environment).
proc_is() {
  local name="$1" pid="$2" comm="" state blob
  [ -n "$pid" ] || return 1
  read -r comm 2>/dev/null < "/proc/$pid/comm" || return 1
  [ "$comm" = "$name" ] || return 1
  state="$(sed -e 's/^.*) //' 2>/dev/null < "/proc/$pid/stat")" || return 1
  state="${state%% *}"
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ] || return 1
  # started by us: an argument names a path under our prefix (slurmd/slurmctld -f,
  # munged --key-file, mariadbd --datadir) or the environment has our marker (slurmdbd)
  blob="$(tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ "$blob" == *"$PREFIX/"* ]] && return 0
  blob="$(tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null || true)"
  [[ $'\n'"$blob"$'\n' == *$'\n'"OUTRO_SLURM_DAEMON=$PREFIX"$'\n'* ]]
}

# our_pid NAME PIDFILE: the pid of our NAME daemon, from PIDFILE or a scan of /proc.
our_pid() {
  local name="$1" pidfile="$2" pid="" p
  if [ -s "$pidfile" ]; then
    pid="$(tr -dc '0-9' < "$pidfile" 2>/dev/null || true)"
    if proc_is "$name" "$pid"; then echo "$pid"; return 0; fi
  fi
  for p in /proc/[0-9]*; do
    p="${p#/proc/}"
    if proc_is "$name" "$p"; then echo "$p"; return 0; fi
  done
  return 1
}

# alive PID: the process exists and is not a zombie (PID 1 here may never reap it).
alive() {
  local state
  state="$(sed -e 's/^.*) //' 2>/dev/null < "/proc/$1/stat")" || return 1
  state="${state%% *}"
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

stopped=""
stop() {
  local name="$1" pidfile="$2" pid i
  if ! pid="$(our_pid "$name" "$pidfile")"; then
    rm -f "$pidfile"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < TIMEOUT * 10; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    say "$name (pid $pid) ignored SIGTERM for ${TIMEOUT}s: sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && die "$name (pid $pid) does not exit"
  fi
  rm -f "$pidfile"
  stopped="$stopped $name($pid)"
}

# 1. cancel what is left on our cluster (only while our controller runs).
if our_pid slurmctld "$RUN/slurmctld.pid" >/dev/null && [ -f "$SLURM_CONF" ]; then
  jobs="$(timeout 20 squeue -h -o %i 2>/dev/null | sort -u | tr '\n' ' ' || true)"
  if [ -n "${jobs// /}" ]; then
    say "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    timeout 20 scancel $jobs 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
      [ -z "$(timeout 10 squeue -h -o %i 2>/dev/null || true)" ] && break
      sleep 0.1
    done
  fi
fi

# 2. the daemons, compute side first (a second pass catches a duplicate copy).
for pass in 1 2; do
  stop slurmd "$RUN/slurmd.pid"
  stop slurmctld "$RUN/slurmctld.pid"
  stop slurmdbd "$RUN/slurmdbd.pid"
  stop munged "$PREFIX/munge/munged.pid"
  stop mariadbd "$PREFIX/mysql-run/mariadbd.pid"
done
if [ -n "$stopped" ]; then say "stopped:$stopped"; else say "no daemon of ours was running"; fi

# 3. optionally remove the prefix, but only a folder that slurm_up.sh made.
if [ "$purge" = 1 ]; then
  [ -e "$PREFIX/.outro_slurm" ] || die "not purging $PREFIX: it has no .outro_slurm marker (not made by slurm_up.sh)"
  case "$PREFIX" in /tmp|/root|/home|/etc|/var|/usr|/opt|/srv|/work) die "refusing to purge $PREFIX" ;; esac
  rm -rf -- "$PREFIX"
  say "purged $PREFIX"
fi
