# shellcheck shell=bash
# A throw-away single-node SLURM on 127.0.0.1 (with a munged of its own) whose whole state lives in one
# folder: scripts/slurm-loopback.sh and tests/e2e/test_slurm.py use it.
#
#   source scripts/slurm-lib.sh
#   slurm_start "$BASE"   # BASE: an empty folder; exports SLURM_CONF=$BASE/slurm.conf
#   sbatch --wrap hostname
#   slurm_stop "$BASE"    # cancels every job, stops the daemons; idempotent, never fails
#
# Runs as root (SlurmUser=root; munged runs as the munge user) and installs Debian's slurm-wlm and munge
# when missing. Partitions: `debug` (the default, no time limit) and `short` (10 minutes), with
# EnforcePartLimits=ALL so that sbatch refuses a longer job rather than leaving it pending. On failure
# slurm_start says why, stops what it started (logs stay under BASE/log and BASE/munge) and returns 1.
# Tested with Debian 12's slurm-wlm 22.05.8 and munge 0.5.15, without systemd.

_slurm_log() { echo "[slurm-lib] $*" >&2; }

# Is TCP port $1 free (nothing bound to it on any address)?  Uses /proc only.
_slurm_port_free() {
    local hex
    hex=$(printf '%04X' "$1")
    ! awk -v p=":$hex" 'NR>1 && substr($2, length($2)-4) == p {found=1} END {exit !found}' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# Print a free TCP port in 20000..59999 that is not in the (space separated) list $1.
_slurm_pick_port() {
    local avoid=" ${1:-} " p i
    for i in $(seq 1 200); do
        p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
        case "$avoid" in *" $p "*) continue ;; esac
        if _slurm_port_free "$p"; then echo "$p"; return 0; fi
    done
    return 1
}

# Is process $1 running?  (a zombie -- e.g. reparented to a PID 1 that reaps
# slowly -- counts as gone)
_slurm_running() {
    local st
    kill -0 "$1" 2>/dev/null || return 1
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# Read a pid file and print the pid if that process is running.
_slurm_pid_alive() {
    local f=$1 pid
    [ -s "$f" ] || return 1
    pid=$(tr -dc '0-9' < "$f" 2>/dev/null) || return 1
    if [ -n "$pid" ] && _slurm_running "$pid"; then echo "$pid"; return 0; fi
    return 1
}

slurm_start() {
    local BASE=${1:?usage: slurm_start BASE}
    BASE=$(cd "$BASE" 2>/dev/null && pwd -P) || { _slurm_log "no such dir: $1"; return 1; }

    if [ "$(id -u)" != 0 ]; then _slurm_log "must run as root"; return 1; fi

    # ---------------------------------------------------------------- packages
    if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
       || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
        _slurm_log "installing slurm-wlm munge"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >"$BASE/apt.log" 2>&1; then
            apt-get update -q >>"$BASE/apt.log" 2>&1 || true
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >>"$BASE/apt.log" 2>&1 \
                || { _slurm_log "apt-get install failed, see $BASE/apt.log"; return 1; }
        fi
    fi
    id munge >/dev/null 2>&1 || { _slurm_log "no munge user"; return 1; }

    local host cpus mem_hw mem
    host=$(hostname -s)
    # The node's hardware, as slurmd sees it: not `nproc`, which answers OMP_NUM_THREADS when it is set
    # (a node of 1 CPU where 2 exist starves a batch job's worker jobs).
    cpus=$(slurmd -C 2>/dev/null | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -n1) || true
    [ -n "$cpus" ] || cpus=$(nproc --all)
    # "slurmd -C" works without any slurm.conf; it prints RealMemory in MB.
    mem_hw=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n1) || true
    [ -n "$mem_hw" ] || mem_hw=$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)
    # a bit under what the hardware reports (slurmd drains a node that reports
    # less memory than configured): 95 %, at most 1 GB less.
    mem=$(( mem_hw - (mem_hw / 20 < 1024 ? mem_hw / 20 : 1024) ))
    local defmem=$(( mem / cpus )); if [ "$defmem" -gt 1024 ]; then defmem=1024; fi

    # -------------------------------------------------------------------- dirs
    # BASE is usually a 0700 mktemp dir owned by root: the munge user must be
    # able to traverse it to reach BASE/munge.
    chmod go+x "$BASE"
    mkdir -p "$BASE/munge" "$BASE/state" "$BASE/spool" "$BASE/log" "$BASE/run"
    chown munge:munge "$BASE/munge"
    chmod 0755 "$BASE/munge"   # munged: socket dir needs o+x

    # ------------------------------------------------------------------- munge
    local MS="$BASE/munge/munge.socket.2" MK="$BASE/munge/munge.key"
    if ! _slurm_pid_alive "$BASE/munge/munged.pid" >/dev/null; then
        if [ ! -s "$MK" ]; then
            if command -v mungekey >/dev/null; then
                mungekey --create --keyfile="$MK" --force >/dev/null 2>&1 || true
            elif command -v create-munge-key >/dev/null; then
                { create-munge-key -f -r >/dev/null 2>&1 && cp /etc/munge/munge.key "$MK"; } || true
            fi
            [ -s "$MK" ] || dd if=/dev/urandom of="$MK" bs=1 count=1024 2>/dev/null
        fi
        chown munge:munge "$MK"; chmod 0400 "$MK"
        rm -f "$MS" "$MS.lock"
        runuser -u munge -- /usr/sbin/munged \
            --socket="$MS" --key-file="$MK" --pid-file="$BASE/munge/munged.pid" \
            --log-file="$BASE/munge/munged.log" --seed-file="$BASE/munge/munged.seed" \
            || { _slurm_log "munged failed: $(tail -n3 "$BASE/munge/munged.log" 2>/dev/null)"; return 1; }
        local i
        for i in $(seq 1 50); do [ -S "$MS" ] && break; sleep 0.1; done
    fi
    if ! munge -n -S "$MS" | unmunge -S "$MS" >/dev/null 2>&1; then
        _slurm_log "munge self-test failed"; slurm_stop "$BASE"; return 1
    fi

    # -------------------------------------------------------------- slurm.conf
    local CONF="$BASE/slurm.conf"
    if [ ! -s "$CONF" ]; then
        local ctldport dport
        ctldport=$(_slurm_pick_port) || { _slurm_log "no free port"; return 1; }
        dport=$(_slurm_pick_port "$ctldport") || { _slurm_log "no free port"; return 1; }
        cat > "$CONF" <<EOF
