#!/usr/bin/env bash
# kdbusfs benchmark (issue 4): starts, in one run, a private kdbusfs mount, a private
# dbus-daemon and a private dbus-broker, runs every case against each (bounded: fixed
# iteration counts, each case under `timeout`), stops exactly what it started (by pid, also
# on errors and Ctrl-C) and prints a table of medians, p99 and kdbusfs / dbus-broker ratios.
#
#   bench/run.sh [--publish]           (scripts/bench installs the dependencies, then runs this)
#   SCALE=0.2 REPS=3 bench/run.sh      quick run
#
# Environment (defaults in brackets):
#   REPS [5]             repetitions per case (one process, samples pooled)
#   SCALE [1]            multiplies every iteration count
#   CASE_TIMEOUT [180]   seconds per case
#   BUSES ["kdbusfs dbus-broker dbus-daemon"]   the buses to run; a missing D-Bus one is skipped
#   CASES ["memory echo signal scaling"]          the groups of cases to run
#   SCALING_CONNS ["1 100 1000"], SCALING_NAMES ["10 10000"], SCALING_MATCHES ["10 10000"]
#   MEM_CONNS [1000]     idle connections of the memory case
#   RESULTS_DIR [<repo>/results]
#
# Outputs: RESULTS_DIR/bench-<stamp>.md (the report), RESULTS_DIR/bench-<stamp>.jsonl (one JSON
# line per case), RESULTS_DIR/logs-<stamp>/ (server, daemon and case logs); with --publish the
# report is also copied to BENCH.md in the repository root.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
cd "$ROOT"

PUBLISH=0
for arg in "$@"; do
    case "$arg" in
    --publish) PUBLISH=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done

REPS=${REPS:-5}
SCALE=${SCALE:-1}
CASE_TIMEOUT=${CASE_TIMEOUT:-180}
BUSES=${BUSES:-"kdbusfs dbus-broker dbus-daemon"}
CASES=${CASES:-"memory echo signal scaling"}
SCALING_CONNS=${SCALING_CONNS:-"1 100 1000"}
SCALING_NAMES=${SCALING_NAMES:-"10 10000"}
SCALING_MATCHES=${SCALING_MATCHES:-"10 10000"}
MEM_CONNS=${MEM_CONNS:-1000}
RESULTS=${RESULTS_DIR:-$ROOT/results}
PY=${PYTHON:-$ROOT/.venv/bin/python}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RAW=$RESULTS/bench-$STAMP.jsonl
REPORT=$RESULTS/bench-$STAMP.md
LOGDIR=$RESULTS/logs-$STAMP
BUILD=$HERE/build
T_START=$(date +%s)
POOL=$((64 * 1024 * 1024))     # pool of the kdbusfs benchmark connections

STARTED_PIDS=()                # every long-lived process this script started
RUNDIR=""
MNT=""

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
n() { awk -v n="$1" -v s="$SCALE" 'BEGIN { v = int(n * s + 0.5); if (v < 1) v = 1; print v }'; }
has() { case " $1 " in *" $2 "*) return 0 ;; *) return 1 ;; esac; }

# alive PID: true while PID is a live (non-zombie) child of this shell; checking the parent
# pid means a recycled pid that now belongs to another process is never taken for ours.
alive() {
    local st
    st=$(sed -E 's/^[0-9]+ \(.*\) //' "/proc/$1/stat" 2>/dev/null) || return 1
    set -- $st
    [ "$1" != Z ] && [ "$1" != X ] && [ "$2" = "$$" ]
}

forget_pid() {
    local keep=() p
    for p in "${STARTED_PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    STARTED_PIDS=("${keep[@]+"${keep[@]}"}")
}

# stop_pid PID: SIGTERM, up to 5 s, then SIGKILL; reaps it.  Only for our own children.
stop_pid() {
    local pid=$1 i
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 50); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            log "pid $pid ignored SIGTERM, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

