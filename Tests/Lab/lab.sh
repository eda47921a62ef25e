#!/usr/bin/env bash
# The Passage lab: boots the Debian kernel under QEMU (TCG, emulated Intel IOMMU) with a
# named PCI topology, the build machine's root mounted read-only over 9p, and runs a named
# scenario inside as root. See docs/lab.md.
#
#   lab.sh run TOPOLOGY SCENARIO [--timeout SECONDS] [-v]   exit status = the scenario's
#   lab.sh shell TOPOLOGY                                     interactive bash inside L1
#   lab.sh build                                              build (or reuse) the initramfs images
#   lab.sh list                                               scenarios and their topologies
#
# Exit status of `run`: the scenario's, or 124 on timeout, 126 when L1 hung (no console output
# for LAB_SILENCE seconds, default 120, heartbeat included), 125 when the VM ended without
# reporting a result, 2 when the lab cannot run at all (missing QEMU, kernel, …).
set -euo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
. "$LAB_DIR/lib/common.sh"

usage() {
    sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# ---- state of the current run, for cleanup -------------------------------------------
RUN_DIR='' QEMU_WRAPPER_PID='' TAIL_PID='' WATCH_PID=''
cleanup() {
    local pid
    if [[ -n $WATCH_PID ]]; then kill "$WATCH_PID" 2>/dev/null || true; wait "$WATCH_PID" 2>/dev/null || true; fi
    if [[ -n $QEMU_WRAPPER_PID ]] && kill -0 "$QEMU_WRAPPER_PID" 2>/dev/null; then
        kill -TERM "$QEMU_WRAPPER_PID" 2>/dev/null || true
    fi
    if [[ -n $RUN_DIR && -s $RUN_DIR/qemu.pid ]]; then
        pid=$(cat "$RUN_DIR/qemu.pid" 2>/dev/null || true)
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null \
            && grep -q qemu "/proc/$pid/comm" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            sleep 0.5
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    if [[ -n $QEMU_WRAPPER_PID ]]; then wait "$QEMU_WRAPPER_PID" 2>/dev/null || true; fi
    if [[ -n $TAIL_PID ]]; then kill "$TAIL_PID" 2>/dev/null || true; wait "$TAIL_PID" 2>/dev/null || true; fi
    if [[ -n $RUN_DIR && -z ${LAB_KEEP_RUN:-} ]]; then rm -rf "$RUN_DIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# write_env FILE TOPOLOGY SCENARIO: the environment of the scenario inside L1.
write_env() {
    local f=$1 v
    {
        for v in LAB_REPO LAB_DIR LAB_BUILD LAB_KVER LAB_KERNEL LAB_L2_INITRD LAB_L2IRQ_INITRD LAB_MARKER LAB_L1_KVER LAB_IOMMUFD_KVER; do
            printf 'export %s=%q\n' "$v" "${!v}"
        done
        # An L1 kernel other than the host's own: l1-init mounts its modules over /lib/modules.
        if [[ $LAB_L1_MODROOT != / ]]; then
            printf 'export LAB_L1_MODULES=%q\n' "$LAB_L1_MODROOT/lib/modules/$LAB_L1_KVER"
        fi
        printf 'export LAB_TOPOLOGY=%q\n' "$2"
        printf 'export LAB_SCENARIO=%q\n' "$3"
        printf 'export LAB_RUN=%q\n' "$RUN_DIR"
        printf 'export LAB_OUT=%q\n' /tmp/lab-out
        printf 'export PASSAGE_BIN=%q\n' "${PASSAGE_BIN:-$LAB_REPO/.build/debug}"
        printf 'export PATH=%q\n' /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
        printf 'export HOME=/tmp LANG=C.UTF-8 TERM=%q\n' "${TERM:-linux}"
        # Pass through PASSAGE_* and LAB_ARG_* from the caller; not the host-sysfs write guard
        # (inside L1 the lab's own sysfs is what scenarios are there to change).
        while IFS='=' read -r v _; do
            [[ $v == PASSAGE_BIN || $v == PASSAGE_FORBID_HOST_SYSFS_WRITES ]] && continue
            printf 'export %s=%q\n' "$v" "${!v}"
        done < <(env | grep -E '^(PASSAGE_[A-Za-z0-9_]*|LAB_ARG_[A-Za-z0-9_]*)=' || true)
    } >"$f"
}

# qemu_args TOPOLOGY MODE: fills the array QEMU_ARGS.
qemu_args() {
    local topo=$1 mode=$2 extra
    QEMU_ARGS=(
        -accel tcg,thread=multi -cpu max -smp 2 -m 2G
        -M q35,kernel-irqchip=split
        -device intel-iommu,intremap=on,caching-mode=on
        -nodefaults -no-user-config -display none -no-reboot
        -kernel "$LAB_L1_KERNEL" -initrd "$LAB_L1_INITRD"
        -append "console=ttyS0 intel_iommu=on quiet panic=-1 lab.mode=$mode lab.env=$RUN_DIR/env"
        -fsdev local,id=hostfs,path=/,security_model=none,readonly=on,multidevs=remap
        -device virtio-9p-pci,fsdev=hostfs,mount_tag=host,addr=10.0
        -pidfile "$RUN_DIR/qemu.pid"
    )
    mapfile -t extra < <(topology_args "$RUN_DIR")
    QEMU_ARGS+=("${extra[@]}")
    # Extra arguments for experiments, split on spaces.
    # shellcheck disable=SC2206
    [[ -n ${LAB_QEMU_EXTRA:-} ]] && QEMU_ARGS+=($LAB_QEMU_EXTRA)
    return 0
}

prepare_run() { # TOPOLOGY SCENARIO MODE
    lab_preflight
    lab_topology_load "$1"
    lab_build_all "$TOPOLOGY_L1_KERNEL"
    mkdir -p "$LAB_BUILD/runs" "$LAB_BUILD/logs"
    RUN_DIR=$(mktemp -d "$LAB_BUILD/runs/$1--$2.XXXXXX")
    if declare -F topology_prepare >/dev/null; then topology_prepare "$RUN_DIR"; fi
    write_env "$RUN_DIR/env" "$1" "$2"
    qemu_args "$1" "$3"
}

cmd_run() {
    local topo='' scen='' timeout_s=${LAB_TIMEOUT:-} verbose=${LAB_VERBOSE:-}
    while (($#)); do
        case $1 in
            --timeout) timeout_s=$2; shift 2 ;;
            --timeout=*) timeout_s=${1#*=}; shift ;;
            -v | --verbose) verbose=1; shift ;;
            -*) usage ;;
            *) if [[ -z $topo ]]; then topo=$1; elif [[ -z $scen ]]; then scen=$1; else usage; fi; shift ;;
        esac
    done
    [[ -n $topo && -n $scen ]] || usage
    [[ -f $LAB_DIR/scenarios/$scen.sh ]] || lab_die "unknown scenario '$scen' (have: $(lab_list scenarios))"
    # Without --timeout or LAB_TIMEOUT: the scenario's '# lab-timeout:' header, as run-all.sh uses it, else 300.
    [[ -n $timeout_s ]] || timeout_s=$(lab_header "$LAB_DIR/scenarios/$scen.sh" timeout)
    timeout_s=${timeout_s:-300}

    local t0 t_qemu log rc result boot wall boot_wall
    t0=$(now)
    prepare_run "$topo" "$scen" run
    log=$LAB_BUILD/logs/$topo--$scen.log
    {
        echo "# lab run $topo/$scen on $(date -u +%FT%TZ), L1 kernel $LAB_L1_KVER, L2 kernel $LAB_KVER, timeout ${timeout_s}s"
        echo "# $LAB_QEMU ${QEMU_ARGS[*]}"
    } >"$log"
    # No terminal for QEMU: its serial port is its stdout, which goes to the log.
    timeout -k 5 "$timeout_s" "$LAB_QEMU" "${QEMU_ARGS[@]}" -serial stdio </dev/null >>"$log" 2>&1 &
    QEMU_WRAPPER_PID=$!
    t_qemu=$(now)
    # Host wall time from QEMU's start to the scenario's start (the LAB-BOOT line); then the
    # silence watch: no console byte for $LAB_SILENCE seconds (L1 prints LAB-HEARTBEAT every 20 s
    # while a scenario runs) means the emulated machine hung: QEMU is stopped and the run ends
    # with status 126, which run-all.sh retries once.
    (
        booted='' size=-1 quiet_since=$SECONDS
        while kill -0 "$QEMU_WRAPPER_PID" 2>/dev/null; do
            if [[ -z $booted ]] && grep -aq 'LAB-BOOT uptime=' "$log"; then now >"$RUN_DIR/boot-wall"; booted=1; fi
            s=$(stat -c %s "$log" 2>/dev/null || echo 0)
            if [[ $s != "$size" ]]; then size=$s quiet_since=$SECONDS
            elif ((SECONDS - quiet_since >= ${LAB_SILENCE:-120})); then
                echo "$((SECONDS - quiet_since))" >"$RUN_DIR/silent"
                kill "$(cat "$RUN_DIR/qemu.pid" 2>/dev/null)" 2>/dev/null
                exit 0
            fi
            if [[ -z $booted ]]; then sleep 0.1; else sleep 2; fi
        done
    ) &
    WATCH_PID=$!
    if [[ -n $verbose ]]; then
        tail -n +1 -F --pid="$QEMU_WRAPPER_PID" "$log" 2>/dev/null &
        TAIL_PID=$!
    fi
    rc=0
    wait "$QEMU_WRAPPER_PID" || rc=$?
    QEMU_WRAPPER_PID=
    if [[ -n $TAIL_PID ]]; then sleep 0.3; kill "$TAIL_PID" 2>/dev/null || true; wait "$TAIL_PID" 2>/dev/null || true; TAIL_PID=; fi
    wall=$(elapsed "$t0" "$(now)")
    kill "$WATCH_PID" 2>/dev/null || true; wait "$WATCH_PID" 2>/dev/null || true; WATCH_PID=
    boot_wall='?'
    [[ -s $RUN_DIR/boot-wall ]] && boot_wall=$(elapsed "$t_qemu" "$(cat "$RUN_DIR/boot-wall")")

    result=$(tr -d '\r' <"$log" | grep -aoE 'LAB-RESULT rc=[0-9]+' | tail -n1 | sed 's/.*rc=//' || true)
    boot=$(tr -d '\r' <"$log" | grep -aoE 'LAB-BOOT uptime=[0-9.]+' | tail -n1 | sed 's/.*=//' || true)
    if [[ -n $result ]]; then
        rc=$result
    elif [[ -s $RUN_DIR/silent ]]; then
        lab_note "$topo/$scen: L1 printed nothing for $(cat "$RUN_DIR/silent") s, not even its heartbeat: the emulated machine hung (stopped; status 126)"
        rc=126
    elif ((rc == 124 || rc == 137)); then
        lab_note "$topo/$scen: timed out after ${timeout_s}s"
        rc=124
    else
        lab_note "$topo/$scen: the VM ended (QEMU status $rc) without reporting a result"
        rc=125
    fi
    echo "LAB-RUN topology=$topo scenario=$scen rc=$rc wall_seconds=$wall boot_wall_seconds=$boot_wall boot_uptime_seconds=${boot:-?} log=$log"
    return "$rc"
}

