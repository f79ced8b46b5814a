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

# proc_is, our_pid, alive: which processes are ours (the same test as slurm_up.sh).
source "$(dirname "${BASH_SOURCE[0]}")/slurm_procs.sh"

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
