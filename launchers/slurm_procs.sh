# Shared by slurm_up.sh and slurm_down.sh (sourced; needs $PREFIX): which processes are ours.

# alive PID: the process exists and is not a zombie (PID 1 here may never reap it).
alive() {
  local state
  state="$(sed -e 's/^.*) //' 2>/dev/null < "/proc/$1/stat")" || return 1
  state="${state%% *}"
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# proc_is NAME PID: PID is a live (not zombie) process called NAME that this script
# started: an argument names our prefix, or its environment has OUTRO_SLURM_DAEMON=<prefix>
# (set only on the daemons we start; a user's shell with SLURM_CONF exported never matches).
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

# our_pid NAME PIDFILE: print the pid of our NAME daemon, from PIDFILE or, when that is
# missing or stale, from a scan of /proc (same test). Fails when none runs.
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