# wait_exit PID SECONDS: wait for a child that was asked to quit; reaps it; 0 if it exited
wait_exit() {
    local pid=$1 t=$2 i
    for i in $(seq $((t * 10))); do
        if ! alive "$pid"; then
            wait "$pid" 2>/dev/null || true
            forget_pid "$pid"
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# wait_ready FILE PID SECONDS: until FILE is non-empty; fails early if PID died
wait_ready() {
    local f=$1 pid=$2 t=$3 i
    for i in $(seq $((t * 10))); do
        [ -s "$f" ] && return 0
        alive "$pid" || { log "pid $pid exited before $f appeared"; return 1; }
        sleep 0.1
    done
    log "timed out waiting for $f"
    return 1
}

# dbus-broker is brokerctl's child, not ours: brokerctl stops it.  Only if it is still there
# (checked by pid and name) is it signalled here.
stop_broker_leftover() {
    if [ -n "${BROKER_PID:-}" ] && [ "$(cat "/proc/$BROKER_PID/comm" 2>/dev/null)" = dbus-broker ]; then
        log "dbus-broker pid $BROKER_PID still running after brokerctl exited; sending SIGTERM"
        kill -TERM "$BROKER_PID" 2>/dev/null || true
    fi
    BROKER_PID=""
}

unmount_kdbusfs() {
    if [ -n "$MNT" ] && mountpoint -q "$MNT" 2>/dev/null; then
        umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
    fi
}

cleanup() {
    local i pids=("${STARTED_PIDS[@]+"${STARTED_PIDS[@]}"}")
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        if [ -n "${KDBUSFS_PID:-}" ] && [ "${pids[$i]}" = "$KDBUSFS_PID" ]; then
            unmount_kdbusfs            # the server exits once its mount is gone
            wait_exit "$KDBUSFS_PID" 10 || true
        fi
        stop_pid "${pids[$i]}"
    done
    stop_broker_leftover
    unmount_kdbusfs
    if [ -n "$RUNDIR" ] && [ -d "$RUNDIR" ]; then
        rm -f "$RUNDIR"/*.ready "$RUNDIR"/*.pid "$RUNDIR"/*.tmp "$RUNDIR"/*.sock "$RUNDIR"/daemon.addr
        if [ -n "$MNT" ] && ! mountpoint -q "$MNT" 2>/dev/null; then rmdir "$MNT" 2>/dev/null || true; fi
        rmdir "$RUNDIR" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'log "interrupted: stopping what was started"; exit 130' INT TERM

# run_case CASE BUS_KIND DESCRIPTION CMD...: one bounded benchmark; its JSON lines go to $RAW
# tagged with "case" and "bus_kind".  A failure is recorded as a {"failed": ...} line.
run_case() {
    local id=$1 kind=$2 desc=$3 rc=0 out
    shift 3
    log "  $desc"
    out=$(timeout -k 5 "$CASE_TIMEOUT" "$@" 2>>"$LOGDIR/cases.stderr") || rc=$?
    if [ -n "$out" ]; then
        printf '%s\n' "$out" | grep '^{' |
            sed -e "s/^{/{\"case\":\"$id\",\"bus_kind\":\"$kind\",/" >>"$RAW" || true
    fi
    if [ $rc -ne 0 ] || [ -z "$out" ]; then
        local why="exit $rc"
        if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then why="timed out after ${CASE_TIMEOUT}s"; fi
        log "  FAILED ($why): $desc"
        printf '{"case":"%s","bus_kind":"%s","failed":"%s: %s (see %s/cases.stderr)"}\n' \
            "$id" "$kind" "$desc" "$why" "$(basename "$LOGDIR")" >>"$RAW"
        return 0
    fi
}

record_failure() {   # CASE BUS_KIND TEXT
    log "  FAILED: $3"
    printf '{"case":"%s","bus_kind":"%s","failed":"%s"}\n' "$1" "$2" "$3" >>"$RAW"
}

# start_load BUS_KIND CASE ARGS...: the helper that adds connections / names / matches, in
# the background under `timeout`; sets LOAD_PID.  Its setup report goes to $RAW.
start_load() {
    local kind=$1 id=$2 ready=$RUNDIR/load.ready
    shift 2
    rm -f "$ready"
    if [ "$kind" = kdbusfs ]; then
        timeout -k 5 $((CASE_TIMEOUT * 2)) "$PY" "$HERE/py/kdbusfs_bench.py" load --bus "$KBUS" \
            --ready-file "$ready" "$@" 2>>"$LOGDIR/load.stderr" &
    else
        timeout -k 5 $((CASE_TIMEOUT * 2)) "$PY" "$HERE/py/jeepney_bench.py" load --address "$ADDR" \
            --ready-file "$ready" "$@" 2>>"$LOGDIR/load.stderr" &
    fi
    LOAD_PID=$!
    STARTED_PIDS+=("$LOAD_PID")
    if ! wait_ready "$ready" "$LOAD_PID" "$CASE_TIMEOUT"; then
        stop_pid "$LOAD_PID"
        record_failure "$id" "$kind" "load helper ($*) did not get ready (see $(basename "$LOGDIR")/load.stderr)"
        return 1
    fi
    sed -e "s/^{/{\"bench\":\"load-setup\",\"case\":\"$id\",\"bus_kind\":\"$kind\",/" "$ready" >>"$RAW"
}

# kd_idle N: wait until the kdbusfs bench bus has at most N connections (releases are
# asynchronous in FUSE; a name of the last case must be free before the next one takes it)
kd_idle() {
    timeout -k 5 60 "$PY" "$HERE/py/kdbusfs_bench.py" waitidle --bus "$KBUS" --max-conns "$1" \
        --timeout 50 2>>"$LOGDIR/cases.stderr" || log "  the bus did not become idle (max $1)"
}

# ------------------------------------------------------------------------------ build
mkdir -p "$RESULTS" "$LOGDIR" "$BUILD"
: >"$RAW"
WANT_DBUS=0
for b in $BUSES; do
    case "$b" in
    kdbusfs) ;;
    dbus-broker | dbus-daemon)
        if command -v "$b" >/dev/null; then
            WANT_DBUS=1
        else
            log "$b is not installed: skipping its rows (scripts/bench installs it)"
            BUSES=$(echo " $BUSES " | sed "s/ $b / /")
        fi ;;
    *) echo "bench: unknown bus $b" >&2; exit 2 ;;
    esac
done
log "building C benchmarks"
make -s -C c >"$LOGDIR/build.log" 2>&1 || { cat "$LOGDIR/build.log" >&2; exit 1; }
if [ $WANT_DBUS = 1 ]; then
    SDFLAGS=$(pkg-config --cflags --libs libsystemd)
    for prog in brokerctl sdbus_bench; do
        # shellcheck disable=SC2086
        gcc -O2 -g -Wall -Wextra -o "$BUILD/$prog" "$HERE/src/$prog.c" $SDFLAGS -lm
    done
    "$PY" -c 'import jeepney' || { echo "bench: jeepney is missing from the venv (scripts/bench installs it)" >&2; exit 1; }
fi

RUNDIR=$(mktemp -d /tmp/kdbusfs-bench.XXXXXX)
chmod 755 "$RUNDIR"
grep '^cpu ' /proc/stat >"$LOGDIR/cpustat.start"
cp /proc/loadavg "$LOGDIR/loadavg.start"

# ------------------------------------------------------------------------------ servers
KDBUSFS_PID="" DAEMON_PID="" BROKERCTL_PID="" BROKER_PID="" KBUS="" BUSHOLDER_PID=""
KDBUSFS_LABEL="kdbusfs $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')"
if has "$BUSES" kdbusfs; then
    MNT=$RUNDIR/mnt
    mkdir -p "$MNT"
    log "starting private kdbusfs on $MNT"
    "$PY" -m kdbusfs -f "$MNT" >"$LOGDIR/kdbusfs.log" 2>&1 &
    KDBUSFS_PID=$!
    STARTED_PIDS+=("$KDBUSFS_PID")
    for i in $(seq 100); do
        [ -e "$MNT/control" ] && break
        alive "$KDBUSFS_PID" || { cat "$LOGDIR/kdbusfs.log" >&2; exit 1; }
        sleep 0.1
    done
    [ -e "$MNT/control" ] || { log "kdbusfs did not come up"; exit 1; }
    "$PY" "$HERE/py/kdbusfs_bench.py" bus --mount "$MNT" --name bench \
        --ready-file "$RUNDIR/kbus.ready" 2>>"$LOGDIR/bus.log" &
    BUSHOLDER_PID=$!
    STARTED_PIDS+=("$BUSHOLDER_PID")
    wait_ready "$RUNDIR/kbus.ready" "$BUSHOLDER_PID" 20
    KBUS=$(cat "$RUNDIR/kbus.ready")
    log "kdbusfs pid $KDBUSFS_PID, bus $KBUS"
fi
DAEMON_ADDR=unix:path=$RUNDIR/daemon.sock
BROKER_ADDR=unix:path=$RUNDIR/broker.sock
if has "$BUSES" dbus-daemon; then
    DAEMON_LABEL="dbus-daemon $(dbus-daemon --version | head -1 | awk '{print $NF}')"
    log "starting private dbus-daemon on $RUNDIR/daemon.sock"
    dbus-daemon --session --address="$DAEMON_ADDR" --nofork --print-address \
        >"$RUNDIR/daemon.addr" 2>"$LOGDIR/dbus-daemon.log" &
    DAEMON_PID=$!
    STARTED_PIDS+=("$DAEMON_PID")
    wait_ready "$RUNDIR/daemon.addr" "$DAEMON_PID" 10
fi
if has "$BUSES" dbus-broker; then
    BROKER_LABEL="dbus-broker $(dbus-broker --version 2>&1 | head -1 | awk '{print $NF}')"
    log "starting private dbus-broker on $RUNDIR/broker.sock (via brokerctl)"
    "$BUILD/brokerctl" --listen "$RUNDIR/broker.sock" --broker-pidfile "$RUNDIR/broker.pid" \
        --ready-file "$RUNDIR/broker.ready" 2>"$LOGDIR/brokerctl.log" &
    BROKERCTL_PID=$!
    STARTED_PIDS+=("$BROKERCTL_PID")
    wait_ready "$RUNDIR/broker.ready" "$BROKERCTL_PID" 10
    BROKER_PID=$(cat "$RUNDIR/broker.pid")
fi

# ------------------------------------------------------------------------------ D-Bus suites
SVC_PID=""
start_dbus_service() {   # KIND(c|py) ADDR
    local kind=$1 addr=$2 ready=$RUNDIR/$1-svc.ready
    rm -f "$ready"
    if [ "$kind" = c ]; then
        "$BUILD/sdbus_bench" service --address "$addr" --name org.bench.CEcho --ready-file "$ready" \
            2>>"$LOGDIR/c-service.log" &
    else
        "$PY" "$HERE/py/jeepney_bench.py" service --address "$addr" --name org.bench.PyEcho \
            --ready-file "$ready" 2>>"$LOGDIR/py-service.log" &
    fi
    SVC_PID=$!
    STARTED_PIDS+=("$SVC_PID")
    wait_ready "$ready" "$SVC_PID" 20
}

stop_dbus_service() {    # KIND ADDR
    if [ "$1" = c ]; then
        timeout 10 "$BUILD/sdbus_bench" quit --address "$2" --name org.bench.CEcho || true
    else
        timeout 10 "$PY" "$HERE/py/jeepney_bench.py" quit --address "$2" --name org.bench.PyEcho || true
    fi
    wait_exit "$SVC_PID" 5 || stop_pid "$SVC_PID"
}

dbus_suite() {   # KIND LABEL ADDR SERVER_PID
    local kind=$1 label=$2 addr=$3 spid=$4 s
    ADDR=$addr
    log "== $label"
    if has "$CASES" memory; then
        run_case memory "$kind" "memory: $MEM_CONNS idle connections" \
            "$PY" "$HERE/py/jeepney_bench.py" memory --address "$addr" --conns "$MEM_CONNS" \
            --rss-pid "$spid" --bus-label "$label"
    fi
    start_dbus_service c "$addr"
    local C=("$BUILD/sdbus_bench")
    local CA=(--address "$addr" --name org.bench.CEcho --reps "$REPS" --bus-label "$label")
    if has "$CASES" echo; then
        run_case echo-c-8       "$kind" "sd-bus echo 8 B"    "${C[@]}" echo "${CA[@]}" --size 8       --iters "$(n 5000)" --warmup 200
        run_case echo-c-1024    "$kind" "sd-bus echo 1 KiB"  "${C[@]}" echo "${CA[@]}" --size 1024    --iters "$(n 5000)" --warmup 200
        run_case echo-c-65536   "$kind" "sd-bus echo 64 KiB" "${C[@]}" echo "${CA[@]}" --size 65536   --iters "$(n 1000)" --warmup 50
        run_case echo-c-1048576 "$kind" "sd-bus echo 1 MiB"  "${C[@]}" echo "${CA[@]}" --size 1048576 --iters "$(n 100)"  --warmup 10
    fi
    if has "$CASES" signal; then
        run_case signal-c-64    "$kind" "sd-bus signal 64 B"   "${C[@]}" signal "${CA[@]}" --size 64    --iters "$(n 20480)" --window 128
        run_case signal-c-65536 "$kind" "sd-bus signal 64 KiB" "${C[@]}" signal "${CA[@]}" --size 65536 --iters "$(n 2048)"  --window 64
    fi
    if has "$CASES" scaling; then
        scaling_cases "$kind" "${C[@]}" echo "${CA[@]}" --size 8 --iters "$(n 2000)" --warmup 200
    fi
    stop_dbus_service c "$addr"

    if has "$CASES" echo || has "$CASES" signal; then
        start_dbus_service py "$addr"
        local P=("$PY" "$HERE/py/jeepney_bench.py")
        local PA=(--address "$addr" --name org.bench.PyEcho --reps "$REPS" --bus-label "$label")
        if has "$CASES" echo; then
            run_case echo-py-8       "$kind" "jeepney echo 8 B"    "${P[@]}" echo "${PA[@]}" --size 8       --iters "$(n 1000)" --warmup 50
            run_case echo-py-1024    "$kind" "jeepney echo 1 KiB"  "${P[@]}" echo "${PA[@]}" --size 1024    --iters "$(n 1000)" --warmup 50
            run_case echo-py-65536   "$kind" "jeepney echo 64 KiB" "${P[@]}" echo "${PA[@]}" --size 65536   --iters "$(n 400)"  --warmup 20
            run_case echo-py-1048576 "$kind" "jeepney echo 1 MiB"  "${P[@]}" echo "${PA[@]}" --size 1048576 --iters "$(n 40)"   --warmup 3
        fi
        if has "$CASES" signal; then
            run_case signal-py-64    "$kind" "jeepney signal 64 B"   "${P[@]}" signal "${PA[@]}" --size 64    --iters "$(n 5120)" --window 128
            run_case signal-py-65536 "$kind" "jeepney signal 64 KiB" "${P[@]}" signal "${PA[@]}" --size 65536 --iters "$(n 512)"  --window 64
        fi
        stop_dbus_service py "$addr"
    fi
}

# scaling_cases BUS_KIND ECHO_CMD...: echo latency (8 B, C clients) with each load in place
scaling_cases() {
    local kind=$1 k
    shift
    for k in $SCALING_CONNS; do
        [ "$kind" = kdbusfs ] && kd_idle 0
        if start_load "$kind" "scale-conns-$k" --conns "$k"; then
            run_case "scale-conns-$k" "$kind" "echo 8 B with $k other connections" "$@"
            stop_pid "$LOAD_PID"
        fi
    done
    for k in $SCALING_NAMES; do
        [ "$kind" = kdbusfs ] && kd_idle 0
        if start_load "$kind" "scale-names-$k" --names "$k"; then
            run_case "scale-names-$k" "$kind" "echo 8 B with $k owned names" "$@"
            stop_pid "$LOAD_PID"
        fi
    done
    for k in $SCALING_MATCHES; do
        [ "$kind" = kdbusfs ] && kd_idle 0
        if start_load "$kind" "scale-matches-$k" --matches "$k"; then
            run_case "scale-matches-$k" "$kind" "echo 8 B with $k installed matches" "$@"
            stop_pid "$LOAD_PID"
        fi
    done
}

# ------------------------------------------------------------------------------ kdbusfs suite
kdbusfs_suite() {
    local label=$KDBUSFS_LABEL
    log "== $label"
    if has "$CASES" memory; then
        run_case memory kdbusfs "memory: $MEM_CONNS idle connections" \
            "$PY" "$HERE/py/kdbusfs_bench.py" memory --bus "$KBUS" --conns "$MEM_CONNS" \
            --rss-pid "$KDBUSFS_PID" --bus-label "$label"
        kd_idle 0
    fi
    # C clients: a forked service (-B: it blocks in RECV), called by its well-known name (-N)
    local E=(c/build/kdbus-echo-bench -b "$KBUS" -N -r "$REPS" -p "$POOL")
    if has "$CASES" echo; then
        kd_idle 0; run_case echo-c-8       kdbusfs "C echo 8 B"    "${E[@]}" -B -s 8       -n "$(n 5000)" -w 200
        kd_idle 0; run_case echo-c-1024    kdbusfs "C echo 1 KiB"  "${E[@]}" -B -s 1024    -n "$(n 5000)" -w 200
        kd_idle 0; run_case echo-c-65536   kdbusfs "C echo 64 KiB" "${E[@]}" -B -s 65536   -n "$(n 1000)" -w 50
        kd_idle 0; run_case echo-c-1048576 kdbusfs "C echo 1 MiB"  "${E[@]}" -B -s 1048576 -n "$(n 100)"  -w 10
        kd_idle 0; run_case echo-c-8-poll  kdbusfs "C echo 8 B, service polls" "${E[@]}" -s 8 -n "$(n 5000)" -w 200
    fi
    if has "$CASES" signal; then
        local S=(c/build/kdbus-signal-bench -b "$KBUS" -B -r "$REPS" -p "$POOL")
        kd_idle 0; run_case signal-c-64    kdbusfs "C signal 64 B"   "${S[@]}" -s 64    -n "$(n 20480)" -W 128
        kd_idle 0; run_case signal-c-65536 kdbusfs "C signal 64 KiB" "${S[@]}" -s 65536 -n "$(n 2048)"  -W 64
    fi
    if has "$CASES" echo || has "$CASES" signal; then
        kd_idle 0
        local ready=$RUNDIR/kpy-svc.ready
        rm -f "$ready"
        "$PY" "$HERE/py/kdbusfs_bench.py" service --bus "$KBUS" --name org.bench.PyEcho \
            --ready-file "$ready" 2>>"$LOGDIR/kdbusfs-py-service.log" &
        SVC_PID=$!
        STARTED_PIDS+=("$SVC_PID")
        wait_ready "$ready" "$SVC_PID" 20
        local P=("$PY" "$HERE/py/kdbusfs_bench.py")
        local PA=(--bus "$KBUS" --name org.bench.PyEcho --reps "$REPS" --bus-label "$label")
        if has "$CASES" echo; then
            run_case echo-py-8       kdbusfs "Python echo 8 B"    "${P[@]}" echo "${PA[@]}" --size 8       --iters "$(n 1000)" --warmup 50
            run_case echo-py-1024    kdbusfs "Python echo 1 KiB"  "${P[@]}" echo "${PA[@]}" --size 1024    --iters "$(n 1000)" --warmup 50
            run_case echo-py-65536   kdbusfs "Python echo 64 KiB" "${P[@]}" echo "${PA[@]}" --size 65536   --iters "$(n 400)"  --warmup 20
            run_case echo-py-1048576 kdbusfs "Python echo 1 MiB"  "${P[@]}" echo "${PA[@]}" --size 1048576 --iters "$(n 40)"   --warmup 3
        fi
        if has "$CASES" signal; then
            run_case signal-py-64    kdbusfs "Python signal 64 B"   "${P[@]}" signal "${PA[@]}" --size 64    --iters "$(n 5120)" --window 128
            run_case signal-py-65536 kdbusfs "Python signal 64 KiB" "${P[@]}" signal "${PA[@]}" --size 65536 --iters "$(n 512)"  --window 64
        fi
        timeout 10 "$PY" "$HERE/py/kdbusfs_bench.py" quit --bus "$KBUS" --name org.bench.PyEcho || true
        wait_exit "$SVC_PID" 5 || stop_pid "$SVC_PID"
    fi
    if has "$CASES" scaling; then
        scaling_cases kdbusfs "${E[@]}" -B -s 8 -n "$(n 2000)" -w 200
    fi
}

if has "$BUSES" dbus-daemon; then dbus_suite dbus-daemon "$DAEMON_LABEL" "$DAEMON_ADDR" "$DAEMON_PID"; fi
if has "$BUSES" dbus-broker; then dbus_suite dbus-broker "$BROKER_LABEL" "$BROKER_ADDR" "$BROKER_PID"; fi
if has "$BUSES" kdbusfs; then kdbusfs_suite; fi

grep '^cpu ' /proc/stat >"$LOGDIR/cpustat.end"
cp /proc/loadavg "$LOGDIR/loadavg.end"

# ------------------------------------------------------------------------------ stop, report
log "stopping servers"
cleanup
trap - EXIT

WALL=$(($(date +%s) - T_START))
"$PY" "$HERE/py/report.py" "$RAW" "$REPORT" --stamp "$STAMP" --wall-seconds "$WALL" \
    --reps "$REPS" --scale "$SCALE" --cpustat "$LOGDIR/cpustat.start" "$LOGDIR/cpustat.end" \
    --loadavg "$LOGDIR/loadavg.start" "$LOGDIR/loadavg.end" --kdbusfs-label "$KDBUSFS_LABEL"
if [ $PUBLISH = 1 ]; then
    cp "$REPORT" "$ROOT/BENCH.md"
    log "published $ROOT/BENCH.md"
fi
log "done in ${WALL}s: $REPORT (raw: $RAW)"
