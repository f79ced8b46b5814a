#!/usr/bin/env bash
# Bring up a real single-node SLURM cluster (with accounting) on this machine, as root,
# without systemd. Idempotent: run it any number of times; what already runs is kept.
#
#   bash launchers/slurm_up.sh          # then: export SLURM_CONF=<prefix>/etc/slurm.conf
#   bash launchers/slurm_down.sh [--purge]
#
# Everything lives under one prefix folder: configs (etc/), pid files (run/, munge/,
# mysql-run/), logs (log/), slurmctld state (state/), slurmd spool (spool/), the munge
# key and socket (munge/) and the MariaDB data (mysql/). A system /etc/slurm or
# /etc/munge is never touched: our clients find our config through SLURM_CONF, and our
# munged listens on its own socket (AuthInfo=socket=..., AccountingStoragePass=...).
#
# Environment (all optional):
#   OUTRO_SLURM_DIR          prefix folder                    (default /tmp/outro_slurm)
#   OUTRO_SLURM_TIMEOUT      seconds to wait for each daemon  (default 90)
#   OUTRO_SLURM_CLUSTER      ClusterName                      (default outro)
#   OUTRO_SLURM_CTLD_PORT    slurmctld port                   (default 6817)
#   OUTRO_SLURM_SLURMD_PORT  slurmd port                      (default 6818)
#   OUTRO_SLURM_DBD_PORT     slurmdbd port                    (default 6819)
#   OUTRO_SLURM_DB_PORT      MariaDB port on 127.0.0.1        (default 16306)
#   OUTRO_SLURM_CRED_EXPIRE  credential lifetime in s; also how long a requeued job
#                            waits before it may start again  (default 10, minimum 5)
#   OUTRO_SLURM_MAX_ARRAY_SIZE  MaxArraySize: array indices stay below it (default 10001)
#
# Exit codes: 0 up; 1 a daemon failed to start (the logs are named); 20 not root, or not
# Debian with apt; 21 the packages are missing and cannot be installed. (Not 2: bash itself
# exits 2 on a syntax error, which must never read as "this machine cannot have a cluster".)
set -euo pipefail

PREFIX="${OUTRO_SLURM_DIR:-/tmp/outro_slurm}"
TIMEOUT="${OUTRO_SLURM_TIMEOUT:-90}"
CLUSTER="${OUTRO_SLURM_CLUSTER:-outro}"
CTLD_PORT="${OUTRO_SLURM_CTLD_PORT:-6817}"
SLURMD_PORT="${OUTRO_SLURM_SLURMD_PORT:-6818}"
DBD_PORT="${OUTRO_SLURM_DBD_PORT:-6819}"
DB_PORT="${OUTRO_SLURM_DB_PORT:-16306}"
CRED_EXPIRE="${OUTRO_SLURM_CRED_EXPIRE:-10}"
MAX_ARRAY_SIZE="${OUTRO_SLURM_MAX_ARRAY_SIZE:-10001}"
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
T0=$(date +%s.%N)

say() { echo "slurm_up: $*"; }
die() { echo "slurm_up: ERROR: $1" >&2; exit "${2:-1}"; }
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

case "$PREFIX" in /?*) ;; *) die "OUTRO_SLURM_DIR must be an absolute path (got '$PREFIX')" 20 ;; esac
PREFIX="${PREFIX%/}"
[ "$(id -u)" = 0 ] || die "must run as root (the daemons run as root, munge and mysql); current uid is $(id -u)" 20
[ -r /etc/debian_version ] && command -v apt-get >/dev/null && command -v dpkg-query >/dev/null \
  || die "needs Debian with apt-get and dpkg (no /etc/debian_version or apt-get here)" 20

ETC="$PREFIX/etc" RUN="$PREFIX/run" LOG="$PREFIX/log" STATE="$PREFIX/state"
SPOOL="$PREFIX/spool" MUNGE="$PREFIX/munge" DBDATA="$PREFIX/mysql" DBRUN="$PREFIX/mysql-run"
CONF="$ETC/slurm.conf"
MUNGE_SOCK="$MUNGE/munge.socket.2"
DB_SOCK="$DBRUN/mysqld.sock"
export SLURM_CONF="$CONF"
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

# --- helpers ------------------------------------------------------------------------
# proc_is, our_pid, alive: which processes are ours (shared with slurm_down.sh).
source "$(dirname "${BASH_SOURCE[0]}")/slurm_procs.sh"