cmd_shell() {
    [[ $# -eq 1 ]] || usage
    local topo=$1 log
    prepare_run "$topo" shell shell
    log=$LAB_BUILD/logs/$topo--shell.log
    lab_note "booting $topo; Ctrl-A X quits QEMU, exit in the shell powers off. Log: $log"
    # Serial and monitor multiplexed on the terminal, and copied to the log.
    timeout --foreground -k 5 "${LAB_SHELL_TIMEOUT:-86400}" "$LAB_QEMU" "${QEMU_ARGS[@]}" \
        -chardev "stdio,id=con,mux=on,signal=off,logfile=$log" -serial chardev:con -mon chardev=con \
        || true
}

cmd_build() {
    lab_preflight
    # The iommufd kernel only serves the -iommufd topologies: without it they fail, the rest runs.
    if ! (lab_build_all iommufd && echo "L1 iommufd kernel  $LAB_L1_KERNEL" && echo "L1 iommufd         $LAB_L1_INITRD"); then
        echo "L1 iommufd kernel  UNAVAILABLE: the -iommufd topologies will fail (the reason is above)"
    fi
    lab_build_all
    echo "kernel  $LAB_KERNEL"
    echo "L1      $LAB_L1_INITRD"
    echo "L2      $LAB_L2_INITRD"
    echo "L2 irq  $LAB_L2IRQ_INITRD"
}

cmd_list() {
    local f
    for f in "$LAB_DIR"/scenarios/*.sh; do
        [[ -f $f ]] || continue
        printf '%-24s topologies: %s\n' "$(basename "$f" .sh)" "$(lab_header "$f" topology)"
    done
}

case ${1:-} in
    run) shift; cmd_run "$@" ;;
    shell) shift; cmd_shell "$@" ;;
    build) shift; cmd_build ;;
    list) shift; cmd_list ;;
    *) usage ;;
esac
