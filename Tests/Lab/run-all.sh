#!/usr/bin/env bash
# Runs every lab scenario, one after the other, on each topology its header names:
#   # lab-topology: sriov-nvme shared-group
#   # lab-timeout: 300            (seconds for one run; default 300)
# Prints PASS/FAIL per run with its time, the scenario's LAB-TIMING lines, the tail of the
# console log of every failure, and ends with the line
#   lab: N passed, M failed
# Exit status 1 when anything failed. A lab that cannot run (no QEMU, no kernel, …) fails;
# it is never skipped.
#
#   run-all.sh [PATTERN...]   only runs whose TOPOLOGY/SCENARIO matches a shell pattern,
#                             e.g. 'sriov-nvme/*' or '*/reference-chain'
# Environment: PASSAGE_BIN (default <repo>/.build/debug), PASSAGE_VMM (the passage-vmm the
# vmm-* scenarios run and benchmark; default $PASSAGE_BIN/passage-vmm), LAB_TAIL (log lines
# shown on failure, default 80), LAB_VERBOSE=1 (stream consoles to the terminal).
set -uo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
. "$LAB_DIR/lib/common.sh"

tail_lines=${LAB_TAIL:-80}
passed=0 failed=0
failed_names=()
t_all=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# The plan: TOPOLOGY SCENARIO TIMEOUT, or a line starting with ! for a broken scenario file.
plan=()
for f in "$LAB_DIR"/scenarios/*.sh; do
    [[ -f $f ]] || continue
    scen=$(basename "$f" .sh)
    topos=$(lab_header "$f" topology)
    tmo=$(lab_header "$f" timeout)
    if [[ -z $topos ]]; then plan+=("!$scen has no '# lab-topology:' header"); continue; fi
    for topo in $topos; do
        if (($#)); then
            match=
            for p in "$@"; do
                # shellcheck disable=SC2053
                [[ $topo/$scen == $p ]] && match=1
            done
            [[ -n $match ]] || continue
        fi
        plan+=("$topo $scen ${tmo:-300}")
    done
done

fail() { # NAME SECONDS REASON
    failed=$((failed + 1))
    failed_names+=("$1")
    printf 'FAIL %-40s %6ss  %s\n' "$1" "$2" "$3"
}

if ((${#plan[@]} == 0)); then
    echo "lab: no scenario matches: $*"
    echo "lab: 0 passed, 1 failed"
    exit 1
fi

# Everything the lab needs, checked once: a lab that cannot run fails every scenario.
if ! pre=$("$LAB_DIR/lab.sh" build 2>&1); then
    echo "lab: THE LAB CANNOT RUN on this machine:"
    printf '%s\n' "$pre" | sed 's/^/lab:   /'
    for p in "${plan[@]}"; do
        [[ $p == !* ]] && { fail "${p#!}" 0 "bad scenario file"; continue; }
        read -r topo scen _ <<<"$p"
        fail "$topo/$scen" 0 "lab unavailable"
    done
    echo "lab: $passed passed, $failed failed"
    exit 1
fi
printf '%s\n' "$pre" | sed 's/^/lab: /'
echo "lab: PASSAGE_BIN=${PASSAGE_BIN:-$LAB_REPO/.build/debug}${PASSAGE_VMM:+ PASSAGE_VMM=$PASSAGE_VMM}"

for p in "${plan[@]}"; do
    if [[ $p == !* ]]; then fail "${p#!}" 0 "bad scenario file"; continue; fi
    read -r topo scen tmo <<<"$p"
    name=$topo/$scen
    log=$LAB_BUILD/logs/$topo--$scen.log
    t0=$(date +%s.%N)
    outf=$LAB_BUILD/logs/$topo--$scen.out
    mkdir -p "$LAB_BUILD/logs"
    for attempt in 1 2; do
        if [[ -n ${LAB_VERBOSE:-} ]]; then
            "$LAB_DIR/lab.sh" run "$topo" "$scen" --timeout "$tmo" 2>&1 | tee "$outf"
            rc=${PIPESTATUS[0]}
        else
            "$LAB_DIR/lab.sh" run "$topo" "$scen" --timeout "$tmo" >"$outf" 2>&1
            rc=$?
        fi
        # 126: L1 itself hung (TCG with nested SVM does, rarely), not the scenario: once more.
        ((rc == 126 && attempt == 1)) || break
        cp "$log" "${log%.log}.hung.log" 2>/dev/null
        echo "RERUN $name: L1 hung after $(since "$t0")s (no console output, heartbeat included; log kept as ${log%.log}.hung.log: $(tr -d '\r' <"$log" | grep -av '^LAB-HEARTBEAT' | tail -n 1 | cut -c1-100))"
    done
    runout=$(cat "$outf")
    dt=$(since "$t0")
    runline=$(printf '%s\n' "$runout" | grep '^LAB-RUN ' | tail -n1)
    boot=$(sed -n 's/.*boot_wall_seconds=\([^ ]*\).*/\1/p' <<<"$runline")
    if ((rc == 0)); then
        passed=$((passed + 1))
        printf 'PASS %-40s %6ss  (boot %ss)\n' "$name" "$dt" "${boot:-?}"
    else
        fail "$name" "$dt" "exit status $rc (boot ${boot:-?}s)"
        echo "---- lab.sh output:"
        printf '%s\n' "$runout" | sed 's/^/  | /'
        if [[ -f $log ]]; then
            echo "---- last $tail_lines lines of $log:"
            tr -d '\r' <"$log" | grep -av '^# qemu' | tail -n "$tail_lines" | sed 's/^/  | /'
        fi
        echo "----"
    fi
    [[ -f $log ]] && tr -d '\r' <"$log" | grep -a '^LAB-TIMING ' | sed "s|^|      $name |"
    if [[ $boot =~ ^[0-9.]+$ ]] && awk -v b="$boot" 'BEGIN { exit !(b > 15) }'; then
        echo "WARN $name: L1 took ${boot}s to reach the scenario (budget 15 s)"
    fi
done

total=$(since "$t_all")
echo "lab: total ${total}s${failed_names[*]:+; failed: ${failed_names[*]}}"
# (1,200 s: 100 SIGKILLs of passaged and ~25 nested boots with their QEMU references take ~1,050 s on 2 cores.)
awk -v t="$total" 'BEGIN { exit !(t > 1200) }' && echo "WARN the lab took ${total}s (budget 1200 s)"
echo "lab: $passed passed, $failed failed"
((failed == 0))