# running NAME PIDFILE: our NAME daemon runs (its pid file is rewritten if it was lost).
running() {
  local pid
  pid="$(our_pid "$1" "$2")" || return 1
  [ "$(cat "$2" 2>/dev/null)" = "$pid" ] || echo "$pid" > "$2"
}

# wait_for WHAT LOGFILE NAME PIDFILE COMMAND...: retry COMMAND until it succeeds; fail
# after TIMEOUT seconds, or at once when daemon NAME (unless "-") has been gone for 3 s.
wait_for() {
  local what="$1" logf="$2" name="$3" pidfile="$4"; shift 4
  local now deadline gone_since=""
  deadline=$(( $(date +%s) + TIMEOUT ))
  until "$@" >/dev/null 2>&1; do
    now=$(date +%s)
    if [ "$name" != - ] && ! our_pid "$name" "$pidfile" >/dev/null; then
      [ -n "$gone_since" ] || gone_since=$now
      if [ $(( now - gone_since )) -ge 3 ]; then
        echo "slurm_up: ERROR: $name is not running (waiting for $what); last lines of $logf:" >&2
        tail -n 25 "$logf" >&2 2>/dev/null || true
        exit 1
      fi
    else
      gone_since=""
    fi
    if [ "$now" -ge "$deadline" ]; then
      echo "slurm_up: ERROR: timed out after ${TIMEOUT}s waiting for $what; last lines of $logf:" >&2
      tail -n 25 "$logf" >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.3
  done
}

# write_if_changed FILE MODE: write stdin to FILE unless it already has that content;
# succeeds only when the file changed.
write_if_changed() {
  local file="$1" mode="$2" tmp
  tmp="$(mktemp "$file.XXXXXX")"
  cat > "$tmp"
  chmod "$mode" "$tmp"
  if [ -f "$file" ] && cmp -s "$tmp" "$file"; then rm -f "$tmp"; return 1; fi
  mv -f "$tmp" "$file"
  return 0
}

pkg_installed() { dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed; }

# --- 1. packages ----------------------------------------------------------------------
mkdir -p "$LOG"
# marks the folder as ours: slurm_down.sh --purge deletes only a folder with this file
touch "$PREFIX/.outro_slurm"
missing=()
for p in "${PACKAGES[@]}"; do pkg_installed "$p" || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]} (apt-get, log: $LOG/apt.log)"
  # Keep the packages' scripts from starting system services (there is no systemd): a
  # temporary policy-rc.d, only where none exists already.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
  fi
  apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
      "${missing[@]}" >> "$LOG/apt.log" 2>&1
  }
  ok=1
  if ! apt_install; then
    say "apt-get install failed; running apt-get update and trying again"
    { DEBIAN_FRONTEND=noninteractive apt-get update -q -o DPkg::Lock::Timeout=300 >> "$LOG/apt.log" 2>&1 \
        && apt_install; } || ok=0
  fi
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  if [ "$ok" = 0 ]; then
    tail -n 15 "$LOG/apt.log" >&2 || true
    die "cannot install the Debian packages ${missing[*]} with apt-get (no apt access?); see $LOG/apt.log" 21
  fi
fi
for c in munged mungekey munge unmunge slurmctld slurmd slurmdbd sbatch sacct sacctmgr sinfo \
         mariadbd mariadb-install-db mariadb runuser setsid; do
  command -v "$c" >/dev/null || die "command '$c' not found after installing ${PACKAGES[*]}" 21
done
getent passwd munge >/dev/null || die "user 'munge' missing (package munge did not create it)" 21
getent passwd mysql >/dev/null || die "user 'mysql' missing (package mariadb-server did not create it)" 21

# --- 2. folders, configs --------------------------------------------------------------
install -d -m 755 "$PREFIX" "$ETC" "$RUN" "$LOG" "$SPOOL"
install -d -m 700 "$STATE"
install -d -m 755 -o munge -g munge "$MUNGE"
install -d -m 700 -o mysql -g mysql "$DBDATA"
install -d -m 755 -o mysql -g mysql "$DBRUN"

NCPU="$(nproc)"
MEM_MB=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
MARGIN=$(( MEM_MB / 20 )); [ "$MARGIN" -lt 512 ] && MARGIN=512
REAL_MB=$(( MEM_MB - MARGIN )); [ "$REAL_MB" -lt 256 ] && REAL_MB=256