# generated by slurm-lib.sh for $BASE
ClusterName=cutswap
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=${ctldport}
SlurmdPort=${dport}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=${MS}
SlurmUser=root
SlurmdUser=root
StateSaveLocation=${BASE}/state
SlurmdSpoolDir=${BASE}/spool
SlurmctldPidFile=${BASE}/run/slurmctld.pid
SlurmdPidFile=${BASE}/run/slurmd.pid
SlurmctldLogFile=${BASE}/log/slurmctld.log
SlurmdLogFile=${BASE}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=${defmem}
SchedulerType=sched/backfill
# default batch_sched_delay=3 delays the start of every sbatch job by ~3 s
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# refuse at submit time jobs that exceed partition limits (default: accept & pend forever)
EnforcePartLimits=ALL
MailProg=/bin/true
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=30
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
PartitionName=short Nodes=${host} Default=NO MaxTime=00:10:00 State=UP
EOF
    fi
    export SLURM_CONF="$CONF"

    # ------------------------------------------------------------------ daemons
    if ! _slurm_pid_alive "$BASE/run/slurmctld.pid" >/dev/null; then
        slurmctld -f "$CONF" -i >>"$BASE/log/slurmctld.out" 2>&1 \
            || { _slurm_log "slurmctld failed: $(tail -q -n5 "$BASE/log/slurmctld.out" "$BASE/log/slurmctld.log" 2>/dev/null)"; slurm_stop "$BASE"; return 1; }
    fi
    if ! _slurm_pid_alive "$BASE/run/slurmd.pid" >/dev/null; then
        slurmd -f "$CONF" -N "$host" >>"$BASE/log/slurmd.out" 2>&1 \
            || { _slurm_log "slurmd failed: $(tail -q -n5 "$BASE/log/slurmd.out" "$BASE/log/slurmd.log" 2>/dev/null)"; slurm_stop "$BASE"; return 1; }
    fi

    # -------------------------------------------------------------------- wait
    local t0=$SECONDS state=""
    while [ $(( SECONDS - t0 )) -lt 60 ]; do
        state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -n1) || true
        case "$state" in
            idle|idle\*) [ "$state" = idle ] && break ;;
            down*|drain*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    if [ "$state" != idle ]; then
        _slurm_log "node not idle after 60 s (state='$state')"
        tail -n 5 "$BASE/log/slurmctld.log" "$BASE/log/slurmd.log" >&2 2>/dev/null || true
        slurm_stop "$BASE"; return 1
    fi
    if ! timeout 30 srun -N1 -t 1 true >/dev/null 2>"$BASE/log/srun-check.err"; then
        _slurm_log "srun -N1 true failed: $(cat "$BASE/log/srun-check.err")"
        slurm_stop "$BASE"; return 1
    fi
    _slurm_log "$(sinfo -V) up in $(( SECONDS - t0 )) s; SLURM_CONF=$SLURM_CONF"
    return 0
}

slurm_stop() {
    local BASE=${1:-}
    [ -n "$BASE" ] && [ -d "$BASE" ] || return 0
    BASE=$(cd "$BASE" && pwd -P) || return 0
    local CONF="$BASE/slurm.conf" pid i ids

    # 1. cancel every job (all users), give them a few seconds to go
    if [ -s "$CONF" ] && _slurm_pid_alive "$BASE/run/slurmctld.pid" >/dev/null; then
        ids=$(SLURM_CONF="$CONF" timeout 10 squeue -h -o %i 2>/dev/null) || true
        if [ -n "$ids" ]; then
            # shellcheck disable=SC2086
            SLURM_CONF="$CONF" timeout 10 scancel $ids >/dev/null 2>&1 || true
            for i in $(seq 1 20); do
                [ -z "$(SLURM_CONF="$CONF" timeout 5 squeue -h -t R,CG,PD -o %i 2>/dev/null)" ] && break
                sleep 0.5
            done
        fi
    fi

    # 2. stop the daemons by their pid files: slurmd, slurmctld, munged
    #    (TERM all at once: each takes 1-2 s to exit; KILL after 10 s)
    local f pids=""
    for f in "$BASE/run/slurmd.pid" "$BASE/run/slurmctld.pid" "$BASE/munge/munged.pid"; do
        pid=$(_slurm_pid_alive "$f") || continue
        kill -TERM "$pid" 2>/dev/null && pids="$pids $pid"
    done
    for pid in $pids; do
        for i in $(seq 1 100); do _slurm_running "$pid" || break; sleep 0.1; done
        if _slurm_running "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
        for i in $(seq 1 20); do _slurm_running "$pid" || break; sleep 0.1; done
    done

    # 3. leftovers (only if a daemon died uncleanly): slurmstepd of this
    #    instance (holds a unix socket in our SlurmdSpoolDir) and job processes
    #    (environment has SLURM_JOB_ID and SLURM_CONF=<our conf>).  Never touch
    #    this shell or its ancestors (they may carry SLURM_CONF too).
    local keep=" " p=$BASHPID
    while [ -n "$p" ] && [ "$p" -gt 1 ] 2>/dev/null; do
        keep="$keep$p "
        p=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null) || true
    done
    local inodes victims="" ino f
    for f in $(grep -lzxF "SLURM_CONF=$CONF" /proc/[0-9]*/environ 2>/dev/null); do
        grep -qz '^SLURM_JOB_ID=' "$f" 2>/dev/null || continue
        p=${f#/proc/}; p=${p%%/*}
        victims="$victims $p"
    done
    inodes=$(awk -v d="$BASE/spool/" 'index($8, d) == 1 {print $7}' /proc/net/unix 2>/dev/null | sort -u) || true
    if [ -n "$inodes" ]; then
        local expr=()
        for ino in $inodes; do
            [ ${#expr[@]} -gt 0 ] && expr+=(-o)
            expr+=(-lname "socket:\[$ino\]")
        done
        for f in $(find /proc/[0-9]*/fd -maxdepth 1 \( "${expr[@]}" \) 2>/dev/null); do
            p=${f#/proc/}; p=${p%%/*}
            victims="$victims $p"
        done
    fi
    local v; p=""
    for v in $victims; do
        case "$keep" in *" $v "*) ;; *) p="$p $v" ;; esac
    done
    victims=$p
    # shellcheck disable=SC2086
    if [ -n "$victims" ]; then kill -KILL $victims 2>/dev/null || true; fi

    # 4. best effort: give PID 1 up to 3 s to reap the (dead) zombies, so
    #    that "pgrep slurm" is empty afterwards.  Never fails.
    local left
    for i in $(seq 1 30); do
        left=""
        for v in $pids $victims; do kill -0 "$v" 2>/dev/null && left="$left $v"; done
        [ -z "$left" ] && break
        sleep 0.1
    done

    if [ "${SLURM_CONF:-}" = "$CONF" ]; then unset SLURM_CONF; fi
    return 0
}