if [ ! -s "$ETC/dbpass" ]; then
  (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$ETC/dbpass")
fi
DBPASS="$(cat "$ETC/dbpass")"

changed=0
write_if_changed "$CONF" 644 <<END_SLURM_CONF && changed=1 || true
# Written by outro_sweep launchers/slurm_up.sh: a single-node cluster for tests and users.
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# our own munge socket; cred_expire is also how long a requeued job waits to restart
AuthInfo=socket=$MUNGE_SOCK,cred_expire=$CRED_EXPIRE
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups here (no systemd): track processes through /proc, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SlurmdParameters=config_overrides
ReturnToService=2
# Scheduling: one job per CPU, memory not consumed, the scheduler runs often so that
# array tasks start at once.
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,sched_min_interval=0,default_queue_depth=1000,bf_interval=1,bf_resolution=1,bf_continue
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobRequeue=1
PreemptType=preempt/none
MinJobAge=30
KillWait=5
MaxArraySize=$MAX_ARRAY_SIZE
MaxJobCount=50000
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
# Accounting: sacct and submitit read real job states through slurmdbd + MariaDB.
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# for connections to slurmdbd the munge socket is named here, not in AuthInfo
AccountingStoragePass=$MUNGE_SOCK
JobCompType=jobcomp/none
MailProg=/bin/true
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$REAL_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
END_SLURM_CONF

write_if_changed "$ETC/slurmdbd.conf" 600 <<END_DBD_CONF && changed=1 || true
# Written by outro_sweep launchers/slurm_up.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
DebugLevel=info
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DBPASS
StorageLoc=slurm_acct_db
END_DBD_CONF

if [ "$changed" = 1 ]; then
  for d in slurmd slurmctld slurmdbd; do
    if our_pid "$d" "$RUN/$d.pid" >/dev/null; then
      say "the configuration changed while the daemons run: restarting them"
      OUTRO_SLURM_DIR="$PREFIX" bash "$HERE/slurm_down.sh"
      break
    fi
  done
fi

# --- 3. munge (own key and socket) ----------------------------------------------------
KEY="$MUNGE/munge.key"
if [ ! -s "$KEY" ]; then
  say "creating munge key $KEY"
  rm -f "$KEY"
  mungekey --create --keyfile="$KEY" >> "$LOG/munge-setup.log" 2>&1 \
    || dd if=/dev/urandom of="$KEY" bs=1 count=1024 status=none
fi
chown munge:munge "$KEY"; chmod 400 "$KEY"
if ! running munged "$MUNGE/munged.pid"; then
  rm -f "$MUNGE/munged.pid" "$MUNGE_SOCK" "$MUNGE_SOCK.lock"
  touch "$LOG/munged.log"; chown munge:munge "$LOG/munged.log"
  OUTRO_SLURM_DAEMON="$PREFIX" runuser -u munge -- munged --key-file="$KEY" --socket="$MUNGE_SOCK" \
    --pid-file="$MUNGE/munged.pid" --log-file="$LOG/munged.log" --seed-file="$MUNGE/munged.seed" \
    </dev/null >> "$LOG/munged.out" 2>&1 || die "munged failed to start; see $LOG/munged.log and $LOG/munged.out"
fi
munge_ok() { munge -n -S "$MUNGE_SOCK" | unmunge -S "$MUNGE_SOCK"; }
wait_for "munged (socket $MUNGE_SOCK)" "$LOG/munged.log" munged "$MUNGE/munged.pid" munge_ok

# --- 4. MariaDB (own data folder and socket, port on 127.0.0.1) ------------------------
DBCLI=(mariadb --no-defaults --socket="$DB_SOCK" -uroot)
if [ ! -d "$DBDATA/mysql" ]; then
  say "initialising MariaDB in $DBDATA"
  mariadb-install-db --no-defaults --datadir="$DBDATA" --user=mysql \
    --auth-root-authentication-method=socket --skip-test-db >> "$LOG/mariadb-install.log" 2>&1 \
    || { tail -n 20 "$LOG/mariadb-install.log" >&2; die "mariadb-install-db failed; see $LOG/mariadb-install.log"; }
fi
if ! running mariadbd "$DBRUN/mariadbd.pid"; then
  rm -f "$DBRUN/mariadbd.pid" "$DB_SOCK"
  # a data folder left from an install whose mysql user had another uid
  [ "$(stat -c %U "$DBDATA/mysql" 2>/dev/null)" = mysql ] || chown -R mysql:mysql "$DBDATA"
  touch "$LOG/mariadb.log"; chown mysql:mysql "$LOG/mariadb.log"
  OUTRO_SLURM_DAEMON="$PREFIX" setsid mariadbd --no-defaults --datadir="$DBDATA" --socket="$DB_SOCK" \
    --pid-file="$DBRUN/mariadbd.pid" --log-error="$LOG/mariadb.log" --user=mysql \
    --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
    --innodb-buffer-pool-size=512M --innodb-log-file-size=64M --innodb-lock-wait-timeout=900 \
    --max-connections=200 </dev/null >> "$LOG/mariadb.out" 2>&1 &
fi
wait_for "MariaDB (socket $DB_SOCK, port $DB_PORT)" "$LOG/mariadb.log" mariadbd "$DBRUN/mariadbd.pid" \
  "${DBCLI[@]}" -e 'SELECT 1'
"${DBCLI[@]}" >> "$LOG/mariadb-setup.log" 2>&1 <<END_SQL || die "creating the accounting database failed; see $LOG/mariadb-setup.log"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DBPASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DBPASS';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DBPASS';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DBPASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
END_SQL

# --- 5. slurmdbd, and the cluster in the accounting database ---------------------------
if ! running slurmdbd "$RUN/slurmdbd.pid"; then
  rm -f "$RUN/slurmdbd.pid"
  # slurmdbd reads the slurmdbd.conf beside $SLURM_CONF (exported above).
  OUTRO_SLURM_DAEMON="$PREFIX" slurmdbd </dev/null >> "$LOG/slurmdbd.out" 2>&1 || die "slurmdbd failed to start; see $LOG/slurmdbd.log"
fi
wait_for "slurmdbd (port $DBD_PORT)" "$LOG/slurmdbd.log" slurmdbd "$RUN/slurmdbd.pid" \
  sacctmgr -n -P show cluster format=cluster
if ! sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; then
  say "registering cluster '$CLUSTER' in the accounting database"
  sacctmgr -i add cluster "$CLUSTER" >> "$LOG/sacctmgr.log" 2>&1 \
    || die "sacctmgr add cluster $CLUSTER failed; see $LOG/sacctmgr.log"
fi

# --- 6. slurmctld, slurmd -------------------------------------------------------------
if ! running slurmctld "$RUN/slurmctld.pid"; then
  rm -f "$RUN/slurmctld.pid"
  OUTRO_SLURM_DAEMON="$PREFIX" slurmctld -f "$CONF" </dev/null >> "$LOG/slurmctld.out" 2>&1 || die "slurmctld failed to start; see $LOG/slurmctld.log"
fi
wait_for "slurmctld (port $CTLD_PORT)" "$LOG/slurmctld.log" slurmctld "$RUN/slurmctld.pid" scontrol ping
if ! running slurmd "$RUN/slurmd.pid"; then
  rm -f "$RUN/slurmd.pid"
  # -N localhost: the node is called localhost, whatever this machine's hostname is.
  OUTRO_SLURM_DAEMON="$PREFIX" slurmd -f "$CONF" -N localhost </dev/null >> "$LOG/slurmd.out" 2>&1 || die "slurmd failed to start; see $LOG/slurmd.log"
fi

node_state() { sinfo -h -N -n localhost -o %T 2>/dev/null | head -n1; }
node_idle() {
  local s; s="$(node_state)"
  case "$s" in
    idle|mixed|allocated|completing) return 0 ;;
    # a drained/down node left over from an earlier run: put it back into service
    down*|drain*|fail*) scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true; return 1 ;;
    *) return 1 ;;
  esac
}
wait_for "node localhost to be idle in sinfo" "$LOG/slurmd.log" slurmd "$RUN/slurmd.pid" node_idle
# the controller has registered with slurmdbd (ControlHost set) and sacct answers
ctld_registered() {
  [ -n "$(sacctmgr -n -P show cluster "$CLUSTER" format=controlhost 2>/dev/null | head -n1)" ] \
    && sacct -n -X -o JobID
}
wait_for "slurmctld to register with slurmdbd (sacct)" "$LOG/slurmctld.log" slurmctld "$RUN/slurmctld.pid" \
  ctld_registered

# --- summary ------------------------------------------------------------------------------
pids=""
for d in munged:"$MUNGE/munged.pid" mariadbd:"$DBRUN/mariadbd.pid" slurmdbd:"$RUN/slurmdbd.pid" \
         slurmctld:"$RUN/slurmctld.pid" slurmd:"$RUN/slurmd.pid"; do
  pids="$pids ${d%%:*}=$(our_pid "${d%%:*}" "${d#*:}" || echo '?')"
done
say "cluster '$CLUSTER' up in $(elapsed)s: node localhost $(node_state), CPUs=$NCPU RealMemory=${REAL_MB}M, partition debug (default)"
say "daemons:$pids (pid files and logs under $PREFIX)"
say "to use it:  export SLURM_CONF=$CONF"
say "to stop it: bash $HERE/slurm_down.sh [--purge]"
